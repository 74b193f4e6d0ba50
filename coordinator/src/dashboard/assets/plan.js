// The confirmation of a rollback or a snapshot restore. What it says comes from the API's
// own `dryRun` answer (the snapshot, the image and commit that come back, and the
// coordinator's notes), so the page can never disagree with what the server will do.

import { api, seg } from './api.js';
import { h, time, bytes, shortSha, shortId, message, confirmDialog } from './dom.js';

/** The plan as list items: database and filestore, code, and the server's notes. */
export function planItems(plan) {
  const s = plan.snapshot || {};
  const r = plan.returnsTo || {};
  const extra = [s.sizeBytes !== undefined ? bytes(s.sizeBytes) : null, s.kind,
    s.importedAt ? 'imported' : null].filter(Boolean).join(', ');
  const snap = ['snapshot ', h('code', {}, s.id || plan.snapshotId),
    s.createdAt ? [', taken ', time(s.createdAt)] : null, extra ? ` (${extra})` : null];
  const subject = (r.commitMessage || '').split('\n')[0];
  const deployment = r.deploymentId
    ? h('a', { href: `#/projects/${seg(plan.projectId)}/deployments/${seg(r.deploymentId)}` }, `deployment ${shortId(r.deploymentId)}`)
    : null;
  const code = [
    plan.imageSource === 'current' ? 'keeps the image serving now, ' : 'image ',
    h('code', {}, r.imageRef), ', commit ', h('code', {}, shortSha(r.commitSha)),
    subject ? ` “${subject}”` : '',
    deployment ? [', deployed by ', deployment] : null,
    r.finishedAt ? [' on ', time(r.finishedAt)] : null,
  ];
  return [
    h('li', {}, h('strong', {}, 'Database and filestore: '), snap, '.'),
    h('li', { data: { image: plan.imageSource || '' } }, h('strong', {}, 'Code: '), code, '.'),
    ...(plan.notes || []).map((n) => h('li', { class: 'note' }, h('strong', {}, 'Note: '), n, '.')),
  ];
}

/**
 * Asks `path` with `{...body, dryRun: true}` for the plan, shows it in a confirmation,
 * and on confirm sends `body` to `path` and opens the deployment it queued. A refused
 * plan (409: no image yet, snapshot gone) is shown as the reason, with no way to confirm.
 */
export async function restoreDialog({ id, planId, heading, intro, confirmLabel, path, body, project, signal }) {
  const box = confirmDialog({
    id,
    heading,
    body: h('p', {}, 'Asking the coordinator what will be restored…'),
    confirmLabel,
    cancelLabel: 'Keep the current state',
    danger: true,
    onConfirm: async () => {
      const d = await api('POST', path, body, { signal });
      location.hash = `#/projects/${seg(project)}/deployments/${seg(d.id)}`;
    },
  });
  box.enable(false);
  let plan;
  try {
    plan = await api('POST', path, { ...body, dryRun: true }, { signal });
  } catch (e) {
    if (signal && signal.aborted) return;
    box.setBody(h('div', { id: planId, class: 'refused' }, message(`This cannot be restored now: ${e.message}`, 'error')));
    return;
  }
  box.setBody(
    h('p', {}, intro, ' Instance ', h('code', {}, plan.instanceId), ' (environment ', plan.environmentId, ') gets:'),
    h('ul', { id: planId, data: { imageSource: plan.imageSource || '' } }, planItems(plan)),
    h('p', {}, 'The current database and filestore are snapshotted first, so this can be undone. ',
      'Visitors see a maintenance page while the snapshot is restored.'));
  box.enable(true);
}
