// A line chart of one Series, drawn as inline SVG (no third-party code): the line, broken
// where the figures could not be had, the latest point marked, the scale labelled.

const SVG_NS = 'http://www.w3.org/2000/svg';
const WIDTH = 600;
const HEIGHT = 160;
const LEFT = 44; // room for the scale's labels
const RIGHT = 8;
const TOP = 10;
const BOTTOM = 22; // room for the time labels
const MINUTE_MS = 60 * 1000;

/** Draws the SVG of a chart into `svg` (an empty <svg> element), and returns an updater. */
export function createChart(svg, { windowMs, label, format }) {
  const doc = svg.ownerDocument;
  const make = (tag, attributes = {}) => {
    const node = doc.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    svg.append(node);
    return node;
  };
  svg.setAttribute('viewBox', `0 0 ${WIDTH} ${HEIGHT}`);
  svg.setAttribute('role', 'img');
  const bottom = HEIGHT - BOTTOM;
  make('line', { class: 'chart-grid', x1: LEFT, x2: WIDTH - RIGHT, y1: TOP, y2: TOP });
  make('line', { class: 'chart-axis', x1: LEFT, x2: WIDTH - RIGHT, y1: bottom, y2: bottom });
  const topLabel = make('text', { class: 'chart-label', x: LEFT - 6, y: TOP + 4, 'text-anchor': 'end' });
  make('text', { class: 'chart-label', x: LEFT - 6, y: bottom + 4, 'text-anchor': 'end' }).textContent = '0';
  const minutes = Math.round(windowMs / MINUTE_MS);
  make('text', { class: 'chart-label', x: LEFT, y: HEIGHT - 4 }).textContent = `${minutes} min ago`;
  make('text', { class: 'chart-label', x: WIDTH - RIGHT, y: HEIGHT - 4, 'text-anchor': 'end' }).textContent = 'now';
  const line = make('path', { class: 'chart-line', d: '' });
  const dot = make('circle', { class: 'chart-dot', r: 3.5, cx: -10, cy: -10 });

  /** Redraws for `series` as of `now` (ms, the clock its points were taken with). */
  return function update(series, now) {
    const highest = series.highest;
    const top = niceCeiling(highest === null ? 0 : highest);
    topLabel.textContent = format(top);
    const x = (time) => LEFT + ((time - (now - windowMs)) / windowMs) * (WIDTH - LEFT - RIGHT);
    const y = (value) => bottom - (value / top) * (bottom - TOP);
    let path = '';
    let drawing = false;
    let last = null;
    for (const point of series.points) {
      if (point.value === null) {
        drawing = false;
        continue;
      }
      const px = Math.max(LEFT, x(point.time)).toFixed(1);
      const py = y(point.value).toFixed(1);
      path += `${drawing ? 'L' : 'M'}${px} ${py} `;
      drawing = true;
      last = [px, py];
    }
    line.setAttribute('d', path.trim());
    dot.setAttribute('cx', last ? last[0] : -10);
    dot.setAttribute('cy', last ? last[1] : -10);
    const latest = series.latest;
    // For tests and tools: how many points are drawn, the latest value and the highest.
    svg.setAttribute('data-points', String(series.count));
    svg.setAttribute('data-latest', latest === null ? '' : String(latest));
    svg.setAttribute('data-highest', highest === null ? '' : String(highest));
    svg.setAttribute(
      'aria-label',
      latest === null
        ? `${label}: no figures yet`
        : `${label} over the last ${minutes} minutes: now ${format(latest)}, highest ${format(highest)}`,
    );
  };
}

/** The smallest of 1, 2, 5, 10, 20, 50, ... at or above `value` (at least 1). */
function niceCeiling(value) {
  if (!(value > 1)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}
