// The dashboard's entry point: the session, the hash router (`#/projects/shop`), and the
// header. Each page is a module with `render(ctx)`; leaving a page aborts `ctx.signal`,
// which stops its event streams and refreshes.

import { api, session, ApiError } from './api.js';
import { h, fill, message } from './dom.js';
import * as signin from './pages/signin.js';
import * as projects from './pages/projects.js';
import * as history from './pages/history.js';
import * as deploy from './pages/deploy.js';
import * as deployment from './pages/deployment.js';
import * as environments from './pages/environments.js';
import * as agents from './pages/agents.js';
import * as webhooks from './pages/webhooks.js';

const ROUTES = [
  [/^$/, projects.render],
  [/^projects$/, projects.render],
  [/^projects\/([^/]+)$/, history.render],
  [/^projects\/([^/]+)\/deploy$/, deploy.render],
  [/^projects\/([^/]+)\/deployments\/([^/]+)$/, deployment.render],
  [/^projects\/([^/]+)\/environments$/, environments.renderList],
  [/^projects\/([^/]+)\/webhooks$/, webhooks.render],
  [/^environments\/([^/]+)$/, environments.render],
  [/^agents$/, agents.render],
];

let current = null;
let afterSignIn = '#/';

/** `#/a/b?x=1` as `{path: 'a/b', params: ['a','b'], query}`. */
function parseHash(hash) {
  const raw = hash.startsWith('#/') ? hash.slice(2) : '';
  const [path, q = ''] = raw.split('?');
  return { path: path.replace(/\/+$/, ''), query: new URLSearchParams(q) };
}

function header() {
  const nav = document.getElementById('nav');
  const who = document.getElementById('who');
  const me = session.me;
  if (!me) {
    fill(nav);
    fill(who);
    return;
  }
  const here = location.hash.startsWith('#/agents') ? 'agents' : 'projects';
  const link = (id, href, label) => h('a', { href, 'aria-current': here === id ? 'page' : null }, label);
  fill(nav, h('ul', {},
    h('li', {}, link('projects', '#/', 'Projects')),
    me.admin ? h('li', {}, link('agents', '#/agents', 'Agents')) : null));
  fill(who,
    h('span', { class: 'who', id: 'signed-in-as' }, 'Signed in as ', h('strong', {}, me.name),
      me.admin ? ' (admin)' : ''),
    h('button', { type: 'button', class: 'link', id: 'sign-out', on: { click: signOut } }, 'Sign out'));
}

function signOut() {
  session.signOut();
  afterSignIn = '#/';
  if (location.hash === '#/') route();
  else location.hash = '#/';
}

/** Renders the page of the current hash (or the sign-in form without a session). */
async function route() {
  if (current) current.abort();
  const controller = new AbortController();
  current = controller;
  const main = document.getElementById('main');
  const notices = document.getElementById('notices');
  if (notices) notices.textContent = '';
  const { path, query } = parseHash(location.hash);
  header();
  if (!session.me) {
    afterSignIn = location.hash.startsWith('#/') ? location.hash : '#/';
    signin.render({ main, signal: controller.signal, reason: route.reason, done: signedIn });
    route.reason = null;
    return;
  }
  let page = null;
  let params = [];
  for (const [re, render] of ROUTES) {
    const m = re.exec(path);
    if (m) {
      page = render;
      params = m.slice(1).map(decodeURIComponent);
      break;
    }
  }
  fill(main);
  if (!page) {
    fill(main, h('h1', { tabindex: '-1' }, 'Page not found'),
      message(`There is no dashboard page at #/${path}.`, 'error'), h('p', {}, h('a', { href: '#/' }, 'Go to the projects')));
    focusHeading(main);
    return;
  }
  try {
    await page({ main, params, query, signal: controller.signal });
  } catch (e) {
    if (controller.signal.aborted || e.name === 'AbortError') return;
    if (e instanceof ApiError && e.status === 401) return;
    fill(main, h('h1', { tabindex: '-1' }, 'Something went wrong'),
      message(e instanceof ApiError ? e.message : String(e), 'error'));
  }
  if (!controller.signal.aborted) focusHeading(main);
}

function focusHeading(main) {
  const heading = main.querySelector('h1');
  if (heading && document.activeElement === document.body) heading.focus({ preventScroll: true });
  else if (heading && !main.contains(document.activeElement)) heading.focus({ preventScroll: true });
}

function signedIn() {
  const target = afterSignIn === '#/signin' ? '#/' : afterSignIn;
  if (location.hash === target) route();
  else location.hash = target;
}

window.addEventListener('hashchange', () => {
  // In-page anchors (the skip link) are not pages.
  if (location.hash.startsWith('#/') || location.hash === '') route();
});

window.addEventListener('ocore:signed-out', (e) => {
  route.reason = `Your session ended: ${e.detail}. Sign in again.`;
  route();
});

async function start() {
  const token = session.token();
  if (token) {
    try {
      session.me = await api('GET', '/api/me', undefined, { token });
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        session.signOut();
        route.reason = `Your session ended: ${e.message}. Sign in again.`;
      } else {
        route.reason = e.message;
      }
    }
  }
  route();
}

start();
