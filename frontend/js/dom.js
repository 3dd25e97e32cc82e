// Building the document from API values as text only: every child that is not
// already a node becomes a text node, and attributes are set one by one with
// setAttribute, so nothing an API answers is ever parsed as HTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// h('a', {href: '#/'}, 'Board') makes <a href="#/">Board</a>.
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

// Replaces everything in el by the given children.
export function fill(el, ...children) {
  el.replaceChildren();
  return build(el, null, children);
}

let ids = 0;
// A document-unique id for label/aria-describedby pairs.
export function uid(prefix) {
  ids += 1;
  return `${prefix}-${ids}`;
}

// A labelled field: <label>Text <input ...></label>, returning both.
export function field(text, control) {
  const label = h('label', null, h('span', null, text), control);
  return { label, control };
}

// An ISO instant shown in the reader's locale; anything else as it came.
export function instant(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

export function money(amount, currency) {
  if (amount === null || amount === undefined) return '—';
  return currency ? `${amount} ${currency}` : String(amount);
}
