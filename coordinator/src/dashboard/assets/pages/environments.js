// A project's environments, and one environment: its instance (which colour serves), its
// snapshots (size, kind, pinned, age) with restore, pin, unpin, delete, a manual snapshot
// and a size estimate, and its retention settings. Snapshots need manage:environments.

import { api, may, session, seg, ENVIRONMENTS } from '../api.js';
import {
  h, fill, title, crumbs, table, badge, facts, time, ago, bytes, shortSha, shortId, color,
  message, announce, confirmDialog,
} from '../dom.js';
import { tabs } from './projects.js';
import { restoreDialog } from '../plan.js';

function retention(s) {
  const last = s.keepLast ? `keep the last ${s.keepLast}` : 'no count limit';
  const days = s.keepDays ? `keep ${s.keepDays} days` : 'no age limit';
  return `${last}, ${days}; pinned snapshots are always kept`;
}

export async function renderList({ main, params: [project], signal }) {
  const [info, { environments }, { instances }] = await Promise.all([
    api('GET', `/api/projects/${seg(project)}`, undefined, { signal }),
    api('GET', `/api/environments?projectId=${seg(project)}`, undefined, { signal }),
    api('GET', `/api/instances?projectId=${seg(project)}`, undefined, { signal }),
  ]);
  const rows = environments.map((e) => {
    const i = instances.find((x) => x.environmentId === e.id);
    return {
      attrs: { data: { environment: e.id } },
      cells: [
        h('a', { href: `#/environments/${seg(e.id)}` }, e.name),
        e.branches.length ? e.branches.join(', ') : '—',
        i ? h('code', {}, i.id) : 'none yet',
        i ? color(i.activeColor) : '—',
        retention(e.snapshotSettings),
      ],
    };
  });
  fill(main,
    crumbs(['Projects', '#/'], [info.name, `#/projects/${seg(project)}`], ['Environments', `#/projects/${seg(project)}/environments`]),
    title(`${info.name}: environments`),
    tabs(project, 'environments'),
    rows.length
      ? table('Environments', ['Environment', 'Branches', 'Instance', 'Serving colour', 'Retention'], rows)
      : message('This project has no environment yet; an admin adds one with `ocore environment create`.'));
}

function instanceSection(instance, agent) {
  if (!instance) return message('No instance serves this environment yet; an admin binds one with `ocore instance create`.');
  return facts([
    ['Instance', h('code', {}, instance.id)],
    ['Serving colour', h('span', { id: 'instance-color' }, color(instance.activeColor))],
    ['Colour since', instance.activeColorAt ? time(instance.activeColorAt) : null],
    ['Agent', [h('code', {}, instance.agent), agent ? [' ', badge(agent.status)] : null,
      agent && agent.lastError ? h('span', { class: 'reason' }, ` ${agent.lastError}`) : null]],
    ['Agent instance', h('code', {}, instance.agentInstanceId)],
  ]);
}

export async function render({ main, params: [id], signal }) {
  const env = await api('GET', `/api/environments/${seg(id)}`, undefined, { signal });
  const project = env.projectId;
  const { instances } = await api('GET', `/api/instances?environmentId=${seg(id)}`, undefined, { signal });
  const instance = instances[0] || null;
  const agent = instance && session.me.admin
    ? await api('GET', `/api/agents/${seg(instance.agent)}`, undefined, { signal }).catch(() => null)
    : null;
  const manage = may(ENVIRONMENTS, project);
  fill(main,
    crumbs(['Projects', '#/'], [project, `#/projects/${seg(project)}`],
      ['Environments', `#/projects/${seg(project)}/environments`], [env.name, `#/environments/${seg(id)}`]),
    title(`Environment ${env.name}`),
    facts([
      ['Project', h('a', { href: `#/projects/${seg(project)}` }, project)],
      ['Branches deployed here', env.branches.length ? env.branches.join(', ') : 'none mapped'],
      ['Retention', h('span', { id: 'retention-summary' }, retention(env.snapshotSettings))],
    ]),
    h('section', { 'aria-labelledby': 'instance-h' }, h('h2', { id: 'instance-h' }, 'Instance'), instanceSection(instance, agent)),
    manage
      ? snapshotsSection(env, instance, signal)
      : h('section', {}, h('h2', {}, 'Snapshots'),
        message('Snapshots and retention settings need manage:environments on this project.')));
}

function snapshotsSection(env, instance, signal) {
  const base = `/api/environments/${seg(env.id)}`;
  const listRegion = h('div', { id: 'snapshots' }, h('p', {}, 'Loading snapshots…'));
  const estimateRegion = h('div', { id: 'estimate', 'aria-live': 'polite' });
  let polling = false;

  const act = async (method, path, done) => {
    try {
      const r = await api(method, path, method === 'POST' ? {} : undefined, { signal });
      if (done) announce(done(r));
      await load();
    } catch (e) {
      if (!signal.aborted) listRegion.prepend(message(e.message, 'error'));
    }
  };

  const draw = (answer) => {
    const rows = answer.snapshots.map((s) => ({
      attrs: { data: { snapshot: s.id, pinned: String(s.pinned), state: s.state, kind: s.kind, imported: String(Boolean(s.importedAt)) } },
      cells: [
        ago(s.createdAt),
        s.importedAt ? [s.kind, ' ', h('span', { class: 'muted', title: `imported ${s.importedAt}` }, '(imported)')] : s.kind,
        s.state === 'ready' ? bytes(s.sizeBytes) : badge(s.state),
        s.pinned ? h('span', { class: 'pin' }, 'pinned') : 'no',
        s.deploymentId
          ? h('a', { href: `#/projects/${seg(env.projectId)}/deployments/${seg(s.deploymentId)}` }, shortId(s.deploymentId))
          : '—',
        s.commitSha ? h('code', {}, shortSha(s.commitSha)) : '—',
        s.state === 'ready' ? h('div', { class: 'row-actions' },
          instance ? h('button', {
            type: 'button', class: 'small danger', data: { action: 'restore', snapshot: s.id },
            'aria-label': `Restore snapshot ${shortId(s.id)}`,
            on: {
              click: () => restoreDialog({
                id: 'restore-dialog',
                planId: 'restore-plan',
                heading: `Restore snapshot ${shortId(s.id)}?`,
                intro: `The database and filestore of ${env.name} become those of this snapshot.`,
                confirmLabel: 'Restore',
                path: `${base}/snapshots/${seg(s.id)}/restore`,
                body: {},
                project: env.projectId,
                signal,
              }),
            },
          }, 'Restore') : null,
          h('button', {
            type: 'button', class: 'small', data: { action: s.pinned ? 'unpin' : 'pin', snapshot: s.id },
            'aria-label': `${s.pinned ? 'Unpin' : 'Pin'} snapshot ${shortId(s.id)}`,
            on: { click: () => act('POST', `${base}/snapshots/${seg(s.id)}/${s.pinned ? 'unpin' : 'pin'}`, () => `Snapshot ${shortId(s.id)} ${s.pinned ? 'unpinned' : 'pinned'}.`) },
          }, s.pinned ? 'Unpin' : 'Pin'),
          h('button', {
            type: 'button', class: 'small danger', data: { action: 'delete', snapshot: s.id },
            'aria-label': `Delete snapshot ${shortId(s.id)}`,
            on: {
              click: () => confirmDialog({
                id: 'delete-snapshot',
                heading: `Delete snapshot ${shortId(s.id)}?`,
                body: [h('p', {}, 'Snapshot ', h('code', {}, s.id), ` (${s.kind}, ${bytes(s.sizeBytes)}) is removed from the agent's disk.`),
                  s.deploymentId ? h('p', {}, 'The deployment it was taken for can no longer be rolled back.') : null],
                confirmLabel: 'Delete',
                danger: true,
                onConfirm: () => act('DELETE', `${base}/snapshots/${seg(s.id)}`, (r) => `Deleted; freed ${bytes(r.freedBytes)}.`),
              }),
            },
          }, 'Delete')) : (s.error ? h('span', { class: 'reason' }, s.error) : ''),
      ],
    }));
    fill(listRegion,
      answer.source === 'cache'
        ? message(`The agent did not answer (${answer.agentError}); this is the coordinator's last known list.`, 'warning')
        : null,
      rows.length
        ? table('Snapshots, newest first', ['Taken', 'Kind', 'Size', 'Pinned', 'Deployment', 'Commit', 'Actions'], rows)
        : message('No snapshot yet.'));
    if (answer.snapshots.some((s) => s.state === 'creating') && !polling) {
      polling = true;
      setTimeout(() => { polling = false; if (!signal.aborted) load(); }, 2000);
    }
  };

  const load = async () => {
    try {
      draw(await api('GET', `${base}/snapshots`, undefined, { signal }));
    } catch (e) {
      if (!signal.aborted) fill(listRegion, message(`Snapshots could not be listed: ${e.message}`, 'error'));
    }
  };

  const take = h('button', {
    type: 'button', id: 'take-snapshot', class: 'primary',
    on: { click: () => act('POST', `${base}/snapshots`, (s) => `Snapshot ${shortId(s.id)} is being taken.`) },
  }, 'Take a snapshot now');
  const estimate = h('button', {
    type: 'button', id: 'estimate-snapshot',
    on: {
      click: async () => {
        fill(estimateRegion, h('p', {}, 'Estimating…'));
        try {
          const e = await api('GET', `${base}/snapshots/estimate`, undefined, { signal });
          fill(estimateRegion, facts([
            ['Estimated snapshot size', h('strong', {}, bytes(e.estimatedBytes))],
            ['Database', bytes(e.databaseBytes)],
            ['New filestore files', bytes(e.newFilestoreBytes)],
            ['Compression (stored / raw)', String(Number(e.compressionRatio.toPrecision(2)))],
            ['Free disk on the agent', bytes(e.freeDiskBytes)],
          ]));
        } catch (err) {
          fill(estimateRegion, message(err.message, 'error'));
        }
      },
    },
  }, 'Estimate size');

  const keepLast = h('input', { id: 'keep-last', name: 'keepLast', type: 'number', min: '0', max: '10000', required: true, value: String(env.snapshotSettings.keepLast), 'aria-describedby': 'retention-help' });
  const keepDays = h('input', { id: 'keep-days', name: 'keepDays', type: 'number', min: '0', max: '36500', required: true, value: String(env.snapshotSettings.keepDays), 'aria-describedby': 'retention-help' });
  const retentionResult = h('div', { id: 'retention-result' });
  const form = h('form', { id: 'retention-form', class: 'card', method: 'post', novalidate: true },
    h('div', { class: 'field-row' },
      h('div', { class: 'field' }, h('label', { for: 'keep-last' }, 'Keep the last'), keepLast),
      h('div', { class: 'field' }, h('label', { for: 'keep-days' }, 'Keep for days'), keepDays)),
    h('p', { id: 'retention-help', class: 'help' }, '0 means no limit. Pinned snapshots are never deleted by retention. Saving applies the settings on the agent at once.'),
    retentionResult,
    h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'save-retention' }, 'Save retention')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const last = Number(keepLast.value);
    const days = Number(keepDays.value);
    const bad = [[keepLast, last, 10000], [keepDays, days, 36500]].filter(([, v, max]) => !Number.isInteger(v) || v < 0 || v > max);
    for (const input of [keepLast, keepDays]) input.removeAttribute('aria-invalid');
    if (bad.length || keepLast.value === '' || keepDays.value === '') {
      for (const [input] of bad) input.setAttribute('aria-invalid', 'true');
      fill(retentionResult, message('Keep the last is 0 to 10000 and keep for days 0 to 36500 (whole numbers).', 'error'));
      return;
    }
    try {
      const r = await api('PUT', `${base}/snapshot-settings`, { keepLast: last, keepDays: days }, { signal });
      const applied = r.retention && r.retention.applied
        ? `Saved and applied: ${r.retention.deletedSnapshotIds.length} snapshot(s) deleted, ${bytes(r.retention.freedBytes)} freed.`
        : `Saved; not applied on the agent now: ${r.retention && r.retention.error}. It applies after the next snapshot.`;
      fill(retentionResult, message(applied, 'success'));
      const summary = document.getElementById('retention-summary');
      if (summary) summary.textContent = retention({ keepLast: r.keepLast, keepDays: r.keepDays });
      await load();
    } catch (err) {
      fill(retentionResult, message(err.message, 'error'));
    }
  });

  load();
  return h('section', { 'aria-labelledby': 'snapshots-h' },
    h('h2', { id: 'snapshots-h' }, 'Snapshots'),
    instance ? h('div', { class: 'actions' }, take, estimate) : null,
    estimateRegion,
    listRegion,
    h('h3', {}, 'Retention'),
    form);
}
