// The list and a rollout's page, as HTML text built from the API's JSON
// (every value escaped). Rows and sections are replaced one at a time, so
// a change to one rollout never redraws a thousand.
import { esc, checkChart, weightChart, weightBar } from "./charts.js";

const PHASES = ["Pending", "Progressing", "Paused", "Inconclusive", "Succeeded", "RolledBack", "Aborted", "Failed"];
const SYMBOL = { Pending: "…", Progressing: "▶", Paused: "❚❚", Inconclusive: "?", Succeeded: "✓", RolledBack: "↩", Aborted: "■", Failed: "✕" };
const VSYMBOL = { pass: "✓", fail: "✕", inconclusive: "?", improved: "▲", unchanged: "=", regressed: "▼", unknown: "?" };
const ENDED = new Set(["Succeeded", "RolledBack", "Aborted", "Failed"]);

export function phaseBadge(p) {
  const phase = p || "Pending";
  return `<span class="badge phase-${esc(phase)}" data-phase="${esc(phase)}"><span aria-hidden="true">${SYMBOL[phase] || "•"}</span>${esc(phase)}</span>`;
}

function verdictBadge(v) {
  return `<span class="badge v-${esc(v)}"><span aria-hidden="true">${VSYMBOL[v] || "•"}</span>${esc(v)}</span>`;
}

export function duration(ms) {
  if (!(ms >= 0)) return "";
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m " + String(s % 60).padStart(2, "0") + "s";
  return Math.floor(m / 60) + "h " + String(m % 60).padStart(2, "0") + "m";
}

function steps(r) {
  const c = r.spec && r.spec.strategy && r.spec.strategy.canary;
  return (c && c.steps) || [];
}

function stepLabel(s) {
  if (s.setWeight != null) return s.setWeight + "%";
  if (s.pause) {
    if (!s.pause.duration) return "pause until resumed";
    return "pause " + s.pause.duration + (s.pause.minimum ? " (≥ " + s.pause.minimum + ")" : "");
  }
  const k = Object.keys(s)[0] || "step";
  return k;
}

function stepText(r) {
  const st = r.status;
  if (!st) return "";
  if (st.strategy === "blueGreen") return st.blueGreen ? "blue-green: " + (st.blueGreen.stage || "") : "blue-green";
  const n = steps(r).length;
  return n ? Math.min((st.currentStepIndex || 0) + 1, n) + "/" + n : "";
}

function lastJudged(st) {
  let best = null;
  for (const t of Object.values((st && st.analysis && st.analysis.templates) || {})) {
    if (t.last && (!best || t.last.end > best.end)) best = t.last;
  }
  return best;
}

function verdictCell(st) {
  const l = lastJudged(st);
  if (!l) return '<span class="muted">—</span>';
  const bad = l.result.metrics.filter((m) => m.verdict !== "pass").map((m) => m.metric);
  return verdictBadge(l.result.verdict) + (bad.length ? ` <span class="muted">${esc(bad.join(", "))}</span>` : "");
}

function rowHtml(r) {
  const st = r.status || {};
  const name = r.metadata.name;
  const since = !ENDED.has(st.phase) && st.stepStartedAt ? st.stepStartedAt : "";
  return `<tr class="row" data-name="${esc(name)}" data-phase="${esc(st.phase || "Pending")}">
<td><a href="#/rollouts/${encodeURIComponent(name)}">${esc(name)}</a></td>
<td>${phaseBadge(st.phase)}</td>
<td class="hide-narrow">${esc(st.revision || r.spec.revision)}</td>
<td class="num">${esc(stepText(r))}</td>
<td class="num">${weightBar(st.canaryWeight)}<span class="w">${esc(st.canaryWeight || 0)}%</span></td>
<td>${verdictCell(st)}</td>
<td class="num age" data-since="${esc(since)}"></td>
<td class="msg hide-narrow">${esc(st.message || "")}</td></tr>`;
}

export function renderList(main, rollouts) {
  const t0 = performance.now();
  const f = main.querySelector(".filters");
  const keep = f ? { name: f.querySelector("#f-name").value, phase: f.querySelector("#f-phase").value } : { name: "", phase: "" };
  const rows = [...rollouts.values()].sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1)).map(rowHtml).join("");
  main.innerHTML = `<h1>Rollouts <span class="muted" id="count"></span></h1>
<div class="filters"><label for="f-name">Name<input id="f-name" type="search" placeholder="filter by name" value="${esc(keep.name)}"></label>
<label for="f-phase">Phase<select id="f-phase"><option value="">every phase</option>${PHASES.map((p) => `<option${p === keep.phase ? " selected" : ""}>${p}</option>`).join("")}</select></label></div>
<div class="tablewrap"><table id="rollouts"><caption class="muted hidden">every rollout</caption><thead><tr><th scope="col">Name</th><th scope="col">Phase</th><th scope="col" class="hide-narrow">Revision</th><th scope="col">Step</th><th scope="col">Canary</th><th scope="col">Last verdict</th><th scope="col">In step</th><th scope="col" class="hide-narrow">Message</th></tr></thead>
<tbody>${rows}</tbody></table></div>
${rollouts.size ? "" : '<p class="muted">No rollouts yet: apply one with <code>rolloutctl apply -f FILE</code>.</p>'}`;
  applyFilters(main);
  tickAges(main);
  performance.measure("rolloutd:render-list", { start: t0 });
}

function filters(main) {
  const name = ((main.querySelector("#f-name") || {}).value || "").toLowerCase();
  const phase = (main.querySelector("#f-phase") || {}).value || "";
  return (tr) => (!name || tr.dataset.name.toLowerCase().includes(name)) && (!phase || tr.dataset.phase === phase);
}

function showCount(main) {
  const c = main.querySelector("#count");
  if (!c) return;
  const all = main.querySelectorAll("tr.row").length;
  const shown = main.querySelectorAll("tr.row:not([hidden])").length;
  c.textContent = shown === all ? `(${all})` : `(${shown} of ${all})`;
}

export function applyFilters(main) {
  const ok = filters(main);
  for (const tr of main.querySelectorAll("tr.row")) tr.hidden = !ok(tr);
  showCount(main);
}

export function updateRow(main, r) {
  const t0 = performance.now();
  const old = main.querySelector(`tr.row[data-name="${CSS.escape(r.metadata.name)}"]`);
  if (!old) return;
  const t = document.createElement("tbody");
  t.innerHTML = rowHtml(r);
  const row = t.firstElementChild;
  row.hidden = !filters(main)(row);
  old.replaceWith(row);
  showCount(main);
  tickAges(row);
  performance.measure("rolloutd:update-row", { start: t0 });
}

export function removeRow(main, name) {
  const old = main.querySelector(`tr.row[data-name="${CSS.escape(name)}"]`);
  if (old) old.remove();
  showCount(main);
}

export function tickAges(root) {
  const now = Date.now();
  for (const td of root.querySelectorAll(".age")) {
    const since = Date.parse(td.dataset.since);
    td.textContent = isNaN(since) ? "" : duration(now - since);
  }
}

// ---- a rollout's page --------------------------------------------------------

function section(main, id) {
  return main.querySelector("#" + id);
}

function skeleton(main, d, canChange, command) {
  main.innerHTML = `<p><a href="#/">← every rollout</a></p>
<div id="d-head"></div>
<div class="card" id="d-controls-card"></div>
<h2>Steps</h2><div id="d-steps"></div>
<h2>Canary weight</h2><div class="card chart" id="d-weight"></div>
<h2>Checks, per interval</h2><div id="d-checks" class="grid"></div>
<h2>Evidence of the last verdict</h2><div class="card" id="d-evidence"></div>
<h2>Runs</h2><div id="d-runs"><p class="muted">Loading…</p></div>
<h2>Events</h2><div id="d-events"></div>`;
  main.dataset.rollout = d.name;
  const card = section(main, "d-controls-card");
  if (!canChange) {
    card.innerHTML = '<p class="muted">Read-only: this token cannot change rollouts.</p>';
    return;
  }
  card.innerHTML = `<div class="controls" role="group" aria-label="overrides">
<button type="button" data-verb="abort" class="danger">Abort</button>
<button type="button" data-verb="promote">Promote</button>
<button type="button" data-verb="promote-full">Promote fully</button>
<button type="button" data-verb="pause">Pause</button>
<button type="button" data-verb="resume">Resume</button>
<button type="button" data-verb="retry">Retry</button></div>
<p class="result" id="d-result" role="status" aria-live="polite"></p>`;
  const result = card.querySelector("#d-result");
  for (const b of card.querySelectorAll("button[data-verb]")) {
    b.addEventListener("click", () => command(d.name, b.dataset.verb, result));
  }
}

function headHtml(d) {
  const r = d.rollout;
  const st = r.status || {};
  return `<h1>${esc(r.metadata.name)} ${phaseBadge(st.phase)}</h1>
<div class="card"><dl class="kv">
<dt>Revision</dt><dd>${esc(st.revision || r.spec.revision)} (run ${esc(st.run || 0)})</dd>
<dt>Canary weight</dt><dd>${weightBar(st.canaryWeight)} ${esc(st.canaryWeight || 0)}%${st.observedWeights ? ` <span class="muted">(load balancer: stable ${esc(st.observedWeights.stable)} / canary ${esc(st.observedWeights.canary)})</span>` : ""}</dd>
${targetsHtml(st)}<dt>Message</dt><dd id="d-message">${esc(st.message || "")}</dd>
<dt>In this step</dt><dd class="age" data-since="${esc(!ENDED.has(st.phase) && st.stepStartedAt ? st.stepStartedAt : "")}"></dd>
<dt>Spec</dt><dd id="source">${esc(r.source || "")}${d.line ? ":" + esc(d.line) : ""}</dd>
</dl></div>`;
}

// A rollout over several load balancers: each target, what was read from
// it, and whether it holds the run's weights (symbol and word, never colour
// alone).
function targetsHtml(st) {
  const targets = st.targets || [];
  if (!targets.length) return "";
  const rows = targets.map((t) => {
    const w = t.observedWeights;
    const seen = w ? `stable ${esc(w.stable)} / canary ${esc(w.canary)}` : "not read yet";
    const holds = t.holdsRunWeights ? "✓ holds the run's weights" : "… not yet at the run's weights";
    return `<li id="target-${esc(t.name)}"><strong>${esc(t.name)}</strong> ${seen} <span class="muted">${holds}</span><br><span class="muted arn">${esc(t.place)}</span></li>`;
  });
  return `<dt>Targets</dt><dd><ul class="targets">${rows.join("")}</ul></dd>`;
}

function stepsHtml(r) {
  const st = r.status || {};
  const list = steps(r);
  if (!list.length) return `<p class="muted">${esc(stepText(r) || "no steps")}</p>`;
  const at = st.currentStepIndex || 0;
  const ended = ENDED.has(st.phase);
  return `<ol class="steps">${list.map((s, i) => {
    const cls = i < at || (ended && st.phase === "Succeeded") ? "done" : i === at && !ended ? "current" : "";
    return `<li class="${cls}"${cls === "current" ? ' aria-current="step"' : ""}>${esc(stepLabel(s))}</li>`;
  }).join("")}</ol>`;
}

function weightPoints(d) {
  const run = (d.rollout.status || {}).run;
  return d.events
    .filter((e) => e.run === run && (e.kind === "WeightSet" || e.kind === "WeightVerified" || e.kind === "RunStarted"))
    .map((e) => ({ t: Date.parse(e.at), w: e.weightAfter }));
}

const FMT = {
  errorRate: (v) => (v * 100).toFixed(v < 0.01 ? 2 : 1) + "%",
  latency: (v) => (v * 1000).toFixed(0) + " ms",
};

function armValue(metric, arm, entry) {
  if (metric === "errorRate") return arm.requests > 0 ? (arm.errors || 0) / arm.requests : null;
  if (metric === "latency") return arm.latency == null ? null : arm.latency;
  return null;
}

function customValue(entry, metric, which) {
  const c = (entry.custom || []).find((x) => x.name === metric);
  return c ? c[which] : null;
}

function checksHtml(st) {
  const out = [];
  for (const [name, t] of Object.entries((st.analysis && st.analysis.templates) || {})) {
    const hist = t.history || [];
    let whole = 0;
    for (let i = hist.length - 1; i >= 0 && !hist[i].merged; i--) whole++;
    const marks = t.marks || [];
    const k = marks.length ? Math.min(whole, marks.length) : Math.min(whole, 120);
    const entries = hist.slice(hist.length - k);
    const ms = marks.slice(marks.length - k);
    const metrics = t.last ? t.last.result.metrics.map((m) => m.metric) : ["errorRate", "latency"];
    for (const metric of metrics) {
      const fmt = FMT[metric] || ((v) => Number(v).toPrecision(3));
      const custom = !(metric in FMT);
      const stable = entries.map((e) => (custom ? customValue(e, metric, "stable") : armValue(metric, e.stable, e)));
      const canary = entries.map((e) => (custom ? customValue(e, metric, "canary") : armValue(metric, e.canary, e)));
      const check = (m) => (m ? m.checks.find((c) => c.metric === metric) : null);
      const limit = ms.map((m) => { const c = check(m); return c && c.limit != null ? c.limit : null; });
      const verdicts = ms.map((m) => { const c = check(m); return c ? c.verdict : null; });
      const times = ms.length ? ms.map((m) => Date.parse(m.end)) : entries.map(() => null);
      const title = `${name}: ${metric}, stable and canary per interval`;
      out.push(`<div class="card chart" data-check="${esc(metric)}"><h3>${esc(metric)} <span class="muted">(${esc(name)})</span></h3>
${k ? checkChart({ title, times, series: [{ cls: "stable", label: "stable", values: stable }, { cls: "canary", label: "canary", values: canary }], limit, verdicts, fmt }) : '<p class="muted">No interval judged yet.</p>'}
<div class="legend"><span class="k-stable">stable</span><span class="k-canary">canary</span><span class="k-limit">tolerated limit</span><span>marks: ● pass, ✕ fail, ▲ inconclusive</span></div></div>`);
    }
  }
  return out.length ? out.join("") : '<p class="muted">This rollout has no analysis.</p>';
}

function pct(x) {
  return x == null ? "?" : (x >= 0 ? "+" : "") + (x * 100).toFixed(1) + "%";
}

function evidenceHtml(st) {
  const l = lastJudged(st);
  if (!l) return '<p class="muted">No interval judged yet.</p>';
  const items = l.result.metrics.map((m) => {
    const within = m.within ? ` Within its tolerance: evidence ${Number(m.within.evidence).toPrecision(3)} of ${m.within.threshold} needed.` : "";
    const ci = m.effectInterval ? ` Effect canary/stable ${Number(m.effect).toFixed(3)}×, 95% interval ${Number(m.effectInterval[0]).toFixed(3)}–${Number(m.effectInterval[1]).toFixed(3)}×.` : "";
    const limit = m.limit != null ? ` Limit ${(FMT[m.metric] || String)(m.limit)}.` : "";
    return `<li data-metric="${esc(m.metric)}">${verdictBadge(m.verdict)} <strong>${esc(m.metric)}</strong>: ${esc(m.reason)}<br><span class="muted">${esc(ci + limit + within)}</span></li>`;
  });
  return `<p>${verdictBadge(l.result.verdict)} at canary ${esc(l.canaryWeight)}%, interval ending ${esc(new Date(l.end).toLocaleTimeString())}</p><ul class="evidence">${items.join("")}</ul>`;
}

export function renderEvents(main, d) {
  const el = section(main, "d-events");
  if (!el) return;
  const events = d.events;
  const shown = events.slice(-200).reverse();
  el.innerHTML = `<div class="tablewrap"><table><thead><tr><th scope="col">When</th><th scope="col">Run</th><th scope="col">Event</th><th scope="col">Message</th><th scope="col" class="hide-narrow">By</th></tr></thead><tbody>${shown.map((e) => `<tr><td class="num">${esc(new Date(e.at).toLocaleTimeString())}</td><td class="num">${esc(e.run)}</td><td>${esc(e.kind)}</td><td class="msg">${esc(e.message)}</td><td class="hide-narrow">${esc(e.actor || "")}</td></tr>`).join("")}</tbody></table></div>${events.length > 200 ? `<p class="muted">The newest 200 of ${events.length}.</p>` : ""}`;
  const w = section(main, "d-weight");
  if (w && d.rollout) w.innerHTML = weightChart(weightPoints(d), Date.now());
}

export function renderRuns(main, runs) {
  const el = section(main, "d-runs");
  if (!el) return;
  if (!runs.length) { el.innerHTML = '<p class="muted">No run yet.</p>'; return; }
  const rows = runs.map((r) => {
    const checks = [];
    for (const [tpl, cs] of Object.entries(r.checks || {})) {
      for (const [check, c] of Object.entries(cs)) {
        checks.push(`${verdictBadge(c.verdict)} ${esc(check)} ${esc(pct(c.effect))} <span class="muted">[${esc(pct(c.low))}, ${esc(pct(c.high))}]</span> <span class="muted">${esc(tpl)}</span>`);
      }
    }
    return `<tr><td class="num">${esc(r.run)}</td><td>${esc(r.revision)}</td><td>${phaseBadge(r.outcome)}</td><td class="num">${esc(Math.round(r.canaryRequests || 0))}</td><td>${checks.join("<br>") || '<span class="muted">—</span>'}</td><td class="msg hide-narrow">${esc(r.message || "")}</td></tr>`;
  });
  el.innerHTML = `<div class="tablewrap"><table><thead><tr><th scope="col">Run</th><th scope="col">Revision</th><th scope="col">Outcome</th><th scope="col">Canary requests</th><th scope="col">Effect (canary vs stable, 95% interval)</th><th scope="col" class="hide-narrow">How it ended</th></tr></thead><tbody>${rows.join("")}</tbody></table></div>`;
}

export function renderDetail(main, d, canChange, command) {
  if (main.dataset.rollout !== d.name || !section(main, "d-head")) skeleton(main, d, canChange, command);
  if (!d.rollout) return;
  const st = d.rollout.status || {};
  section(main, "d-head").innerHTML = headHtml(d);
  section(main, "d-steps").innerHTML = stepsHtml(d.rollout);
  section(main, "d-checks").innerHTML = checksHtml(st);
  section(main, "d-evidence").innerHTML = evidenceHtml(st);
  renderEvents(main, d);
  tickAges(main);
}
