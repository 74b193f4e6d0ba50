// Server-Sent Events over fetch(). EventSource cannot send an Authorization header, so the
// stream is read with fetch() and a ReadableStream and parsed here. After a disconnect the
// reader reconnects with Last-Event-ID set to the last event it handed out, and drops any
// event at or below it, so no event is lost or seen twice.

import { ApiError, authHeaders, errorOf } from './api.js';

/** The SSE wire format (the HTML standard's "event stream interpretation"). */
export class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = '';
    this.started = false;
    this.data = [];
    this.event = '';
    this.lastId = '';
    this.retry = null;
  }

  /** Feeds decoded text, in chunks of any size (a line or a CRLF may be split). */
  push(text) {
    let chunk = text;
    if (!this.started && chunk.length) {
      this.started = true;
      if (chunk.charCodeAt(0) === 0xfeff) chunk = chunk.slice(1);
    }
    this.buffer += chunk;
    const eol = /\r\n|\n|\r/g;
    let from = 0;
    let m;
    while ((m = eol.exec(this.buffer)) !== null) {
      // A CR at the very end may be the first half of a CRLF: wait for the next chunk.
      if (m[0] === '\r' && eol.lastIndex === this.buffer.length) break;
      this.line(this.buffer.slice(from, m.index));
      from = eol.lastIndex;
    }
    this.buffer = this.buffer.slice(from);
  }

  line(line) {
    if (line === '') {
      this.dispatch();
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id' && !value.includes('\0')) this.lastId = value;
    else if (field === 'retry' && /^\d+$/.test(value)) this.retry = Number(value);
  }

  dispatch() {
    if (this.data.length === 0) {
      this.event = '';
      return;
    }
    const ev = { id: this.lastId, event: this.event || 'message', data: this.data.join('\n') };
    this.data = [];
    this.event = '';
    this.onEvent(ev);
  }
}

function pause(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

/**
 * Follows the event stream at `url` until `isLast(event)` or `signal` aborts. Events are
 * numbered (`id:` is a sequence number); `from` is the last one already handled.
 * `onStatus({state, reconnects, error})` reports `connecting`, `live`, `reconnecting`,
 * `ended` and `failed` (an answer that retrying cannot fix: 4xx).
 */
export async function follow(url, { from = 0, onEvent, isLast, onStatus, signal }) {
  let last = from;
  let reconnects = 0;
  let failures = 0;
  const status = (state, error) => onStatus && onStatus({ state, reconnects, error, last });
  while (!signal.aborted) {
    status(reconnects ? 'reconnecting' : 'connecting');
    let finished = false;
    try {
      const headers = { Accept: 'text/event-stream', ...authHeaders() };
      if (last > 0) headers['Last-Event-ID'] = String(last);
      const response = await fetch(url, { headers, signal, cache: 'no-store' });
      if (response.status >= 400 && response.status < 500) {
        status('failed', await errorOf(response));
        return last;
      }
      if (!response.ok || !response.body) throw new ApiError(response.status, 'http', 'bad answer');
      failures = 0;
      status('live');
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new SseParser((ev) => {
        const seq = Number(ev.id);
        if (!Number.isSafeInteger(seq) || seq <= last) return;
        last = seq;
        onEvent(ev);
        if (isLast(ev)) finished = true;
      });
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(value);
        if (finished) {
          reader.cancel().catch(() => {});
          break;
        }
      }
    } catch (e) {
      if (signal.aborted) return last;
      // A broken connection or a coordinator that is restarting: try again below.
    }
    if (finished) {
      status('ended');
      return last;
    }
    if (signal.aborted) return last;
    reconnects += 1;
    failures += 1;
    status('reconnecting');
    await pause(Math.min(250 * 2 ** Math.min(failures, 5), 5000), signal);
  }
  return last;
}
