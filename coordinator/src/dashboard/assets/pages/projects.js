// The projects the token can see, with what it may do on each.

import { api, may, session, seg, DEPLOY, ENVIRONMENTS, VIEW } from '../api.js';
import { h, fill, title, message } from '../dom.js';

/** What the session's token may do on `project`, in words. */
export function abilities(project) {
  if (session.me && session.me.admin) return ['admin'];
  const out = [];
  if (may(VIEW, project)) out.push('view deployments');
  if (may(DEPLOY, project)) out.push('deploy');
  if (may(ENVIRONMENTS, project)) out.push('roll back and manage snapshots');
  return out;
}

/** The tabs of a project's pages. */
export function tabs(project, here) {
  const link = (id, href, label) =>
    h('li', {}, h('a', { href, 'aria-current': id === here ? 'page' : null }, label));
  return h('nav', { class: 'tabs', 'aria-label': 'Project' }, h('ul', {},
    link('deployments', `#/projects/${seg(project)}`, 'Deployments'),
    link('environments', `#/projects/${seg(project)}/environments`, 'Environments'),
    link('webhooks', `#/projects/${seg(project)}/webhooks`, 'Webhook deliveries')));
}

export async function render({ main, signal }) {
  const { projects } = await api('GET', '/api/projects', undefined, { signal });
  const list = projects.length
    ? h('ul', { class: 'cards', id: 'projects' }, projects.map((p) => h('li', { class: 'card', data: { project: p.id } },
      h('h2', {}, h('a', { href: `#/projects/${seg(p.id)}` }, p.name)),
      h('p', { class: 'muted' }, h('code', {}, p.id), ' · ', p.repositoryUrl),
      h('p', {}, 'You may: ', abilities(p.id).join(', ') || 'nothing'),
      h('p', { class: 'links' },
        h('a', { href: `#/projects/${seg(p.id)}` }, 'Deployments'), ' · ',
        h('a', { href: `#/projects/${seg(p.id)}/environments` }, 'Environments'), ' · ',
        h('a', { href: `#/projects/${seg(p.id)}/webhooks` }, 'Webhook deliveries')))))
    : message('This token sees no project. An admin creates projects with `ocore project create` and grants tokens with `ocore token create --project`.');
  fill(main, title('Projects'), list);
}
