// The API client: the signed-in token, bearer requests, API errors, and what the token may
// do. The token lives in sessionStorage only (this tab, until it closes); it is sent as an
// Authorization header and never put in a URL or written to the console.

const TOKEN_KEY = 'ocore.token';

/** An error answer of the API (`{error: {code, message}}`), or `status` 0 for no answer. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  /** `GET /api/me` of the signed-in token: `{tokenId, name, admin, grants}`. */
  me: null,
  token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  signIn(token, me) {
    sessionStorage.setItem(TOKEN_KEY, token);
    this.me = me;
  },
  signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    this.me = null;
  },
};

/** Headers of an authenticated request (with `token`, or the session's). */
export function authHeaders(token = session.token()) {
  return { Authorization: `Bearer ${token}` };
}

async function errorOf(response) {
  let code = 'http_' + response.status;
  let message = `the coordinator answered ${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // Not JSON: keep the status line.
  }
  return new ApiError(response.status, code, message);
}

/**
 * Calls the API and returns the parsed JSON body (null when empty). Throws `ApiError`.
 * A 401 ends the session: the page goes back to the sign-in form.
 */
export async function api(method, path, body, { token, signal } = {}) {
  const headers = { Accept: 'application/json', ...authHeaders(token) };
  const init = { method, headers, signal, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'cannot reach the coordinator; check that it is running');
  }
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && token === undefined) {
      session.signOut();
      window.dispatchEvent(new CustomEvent('ocore:signed-out', { detail: error.message }));
    }
    throw error;
  }
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export { errorOf };

/** Whether the session's token holds `permission` on `project` (admins hold every one). */
export function may(permission, project) {
  const me = session.me;
  if (!me) return false;
  return me.admin || me.grants.some((g) => g.project === project && g.permission === permission);
}

/** Whether the session's token has any permission on `project`. */
export function sees(project) {
  const me = session.me;
  if (!me) return false;
  return me.admin || me.grants.some((g) => g.project === project);
}

export const VIEW = 'view:deployments';
export const DEPLOY = 'manage:deployments';
export const ENVIRONMENTS = 'manage:environments';

/** A path segment, encoded. */
export function seg(value) {
  return encodeURIComponent(value);
}
