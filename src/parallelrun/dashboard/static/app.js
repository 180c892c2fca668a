// parallelrun dashboard: a page over the JSON API (/api/...), refreshed by short polling.
// Every value from the server goes into the page as text (textContent), never as HTML: run names, log
// lines and tracebacks are written by user code.
"use strict";

const POLL_MS = 1000;          // live progress and log follow while a run is running
const LIST_POLL_MS = 3000;     // the runs list
const LOG_KEEP = 2 << 20;      // characters kept in the log view while following
const TERMINAL = new Set(["Completed", "Failed", "Canceled", "Interrupted"]);

const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c instanceof Node ? c : String(c));
  return e;
}

async function api(path, options = {}) {
  const init = { credentials: "same-origin", headers: { Accept: "application/json" }, ...options };
  if (init.method && init.method !== "GET") init.headers["X-Parallelrun-CSRF"] = "1";
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    setConn(false);
    throw e;
  }
  setConn(true);
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.detail || `${resp.status} ${resp.statusText}`);
  return body;
}

function setConn(ok) {
  const c = $("conn");
  c.textContent = ok ? "live" : "connection lost, retrying";
  c.classList.toggle("down", !ok);
}

// --- formatting -------------------------------------------------------------------------------------
function fmtDur(s) {
  if (s == null || !isFinite(s)) return "?";
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}
const fmtTime = (t) => (t ? new Date(t * 1000).toLocaleString() : "");
const fmtClock = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "");
const fmtNum = (n) => (n == null ? "" : Number(n).toLocaleString());
const fmtRate = (r) => (r == null ? "" : r >= 100 ? r.toFixed(0) : r.toFixed(1));
function fmtBytes(b) {
  if (b == null) return "";
  const u = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return `${b.toFixed(i ? 1 : 0)} ${u[i]}`;
}
const ago = (t, now) => (t ? `${fmtDur(now - t)} ago` : "");
const badge = (status) => el("span", { class: `badge ${status}`, text: status });

// --- the runs list ----------------------------------------------------------------------------------
async function runsView() {
  $("runs-view").hidden = false;
  const params = new URLSearchParams(location.search);
  const status = $("filter-status"), experiment = $("filter-experiment");
  const onFilter = () => {
    const q = new URLSearchParams();
    if (status.value) q.set("status", status.value);
    if (experiment.value) q.set("experiment", experiment.value);
    history.replaceState(null, "", q.toString() ? `/?${q}` : "/");
    refresh();
  };
  status.addEventListener("change", onFilter);
  experiment.addEventListener("change", onFilter);

  function fillSelect(select, values, wanted) {
    const current = select.value || wanted || "";
    select.replaceChildren(el("option", { value: "", text: "all" }),
      ...[...new Set([...values, current].filter(Boolean))].map((v) => el("option", { value: v, text: v })));
    select.value = current;
  }

  async function refresh() {
    const q = new URLSearchParams();
    const st = status.value || params.get("status") || "";
    const ex = experiment.value || params.get("experiment") || "";
    if (st) q.set("status", st);
    if (ex) q.set("experiment", ex);
    let data;
    try { data = await api(`/api/runs?${q}`); } catch { return; }
    $("workspace").textContent = data.workspace;
    fillSelect(status, data.statuses, st);
    fillSelect(experiment, data.experiments, ex);
    const rows = data.runs.map((r) => el("tr", { "data-run": r.id },
      el("td", {}, el("a", { href: `/runs/${encodeURIComponent(r.id)}`, text: r.name }),
        el("div", { class: "muted mono", text: r.id })),
      el("td", { text: r.kind }),
      el("td", { text: r.experiment || "" }),
      el("td", {}, badge(r.status)),
      el("td", { text: fmtTime(r.started || r.created) }),
      el("td", { text: r.duration_seconds == null ? "" : fmtDur(r.duration_seconds) }),
      el("td", { class: "num", text: fmtNum(r.items_succeeded) }),
      el("td", { class: "num", text: fmtNum(r.items_failed) }),
      el("td", { class: "num", text: fmtNum(r.items) }),
      el("td", { class: "num", text: fmtRate(r.items_per_second) })));
    $("runs-table").tBodies[0].replaceChildren(...rows);
    $("runs-empty").hidden = rows.length > 0;
  }
  await refresh();
  setInterval(() => { if (!document.hidden) refresh(); }, LIST_POLL_MS);
}

// --- one run ------------------------------------------------------------------------------------------
function runView(runId) {
  $("run-view").hidden = false;
  const state = { status: null, failedSeen: -1, failedAt: 0, logPath: null, logOffset: 0, logBusy: false,
                  logsAt: 0, live: null, finalTicks: 0 };
  const base = `/api/runs/${encodeURIComponent(runId)}`;

  async function loadDetail() {
    const d = await api(base);
    document.title = `${d.name} - parallelrun`;
    $("run-name").textContent = d.name;
    $("run-id").textContent = `${d.id}  ·  ${d.kind}${d.experiment ? "  ·  experiment " + d.experiment : ""}  ·  ` +
      `compute ${d.compute}  ·  ${d.run_dir}`;
    $("workspace").textContent = d.run_dir.replace(/\/runs\/[^/]+$/, "");
    $("config").textContent = JSON.stringify(d.config, null, 2);
    showLogFiles(d.logs_files);
    showLive(d.progress, d.steps);
    return d;
  }

  // progress, chart, workers, steps
  function showLive(p, steps) {
    state.live = p;
    const changed = state.status !== p.status;
    state.status = p.status;
    const st = $("run-status");
    st.textContent = p.status;
    st.className = `badge ${p.status}`;
    $("cancel").disabled = p.status !== "Running" && p.status !== "NotStarted";
    const reason = $("run-reason");
    reason.hidden = !p.reason;
    reason.textContent = p.reason || "";
    const c = p.counts || {};
    const total = p.items_total || 0;
    const okPct = total ? (100 * (c.items_succeeded || 0)) / total : 0;
    const badPct = total ? (100 * (c.items_failed || 0)) / total : 0;
    $("progress-ok").style.width = `${okPct}%`;
    $("progress-failed").style.width = `${badPct}%`;
    $("progress-bar").setAttribute("aria-valuenow", p.percent.toFixed(1));
    let text = `${fmtNum(p.items_done)} / ${fmtNum(total)} items (${p.percent.toFixed(1)}%)`;
    if (p.status === "Running") {
      text += `  ·  ${fmtRate(p.items_per_second)} items/s  ·  ETA ${p.eta_seconds == null ? "?" : fmtDur(p.eta_seconds)}`;
    } else {
      text += `  ·  ${p.status}`;
    }
    $("progress-text").textContent = text;
    const stats = [
      ["succeeded", fmtNum(c.items_succeeded)], ["failed", fmtNum(c.items_failed)],
      ["mini-batches", `${fmtNum((c.batches_succeeded || 0) + (c.batches_failed || 0))} / ${fmtNum(c.batches)}`],
      ["mini-batches failed", fmtNum(c.batches_failed)], ["pending", fmtNum(c.batches_pending)],
      ["elapsed", fmtDur(p.elapsed_seconds)], ["average items/s", fmtRate(p.avg_items_per_second)],
    ];
    $("progress-stats").replaceChildren(...stats.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v }))));
    if (p.series) drawChart($("chart"), p.series);
    showWorkers(p.workers, p.now, p.status);
    showSteps(steps || p.steps || []);
    const failed = c.items_failed || 0;
    if (failed !== state.failedSeen && Date.now() - state.failedAt > 2000) loadFailed();
    if (changed && TERMINAL.has(p.status)) {
      loadFailed();
      refreshLogFiles();
    }
  }

  function showWorkers(w, now, status) {
    const body = $("workers-table").tBodies[0];
    const list = (w && w.workers) || [];
    body.replaceChildren(...list.map((x) => el("tr", { "data-worker": x.name },
      el("td", { class: "mono", text: x.name }),
      el("td", { class: "mono", text: x.host ?? "", title: x.actor ? `Ray actor ${x.actor}` : "" }),
      el("td", { text: x.pid ?? "" }),
      el("td", { text: !x.ready ? "starting" : x.batch == null ? "idle" : "running" }),
      el("td", { class: "num", text: x.batch ?? "" }),
      el("td", { class: "num", text: x.attempt ?? "" }),
      el("td", { class: "num", text: x.queue }),
      el("td", { text: x.batch_started ? fmtDur(now - x.batch_started) : "" }),
      el("td", { text: ago(x.last_event, now) }),
      el("td", { text: ago(x.heartbeat, now) }),
      el("td", { class: "num", text: fmtBytes(x.rss) }),
      el("td", { class: "num", text: x.cpu_percent == null ? "" : `${x.cpu_percent.toFixed(0)}%` }))));
    let note = "";
    if (!w) note = "No worker state recorded for this run.";
    else if (!list.length) note = status === "Running" ? "Workers are starting." : "The run is not running: no live workers.";
    else note = `Driver last reported ${ago(w.updated_at, now)}.`;
    $("workers-note").textContent = note;
  }

  function showSteps(steps) {
    $("steps-card").hidden = !steps.length;
    $("steps-table").tBodies[0].replaceChildren(...steps.map((s) => el("tr", {},
      el("td", {}, el("a", { href: `/runs/${encodeURIComponent(s.id)}`, text: s.name })),
      el("td", {}, badge(s.status)),
      el("td", { text: s.reused ? `reused ${s.reused === true ? "" : s.reused}` : "" }),
      el("td", { text: s.duration_seconds == null ? "" : fmtDur(s.duration_seconds) }),
      el("td", { class: "num", text: fmtNum(s.items_succeeded) }),
      el("td", { class: "num", text: fmtNum(s.items_failed) }),
      el("td", { class: "num", text: fmtNum(s.items) }))));
  }

  // failed items: click a row for its traceback
  async function loadFailed() {
    state.failedAt = Date.now();
    let d;
    try { d = await api(`${base}/failed_items?limit=200`); } catch { return; }
    state.failedSeen = (state.live && state.live.counts && state.live.counts.items_failed) || d.total;
    $("failed-count").textContent = `(${fmtNum(d.total)})`;
    const body = $("failed-table").tBodies[0];
    const open = new Set([...body.querySelectorAll("tr.traceback-row")].filter((r) => !r.hidden).map((r) => r.dataset.key));
    const rows = [];
    d.items.forEach((it, i) => {
      const key = `${it.batch}:${it.item}:${i}`;
      const tb = el("tr", { class: "traceback-row", "data-key": key },
        el("td", { colspan: "5" }, el("pre", { class: "traceback", text: it.traceback || "(no traceback recorded)" })));
      tb.hidden = !open.has(key);
      const row = el("tr", { class: "item", title: "Click for the traceback",
        onclick: () => { tb.hidden = !tb.hidden; } },
        el("td", { class: "num", text: it.batch }),
        el("td", { class: "mono wrap", text: it.item ?? "" }),
        el("td", { class: "num", text: it.attempts }),
        el("td", { class: "mono", text: it.exc_type || "" }),
        el("td", { class: "wrap", text: it.message || "" }));
      rows.push(row, tb);
    });
    body.replaceChildren(...rows);
    $("failed-note").textContent = !d.total ? "No failed items." :
      d.total > d.items.length ? `Showing the first ${d.items.length} of ${fmtNum(d.total)} (all in logs/user/error/failed_items.jsonl).` : "";
  }

  // logs: a file list, then a tail that follows while the run runs
  function showLogFiles(files) {
    const ul = $("log-files");
    ul.replaceChildren(...files.map((f) => {
      const li = el("li", { "data-path": f.path, title: `modified ${fmtTime(f.modified)}`, onclick: () => openLog(f.path) },
        el("span", { class: "size", text: fmtBytes(f.size) }), f.path);
      if (f.path === state.logPath) li.classList.add("selected");
      return li;
    }));
    if (!state.logPath && files.length) {
      const first = files.find((f) => f.path === "job_progress_overview.txt") || files.find((f) => f.path === "sys/driver.txt") || files[0];
      openLog(first.path);
    }
  }

  async function refreshLogFiles() {
    state.logsAt = Date.now();
    try { showLogFiles(await api(`${base}/logs`)); } catch { /* shown by the connection marker */ }
  }

  async function openLog(path, fromStart = false) {
    state.logPath = path;
    for (const li of $("log-files").children) li.classList.toggle("selected", li.dataset.path === path);
    $("log-name").textContent = path;
    const q = fromStart ? "offset=0" : "tail=65536";
    let d;
    try { d = await api(`${base}/logs/${path.split("/").map(encodeURIComponent).join("/")}?${q}`); }
    catch (e) { $("log-text").textContent = String(e.message || e); return; }
    if (state.logPath !== path) return;
    const pre = $("log-text");
    pre.textContent = (d.offset > 0 ? `... (${fmtBytes(d.offset)} earlier)\n` : "") + d.text;
    state.logOffset = d.next_offset;
    pre.scrollTop = pre.scrollHeight;
  }

  async function followLog() {
    if (!state.logPath || state.logBusy || !$("log-follow").checked) return;
    state.logBusy = true;
    const path = state.logPath;
    try {
      const d = await api(`${base}/logs/${path.split("/").map(encodeURIComponent).join("/")}?offset=${state.logOffset}`);
      if (state.logPath !== path) return;
      const pre = $("log-text");
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 30;
      if (d.reset) pre.textContent = "";
      if (d.text) {
        pre.append(d.text);
        if (pre.textContent.length > LOG_KEEP) pre.textContent = pre.textContent.slice(-LOG_KEEP);
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      }
      state.logOffset = d.next_offset;
    } catch { /* the next tick retries */ } finally {
      state.logBusy = false;
    }
  }

  // cancel
  $("cancel").addEventListener("click", async () => {
    if (!confirm(`Cancel run ${runId}? In-flight mini-batches stop; the run stays resumable.`)) return;
    const btn = $("cancel");
    btn.disabled = true;
    btn.textContent = "Cancelling...";
    const msg = $("run-message");
    msg.hidden = false;
    msg.textContent = "Asking the driver to stop...";
    try {
      const r = await api(`${base}/cancel`, { method: "POST" });
      msg.textContent = r.message;
    } catch (e) {
      msg.textContent = `Cancel failed: ${e.message || e}`;
    } finally {
      btn.textContent = "Cancel run";
    }
    tick();
  });
  // worker stacks: a button under the workers table; the answer is shown as text below it
  const stackBtn = el("button", { id: "stacks", type: "button", text: "Show Python stacks" });
  const stackOut = el("pre", { id: "stacks-text", class: "traceback", hidden: "" });
  $("workers-note").after(stackBtn, stackOut);
  stackBtn.addEventListener("click", async () => {
    stackBtn.disabled = true;
    stackOut.hidden = false;
    stackOut.textContent = "Asking every worker for its stack...";
    try {
      const r = await api(`${base}/stacks`);
      const parts = Object.entries(r.workers).map(([who, text]) => `=== ${who}\n${text}`);
      stackOut.textContent = parts.length ? parts.join("\n\n") : "No live worker answered.";
    } catch (e) {
      stackOut.textContent = `Could not get the stacks: ${e.message || e}`;
    } finally {
      stackBtn.disabled = false;
    }
  });
  $("log-whole").addEventListener("click", () => state.logPath && openLog(state.logPath, true));

  async function tick() {
    try {
      const p = await api(`${base}/live`);
      showLive(p, p.steps);
    } catch (e) {
      return;
    }
    if (state.status === "Running" || state.status === "NotStarted") {
      followLog();
      if (Date.now() - state.logsAt > 5000) refreshLogFiles();
    }
  }

  loadDetail().then(() => {
    loadFailed();
    const timer = setInterval(() => {
      if (document.hidden) return;
      if (TERMINAL.has(state.status) && state.finalTicks++ > 2) { clearInterval(timer); return; }
      tick();
    }, POLL_MS);
  }).catch((e) => {
    $("run-view").hidden = true;
    const v = $("error-view");
    v.hidden = false;
    v.textContent = `Cannot show run ${runId}: ${e.message || e}`;
  });
}

// --- the chart: items/s over time, an inline SVG ----------------------------------------------------
function drawChart(host, series) {
  const NS = "http://www.w3.org/2000/svg";
  const W = 1000, H = 180, L = 44, R = 10, T = 10, B = 24;
  // A trailing 5 s average: mini-batches finish in lumps, and 1 s buckets would show a comb, not a rate.
  const raw = series.points || [];
  const k = Math.max(1, Math.round(5 / series.bucket));
  const avg = (i, col) => {
    let sum = 0, n = 0;
    for (let j = Math.max(0, i - k + 1); j <= i; j++) { sum += raw[j][col]; n++; }
    return sum / n;
  };
  const pts = raw.map((p, i) => [p[0], avg(i, 1), avg(i, 2)]);
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const node = (tag, attrs, text) => {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text != null) n.textContent = text;
    svg.append(n);
    return n;
  };
  const maxY = Math.max(1e-9, ...pts.map((p) => p[1]));
  const niceMax = maxY <= 1e-9 ? 1 : Math.pow(10, Math.floor(Math.log10(maxY))) * Math.ceil(maxY / Math.pow(10, Math.floor(Math.log10(maxY))));
  const t0 = pts.length ? pts[0][0] : 0, t1 = pts.length ? pts[pts.length - 1][0] + series.bucket : 1;
  const x = (t) => L + ((t - t0) / Math.max(1e-9, t1 - t0)) * (W - L - R);
  const y = (v) => H - B - (v / niceMax) * (H - B - T);
  for (const f of [0, 0.5, 1]) {
    node("line", { class: "grid-line", x1: L, x2: W - R, y1: y(niceMax * f), y2: y(niceMax * f) });
    node("text", { x: L - 6, y: y(niceMax * f) + 4, "text-anchor": "end" }, fmtRate(niceMax * f));
  }
  node("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B });
  if (pts.length) {
    const mid = (p) => x(p[0] + series.bucket / 2);
    const line = pts.map((p) => `${mid(p).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    node("polygon", { class: "area", points: `${mid(pts[0]).toFixed(1)},${y(0)} ${line} ${mid(pts[pts.length - 1]).toFixed(1)},${y(0)}` });
    node("polyline", { class: "rate", points: line });
    if (pts.some((p) => p[2] > 0)) {
      node("polyline", { class: "failed", points: pts.map((p) => `${mid(p).toFixed(1)},${y(p[2]).toFixed(1)}`).join(" ") });
    }
    node("text", { x: L, y: H - 6 }, fmtClock(t0));
    node("text", { x: W - R, y: H - 6, "text-anchor": "end" }, fmtClock(t1));
    node("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, `${k > 1 ? "5 s average" : fmtDur(series.bucket) + " buckets"} · blue: items/s, red: failed/s`);
  }
  host.replaceChildren(svg);
}

// --- routing --------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  const m = location.pathname.match(/^\/runs\/([^/]+)\/?$/);
  if (m) runView(decodeURIComponent(m[1]));
  else runsView();
});
