// The sign-in form: a token is checked with `GET /api/me` before it is kept. The form is
// built by script and handled by script (the page's policy forbids native submission), so
// the token can never end up in a URL.

import { api, session, ApiError } from '../api.js';
import { h, fill, title, message } from '../dom.js';

export function render({ main, reason, done }) {
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false',
    required: true, 'aria-describedby': 'token-help token-error',
  });
  const error = h('p', { id: 'token-error', class: 'field-error', role: 'alert' });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', { id: 'signin', class: 'card narrow', method: 'post', novalidate: true },
    h('label', { for: 'token' }, 'API token'),
    input,
    h('p', { id: 'token-help', class: 'help' },
      'The token stays in this browser tab only and is forgotten when the tab closes. ',
      'Create one with ', h('code', {}, 'ocore token create'), ', or use the first admin token in ',
      h('code', {}, 'initial-admin-token'), ' in the coordinator\'s state directory.'),
    error,
    h('div', { class: 'actions' }, button));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const token = input.value.trim();
    error.textContent = '';
    input.removeAttribute('aria-invalid');
    if (!token) {
      error.textContent = 'Paste an API token to sign in.';
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      return;
    }
    button.disabled = true;
    try {
      const me = await api('GET', '/api/me', undefined, { token });
      input.value = '';
      session.signIn(token, me);
      done();
    } catch (err) {
      error.textContent = err instanceof ApiError && err.status === 401
        ? `This token was refused: ${err.message}.`
        : err.message;
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  fill(main,
    title('Sign in to oCore'),
    reason ? message(reason, 'error') : null,
    form);
  input.focus();
}
