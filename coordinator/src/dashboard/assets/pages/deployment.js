// One deployment: its facts, and every step with its status, duration and output. While
// the deployment runs, the page follows its event stream and updates in place; the output
// of a step follows its tail unless the reader scrolled up. Cancel and Rollback appear only
// for a token that may use them.

import { api, may, seg, DEPLOY, ENVIRONMENTS } from '../api.js';
import {
  h, fill, title, crumbs, badge, facts, time, duration, shortId, color, reference, announce,
  confirmDialog,
} from '../dom.js';
import { restoreDialog } from '../plan.js';
import { follow } from '../sse.js';
import { apply, isTerminal, replayable } from '../live.js';

const EMPTY_OUTPUT = 'No output yet.';

/** A step's element, updated in place. */
class StepView {
  constructor(step, staticOutput) {
    this.name = step.name;
    this.count = h('span', { class: 'count' });
    this.status = h('span', { class: 'step-status' });
    this.time = h('span', { class: 'step-duration' });
    this.pre = h('pre', { class: 'output', tabindex: '0', 'aria-label': `Output of ${step.name}` });
    this.message = h('p', { class: 'step-message' });
    this.details = h('details', {}, h('summary', {}, 'Output ', this.count), this.pre, this.message);
    this.el = h('li', { class: 'step', data: { step: step.name } },
      h('div', { class: 'step-head' }, h('h3', {}, step.name), this.status, this.time),
      this.details);
    this.lines = 0;
    this.pending = [];
    if (staticOutput) {
      this.pre.textContent = staticOutput;
      this.lines = staticOutput.split('\n').filter((l, i, all) => l || i < all.length - 1).length;
    }
    this.update(step);
  }

  update(step) {
    this.el.dataset.status = step.status;
    fill(this.status, badge(step.status));
    this.time.textContent = step.durationMs !== null && step.durationMs !== undefined ? duration(step.durationMs) : '';
    // The closing message often repeats the last output line; it is shown once.
    if (step.message && step.message.trim() !== this.lastLine()) this.message.textContent = step.message;
    if (step.status === 'running' || step.status === 'failed') this.details.open = true;
    this.counted();
  }

  lastLine() {
    const text = this.pending.length ? this.pending[this.pending.length - 1] : this.pre.textContent.trimEnd().split('\n').pop();
    return (text || '').trim();
  }

  counted() {
    this.count.textContent = this.lines ? `(${this.lines} line${this.lines === 1 ? '' : 's'})` : '';
    if (!this.lines && !this.pre.textContent) this.pre.dataset.empty = EMPTY_OUTPUT;
    else delete this.pre.dataset.empty;
  }

  /** Queues a line; lines are drawn once per frame, then the tail is followed. */
  line(text) {
    this.pending.push(text);
    if (this.pending.length === 1) requestAnimationFrame(() => this.flush());
  }

  flush() {
    if (!this.pending.length) return;
    const pre = this.pre;
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
    pre.append(this.pending.join('\n') + '\n');
    this.lines += this.pending.length;
    this.pending = [];
    if (atBottom) pre.scrollTop = pre.scrollHeight;
    this.counted();
  }
}

function commitFacts(d) {
  if (!d.commitSha) return null;
  const subject = (d.commitMessage || '').split('\n')[0];
  return [h('code', { class: 'sha' }, d.commitSha), subject ? h('span', {}, ' ', subject) : null,
    d.commitAuthor ? h('span', { class: 'muted' }, ` — ${d.commitAuthor}`) : null];
}

function plan(p) {
  if (!p) return null;
  const how = p.initializeDatabase
    ? `initialize the database (${p.demoData ? 'WITH demo data' : 'without demo data'}, language ${p.language || 'en_US'})`
    : p.maintenanceWindow
      ? `maintenance window; odoo -u ${p.modulesToUpdate.join(', ')}`
      : 'zero downtime (no installed module changed)';
  const why = (p.modules || []).map((m) => h('li', { data: { module: m.name, reason: m.reason } }, h('code', {}, m.name), `: ${m.detail}`));
  const head = p.targetColor ? [how, ' → ', color(p.targetColor)] : [how];
  return why.length ? [...head, h('ul', { class: 'plan-modules' }, why)] : head;
}

function trigger(d, project) {
  if (d.triggerType === 'rollback' && d.rollbackOf) {
    return ['rollback of ', h('a', { href: `#/projects/${seg(project)}/deployments/${seg(d.rollbackOf)}` }, shortId(d.rollbackOf))];
  }
  if (d.triggerType === 'rollback' && d.restoredSnapshotId) {
    return ['restore of snapshot ', h('a', { href: `#/environments/${seg(d.environmentId)}` }, h('code', {}, shortId(d.restoredSnapshotId))),
      d.requestedBy ? ` (by ${d.requestedBy})` : null];
  }
  return d.requestedBy ? `${d.triggerType} (by ${d.requestedBy})` : d.triggerType;
}

function headerFacts(d, project) {
  return facts([
    ['Status', [badge(d.status), d.statusReason ? h('span', { class: 'reason' }, ' ', d.statusReason) : null]],
    ['Trigger', trigger(d, project)],
    ['Reference', reference(d)],
    ['Commit', commitFacts(d)],
    ['Plan', plan(d.plan)],
    ['Instance', [h('code', {}, d.instanceId), ' in environment ',
      h('a', { href: `#/environments/${seg(d.environmentId)}` }, d.environmentId)]],
    ['Instance serves now', h('span', { id: 'active-color' }, color(d.activeColor))],
    ['Restores snapshot', d.restoredSnapshotId ? h('code', { id: 'restored-snapshot-id' }, d.restoredSnapshotId) : null],
    ['Pre-deploy snapshot', d.snapshotId ? h('code', { id: 'snapshot-id' }, d.snapshotId) : null],
    ['Image', d.imageRef ? h('code', {}, d.imageRef) : null],
    ['Created', time(d.createdAt)],
    ['Started', d.startedAt ? time(d.startedAt) : null],
    ['Finished', d.finishedAt ? time(d.finishedAt) : null],
    ['Duration', d.durationMs !== null && d.durationMs !== undefined ? duration(d.durationMs) : null],
  ]);
}

function rollbackDialog(project, d, signal) {
  return restoreDialog({
    id: 'rollback-dialog',
    planId: 'rollback-restores',
    heading: `Roll back deployment ${shortId(d.id)}?`,
    intro: 'The environment goes back to how it was before this deployment.',
    confirmLabel: 'Roll back',
    path: `/api/projects/${seg(project)}/rollback`,
    body: { deploymentId: d.id },
    project,
    signal,
  });
}

export async function render({ main, params: [project, id], signal }) {
  const path = `/api/projects/${seg(project)}/deployments/${seg(id)}`;
  const detail = await api('GET', path, undefined, { signal });
  const live = !isTerminal(detail.status);
  const model = live ? replayable(detail) : detail;

  const headerRegion = h('div', { id: 'deployment-facts' });
  const actions = h('div', { class: 'actions', id: 'deployment-actions' });
  const liveLine = h('p', { id: 'live', class: 'live', role: 'status', data: { state: live ? 'connecting' : 'finished', reconnects: '0' } },
    live ? 'Connecting to the live event stream…' : 'This deployment has finished.');
  const stepsList = h('ol', { class: 'steps', id: 'steps' });
  const views = model.steps.map((s) => new StepView(s, live ? null : s.output));
  stepsList.append(...views.map((v) => v.el));

  const drawHeader = () => fill(headerRegion, headerFacts(model, project));
  const drawActions = () => {
    const buttons = [];
    if (!isTerminal(model.status) && may(DEPLOY, project) && !model.cancelRequested) {
      buttons.push(h('button', {
        type: 'button', id: 'cancel',
        on: {
          click: () => confirmDialog({
            id: 'cancel-dialog',
            heading: `Cancel deployment ${shortId(model.id)}?`,
            body: h('p', {}, 'A queued deployment is dropped. A running one is stopped by its agent, which keeps the old version serving (or restores it).'),
            confirmLabel: 'Cancel the deployment',
            cancelLabel: 'Let it run',
            danger: true,
            onConfirm: async () => {
              await api('POST', `${path}/cancel`, {}, { signal });
              model.cancelRequested = true;
              drawActions();
              announce('Cancellation requested.');
            },
          }),
        },
      }, 'Cancel'));
    }
    if (isTerminal(model.status) && model.snapshotId && may(ENVIRONMENTS, project)) {
      buttons.push(h('button', {
        type: 'button', id: 'rollback', class: 'danger',
        on: { click: () => rollbackDialog(project, model, signal) },
      }, 'Rollback…'));
    }
    fill(actions, buttons);
  };
  drawHeader();
  drawActions();
  fill(main,
    crumbs(['Projects', '#/'], [project, `#/projects/${seg(project)}`], [`Deployment ${shortId(id)}`, `#${path.slice(4)}`]),
    h('div', { class: 'page-head' }, title(`Deployment ${shortId(id)}`, ' ', h('span', { id: 'status' }, badge(model.status))), actions),
    headerRegion,
    h('h2', {}, 'Steps'),
    liveLine,
    stepsList);
  if (!live) return;

  const onStatus = ({ state, reconnects, error, last }) => {
    liveLine.dataset.state = state;
    liveLine.dataset.reconnects = String(reconnects);
    const again = reconnects ? ` Reconnected ${reconnects} time${reconnects === 1 ? '' : 's'}.` : '';
    liveLine.textContent = {
      connecting: 'Connecting to the live event stream…',
      live: `Live: steps and output update as they happen.${again}`,
      reconnecting: `Connection lost; reconnecting and resuming after event ${last}…`,
      ended: `The deployment has finished.${again}`,
      failed: `The live event stream was refused: ${error && error.message}`,
    }[state] || state;
  };
  const onEvent = (ev) => {
    let data;
    try {
      data = JSON.parse(ev.data);
    } catch {
      return;
    }
    const change = apply(model, ev.event, data);
    if (change.added) {
      const s = model.steps[model.steps.length - 1];
      const v = new StepView(s, null);
      views.push(v);
      stepsList.append(v.el);
    }
    if (change.step !== undefined) views[change.step].update(model.steps[change.step]);
    if (change.log !== undefined) views[change.log].line(change.line);
    if (change.header || change.step !== undefined) {
      fill(document.getElementById('status') || h('span'), badge(model.status));
      drawHeader();
    }
    if (change.finished) {
      fill(document.getElementById('status') || h('span'), badge(model.status));
      announce(`Deployment ${shortId(model.id)} ${model.status}.`);
    }
  };
  // A queued deployment sends no event until it starts; its reason for waiting (an earlier
  // deployment, an agent away) is in the record, so read it now and then.
  (async () => {
    while (!signal.aborted && model.status === 'queued') {
      await new Promise((r) => setTimeout(r, 3000));
      if (signal.aborted || model.status !== 'queued') return;
      try {
        const now = await api('GET', path, undefined, { signal });
        if (model.status === 'queued') {
          model.statusReason = now.statusReason;
          drawHeader();
        }
      } catch {
        return;
      }
    }
  })();
  follow(`${path}/events`, {
    onEvent,
    onStatus,
    isLast: (ev) => ev.event === 'finished',
    signal,
  }).then(async () => {
    if (signal.aborted || !isTerminal(model.status)) return;
    // The record's final fields (times, colour, image) as the coordinator stored them.
    try {
      const final = await api('GET', path, undefined, { signal });
      for (const key of ['status', 'statusReason', 'finishedAt', 'startedAt', 'durationMs', 'activeColor',
        'imageRef', 'snapshotId', 'commitSha', 'commitMessage', 'commitAuthor', 'plan', 'cancelRequested']) {
        model[key] = final[key];
      }
      fill(document.getElementById('status') || h('span'), badge(model.status));
      drawHeader();
      drawActions();
      liveLine.dataset.state = 'finished';
    } catch {
      // The page stays as the events left it.
    }
  });
}
