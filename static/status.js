// The status page: polls /metrics (the whole server's figures, whichever worker answers),
// shows them as text, and plots connections and messages per second over the last minutes.
//
// The page keeps what it plots itself (status-series.js): nothing is stored on the server for
// it, so a page opened now starts with an empty chart. When /metrics cannot be had (the server
// is down, or this address may not read it), the page says why, leaves a gap in the charts,
// and keeps asking: it recovers by itself.

import { createChart } from './status-chart.js';
import { byLabel, parseMetrics, single } from './status-metrics.js';
import { RateMeter, Series, WINDOW_MS } from './status-series.js';
import { CLOSE_REASONS } from './texts.js';

const METRICS_URL = '/metrics';
const POLL_MS = 2_000;
// A scrape takes a few milliseconds; one that takes this long is as good as failed.
const FETCH_TIMEOUT_MS = 5_000;
const MORE_REASONS = { 1005: 'closed without a code', other: 'codes of the client’s own' };
const PROBLEMS = {
  403: ['forbidden', 'Forbidden: this address may not read the server’s figures (TRIO_CHAT_METRICS limits them to an allowlist).'],
  404: ['off', 'The server’s figures are turned off (TRIO_CHAT_METRICS=off).'],
  // The worker that answered cannot reach the hub, which adds up every worker's figures.
  503: ['unreachable', 'The server cannot add up its figures right now: its hub cannot be reached.'],
};

const whole = new Intl.NumberFormat('en', { maximumFractionDigits: 0 });
const fine = new Intl.NumberFormat('en', { maximumFractionDigits: 1 });
const formatRate = (value) => (value < 10 ? fine : whole).format(value);
const clock = new Intl.DateTimeFormat(undefined, { timeStyle: 'medium' });

function main() {
  const $ = (id) => document.getElementById(id);
  const connections = new Series(WINDOW_MS);
  const messageRates = new Series(WINDOW_MS);
  const published = new RateMeter();
  const drawConnections = createChart($('connections-chart'), {
    windowMs: WINDOW_MS,
    label: 'Connections',
    format: (value) => whole.format(value),
  });
  const drawMessages = createChart($('messages-chart'), {
    windowMs: WINDOW_MS,
    label: 'Messages published per second',
    format: formatRate,
  });
  let lastGood = null; // when figures last came

  function redraw(now) {
    drawConnections(connections, now);
    drawMessages(messageRates, now);
  }

  function showFigures(samples, now) {
    const total = single(samples, 'trio_chat_connections');
    const rate = published.update(now, single(samples, 'trio_chat_messages_published_total') ?? 0);
    connections.add(now, total);
    messageRates.add(now, rate);
    $('connections').textContent = total === null ? '—' : whole.format(total);
    $('message-rate').textContent = rate === null ? 'measuring…' : formatRate(rate);
    const rooms = single(samples, 'trio_chat_rooms');
    $('rooms').textContent = rooms === null ? 'not known' : whole.format(rooms);
    const workers = single(samples, 'trio_chat_workers');
    $('workers').textContent = workers === null ? '—' : whole.format(workers);
    showWorkers(samples);
    showDisconnects(samples);
    lastGood = Date.now();
    $('updated').textContent = `Updated ${clock.format(lastGood)}, every ${POLL_MS / 1000} s.`;
  }

  function showWorkers(samples) {
    const hubUp = new Map(byLabel(samples, 'trio_chat_hub_up', 'worker'));
    const rows = byLabel(samples, 'trio_chat_worker_connections', 'worker')
      .sort(([a], [b]) => Number(a) - Number(b))
      .map(([pid, count]) => [pid, whole.format(count), hubUp.get(pid) === 1 ? 'up' : 'down']);
    const up = rows.filter((row) => row[2] === 'up').length;
    $('hub').textContent = rows.length ? `up on ${up} of ${rows.length} workers` : '—';
    $('hub').dataset.state = up === rows.length ? 'ok' : 'bad';
    fillRows($('worker-rows'), rows, 'No worker has reported yet.');
  }

  function showDisconnects(samples) {
    const rows = byLabel(samples, 'trio_chat_disconnects_total', 'code')
      .filter(([, count]) => count > 0)
      .sort(([a], [b]) => codeOrder(a) - codeOrder(b))
      .map(([code, count]) => [code, CLOSE_REASONS[code] || MORE_REASONS[code] || '', whole.format(count)]);
    fillRows($('disconnect-rows'), rows, 'None yet.');
  }

  function showProblem(kind, text, now) {
    connections.add(now, null);
    messageRates.add(now, null);
    published.forget();
    setState('offline', kind);
    const since = lastGood === null ? '' : ` The figures shown are from ${clock.format(lastGood)}.`;
    $('problem').dataset.kind = kind;
    $('problem').textContent = `${text} Trying again every ${POLL_MS / 1000} s.${since}`;
  }

  function setState(state, text) {
    $('state').dataset.state = state;
    $('state-text').textContent = text;
  }

  async function poll() {
    let response;
    try {
      response = await fetch(METRICS_URL, {
        cache: 'no-store',
        headers: { accept: 'text/plain' },
        signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
      });
      const now = performance.now();
      if (!response.ok) {
        const [kind, text] = PROBLEMS[response.status] || [
          'unreachable',
          `The server answered ${response.status} for ${METRICS_URL}.`,
        ];
        showProblem(kind, text, now);
      } else {
        showFigures(parseMetrics(await response.text()), now);
        setState('online', 'live');
        $('problem').textContent = '';
        delete $('problem').dataset.kind;
      }
    } catch {
      showProblem('unreachable', `Cannot reach the server’s figures at ${METRICS_URL}.`, performance.now());
    }
    redraw(performance.now());
    setTimeout(poll, POLL_MS);
  }

  poll();
}

// Close codes in order, and "other" (codes of clients' own, added up) last.
function codeOrder(code) {
  return code === 'other' ? Infinity : Number(code);
}

/** Replaces the rows of `tbody` with `rows` (lists of cell texts), or one row saying `empty`. */
function fillRows(tbody, rows, empty) {
  const doc = tbody.ownerDocument;
  const trs = rows.map((cells) => {
    const tr = doc.createElement('tr');
    for (const text of cells) {
      const td = doc.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  });
  if (!trs.length) {
    const tr = doc.createElement('tr');
    const td = doc.createElement('td');
    td.colSpan = tbody.closest('table').querySelectorAll('th').length;
    td.className = 'empty-row';
    td.textContent = empty;
    tr.append(td);
    trs.push(tr);
  }
  tbody.replaceChildren(...trs);
}

main();
