"""The dashboard's one page: HTML, inline CSS and a small vanilla script, nothing external.

The script polls ``api/runs`` and ``api/runs/<id>/state`` about once a second and draws the
device table, round progress, line charts (inline SVG it builds itself), per-device system
figures and the recent log lines. It follows the newest running run unless one is chosen in
the run selector (or given as ``?run=<id>``). Every value from the server is set as text,
never parsed as HTML.

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
header { display: flex; flex-wrap: wrap; gap: .8rem; align-items: center; padding: .7rem 1rem;
         background: #111827; color: #f9fafb; }
header h1 { font-size: 1.1rem; margin: 0 1rem 0 0; }
header select { max-width: 28rem; }
main { display: grid; gap: 1rem; padding: 1rem; grid-template-columns: minmax(0, 1fr);
       max-width: 90rem; margin: 0 auto; }
section { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
          padding: .8rem 1rem; min-width: 0; }
h2 { font-size: 1rem; margin: 0 0 .6rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid var(--line);
         white-space: nowrap; }
th { color: var(--muted); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: .05rem .55rem; border-radius: 999px; color: #fff;
         background: var(--idle); font-weight: 600; font-size: .85rem; }
.state-online, .state-finished { background: var(--online); }
.state-training, .state-running { background: var(--training); }
.state-lost, .state-failed { background: var(--lost); }
.state-interrupted { background: var(--interrupted); }
.muted { color: var(--muted); }
.bar { height: 14px; border-radius: 7px; background: var(--line); overflow: hidden; }
#progress-fill { height: 100%; width: 0; background: #2563eb; transition: width .4s; }
#error { background: #fef2f2; border-color: #fecaca; color: #991b1b; }
.charts { display: grid; gap: .8rem; grid-template-columns: repeat(auto-fit, minmax(20rem, 1fr)); }
figure { margin: 0; }
figcaption { font-weight: 600; margin-bottom: .2rem; }
svg { width: 100%; height: auto; display: block; }
svg text { font-size: 11px; fill: var(--muted); }
.legend { display: flex; flex-wrap: wrap; gap: .2rem .8rem; font-size: .85rem; }
.swatch { display: inline-block; width: .8rem; height: .25rem; margin-right: .3rem;
          vertical-align: middle; }
.scroll { max-height: 22rem; overflow: auto; }
td.message { white-space: pre-wrap; word-break: break-word; }
.level-WARNING { color: var(--training); font-weight: 600; }
.level-ERROR, .level-CRITICAL { color: var(--lost); font-weight: 600; }
"""

_SCRIPT = r"""
"use strict";
(() => {
  const POLL_MS = 1000, LOG_KEEP = 200, SVG_NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];
  const query = new URLSearchParams(location.search);
  const token = query.get("token");
  if (token !== null) {  // the cookie the server set carries it from now on
    query.delete("token");
    const rest = query.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
  }
  let chosen = query.get("run") || "";  // "" follows the newest running run
  let current = null, logCursor = 0, logLines = [], runsSignature = "";
  const $ = (id) => document.getElementById(id);

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
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
  function figure(key, value) {
    if (value === null || value === undefined) return "—";
    if (/bytes/.test(key)) return bytes(value);
    if (/seconds/.test(key)) return seconds(value);
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
  function label(key) { return key.replace(/[_-]+/g, " "); }

  async function getJSON(path) {
    const headers = token !== null ? {"X-Fediot-Token": token} : {};
    const response = await fetch(path, {headers, cache: "no-store"});
    if (!response.ok) {
      const text = (await response.text()).slice(0, 300);
      throw new Error(path + ": HTTP " + response.status + " " + text);
    }
    return response.json();
  }

  function showError(message) {
    $("error").hidden = message === null;
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
      const name = element("td", device.label);
      name.title = device.id;
      const badge = element("span", device.state, "badge state-" + device.state);
      const cell = element("td");
      cell.append(badge);
      const seen = element("td", ago(device.seen_seconds_ago));
      if (device.last_seen) seen.title = device.last_seen;
      const rejected = element("td", device.rejected ? String(device.rejected) : "—", "num");
      if (device.last_rejection) rejected.title = device.last_rejection;
      if (device.rejected) rejected.classList.add("level-ERROR");
      row.append(name, cell, element("td", device.last_round ?? "—", "num"), seen,
                 element("td", device.rounds_answered, "num"), rejected);
      return row;
    });
    $("devices-body").replaceChildren(...rows);
    $("devices-empty").hidden = rows.length > 0;
  }

  function renderSystem(state) {
    const keys = [];
    for (const device of state.devices) {
      for (const key of Object.keys(device.system)) if (!keys.includes(key)) keys.push(key);
    }
    const head = element("tr");
    head.append(element("th", "device"));
    for (const key of keys) {
      const peak = /peak|max/.test(key);
      head.append(element("th", label(key) + (peak ? " (max)" : " (last / total)")));
    }
    const rows = state.devices.map((device) => {
      const row = element("tr");
      row.dataset.device = device.id;
      row.append(element("td", device.label));
      for (const key of keys) {
        const f = device.system[key];
        let text = "—";
        if (f) text = /peak|max/.test(key) ? figure(key, f.max)
                                           : figure(key, f.last) + " / " + figure(key, f.total);
        row.append(element("td", text, "num"));
      }
      return row;
    });
    $("system-head").replaceChildren(head);
    $("system-body").replaceChildren(...rows);
    $("system-empty").hidden = keys.length > 0;
  }

  function drawChart(box, series, fixedRange) {
    const signature = JSON.stringify(series);
    if (box.dataset.signature === signature) return;
    box.dataset.signature = signature;
    const W = 420, H = 190, L = 54, R = 12, T = 10, B = 30;
    const points = series.flatMap((s) => s.points);
    const svg = svgElement("svg", {viewBox: `0 0 ${W} ${H}`, role: "img"});
    svg.dataset.points = String(points.length);
    svg.append(svgElement("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#9ca3af"}));
    svg.append(svgElement("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#9ca3af"}));
    const legend = element("div", null, "legend");
    if (!points.length) {
      const empty = svgElement("text", {x: (L + W - R) / 2, y: (T + H - B) / 2,
                                        "text-anchor": "middle"});
      empty.textContent = "no data yet";
      svg.append(empty);
      box.replaceChildren(svg);
      return;
    }
    let [x0, x1] = [Math.min(...points.map((p) => p[0])), Math.max(...points.map((p) => p[0]))];
    let [y0, y1] = fixedRange ||
      [Math.min(...points.map((p) => p[1])), Math.max(...points.map((p) => p[1]))];
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { const pad = Math.abs(y0) * 0.1 || 1; y0 -= pad; y1 += pad; }
    const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
    const sy = (y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
    for (const y of [y0, (y0 + y1) / 2, y1]) {
      svg.append(svgElement("line", {x1: L, y1: sy(y), x2: W - R, y2: sy(y),
                                     stroke: "#eef0f3"}));
      const tick = svgElement("text", {x: L - 5, y: sy(y) + 4, "text-anchor": "end"});
      tick.textContent = number(y);
      svg.append(tick);
    }
    for (const x of [...new Set([Math.ceil(x0), Math.floor(x1)])]) {
      const tick = svgElement("text", {x: sx(x), y: H - B + 14, "text-anchor": "middle"});
      tick.textContent = String(x);
      svg.append(tick);
    }
    const axis = svgElement("text", {x: (L + W - R) / 2, y: H - 2, "text-anchor": "middle"});
    axis.textContent = "round";
    svg.append(axis);
    series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      const path = s.points.map((p) => sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1));
      svg.append(svgElement("polyline", {points: path.join(" "), fill: "none", stroke: color,
                                         "stroke-width": 2}));
      if (s.points.length <= 80) {
        for (const p of s.points) {
          const dot = svgElement("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: color});
          const tip = svgElement("title", {});
          tip.textContent = s.name + ", round " + p[0] + ": " + number(p[1]);
          dot.append(tip);
          svg.append(dot);
        }
      }
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
    drawChart($("chart-loss-plot"), [{name: "train loss", points: pick("train_loss")}]);
    drawChart($("chart-seconds-plot"), [{name: "round seconds", points: pick("seconds")}]);
    const evaluation = Object.entries(state.evaluation).map(([name, points]) => ({name, points}));
    drawChart($("chart-evaluation-plot"), evaluation, [0, 1]);
  }

  function renderLogs(state) {
    if (state.log_reset) logLines = [];
    if (!state.logs.length && !state.log_reset && $("logs-body").childElementCount) return;
    logLines = logLines.concat(state.logs).slice(-LOG_KEEP);
    logCursor = state.log_cursor;
    const box = $("logs-scroll");
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    const rows = logLines.map((line) => {
      const row = element("tr", null, "level-" + line.level);
      const time = line.time ? String(line.time).replace(/^.*T/, "").replace(/\+.*$/, "") : "";
      row.append(element("td", time), element("td", line.device ?? "server"),
                 element("td", line.round ?? "—", "num"), element("td", line.step ?? ""),
                 element("td", line.level), element("td", line.message, "message"));
      return row;
    });
    $("logs-body").replaceChildren(...rows);
    $("logs-empty").hidden = rows.length > 0;
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  function render(state) {
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
      showError("cannot reach the dashboard server (" + (error.message || error) +
                "); retrying…");
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
    <table><thead><tr><th>device</th><th>state</th><th>last round</th><th>last seen</th>
      <th>rounds answered</th><th>rejected replies</th></tr></thead>
      <tbody id="devices-body"></tbody></table>
    <p id="devices-empty" class="muted">no devices yet</p>
  </section>
  <section id="system">
    <h2>System performance per device</h2>
    <div class="scroll"><table><thead id="system-head"></thead><tbody id="system-body"></tbody>
    </table></div>
    <p id="system-empty" class="muted">no figures reported yet</p>
  </section>
  <section>
    <h2>Metrics</h2>
    <div class="charts">
      <figure id="chart-loss"><figcaption>Train loss</figcaption>
        <div id="chart-loss-plot"></div></figure>
      <figure id="chart-seconds"><figcaption>Round time (seconds)</figcaption>
        <div id="chart-seconds-plot"></div></figure>
      <figure id="chart-evaluation"><figcaption>Evaluation (all devices)</figcaption>
        <div id="chart-evaluation-plot"></div></figure>
    </div>
  </section>
  <section id="logs">
    <h2>Recent logs</h2>
    <div class="scroll" id="logs-scroll"><table><thead><tr><th>time (UTC)</th><th>device</th>
      <th>round</th><th>step</th><th>level</th><th>message</th></tr></thead>
      <tbody id="logs-body"></tbody></table></div>
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
