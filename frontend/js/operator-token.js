// The operator token (OPERATOR_TOKEN, docs/security.md): typed in a password field,
// kept in sessionStorage only (gone with the tab), sent as Authorization: Bearer on
// the operator's requests (stock changes, the dead-letter administration), and never
// put in a URL or logged. One token for every page that needs it.

import { h, uid } from './dom.js';

const KEY = 'deta.operatorToken';

export function operatorToken() {
  try {
    return sessionStorage.getItem(KEY) || '';
  } catch {
    return '';
  }
}

// The request headers that carry the token ({} when none is kept).
export function operatorHeaders() {
  const token = operatorToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// What a refusal means, said plainly; null for any other answer.
export function explainRefusal(r) {
  if (r.status === 401) return 'The operator token was refused (401): type the operator token (OPERATOR_TOKEN) of this deployment.';
  if (r.status === 403) return 'Forbidden (403): that is the reader token; this needs the operator token.';
  if (r.status === 503 && /OPERATOR_TOKEN/.test(r.message)) return `Not available (503): ${r.message}.`;
  return null;
}

// The form that keeps the token: onSaved() after "Use this token", onForgotten()
// after "Forget the token".
export function operatorTokenForm({ onSaved, onForgotten }) {
  const id = uid('f-token');
  const input = h('input', { id, name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false' });
  const forget = h('button', { type: 'button' }, 'Forget the token');
  const form = h('form', { class: 'token', 'aria-label': 'Operator token' },
    h('div', { class: 'row' },
      h('label', { for: id }, h('span', null, 'Operator token'), input),
      h('button', { type: 'submit', class: 'primary' }, 'Use this token'),
      forget));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    try {
      sessionStorage.setItem(KEY, input.value);
    } catch {
      // A browser without sessionStorage: nothing is kept.
    }
    input.value = '';
    if (onSaved) onSaved();
  });
  forget.addEventListener('click', () => {
    try {
      sessionStorage.removeItem(KEY);
    } catch {
      // nothing kept
    }
    if (onForgotten) onForgotten();
  });
  return form;
}
