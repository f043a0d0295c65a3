"""The dashboard's one page: HTML, inline CSS and a small vanilla script, nothing external.

The script polls ``api/runs`` and ``api/runs/<id>/state`` about once a second and draws the
device table, round progress, line charts (inline SVG it builds itself: y ticks on 1-2-5
steps with their unit, x ticks on rounds), per-device system figures (a figure the same for
every device is said once) and the recent log lines (newest first, by the time they were
written, devices by name). On screens narrower than 40rem every table shows one labelled
block per row, so nothing is wider than the screen. It follows the newest running run unless
one is chosen in the run selector (or given as ``?run=<id>``). Every value from the server is
set as text, never parsed as HTML.

:data:`CONTENT_SECURITY_POLICY` allows exactly this page's script and style (by hash) and
connections to its own origin.
"""

from __future__ import annotations

import base64
import hashlib

_STYLE = """
:root { --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --panel: #ffffff; --bg: #f3f4f6;
        --online: #16a34a; --training: #d97706; --idle: #6b7280; --lost: #dc2626;
        --interrupted: #7c3aed; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; gap: .5rem .8rem; align-items: center;
         padding: .7rem 1rem; background: #111827; color: #f9fafb; }
header h1 { font-size: 1.1rem; margin: 0 1rem 0 0; }
header label { display: flex; gap: .3rem; align-items: center; max-width: 100%; }
header select { max-width: min(28rem, 100%); min-width: 0; }
#run-id { overflow-wrap: anywhere; }
main { display: grid; gap: 1rem; padding: 1rem; grid-template-columns: minmax(0, 1fr);
       max-width: 90rem; margin: 0 auto; }
section { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
          padding: .8rem 1rem; min-width: 0; }
h2 { font-size: 1rem; margin: 0 0 .6rem; }
code { overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid var(--line);
         vertical-align: top; white-space: nowrap; }
#system-head th { white-space: normal; min-width: 7rem; }
th { color: var(--muted); font-weight: 600; background: var(--panel); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: .05rem .55rem; border-radius: 999px; color: #fff;
         background: var(--idle); font-weight: 600; font-size: .85rem; }
.state-online, .state-finished { background: var(--online); }
.state-training, .state-running { background: var(--training); }
.state-lost, .state-failed { background: var(--lost); }
.state-interrupted { background: var(--interrupted); }
.muted { color: var(--muted); }
.note { color: var(--muted); font-size: .85rem; margin: .3rem 0 0; }
.bar { height: 14px; border-radius: 7px; background: var(--line); overflow: hidden; }
#progress-fill { height: 100%; width: 0; background: #2563eb; transition: width .4s; }
#error { background: #fef2f2; border-color: #fecaca; color: #991b1b; }
#error.closed { background: #eff6ff; border-color: #bfdbfe; color: #1e3a8a; }
.charts { display: grid; gap: .8rem;
          grid-template-columns: repeat(auto-fit, minmax(min(20rem, 100%), 1fr)); }
figure { margin: 0; min-width: 0; }
figcaption { font-weight: 600; margin-bottom: .2rem; }
svg { width: 100%; height: auto; display: block; }
svg text { font-size: 11px; fill: var(--muted); }
.legend { display: flex; flex-wrap: wrap; gap: .2rem .8rem; font-size: .85rem; }
.swatch { display: inline-block; width: .8rem; height: .25rem; margin-right: .3rem;
          vertical-align: middle; }
.scroll { max-height: 24rem; overflow: auto; }
.scroll thead th { position: sticky; top: 0; z-index: 1; box-shadow: 0 1px 0 var(--line); }
td.message { white-space: pre-wrap; overflow-wrap: anywhere; min-width: 12rem; }
ul.once { margin: .5rem 0 0; padding-left: 1.2rem; }
.level-WARNING { color: var(--training); font-weight: 600; }
.level-ERROR, .level-CRITICAL { color: var(--lost); font-weight: 600; }
@media (max-width: 40rem) {
  main { padding: .5rem; gap: .6rem; }
  section { padding: .6rem .7rem; }
  header h1 { margin-right: 0; }
  /* tables become one block per row, each cell labelled: nothing spills out of its card */
  table.stack thead { display: none; }
  table.stack, table.stack tbody, table.stack tr, table.stack td { display: block;
    width: 100%; }
  table.stack tr { border-bottom: 1px solid var(--line); padding: .3rem 0; }
  table.stack td { border: none; display: flex; justify-content: space-between; gap: .6rem;
    padding: .1rem .2rem; text-align: right; white-space: normal; overflow-wrap: anywhere;
    min-width: 0; }
  table.stack td::before { content: attr(data-label); color: var(--muted); text-align: left;
    flex: 0 0 auto; max-width: 55%; }
  table.stack td:first-child { font-weight: 600; }
  table.stack td.message { display: block; text-align: left; }
  table.stack td.message::before { display: block; max-width: none; }
}
"""

_SCRIPT = r"""
"use strict";
(() => {
  const POLL_MS = 1000, LOG_KEEP = 200, SVG_NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];
  const ENDED = ["finished", "failed", "interrupted"];
  const query = new URLSearchParams(location.search);
  const token = query.get("token");
  if (token !== null) {  // the cookie the server set carries it from now on
    query.delete("token");
    const rest = query.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
  }
  let chosen = query.get("run") || "";  // "" follows the newest running run
  let current = null, logCursor = 0, logLines = [], logArrivals = 0, runsSignature = "";
  let lastState = null;
  const $ = (id) => document.getElementById(id);

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }
  function cell(text, label, className) {  // label: shown beside the value on narrow screens
    const node = element("td", text, className);
    node.dataset.label = label;
    return node;
  }
  function svgElement(tag, attributes) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
    return node;
  }

  function number(value) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "—";
    const size = Math.abs(value);
    if (size >= 1000) return Math.round(value).toLocaleString("en");
    if (size === 0) return "0";
    if (size >= 1) return String(Number(value.toPrecision(4)));
    return String(Number(value.toPrecision(3)));
  }
  function bytes(value) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let unit = 0;
    while (Math.abs(value) >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return (unit ? value.toFixed(1) : String(Math.round(value))) + " " + units[unit];
  }
  function seconds(value) {
    if (value < 60) return number(value) + " s";
    return Math.floor(value / 60) + " min " + Math.round(value % 60) + " s";
  }
  function figure(unit, value) {
    if (value === null || value === undefined) return "—";
    if (unit === "bytes") return bytes(value);
    if (unit === "seconds") return seconds(value);
    return number(value);
  }
  function ago(value) {
    if (value === null || value === undefined) return "never";
    if (value < 2) return "just now";
    if (value < 90) return Math.round(value) + " s ago";
    if (value < 5400) return Math.round(value / 60) + " min ago";
    return Math.round(value / 3600) + " h ago";
  }
  function percent(value) { return value === null ? "—" : (100 * value).toFixed(2) + " %"; }

  // axis ticks on 1-2-5 steps, covering [low, high]; "integer": never finer than 1
  function niceTicks(low, high, count, integer) {
    if (!(high > low)) { const pad = Math.abs(low) * 0.1 || 1; low -= pad; high += pad; }
    const raw = (high - low) / count;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const fraction = raw / magnitude;
    let step = (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * magnitude;
    if (integer) step = Math.max(1, Math.round(step));
    const first = Math.floor(low / step + 1e-9) * step, last = Math.ceil(high / step - 1e-9) * step;
    const ticks = [];
    for (let i = 0; first + i * step <= last + step * 1e-9; i++) {
      ticks.push(Number((first + i * step).toPrecision(12)));
    }
    return {ticks, step, low: first, high: last};
  }
  function tickText(value, step, unit) {
    if (unit === "%") {
      const digits = Math.max(0, -Math.floor(Math.log10(step * 100) + 1e-9));
      return (value * 100).toFixed(digits) + " %";
    }
    const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    const text = Math.abs(value) >= 1000 ? Math.round(value).toLocaleString("en")
                                         : value.toFixed(digits);
    return unit ? text + " " + unit : text;
  }

  async function getJSON(path) {
    const headers = token !== null ? {"X-Fediot-Token": token} : {};
    const response = await fetch(path, {headers, cache: "no-store"});
    if (!response.ok) {
      const text = (await response.text()).slice(0, 300);
      throw new Error(path + ": HTTP " + response.status + " " + text);
    }
    return response.json();
  }

  function showError(message, closed) {
    $("error").hidden = message === null;
    $("error").classList.toggle("closed", Boolean(closed));
    $("error-text").textContent = message || "";
  }

  function renderRuns(listing) {
    $("runs-dir").textContent = listing.runs_dir;
    const signature = JSON.stringify(listing.runs.map((r) => [r.id, r.state]));
    if (signature === runsSignature) return;
    runsSignature = signature;
    const select = $("run-select");
    const options = [new Option("newest running run (follow)", "")];
    for (const run of listing.runs) options.push(new Option(run.id + " — " + run.state, run.id));
    select.replaceChildren(...options);
    select.value = chosen;
  }

  function renderDevices(state) {
    const rows = state.devices.map((device) => {
      const row = element("tr");
      row.dataset.device = device.id;
      row.dataset.state = device.state;
      const name = cell(device.label, "device");
      name.title = device.id;
      const badge = element("span", device.state, "badge state-" + device.state);
      const status = cell(null, "state");
      status.append(badge);
      const seen = cell(ago(device.seen_seconds_ago), "last seen");
      if (device.last_seen) seen.title = device.last_seen;
      const rejected = cell(device.rejected ? String(device.rejected) : "—", "rejected replies",
                            "num");
      if (device.last_rejection) rejected.title = device.last_rejection;
      if (device.rejected) rejected.classList.add("level-ERROR");
      row.append(name, status, cell(device.last_round ?? "—", "last round", "num"), seen,
                 cell(device.rounds_answered, "rounds answered", "num"), rejected);
      return row;
    });
    $("devices-body").replaceChildren(...rows);
    $("devices-empty").hidden = rows.length > 0;
  }

  function renderSystem(state) {
    const columns = state.system.per_device, once = state.system.once;
    const how = (column) => column.how === "peak" ? "last round / max" : "last round / total";
    const head = element("tr");
    head.append(element("th", "device"));
    for (const column of columns) {
      const th = element("th", column.label + " (" + how(column) + ")", "num");
      th.dataset.key = column.key;
      head.append(th);
    }
    const rows = state.devices.filter((device) => Object.keys(device.system).length)
      .map((device) => {
        const row = element("tr");
        row.dataset.device = device.id;
        row.append(cell(device.label, "device"));
        for (const column of columns) {
          const f = device.system[column.key];
          const second = f ? (column.how === "peak" ? f.max : f.total) : null;
          const td = cell(f ? figure(column.unit, f.last) + " / " + figure(column.unit, second)
                            : "—", column.label + " (" + how(column) + ")", "num");
          td.dataset.key = column.key;
          if (f) { td.dataset.last = String(f.last); td.dataset.value = String(second); }
          row.append(td);
        }
        return row;
      });
    $("system-head").replaceChildren(head);
    $("system-body").replaceChildren(...(columns.length ? rows : []));
    $("system-table").hidden = !columns.length;
    const items = once.map((entry) => {
      const value = entry.how === "peak" ? entry.value.max : entry.value.total;
      const item = element("li", entry.label + ": " + figure(entry.unit, entry.value.last) +
        " in the last round, " + figure(entry.unit, value) + " " +
        (entry.how === "peak" ? "at most" : "in all") + " — " + entry.why);
      item.dataset.key = entry.key;
      item.dataset.last = String(entry.value.last);
      item.dataset.value = String(value);
      return item;
    });
    $("system-once").replaceChildren(...items);
    $("system-once").hidden = !items.length;
    $("system-empty").hidden = columns.length + items.length > 0;
  }

  // one line chart: series [{name, points: [[round, value]]}]; options: yUnit ("", "s",
  // "%"), yRange (fixed), rounds (the x axis runs from round 1 to it), finalRound (the point
  // there is the final evaluation: drawn hollow)
  function drawChart(box, series, options) {
    const signature = JSON.stringify([series, options]);
    if (box.dataset.signature === signature) return;
    box.dataset.signature = signature;
    const W = 420, H = 190, L = 56, R = 14, T = 10, B = 32;
    const points = series.flatMap((s) => s.points);
    const svg = svgElement("svg", {viewBox: `0 0 ${W} ${H}`, role: "img"});
    svg.dataset.points = String(points.length);
    const legend = element("div", null, "legend");
    const lastX = Math.max(options.rounds || 1, 1, ...points.map((p) => p[0]));
    const xs = niceTicks(1, lastX, Math.min(8, Math.max(1, lastX - 1)), true);
    const [x0, x1] = lastX > 1 ? [1, lastX] : [0.5, 1.5];
    const xTicks = xs.ticks.filter((x) => x >= x0 && x <= x1);
    if (!xTicks.includes(1)) xTicks.unshift(1);
    const values = points.map((p) => p[1]);
    const ys = options.yRange ? niceTicks(options.yRange[0], options.yRange[1], 5, false)
      : niceTicks(values.length ? Math.min(...values) : 0,
                  values.length ? Math.max(...values) : 1, 4, false);
    const [y0, y1] = [ys.low, ys.high];
    svg.dataset.xTicks = JSON.stringify(xTicks);
    svg.dataset.yTicks = JSON.stringify(ys.ticks);
    const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
    const sy = (y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
    for (const y of ys.ticks) {
      svg.append(svgElement("line", {x1: L, y1: sy(y), x2: W - R, y2: sy(y),
                                     stroke: "#eef0f3"}));
      const tick = svgElement("text", {x: L - 5, y: sy(y) + 4, "text-anchor": "end",
                                       class: "y-tick"});
      tick.textContent = tickText(y, ys.step, options.yUnit);
      svg.append(tick);
    }
    for (const x of xTicks) {
      svg.append(svgElement("line", {x1: sx(x), y1: H - B, x2: sx(x), y2: H - B + 3,
                                     stroke: "#9ca3af"}));
      const tick = svgElement("text", {x: sx(x), y: H - B + 14, "text-anchor": "middle",
                                       class: "x-tick"});
      tick.textContent = String(x);
      svg.append(tick);
    }
    svg.append(svgElement("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#9ca3af"}));
    svg.append(svgElement("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#9ca3af"}));
    const axis = svgElement("text", {x: (L + W - R) / 2, y: H - 2, "text-anchor": "middle"});
    axis.textContent = "round";
    svg.append(axis);
    if (!points.length) {
      const empty = svgElement("text", {x: (L + W - R) / 2, y: (T + H - B) / 2,
                                        "text-anchor": "middle", class: "empty"});
      empty.textContent = options.empty || "no data yet";
      svg.append(empty);
    }
    series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      const path = s.points.map((p) => sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1));
      svg.append(svgElement("polyline", {points: path.join(" "), fill: "none", stroke: color,
                                         "stroke-width": 2}));
      if (s.points.length <= 80) {
        for (const p of s.points) {
          const final = options.finalRound === p[0];
          const dot = svgElement("circle", {cx: sx(p[0]), cy: sy(p[1]), r: final ? 3.5 : 2.5,
                                            fill: final ? "#fff" : color, stroke: color,
                                            "data-series": s.name, "data-x": p[0],
                                            "data-y": p[1]});
          const tip = svgElement("title", {});
          tip.textContent = s.name + (final ? ", final evaluation after round " : ", round ") +
            p[0] + ": " + (options.yUnit === "%" ? percent(p[1]) : number(p[1]));
          dot.append(tip);
          svg.append(dot);
        }
      }
      if (!s.points.length) return;
      const item = element("span", s.name);
      const swatch = element("span", null, "swatch");
      swatch.style.background = color;
      item.prepend(swatch);
      legend.append(item);
    });
    box.replaceChildren(svg, legend);
  }

  function renderCharts(state) {
    const rounds = state.rounds.filter((r) => r.round !== null);
    const pick = (key) => rounds.filter((r) => r[key] !== null).map((r) => [r.round, r[key]]);
    const span = {rounds: state.total_rounds || 0};
    drawChart($("chart-loss-plot"), [{name: "train loss", points: pick("train_loss")}],
              {...span, yUnit: ""});
    drawChart($("chart-seconds-plot"), [{name: "round time", points: pick("seconds")}],
              {...span, yUnit: "s"});
    const evaluation = Object.entries(state.evaluation).map(([name, points]) => ({name, points}));
    drawChart($("chart-evaluation-plot"), evaluation,
              {...span, yUnit: "%", yRange: [0, 1], empty: "no evaluated round yet",
               finalRound: state.results ? state.results.rounds : null});
    $("chart-evaluation-note").textContent = state.evaluation_note;
  }

  function logTime(line) {
    const moment = Date.parse(line.time || "");
    return Number.isFinite(moment) ? moment : -Infinity;
  }
  function renderLogs(state) {
    if (state.log_reset) logLines = [];
    if (!state.logs.length && !state.log_reset && $("logs-body").childElementCount) return;
    for (const line of state.logs) logLines.push({...line, arrival: logArrivals++});
    // newest first, by the time each line was written (a device's lines arrive with its
    // reply, after lines of other devices written later)
    logLines.sort((a, b) => (logTime(b) - logTime(a)) || (b.arrival - a.arrival));
    logLines = logLines.slice(0, LOG_KEEP);
    logCursor = state.log_cursor;
    const rows = logLines.map((line) => {
      const row = element("tr", null, "level-" + line.level);
      row.dataset.time = line.time || "";
      row.dataset.device = line.device || "";
      const time = line.time ? String(line.time).replace(/^.*T/, "")
                                 .replace(/(Z|[+-]\d\d:\d\d)$/, "") : "";
      const who = cell(line.device_label, "device");
      if (line.device) who.title = line.device;
      row.append(cell(time, "time (UTC)"), who,
                 cell(line.round ?? "—", "round", "num"), cell(line.step ?? "", "step"),
                 cell(line.level, "level"), cell(line.message, "message", "message"));
      return row;
    });
    $("logs-body").replaceChildren(...rows);
    $("logs-empty").hidden = rows.length > 0;
  }

  function render(state) {
    lastState = state;
    $("run-state").textContent = state.state;
    $("run-state").className = "badge state-" + state.state;
    $("run-state").title = state.interrupted_because ?? "";  // why a dead run is interrupted
    $("run-id").textContent = state.run;
    $("engine").textContent = state.engine ?? "—";
    $("updated").textContent = ago(state.updated_seconds_ago);
    $("round").textContent = String(state.round);
    $("total-rounds").textContent = state.total_rounds ?? "?";
    $("phase").textContent = state.phase ?? "—";
    const total = state.total_rounds || 0;
    const done = state.state === "finished" ? 1 : (total ? Math.min(1, state.round / total) : 0);
    $("progress-fill").style.width = (100 * done).toFixed(1) + "%";
    const last = state.rounds.length ? state.rounds[state.rounds.length - 1] : null;
    $("last-loss").textContent = last ? number(last.train_loss) : "—";
    const results = state.results;
    $("final").hidden = !results;
    if (results) {
      const p = results.pooled;
      $("final-text").textContent = "F1 " + percent(p["F1"]) + ", TPR " + percent(p["TPR"]) +
        ", FPR " + percent(p["FPR"]) + ", F1 with window vote " + percent(p["F1 (window vote)"]) +
        ", ROC AUC " + number(p["ROC AUC"]) + "; thresholds " + (results.threshold_mode ?? "—");
    }
    renderDevices(state);
    renderSystem(state);
    renderCharts(state);
    renderLogs(state);
  }

  async function tick() {
    try {
      const listing = await getJSON("api/runs");
      renderRuns(listing);
      const target = chosen || listing.default;
      if (target !== current) { current = target; logCursor = 0; logLines = []; }
      $("no-run").hidden = current !== null;
      if (current !== null) {
        render(await getJSON("api/runs/" + encodeURIComponent(current) +
                             "/state?after=" + logCursor));
      }
      showError(null);
    } catch (error) {
      if (lastState !== null && ENDED.includes(lastState.state)) {
        showError("The dashboard server has closed; this page keeps the run's final state " +
                  "as last read. Retrying…", true);
      } else {
        showError("cannot reach the dashboard server (" + (error.message || error) +
                  "); retrying…", false);
      }
    } finally {
      setTimeout(tick, POLL_MS);
    }
  }

  $("run-select").addEventListener("change", (event) => {
    chosen = event.target.value;
    const params = new URLSearchParams(location.search);
    if (chosen) params.set("run", chosen); else params.delete("run");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
  });
  tick();
})();
"""

_BODY = """
<header>
  <h1>FedIoT live dashboard</h1>
  <label>run <select id="run-select" aria-label="run"></select></label>
  <span id="run-state" class="badge">…</span>
  <span id="run-id"></span>
  <span class="muted">engine <span id="engine">—</span>, updated <span id="updated">—</span></span>
</header>
<main>
  <section id="error" hidden><span id="error-text"></span></section>
  <section id="no-run" hidden>No run yet under <code id="runs-dir"></code>: start
    one with <code>fediot simulate</code> or <code>fediot server</code>; this page follows it.
  </section>
  <section id="progress">
    <h2>Round <span id="round">0</span> / <span id="total-rounds">?</span>
      <span class="muted">· phase <span id="phase">—</span> · last train loss
      <span id="last-loss">—</span></span></h2>
    <div class="bar"><div id="progress-fill"></div></div>
    <p id="final" hidden><b>Final evaluation (all devices):</b> <span id="final-text"></span></p>
  </section>
  <section id="devices">
    <h2>Devices</h2>
    <table class="stack"><thead><tr><th>device</th><th>state</th><th class="num">last round</th>
      <th>last seen</th><th class="num">rounds answered</th><th class="num">rejected replies</th>
      </tr></thead><tbody id="devices-body"></tbody></table>
    <p id="devices-empty" class="muted">no devices yet</p>
  </section>
  <section id="system">
    <h2>System performance per device</h2>
    <table class="stack" id="system-table"><thead id="system-head"></thead>
      <tbody id="system-body"></tbody></table>
    <ul class="once" id="system-once" hidden></ul>
    <p class="note">Measured on each device's training task, where it ran: its thread's CPU
      time and how far the memory of its process rose during the task (the first task in a
      process also pays for loading the libraries). Several devices may share a process (the
      in-process and Ray engines); in the Flower deployment each has its own.</p>
    <p id="system-empty" class="muted">no figures reported yet</p>
  </section>
  <section id="metrics">
    <h2>Metrics</h2>
    <div class="charts">
      <figure id="chart-loss"><figcaption>Train loss</figcaption>
        <div id="chart-loss-plot"></div></figure>
      <figure id="chart-seconds"><figcaption>Round time (seconds)</figcaption>
        <div id="chart-seconds-plot"></div></figure>
      <figure id="chart-evaluation"><figcaption>Evaluation (all devices)</figcaption>
        <div id="chart-evaluation-plot"></div>
        <p class="note" id="chart-evaluation-note"></p></figure>
    </div>
  </section>
  <section id="logs">
    <h2>Recent logs <span class="muted">(newest first)</span></h2>
    <div class="scroll" id="logs-scroll"><table class="stack"><thead><tr><th>time (UTC)</th>
      <th>device</th><th class="num">round</th><th>step</th><th>level</th><th>message</th>
      </tr></thead><tbody id="logs-body"></tbody></table></div>
    <p id="logs-empty" class="muted">no log lines yet</p>
  </section>
</main>
"""

PAGE_HTML = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    '<link rel="icon" href="data:,"><title>FedIoT dashboard</title>'
    f"<style>{_STYLE}</style></head><body>{_BODY}<script>{_SCRIPT}</script></body></html>\n"
)


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_hash(_SCRIPT)}; style-src {_hash(_STYLE)}; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
