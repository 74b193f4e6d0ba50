// A project's page: its deployment history, newest first, 20 to a page, refreshed while a
// deployment on the page is queued or running; and its webhook setup (`webhooks.js`).

import { api, may, seg, DEPLOY } from '../api.js';
import { h, fill, title, crumbs, table, badge, ago, duration, shortSha, reference, message } from '../dom.js';
import { tabs } from './projects.js';
import { webhookSection } from './webhooks.js';
import { isTerminal } from '../live.js';

export const PAGE = 20;

function commitCell(d) {
  if (!d.commitSha) return '—';
  const subject = (d.commitMessage || '').split('\n')[0];
  return [h('code', { title: d.commitSha }, shortSha(d.commitSha)), subject ? h('span', { class: 'subject' }, ' ', subject) : null];
}

function trigger(d) {
  if (d.triggerType === 'rollback') {
    return d.rollbackOf || !d.restoredSnapshotId ? 'rollback' : ['rollback', h('span', { class: 'muted' }, ' (restore)')];
  }
  if (d.triggerType === 'webhook') return 'webhook';
  return d.requestedBy ? ['manual', h('span', { class: 'muted' }, ` by ${d.requestedBy}`)] : 'manual';
}

export async function render({ main, params: [project], query, signal }) {
  const offset = Math.max(0, Number.parseInt(query.get('offset') || '0', 10) || 0);
  const path = `/api/projects/${seg(project)}/deployments?limit=${PAGE}&offset=${offset}`;
  const [info, first] = await Promise.all([
    api('GET', `/api/projects/${seg(project)}`, undefined, { signal }),
    api('GET', path, undefined, { signal }),
  ]);
  const region = h('div', { id: 'history' });
  const draw = (page) => {
    const rows = page.deployments.map((d) => ({
      attrs: { data: { deployment: d.id, status: d.status } },
      cells: [
        h('a', { href: `#/projects/${seg(project)}/deployments/${seg(d.id)}`, class: 'open', data: { deployment: d.id } },
          ago(d.createdAt)),
        badge(d.status),
        trigger(d),
        reference(d),
        commitCell(d),
        d.commitAuthor || '—',
        duration(d.durationMs),
      ],
    }));
    const end = offset + page.deployments.length;
    const pager = h('nav', { class: 'pager', 'aria-label': 'History pages' },
      h('p', { id: 'history-range' }, page.total
        ? `Showing ${offset + 1}–${end} of ${page.total}`
        : 'No deployment yet.'),
      offset > 0 ? h('a', { href: `#/projects/${seg(project)}?offset=${Math.max(0, offset - PAGE)}`, rel: 'prev' }, '← Newer') : null,
      end < page.total ? h('a', { href: `#/projects/${seg(project)}?offset=${end}`, rel: 'next' }, 'Older →') : null);
    fill(region,
      rows.length ? table('Deployments, newest first',
        ['Created', 'Status', 'Trigger', 'Reference', 'Commit', 'Author', 'Duration'], rows) : null,
      pager);
  };
  draw(first);
  const actions = may(DEPLOY, project)
    ? h('a', { href: `#/projects/${seg(project)}/deploy`, class: 'button primary', id: 'deploy' }, 'Deploy')
    : h('p', { class: 'muted', id: 'no-deploy' }, 'This token may not start deployments here (needs manage:deployments).');
  fill(main,
    crumbs(['Projects', '#/'], [info.name, `#/projects/${seg(project)}`]),
    h('div', { class: 'page-head' }, title(`${info.name}: deployments`), actions),
    tabs(project, 'deployments'),
    region,
    webhookSection(project, signal));
  // While something on the page is still moving, refresh it now and then (in the
  // background: the page is drawn already; leaving it aborts `signal`).
  refresh(first, path, draw, region, signal);
}

async function refresh(first, path, draw, region, signal) {
  let page = first;
  while (!signal.aborted && page.deployments.some((d) => !isTerminal(d.status))) {
    await new Promise((r) => setTimeout(r, 3000));
    if (signal.aborted) return;
    try {
      page = await api('GET', path, undefined, { signal });
      draw(page);
    } catch (e) {
      if (signal.aborted) return;
      region.prepend(message(`Could not refresh: ${e.message}`, 'error'));
      return;
    }
  }
}
