// A project's webhook: its delivery log (every delivery from GitHub, GitLab or Bitbucket,
// what came of it and why, with a way to deliver a kept one again), and the setup shown on
// the project page (the URL for each provider, whether a secret is set, and Reconfigure,
// which shows a new secret once).

import { api, may, seg, DEPLOY } from '../api.js';
import {
  h, fill, title, crumbs, table, badge, ago, time, shortSha, shortId, reference, message, announce,
  confirmDialog, facts,
} from '../dom.js';
import { tabs } from './projects.js';

export const PAGE = 20;

const PROVIDERS = [['github', 'GitHub'], ['gitlab', 'GitLab'], ['bitbucket', 'Bitbucket Cloud']];

/** The log records "-" for a header the delivery did not carry. */
const given = (v) => (v && v !== '-' ? v : null);

function eventCell(d) {
  const id = given(d.deliveryId);
  return [given(d.event) || h('span', { class: 'muted' }, 'no event header'),
    id ? h('span', { class: 'muted', title: 'delivery id' }, ` ${id}`) : null];
}

/** The reason as the coordinator wrote it (a replay's already names the entry replayed). */
function reasonCell(d) {
  return h('span', { class: 'reason-text', data: d.redeliveryOf ? { redeliveryOf: d.redeliveryOf } : {} }, d.reason || '—');
}

export async function render({ main, params: [project], query, signal }) {
  const offset = Math.max(0, Number.parseInt(query.get('offset') || '0', 10) || 0);
  const info = await api('GET', `/api/projects/${seg(project)}`, undefined, { signal });
  const region = h('div', { id: 'deliveries' }, h('p', {}, 'Loading deliveries…'));
  const notice = h('div', { id: 'redeliver-result', 'aria-live': 'polite' });
  fill(main,
    crumbs(['Projects', '#/'], [info.name, `#/projects/${seg(project)}`], ['Webhook deliveries', `#/projects/${seg(project)}/webhooks`]),
    title(`${info.name}: webhook deliveries`),
    tabs(project, 'webhooks'),
    h('p', { class: 'muted' }, 'The webhook URLs and secret are on the ',
      h('a', { href: `#/projects/${seg(project)}` }, 'project page'), '. The newest 1000 deliveries are kept.'),
    notice,
    region);
  const base = `/api/projects/${seg(project)}/webhooks/deliveries`;
  const redeliver = may(DEPLOY, project);
  const load = async () => {
    let page;
    try {
      page = await api('GET', `${base}?limit=${PAGE}&offset=${offset}`, undefined, { signal });
    } catch (e) {
      if (signal.aborted) return;
      fill(region, message(`The delivery log could not be read: ${e.message}`, 'error'));
      region.dataset.state = 'error';
      return;
    }
    const rows = page.deliveries.map((d) => ({
      attrs: { data: { delivery: d.id, outcome: d.outcome, redeliverable: String(Boolean(d.redeliverable)) } },
      cells: [
        ago(d.receivedAt),
        d.provider,
        eventCell(d),
        reference(d),
        d.commitSha ? h('code', { title: d.commitSha }, shortSha(d.commitSha)) : '—',
        badge(d.outcome),
        reasonCell(d),
        d.deploymentId
          ? h('a', { href: `#/projects/${seg(project)}/deployments/${seg(d.deploymentId)}` }, shortId(d.deploymentId))
          : '—',
        d.redeliverable ? h('button', {
          type: 'button', class: 'small', data: { redeliver: d.id },
          'aria-label': `Deliver ${d.provider} delivery ${given(d.deliveryId) || d.id} again`,
          on: {
            click: async (ev) => {
              const button = ev.currentTarget;
              button.disabled = true;
              try {
                const r = await api('POST', `${base}/${seg(d.id)}/redeliver`, {}, { signal });
                const text = `Delivered again: ${r.outcome} — ${r.reason}`;
                fill(notice, message(text, r.outcome === 'rejected' ? 'error' : 'success'));
                announce(text);
                await load();
              } catch (err) {
                fill(notice, message(`Could not deliver again: ${err.message}`, 'error'));
                button.disabled = false;
              }
            },
          },
        }, 'Redeliver') : h('span', { class: 'muted', title: 'oCore keeps the request of signature-checked deliveries only, the newest 100' }, 'not kept'),
      ].slice(0, redeliver ? 9 : 8),
    }));
    const end = offset + page.deliveries.length;
    region.dataset.state = 'loaded';
    fill(region,
      rows.length
        ? table('Webhook deliveries, newest first',
          ['Received', 'Provider', 'Event', 'Reference', 'Commit', 'Outcome', 'Reason', 'Deployment', 'Actions'].slice(0, redeliver ? 9 : 8), rows)
        : message('No delivery yet. Paste the URL from the project page into the repository\'s webhook settings.'),
      h('nav', { class: 'pager', 'aria-label': 'Delivery pages' },
        h('p', { id: 'deliveries-range' }, page.total ? `Showing ${offset + 1}–${end} of ${page.total}` : ''),
        offset > 0 ? h('a', { href: `#/projects/${seg(project)}/webhooks?offset=${Math.max(0, offset - PAGE)}`, rel: 'prev' }, '← Newer') : null,
        end < page.total ? h('a', { href: `#/projects/${seg(project)}/webhooks?offset=${end}`, rel: 'next' }, 'Older →') : null));
  };
  await load();
}

function urlFacts(w) {
  return facts(PROVIDERS.map(([key, label]) => [label, h('code', { data: { url: key } }, w.urls[key])]));
}

/** The project page's webhook section: URLs, secret state, and Reconfigure. */
export function webhookSection(project, signal) {
  const body = h('div', { id: 'webhook', 'aria-live': 'polite' }, h('p', {}, 'Loading the webhook…'));
  const draw = (w, secret) => {
    const state = w.secretSet
      ? ['set', w.secretCreatedAt ? [' on ', time(w.secretCreatedAt)] : null]
      : 'not set yet: no delivery is accepted until a secret is generated';
    const button = may(DEPLOY, project)
      ? h('button', {
        type: 'button', id: 'reconfigure-webhook',
        on: {
          click: () => confirmDialog({
            id: 'reconfigure-dialog',
            heading: w.secretSet ? 'Generate a new webhook secret?' : 'Generate the webhook secret?',
            body: h('p', {}, w.secretSet
              ? 'The current secret stops working at once: deliveries signed with it are rejected until the new one is pasted into the Git provider.'
              : 'The secret is shown once, to paste into the Git provider with the URL.'),
            confirmLabel: 'Generate',
            danger: w.secretSet,
            onConfirm: async () => {
              const r = await api('POST', `/api/projects/${seg(project)}/webhooks/reconfigure`, {}, { signal });
              draw({ ...w, secretSet: true, secretCreatedAt: r.secretCreatedAt, urls: r.urls }, r.secret);
              announce('A new webhook secret was generated; copy it now, it is shown only once.');
            },
          }),
        },
      }, w.secretSet ? 'Reconfigure…' : 'Generate a secret…')
      : null;
    fill(body,
      urlFacts(w),
      facts([
        ['Secret', h('span', { id: 'webhook-secret-state', data: { set: String(w.secretSet) } }, state)],
        ['Content type', w.contentType],
        ['Events', PROVIDERS.map(([key, label]) => (w.events && w.events[key] ? `${label}: ${w.events[key]}. ` : null))],
      ]),
      secret ? h('div', { class: 'message m-success', id: 'new-secret' },
        h('p', {}, h('strong', {}, 'New secret (shown only now; copy it into the provider): ')),
        h('p', {}, h('code', { id: 'webhook-secret' }, secret))) : null,
      h('div', { class: 'actions' }, button,
        h('a', { href: `#/projects/${seg(project)}/webhooks` }, 'Delivery log')));
  };
  (async () => {
    try {
      draw(await api('GET', `/api/projects/${seg(project)}/webhooks`, undefined, { signal }), null);
    } catch (e) {
      if (!signal.aborted) fill(body, message(`The webhook could not be read: ${e.message}`, 'error'));
    }
  })();
  return h('section', { 'aria-labelledby': 'webhook-h' }, h('h2', { id: 'webhook-h' }, 'Webhook'), body);
}
