// The Deploy form: branch, commit SHA, tag and instance. At least one of the three
// references is needed; the rule is shown beside the fields and checked before sending
// (the API checks it again and its message is shown the same way).

import { api, may, seg, DEPLOY } from '../api.js';
import { h, fill, title, crumbs, message } from '../dom.js';

/** What is wrong with a deploy request, field by field (empty when it may be sent). */
export function problems({ branch, commitSha, tag }) {
  const out = {};
  if (!branch && !commitSha && !tag) {
    out.reference = 'Give at least one of branch, commit SHA or tag.';
  }
  if (commitSha && !/^[0-9a-fA-F]{4,40}$/.test(commitSha)) {
    out.commitSha = 'A commit SHA is 4 to 40 hexadecimal characters.';
  }
  return out;
}

function field(id, label, help, attrs = {}) {
  const input = h('input', {
    id, name: id, type: 'text', autocomplete: 'off', spellcheck: 'false',
    'aria-describedby': `ref-rule ${id}-help ${id}-error`, ...attrs,
  });
  const row = h('div', { class: 'field' },
    h('label', { for: id }, label),
    input,
    h('p', { id: `${id}-help`, class: 'help' }, help),
    h('p', { id: `${id}-error`, class: 'field-error', role: 'alert' }));
  return { row, input };
}

export async function render({ main, params: [project], signal }) {
  const [info, { instances }] = await Promise.all([
    api('GET', `/api/projects/${seg(project)}`, undefined, { signal }),
    api('GET', `/api/instances?projectId=${seg(project)}`, undefined, { signal }),
  ]);
  const head = [
    crumbs(['Projects', '#/'], [info.name, `#/projects/${seg(project)}`], ['Deploy', `#/projects/${seg(project)}/deploy`]),
    title(`Deploy ${info.name}`),
  ];
  if (!may(DEPLOY, project)) {
    fill(main, head, message('This token may not start deployments on this project: that needs manage:deployments.', 'error'));
    return;
  }
  const branch = field('branch', 'Branch', 'Deploys the latest commit of the branch.', { placeholder: 'main' });
  const commit = field('commitSha', 'Commit SHA', '4 to 40 hexadecimal characters; a prefix is fine.',
    { maxlength: '40', placeholder: 'e.g. 3f9c2a1' });
  const tag = field('tag', 'Tag', 'Deploys the tagged commit.', { placeholder: 'v1.4.0' });
  const instance = h('select', { id: 'instanceId', name: 'instanceId', 'aria-describedby': 'instance-help' },
    h('option', { value: '' }, 'Chosen by the branch mapping (or the only instance)'),
    instances.map((i) => h('option', { value: i.id }, `${i.id} (environment ${i.environmentId})`)));
  const referenceError = h('p', { id: 'reference-error', class: 'field-error', role: 'alert' });
  const formError = h('div', { id: 'deploy-error' });
  const submit = h('button', { type: 'submit', class: 'primary', id: 'start-deployment' }, 'Start deployment');
  const form = h('form', { id: 'deploy-form', class: 'card', method: 'post', novalidate: true },
    h('fieldset', { 'aria-describedby': 'ref-rule reference-error' },
      h('legend', {}, 'Reference'),
      h('p', { id: 'ref-rule', class: 'rule' }, 'At least one of branch, commit SHA or tag is required.'),
      branch.row, commit.row, tag.row, referenceError),
    h('div', { class: 'field' },
      h('label', { for: 'instanceId' }, 'Instance'),
      instance,
      h('p', { id: 'instance-help', class: 'help' },
        instances.length ? 'Optional: the instance to deploy to.' : 'This project has no instance yet; an admin adds one with `ocore instance create`.')),
    formError,
    h('div', { class: 'actions' }, submit, h('a', { href: `#/projects/${seg(project)}`, class: 'button' }, 'Cancel')));

  const values = () => ({
    branch: branch.input.value.trim(),
    commitSha: commit.input.value.trim(),
    tag: tag.input.value.trim(),
  });
  const show = (found) => {
    referenceError.textContent = found.reference || '';
    for (const f of [branch, commit, tag]) {
      const msg = f === commit ? found.commitSha : null;
      f.row.querySelector('.field-error').textContent = msg || '';
      if (found.reference || msg) f.input.setAttribute('aria-invalid', 'true');
      else f.input.removeAttribute('aria-invalid');
    }
  };
  let tried = false;
  for (const f of [branch, commit, tag]) {
    // After a first attempt, the messages follow what is typed.
    f.input.addEventListener('input', () => { if (tried) show(problems(values())); });
  }
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    tried = true;
    const v = values();
    const found = problems(v);
    show(found);
    fill(formError);
    if (Object.keys(found).length) {
      (found.reference ? branch.input : commit.input).focus();
      return;
    }
    const body = {};
    for (const [k, val] of Object.entries(v)) if (val) body[k] = val;
    if (instance.value) body.instanceId = instance.value;
    submit.disabled = true;
    try {
      const d = await api('POST', `/api/projects/${seg(project)}/deploy`, body, { signal });
      location.hash = `#/projects/${seg(project)}/deployments/${seg(d.id)}`;
    } catch (err) {
      if (signal.aborted) return;
      fill(formError, message(`The deployment was not started: ${err.message}`, 'error'));
      submit.disabled = false;
    }
  });
  fill(main, head, form);
}
