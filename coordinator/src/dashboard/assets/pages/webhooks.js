// A project's webhook delivery log: every delivery from GitHub, GitLab or Bitbucket, what
// came of it (deployed, ignored, rejected) and why, with a way to deliver one again.

import { api, may, seg, DEPLOY, ApiError } from '../api.js';
import { h, fill, title, crumbs, table, badge, ago, shortSha, shortId, reference, message, announce } from '../dom.js';
import { tabs } from './projects.js';

export const PAGE = 20;

export async function render({ main, params: [project], query, signal }) {
  const offset = Math.max(0, Number.parseInt(query.get('offset') || '0', 10) || 0);
  const info = await api('GET', `/api/projects/${seg(project)}`, undefined, { signal });
  const region = h('div', { id: 'deliveries' }, h('p', {}, 'Loading deliveries…'));
  fill(main,
    crumbs(['Projects', '#/'], [info.name, `#/projects/${seg(project)}`], ['Webhook deliveries', `#/projects/${seg(project)}/webhooks`]),
    title(`${info.name}: webhook deliveries`),
    tabs(project, 'webhooks'),
    region);
  const base = `/api/projects/${seg(project)}/webhooks/deliveries`;
  const load = async () => {
    let page;
    try {
      page = await api('GET', `${base}?limit=${PAGE}&offset=${offset}`, undefined, { signal });
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && e.status === 404 && e.message === 'no such API path') {
        fill(region, message('This coordinator has no webhook delivery log yet (its API answered “no such API path”). Upgrade the coordinator to see deliveries here.', 'warning'));
        region.dataset.state = 'unavailable';
      } else {
        fill(region, message(`The delivery log could not be read: ${e.message}`, 'error'));
        region.dataset.state = 'error';
      }
      return;
    }
    const redeliver = may(DEPLOY, project);
    const rows = page.deliveries.map((d) => ({
      attrs: { data: { delivery: d.id, outcome: d.outcome } },
      cells: [
        ago(d.receivedAt),
        d.provider,
        [d.event, d.deliveryId ? h('span', { class: 'muted' }, ` ${d.deliveryId}`) : null],
        reference(d),
        d.commitSha ? h('code', { title: d.commitSha }, shortSha(d.commitSha)) : '—',
        badge(d.outcome),
        d.reason || '—',
        d.deploymentId
          ? h('a', { href: `#/projects/${seg(project)}/deployments/${seg(d.deploymentId)}` }, shortId(d.deploymentId))
          : '—',
        h('button', {
          type: 'button', class: 'small', data: { redeliver: d.id },
          'aria-label': `Deliver ${d.provider} delivery ${d.deliveryId || d.id} again`,
          on: {
            click: async (ev) => {
              ev.currentTarget.disabled = true;
              try {
                await api('POST', `${base}/${seg(d.id)}/redeliver`, {}, { signal });
                announce('Delivered again.');
                await load();
              } catch (err) {
                region.prepend(message(`Could not deliver again: ${err.message}`, 'error'));
              }
            },
          },
        }, 'Redeliver'),
      ].slice(0, redeliver ? 9 : 8),
    }));
    const end = offset + page.deliveries.length;
    region.dataset.state = 'loaded';
    fill(region,
      rows.length
        ? table('Webhook deliveries, newest first',
          ['Received', 'Provider', 'Event', 'Reference', 'Commit', 'Outcome', 'Reason', 'Deployment', 'Actions'].slice(0, redeliver ? 9 : 8), rows)
        : message('No delivery yet. Point a push webhook of the repository at /api/webhooks/{provider}/' + project + '.'),
      h('nav', { class: 'pager', 'aria-label': 'Delivery pages' },
        h('p', {}, page.total ? `Showing ${offset + 1}–${end} of ${page.total}` : ''),
        offset > 0 ? h('a', { href: `#/projects/${seg(project)}/webhooks?offset=${Math.max(0, offset - PAGE)}`, rel: 'prev' }, '← Newer') : null,
        end < page.total ? h('a', { href: `#/projects/${seg(project)}/webhooks?offset=${end}`, rel: 'next' }, 'Older →') : null));
  };
  await load();
}
