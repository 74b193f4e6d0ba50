// The agents and their link status (admin tokens only), refreshed every few seconds.

import { api, session } from '../api.js';
import { h, fill, title, crumbs, table, badge, ago, time, message } from '../dom.js';

export async function render({ main, signal }) {
  const head = [crumbs(['Agents', '#/agents']), title('Agents')];
  if (!session.me.admin) {
    fill(main, head, message('Agents are shown to admin tokens only.', 'error'));
    return;
  }
  const region = h('div', { id: 'agents' });
  const draw = ({ agents }) => {
    const rows = agents.map((a) => ({
      attrs: { data: { agent: a.name, status: a.status } },
      cells: [
        h('strong', {}, a.name),
        [badge(a.status), a.lastError ? h('span', { class: 'reason' }, ` ${a.lastError}`) : null],
        h('code', {}, a.address),
        a.lastSeen ? ago(a.lastSeen) : 'never',
        a.version || '—',
        a.hostname || '—',
        (a.instances || []).map((i) => i.id).join(', ') || '—',
        a.certificateNotAfter ? time(a.certificateNotAfter) : '—',
      ],
    }));
    fill(region, rows.length
      ? table('Agents', ['Agent', 'Connection', 'Address', 'Last seen', 'Version', 'Host', 'Instances', 'Certificate until'], rows)
      : message('No agent yet. Register one with `ocore agent add NAME --address HOST:PORT`.'));
  };
  draw(await api('GET', '/api/agents', undefined, { signal }));
  fill(main, head, h('p', { class: 'help' }, 'Connection status as the coordinator last saw it; refreshed every 5 seconds.'), region);
  (async () => {
    while (!signal.aborted) {
      await new Promise((r) => setTimeout(r, 5000));
      if (signal.aborted) return;
      try {
        draw(await api('GET', '/api/agents', undefined, { signal }));
      } catch {
        return;
      }
    }
  })();
}
