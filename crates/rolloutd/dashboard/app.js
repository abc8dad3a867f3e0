// rolloutd dashboard: the API client, the live stream, routing and the
// overrides. Views are in views.js, charts in charts.js. No library.
import { renderList, applyFilters, updateRow, removeRow, tickAges, renderDetail, renderEvents, renderRuns } from "./views.js";

const TOKEN_KEY = "rolloutd.token";
const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  canChange: false,
  tokens: false,
  stream: null,      // AbortController of the open stream
  rollouts: new Map(),
  detail: null,      // {name, rollout, events, runs}
};

function headers(extra) {
  const h = Object.assign({ Accept: "application/json" }, extra || {});
  if (state.token) h.Authorization = "Bearer " + state.token;
  return h;
}

async function api(path, opts) {
  const o = opts || {};
  const r = await fetch(path, { method: o.method || "GET", headers: headers(o.headers), body: o.body, cache: "no-store" });
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  return { status: r.status, body };
}

// ---- token ----------------------------------------------------------------

function askToken(message) {
  return new Promise((resolve) => {
    const dlg = $("login");
    $("login-error").textContent = message || "";
    $("login-token").value = "";
    const form = $("login-form");
    form.onsubmit = (e) => {
      e.preventDefault();
      state.token = $("login-token").value.trim();
      sessionStorage.setItem(TOKEN_KEY, state.token);
      dlg.close();
      resolve();
    };
    dlg.oncancel = (e) => e.preventDefault();
    if (!dlg.open) dlg.showModal();
    $("login-token").focus();
  });
}

async function whoami() {
  for (;;) {
    let r;
    try {
      r = await api("/api/v1/whoami");
    } catch (e) {
      setConn("down", "cannot reach rolloutd; retrying");
      await sleep(2000);
      continue;
    }
    if (r.status === 401) {
      await askToken(state.token ? "That token was refused." : "");
      continue;
    }
    if (r.status !== 200 || !r.body) {
      setConn("down", "rolloutd answered " + r.status);
      await sleep(2000);
      continue;
    }
    state.canChange = !!r.body.canChange;
    state.tokens = !!r.body.tokens;
    $("who").textContent = !state.tokens ? "no tokens configured" : state.canChange ? "API token: may change" : "read-only token";
    $("signout").hidden = !state.token;
    return;
  }
}

// ---- the live stream ------------------------------------------------------

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

function setConn(kind, text) {
  const c = $("conn");
  c.className = "conn " + kind;
  c.textContent = text;
}

function setStale(reason) {
  const b = $("banner");
  if (reason) {
    b.textContent = "Showing stale data: " + reason;
    b.hidden = false;
  } else {
    b.hidden = true;
    b.textContent = "";
  }
}

// Server-sent events read with fetch (EventSource cannot send the bearer
// header). Reconnects by itself, with backoff, until aborted.
async function follow(path, onEvent) {
  if (state.stream) state.stream.abort();
  const ctl = new AbortController();
  state.stream = ctl;
  let backoff = 500;
  while (!ctl.signal.aborted) {
    try {
      const r = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal: ctl.signal, cache: "no-store" });
      if (r.status === 401) {
        await askToken("That token was refused.");
        await whoami();
        continue;
      }
      if (r.status === 404) {
        onEvent("missing", {});
        return;
      }
      if (!r.ok || !r.body) throw new Error("rolloutd answered " + r.status);
      setConn("live", "live");
      backoff = 500;
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replace(/\r\n/g, "\n");
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let kind = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) kind = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (data.length) {
            let parsed = null;
            try { parsed = JSON.parse(data.join("\n")); } catch (_) { parsed = null; }
            if (parsed === null) continue;
            // Said of every stream alike: the banner over the data.
            if (kind === "stale") setStale(parsed.staleReason);
            else if (kind === "fresh" || kind === "snapshot") setStale(null);
            onEvent(kind, parsed);
          }
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    if (ctl.signal.aborted) return;
    setConn("down", "disconnected; reconnecting…");
    setStale("the connection to rolloutd was lost; reconnecting");
    await sleep(backoff);
    backoff = Math.min(backoff * 2, 10000);
  }
}

// ---- pages ----------------------------------------------------------------

function listPage() {
  state.detail = null;
  document.title = "rolloutd: rollouts";
  const main = $("main");
  delete main.dataset.rollout;
  follow("/api/v1/watch", (kind, data) => {
    switch (kind) {
      case "snapshot":
        state.rollouts = new Map(data.items.map((r) => [r.metadata.name, r]));
        renderList(main, state.rollouts);
        break;
      case "rollout": {
        const isNew = !state.rollouts.has(data.metadata.name);
        state.rollouts.set(data.metadata.name, data);
        if (isNew) renderList(main, state.rollouts);
        else updateRow(main, data);
        break;
      }
      case "deleted":
        state.rollouts.delete(data.name);
        removeRow(main, data.name);
        break;
      default:
        break;
    }
  });
}

async function loadRuns(name) {
  try {
    const r = await api("/api/v1/rollouts/" + encodeURIComponent(name) + "/runs");
    if (state.detail && state.detail.name === name && r.status === 200) {
      state.detail.runs = r.body.items || [];
      renderRuns($("main"), state.detail.runs);
    }
  } catch (_) { /* shown on the next change */ }
}

async function loadSource(name) {
  try {
    const r = await api("/api/v1/sources");
    if (r.status !== 200 || !r.body || !state.detail || state.detail.name !== name) return;
    for (const s of r.body.items || []) {
      if ((s.rollouts || []).includes(name)) {
        state.detail.line = s.lines ? s.lines[name] : undefined;
        const el = document.getElementById("source");
        if (el) el.textContent = s.file + (state.detail.line ? ":" + state.detail.line : "");
      }
    }
  } catch (_) { /* the file name from the rollout stays */ }
}

function detailPage(name) {
  document.title = "rolloutd: " + name;
  const main = $("main");
  state.detail = { name, rollout: null, events: [], runs: [], line: undefined };
  let lastKey = "";
  follow("/api/v1/rollouts/" + encodeURIComponent(name) + "/watch", (kind, data) => {
    const d = state.detail;
    if (!d || d.name !== name) return;
    switch (kind) {
      case "snapshot":
        d.rollout = data.rollout;
        d.events = data.events || [];
        renderDetail(main, d, state.canChange, command);
        loadRuns(name);
        loadSource(name);
        break;
      case "rollout": {
        d.rollout = data;
        renderDetail(main, d, state.canChange, command);
        const st = data.status || {};
        const key = st.phase + "/" + st.run;
        if (key !== lastKey) { lastKey = key; loadRuns(name); }
        break;
      }
      case "event":
        d.events.push(data);
        renderEvents(main, d);
        break;
      case "deleted":
      case "missing":
        main.innerHTML = "";
        main.append(Object.assign(document.createElement("p"), { className: "error", textContent: "Rollout " + name + " does not exist (any more)." }));
        break;
      default:
        break;
    }
  });
}

// ---- overrides -------------------------------------------------------------

const VERBS = {
  abort: "Abort the run: all traffic goes back to stable at once.",
  promote: "Promote: skip the current pause or analysis gate.",
  "promote-full": "Promote fully: jump to 100% canary.",
  pause: "Pause: hold the run where it is.",
  resume: "Resume the run.",
  retry: "Retry: start the run again from its first step.",
};

function command(name, verb, resultEl) {
  const dlg = $("confirm");
  $("confirm-title").textContent = "Confirm: " + verb.replace("-", " ") + " " + name;
  $("confirm-what").textContent = VERBS[verb] || verb;
  $("confirm-reason").value = "";
  $("confirm-cancel").onclick = () => dlg.close();
  $("confirm-form").onsubmit = async (e) => {
    e.preventDefault();
    const reason = $("confirm-reason").value.trim();
    if (!reason) return;
    dlg.close();
    const path = verb === "promote-full" ? "promote" : verb;
    const body = { reason };
    if (verb === "promote-full") body.full = true;
    resultEl.className = "result";
    resultEl.textContent = "sending " + verb + "…";
    try {
      const r = await api("/api/v1/rollouts/" + encodeURIComponent(name) + "/" + path, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      if (r.status === 202) {
        resultEl.className = "result ok";
        resultEl.textContent = verb + " accepted (command " + r.body.command + ")";
      } else {
        resultEl.className = "result err";
        resultEl.textContent = verb + " refused (" + r.status + "): " + ((r.body && r.body.error) || "no reason given");
      }
    } catch (err) {
      resultEl.className = "result err";
      resultEl.textContent = verb + " not sent: " + err;
    }
  };
  dlg.showModal();
  $("confirm-reason").focus();
}

// ---- start -------------------------------------------------------------------

function route() {
  const m = location.hash.match(/^#\/rollouts\/([^/]+)$/);
  if (m) detailPage(decodeURIComponent(m[1]));
  else listPage();
  $("main").focus({ preventScroll: true });
}

async function start() {
  $("signout").onclick = () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = "";
    location.reload();
  };
  $("main").addEventListener("input", (e) => {
    if (e.target.closest(".filters")) applyFilters($("main"));
  });
  await whoami();
  window.addEventListener("hashchange", route);
  route();
  setInterval(() => tickAges($("main")), 1000);
}

start();
