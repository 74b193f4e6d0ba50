// A deployment as the detail page shows it, kept up to date by its events. `apply` folds
// one event into the model (as the coordinator's `Deployment::apply` does) and says what
// changed, so the page redraws only that.

/** A model of `detail` (the API's deployment), ready to replay its events from the start. */
export function replayable(detail) {
  return {
    ...detail,
    steps: (detail.steps || []).map((s) => ({
      name: s.name,
      status: 'pending',
      startedAt: null,
      completedAt: null,
      durationMs: null,
      message: null,
      lines: [],
    })),
  };
}

function step(model, name) {
  let i = model.steps.findIndex((s) => s.name === name);
  if (i < 0) {
    model.steps.push({
      name, status: 'pending', startedAt: null, completedAt: null, durationMs: null, message: null, lines: [],
    });
    i = model.steps.length - 1;
  }
  return i;
}

/**
 * Applies one event (`{event, data}` with `data` the parsed JSON) to `model`. Returns
 * `{step: index, added: true}` when a step was added, `{step: index}` for a step's state,
 * `{log: index, line}` for an output line, `{header: true}` for the deployment's own
 * fields, `{finished: true}` at the end.
 */
export function apply(model, name, data) {
  switch (name) {
    case 'step': {
      const before = model.steps.length;
      const i = step(model, data.name);
      const s = model.steps[i];
      s.status = data.status;
      if (data.startedAt) s.startedAt = data.startedAt;
      else if (data.status === 'running') s.startedAt = data.at;
      if (['completed', 'failed', 'skipped'].includes(data.status)) {
        s.completedAt = data.completedAt || data.at;
        if (data.durationMs !== undefined) s.durationMs = data.durationMs;
        else if (s.startedAt) s.durationMs = Date.parse(s.completedAt) - Date.parse(s.startedAt);
      }
      if (data.message) s.message = data.message;
      if (model.status === 'queued') model.status = 'running';
      if (!model.startedAt) model.startedAt = data.at;
      return { step: i, added: model.steps.length > before };
    }
    case 'log': {
      const before = model.steps.length;
      const i = step(model, data.step);
      model.steps[i].lines.push(data.line);
      return { log: i, line: data.line, added: model.steps.length > before };
    }
    case 'commit':
      model.commitSha = data.commitSha;
      model.commitMessage = data.commitMessage;
      model.commitAuthor = data.commitAuthor;
      return { header: true };
    case 'plan':
      model.plan = {
        modulesToUpdate: data.modulesToUpdate,
        maintenanceWindow: data.maintenanceWindow,
        targetColor: data.targetColor || null,
        initializeDatabase: !!data.initializeDatabase,
        demoData: !!data.demoData,
        language: data.language || null,
        modules: data.modules || [],
      };
      return { header: true };
    case 'snapshot':
      model.snapshotId = data.snapshotId;
      return { header: true };
    case 'image':
      model.imageRef = data.imageRef;
      return { header: true };
    case 'finished':
      model.status = data.status;
      if (data.message) model.statusReason = data.message;
      if (data.activeColor) model.activeColor = data.activeColor;
      if (data.durationMs !== undefined) model.durationMs = data.durationMs;
      model.finishedAt = data.at;
      return { finished: true };
    default:
      return {};
  }
}

export function isTerminal(status) {
  return status === 'succeeded' || status === 'failed' || status === 'cancelled';
}
