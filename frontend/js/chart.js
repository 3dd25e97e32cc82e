// Orders per second over the last minutes, counted by the page from the
// stream's order.created events and drawn as SVG bars.

import { svg } from './dom.js';

const WIDTH = 600;
const HEIGHT = 120;
const PAD = 18;

// A rolling count of things per second over `seconds` seconds.
export class RateWindow {
  constructor(seconds, now = Date.now()) {
    this.seconds = seconds;
    this.counts = new Array(seconds).fill(0);
    this.second = Math.floor(now / 1000);
  }

  // Moves the window to the second of `now`, dropping what fell out of it.
  advance(now = Date.now()) {
    const s = Math.floor(now / 1000);
    const steps = Math.min(s - this.second, this.seconds);
    for (let i = 0; i < steps; i += 1) {
      this.counts.shift();
      this.counts.push(0);
    }
    if (s > this.second) this.second = s;
  }

  add(now = Date.now()) {
    this.advance(now);
    this.counts[this.seconds - 1] += 1;
  }
}

// Draws the window into the <svg> element `el`.
export function drawRate(el, win) {
  const peak = Math.max(1, ...win.counts);
  const barW = (WIDTH - PAD) / win.seconds;
  const bars = win.counts.map((n, i) => {
    const hgt = ((HEIGHT - PAD) * n) / peak;
    return svg('rect', {
      class: 'bar',
      x: (PAD + i * barW).toFixed(2),
      y: (HEIGHT - PAD - hgt).toFixed(2),
      width: Math.max(barW - 0.5, 0.5).toFixed(2),
      height: hgt.toFixed(2),
    });
  });
  const minutes = Math.round(win.seconds / 60);
  el.replaceChildren(
    svg('line', { class: 'axis', x1: PAD, y1: HEIGHT - PAD, x2: WIDTH, y2: HEIGHT - PAD }),
    svg('line', { class: 'axis', x1: PAD, y1: 0, x2: PAD, y2: HEIGHT - PAD }),
    svg('text', { x: 2, y: 10 }, String(peak)),
    svg('text', { x: 2, y: HEIGHT - PAD }, '0'),
    svg('text', { x: PAD, y: HEIGHT - 4 }, `${minutes} min ago`),
    svg('text', { x: WIDTH - 24, y: HEIGHT - 4 }, 'now'),
    ...bars,
  );
}

export function rateSvg(label) {
  return svg('svg', {
    class: 'chart', role: 'img', 'aria-label': label,
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, width: WIDTH, height: HEIGHT,
  });
}
