// Charts as SVG text: attributes only (no inline style), so the page's
// Content-Security-Policy needs no exception. Stable is solid, canary
// dashed, the limit dotted; verdict marks differ by shape, not only colour.

export function esc(s) {
  return String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

const W = 560, H = 200, L = 58, R = 12, T = 12, B = 40;

function scaleY(max) {
  return (v) => T + (H - T - B) * (1 - v / max);
}

function path(points) {
  let d = "", pen = false;
  for (const p of points) {
    if (p == null) { pen = false; continue; }
    d += (pen ? "L" : "M") + p[0].toFixed(1) + " " + p[1].toFixed(1) + " ";
    pen = true;
  }
  return d.trim();
}

function clock(t) {
  const d = new Date(t);
  return isNaN(d) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function mark(x, y, verdict, label) {
  const t = "<title>" + esc(label) + "</title>";
  if (verdict === "fail") {
    return `<g class="m-fail"><path d="M${x - 5} ${y - 5}L${x + 5} ${y + 5}M${x + 5} ${y - 5}L${x - 5} ${y + 5}" stroke="currentColor" class="m-fail-x"/><rect x="${x - 5}" y="${y - 5}" width="10" height="10" opacity="0.25"/>${t}</g>`;
  }
  if (verdict === "pass") return `<circle class="m-pass" cx="${x}" cy="${y}" r="4">${t}</circle>`;
  return `<path class="m-inconclusive" d="M${x} ${y - 5}L${x + 5} ${y + 4}L${x - 5} ${y + 4}Z">${t}</path>`;
}

// One check over the intervals: `times` (interval ends, may be null),
// `series` [{cls, label, values}], `limit` values, `verdicts` per interval,
// `fmt` for the axis.
export function checkChart({ title, times, series, limit, verdicts, fmt }) {
  const n = times.length;
  const all = [];
  for (const s of series) for (const v of s.values) if (v != null && isFinite(v)) all.push(v);
  for (const v of limit || []) if (v != null && isFinite(v)) all.push(v);
  const max = Math.max(1e-9, ...all) * 1.15;
  const y = scaleY(max);
  const x = (i) => (n <= 1 ? L + (W - L - R) / 2 : L + (W - L - R) * (i / (n - 1)));
  let svg = `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}"><title>${esc(title)}</title>`;
  svg += `<line class="axis" x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}"/><line class="axis" x1="${L}" y1="${T}" x2="${L}" y2="${H - B}"/>`;
  for (const f of [0, 0.5, 1]) {
    const v = (max / 1.15) * f;
    svg += `<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${esc(fmt(v))}</text>`;
  }
  if (n > 0) {
    svg += `<text x="${L}" y="${H - B + 16}">${esc(clock(times[0]))}</text>`;
    if (n > 1) svg += `<text x="${W - R}" y="${H - B + 16}" text-anchor="end">${esc(clock(times[n - 1]))}</text>`;
  }
  if (limit && limit.some((v) => v != null)) {
    svg += `<path class="limit" d="${path(limit.map((v, i) => (v == null ? null : [x(i), y(v)])))}"/>`;
  }
  for (const s of series) {
    svg += `<path class="${s.cls}" d="${path(s.values.map((v, i) => (v == null || !isFinite(v) ? null : [x(i), y(v)])))}"/>`;
    if (n === 1 && s.values[0] != null) svg += `<circle class="${s.cls}" cx="${x(0)}" cy="${y(s.values[0])}" r="3"/>`;
  }
  (verdicts || []).forEach((v, i) => {
    if (!v) return;
    svg += mark(x(i), H - B + 28, v, `${clock(times[i])}: ${v}`);
  });
  return svg + "</svg>";
}

// The canary weight over time: a step line from `points` [{t, w}] to `end`.
export function weightChart(points, end) {
  if (!points.length) return '<p class="muted">No weight change yet in this run.</p>';
  const t0 = points[0].t, t1 = Math.max(end, points[points.length - 1].t + 1);
  const x = (t) => L + (W - L - R) * ((t - t0) / (t1 - t0));
  const y = scaleY(100);
  const pts = [];
  points.forEach((p, i) => {
    if (i > 0) pts.push([x(p.t), y(points[i - 1].w)]);
    pts.push([x(p.t), y(p.w)]);
  });
  pts.push([x(t1), y(points[points.length - 1].w)]);
  let svg = `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="canary weight over time"><title>canary weight over time</title>`;
  svg += `<line class="axis" x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}"/><line class="axis" x1="${L}" y1="${T}" x2="${L}" y2="${H - B}"/>`;
  for (const v of [0, 50, 100]) svg += `<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${v}%</text>`;
  svg += `<text x="${L}" y="${H - B + 16}">${esc(clock(t0))}</text><text x="${W - R}" y="${H - B + 16}" text-anchor="end">${esc(clock(t1))}</text>`;
  svg += `<path class="weight" d="${path(pts)}"/>`;
  return svg + "</svg>";
}

// A small weight bar (attributes only).
export function weightBar(w) {
  const v = Math.max(0, Math.min(100, Number(w) || 0));
  return `<svg class="wbar" viewBox="0 0 100 10" width="100" height="10" aria-hidden="true"><rect class="wbg" width="100" height="10" rx="3"/><rect class="wfg" width="${v}" height="10" rx="3"/></svg>`;
}
