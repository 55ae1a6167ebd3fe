// Reads what /metrics serves (the Prometheus text format) into plain numbers for the status
// page: only the chat's own samples (trio_chat_*); the process metrics are left to Prometheus.

const PREFIX = 'trio_chat_';
// name{label="value",...} value [timestamp]
const SAMPLE = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$/;
const LABEL = /\s*([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?/y;
const ESCAPES = { '\\\\': '\\', '\\"': '"', '\\n': '\n' };
const SPECIAL_VALUES = { '+Inf': Infinity, '-Inf': -Infinity, NaN: NaN };

/**
 * The trio_chat_* samples of `text`, by sample name: a list of `{ labels, value }` each.
 * Lines it cannot read are skipped: the page shows what it can.
 */
export function parseMetrics(text) {
  const samples = new Map();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line.startsWith(PREFIX)) continue; // comments, blank lines, other metrics
    const match = SAMPLE.exec(line);
    if (!match) continue;
    const labels = parseLabels(match[2] || '');
    const value = match[3] in SPECIAL_VALUES ? SPECIAL_VALUES[match[3]] : Number(match[3]);
    if (labels === null || Number.isNaN(value)) continue;
    if (!samples.has(match[1])) samples.set(match[1], []);
    samples.get(match[1]).push({ labels, value });
  }
  return samples;
}

function parseLabels(text) {
  const labels = {};
  LABEL.lastIndex = 0;
  while (LABEL.lastIndex < text.length) {
    const start = LABEL.lastIndex;
    const match = LABEL.exec(text);
    if (!match || LABEL.lastIndex === start) return null;
    labels[match[1]] = match[2].replace(/\\[\\"n]/g, (escape) => ESCAPES[escape]);
  }
  return labels;
}

/** The value of the sample `name` without labels, or null if there is none. */
export function single(samples, name) {
  const found = (samples.get(name) || []).find((sample) => Object.keys(sample.labels).length === 0);
  return found ? found.value : null;
}

/** The samples of `name` as [label value, value] pairs, by the label `label`. */
export function byLabel(samples, name, label) {
  return (samples.get(name) || [])
    .filter((sample) => label in sample.labels)
    .map((sample) => [sample.labels[label], sample.value]);
}
