// Building the page: an element helper that only ever sets text (never HTML, so nothing
// from the API can become markup), and the formats every page shares.

/**
 * `h('a', {href: '#/', class: 'x'}, 'text', child)`. Props: `class`, `text`, `on`
 * (event handlers), `data` (dataset), booleans for boolean attributes, and any other
 * attribute as a string. Children are nodes or strings; null and false are skipped.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'on') for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
    else if (key === 'data') for (const [k, v] of Object.entries(value)) el.dataset[k] = v;
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

/** A `<time>` with the local date and time, the exact instant as its tooltip. */
export function time(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return h('time', { datetime: iso, title: iso }, dateTime.format(d));
}

/** A `<time>` saying how long ago `iso` was ("3 min ago"). */
export function ago(iso, now = Date.now()) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return h('time', { datetime: iso, title: dateTime.format(d) }, relative(now - d.getTime()));
}

export function relative(ms) {
  const s = Math.round(ms / 1000);
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const hours = Math.round(m / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.round(hours / 24)} days ago`;
}

/** Milliseconds as "850 ms", "12.3 s" or "4 min 05 s". */
export function duration(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const m = Math.floor(ms / 60000);
  const s = Math.round((ms % 60000) / 1000);
  return `${m} min ${String(s).padStart(2, '0')} s`;
}

/** Bytes in binary units ("12.4 MiB"). */
export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

export function shortSha(sha) {
  return sha ? sha.slice(0, 10) : '—';
}

export function shortId(id) {
  return id ? id.slice(-8) : '—';
}

const STATUS_ICON = {
  succeeded: '✓', completed: '✓', deployed: '✓', connected: '●', ready: '✓',
  failed: '✗', rejected: '✗', refused: '✗', unreachable: '✗',
  running: '▶', creating: '▶', connecting: '…',
  queued: '○', pending: '○', 'pending-enrolment': '○',
  cancelled: '–', skipped: '–', ignored: '–', deleted: '–',
};

/** A status as a badge: an icon for the eye, the word for everyone. */
export function badge(status, extra = '') {
  const s = status || 'unknown';
  return h('span', { class: `badge s-${s} ${extra}`.trim(), data: { status: s } },
    h('span', { class: 'icon', 'aria-hidden': 'true' }, STATUS_ICON[s] || '•'),
    ' ', s);
}

/** A colour (blue or green) as a badge. */
export function color(c) {
  if (!c) return h('span', { class: 'muted' }, 'none yet');
  return h('span', { class: `color c-${c}`, data: { color: c } }, c);
}

/** The reference of a deployment or delivery: "branch main", "tag v1.2". */
export function reference(x) {
  const parts = [];
  if (x.branch) parts.push(h('span', { class: 'ref' }, h('span', { class: 'muted' }, 'branch '), x.branch));
  if (x.tag) parts.push(h('span', { class: 'ref' }, h('span', { class: 'muted' }, 'tag '), x.tag));
  if (!parts.length) return '—';
  return parts;
}

/** A definition list from `[term, value]` pairs (pairs whose value is null are left out). */
export function facts(pairs, cls = 'facts') {
  const dl = h('dl', { class: cls });
  for (const [term, value] of pairs) {
    if (value === null || value === undefined) continue;
    dl.append(h('div', {}, h('dt', {}, term), h('dd', {}, value)));
  }
  return dl;
}

/** A table that turns into stacked cards on a narrow screen (each cell labelled). */
export function table(caption, columns, rows) {
  const head = h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)));
  const body = h('tbody', {}, rows.map(({ cells, attrs }) =>
    h('tr', attrs || {}, cells.map((cell, i) =>
      h('td', { 'data-label': columns[i] }, h('div', { class: 'cell' }, cell))))));
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'responsive' }, h('caption', {}, caption), h('thead', {}, head), body));
}

/** A message box; `role=alert` for errors so screen readers announce them. */
export function message(text, kind = 'info') {
  return h('p', { class: `message m-${kind}`, role: kind === 'error' ? 'alert' : null }, text);
}

/** Breadcrumbs: `[label, href]` pairs, the last one the current page. */
export function crumbs(...items) {
  return h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' },
    h('ol', {}, items.map(([label, href], i) =>
      h('li', {}, i === items.length - 1
        ? h('span', { 'aria-current': 'page' }, label)
        : h('a', { href }, label)))));
}

/** The page's heading, focused after navigation so screen readers start there. */
export function title(text, ...extra) {
  document.title = `${text} · oCore`;
  return h('h1', { tabindex: '-1' }, text, extra);
}

/** Announces `text` in the page's polite live region for a few seconds. */
export function announce(text) {
  const region = document.getElementById('notices');
  if (!region) return;
  region.textContent = text;
  clearTimeout(announce.timer);
  announce.timer = setTimeout(() => { region.textContent = ''; }, 8000);
}

/**
 * A modal confirmation (`<dialog>`: focus stays inside, Escape closes). `body` is filled
 * in now or later through the returned `setBody`; `onConfirm` runs on the confirm button
 * and the dialog closes when it resolves (its error is shown inside otherwise).
 */
export function confirmDialog({ id, heading, body, confirmLabel, cancelLabel = 'Cancel', danger = false, onConfirm }) {
  const error = h('div', { class: 'dialog-error' });
  const content = h('div', { class: 'dialog-body', id: `${id}-body` }, body);
  const confirm = h('button', { type: 'button', class: danger ? 'danger' : 'primary', id: `${id}-confirm` }, confirmLabel);
  const cancel = h('button', { type: 'button', id: `${id}-cancel` }, cancelLabel);
  const dialog = h('dialog', { id, 'aria-labelledby': `${id}-title`, 'aria-describedby': `${id}-body` },
    h('h2', { id: `${id}-title` }, heading), content, error, h('div', { class: 'actions' }, confirm, cancel));
  const close = () => { dialog.close(); dialog.remove(); };
  cancel.addEventListener('click', close);
  dialog.addEventListener('close', () => dialog.remove());
  confirm.addEventListener('click', async () => {
    confirm.disabled = true;
    fill(error);
    try {
      await onConfirm();
      close();
    } catch (e) {
      fill(error, message(e.message, 'error'));
      confirm.disabled = false;
    }
  });
  document.body.append(dialog);
  dialog.showModal();
  cancel.focus();
  return {
    dialog,
    setBody(...children) { fill(content, ...children); },
    enable(on) { confirm.disabled = !on; },
  };
}
