// wattflow dashboard: charts drawn as SVG from the JSON API, hover values, drag to zoom,
// live windows from the SSE feed. No dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const SVGNS = "http://www.w3.org/2000/svg";
const LEN = { minute: 60e3, hour: 3600e3, day: 86400e3 };
const SPAN = { hour: 3600e3, day: 86400e3, week: 7 * 86400e3, month: 30 * 86400e3, year: 365 * 86400e3 };

const PANELS = [
  { id: "active-power", title: "Active power", unit: "kW", series: [
    { name: "maximum", col: "global_active_power_max", color: "#d92d20" },
    { name: "average", col: "global_active_power_avg", color: "#1f6feb" } ] },
  { id: "voltage", title: "Voltage", unit: "V", series: [
    { name: "maximum", col: "voltage_max", color: "#d92d20" },
    { name: "average", col: "voltage_avg", color: "#1f6feb" },
    { name: "minimum", col: "voltage_min", color: "#12b76a" } ] },
  { id: "power-factor", title: "Power factor", unit: "", series: [
    { name: "average", col: "power_factor_avg", color: "#7a5af8" } ] },
  { id: "sub-metering", title: "Sub-metering", unit: "Wh per window", series: [
    { name: "kitchen (1)", col: "sub_metering_1_sum", color: "#f79009" },
    { name: "laundry (2)", col: "sub_metering_2_sum", color: "#12b76a" },
    { name: "water heater + AC (3)", col: "sub_metering_3_sum", color: "#1f6feb" } ] },
  { id: "other-devices", title: "Other devices (unmetered)", unit: "Wh per window", series: [
    { name: "unmetered", col: "unmetered_wh", color: "#667085" } ] },
  { id: "intensity", title: "Current", unit: "A", series: [
    { name: "maximum", col: "global_intensity_max", color: "#d92d20" },
    { name: "average", col: "global_intensity_avg", color: "#1f6feb" } ] },
];

// The value columns the panels draw: the page asks for these only (a year of hours is then
// about a third of the whole rows' JSON); the CSV button still exports every column.
const COLUMNS = [...new Set(PANELS.flatMap((p) => p.series.map((s) => s.col)))].join(",");

const state = {
  meters: [], meter: null, timezone: "naive", preset: "day",
  from: null, to: null, granularity: "minute", rows: [], live: null, lastLive: null,
  loading: 0, insights: null,
  // What the page last did and how long it took (ms), for people and benchmarks: `load` is
  // {rows, fetch, draw}; `shown` is {at, newest} after a live update was drawn: when (views
  // time) and the end of the newest reading on the page.
  timings: { load: null, shown: null },
};
window.wattflow = state; // for people (and tests) reading the page's data

// The clock in the views' time basis: naive views are the wall clock written as UTC.
function viewsNow() {
  return state.timezone === "naive" ? Date.now() - new Date().getTimezoneOffset() * 60e3 : Date.now();
}

// End of the newest reading the page shows (views ms).
function newestShown() {
  let end = -Infinity;
  for (let k = state.rows.length - 1; k >= 0 && k >= state.rows.length - 3; k--) {
    const r = state.rows[k];
    end = Math.max(end, Math.min(r.window_start_ms + r.covered_seconds * 1e3, r.window_start_ms + LEN[state.granularity]));
  }
  return end;
}

// ---- time -------------------------------------------------------------------------------

function pad(n) { return String(n).padStart(2, "0"); }

// "YYYY-MM-DDTHH:MM[:SS]" of a views time (naive ms are the wall clock written as UTC).
function wall(ms, seconds) {
  let s;
  if (state.timezone === "naive") {
    s = new Date(ms).toISOString().slice(0, 19);
  } else {
    s = new Intl.DateTimeFormat("sv-SE", { timeZone: state.timezone, year: "numeric", month: "2-digit",
      day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false })
      .format(new Date(ms)).replace(" ", "T");
  }
  return seconds ? s : s.slice(0, 16);
}

// Views ms of a wall-clock string, for naive views (zoned ones are converted by the server).
function parseWall(text) {
  const t = Date.parse(text + (text.length <= 16 ? ":00" : "") + "Z");
  return Number.isFinite(t) ? t : null;
}

// Views ms of a wall-clock string in the views' calendar.
function fromWall(text) {
  const n = parseWall(text);
  if (n === null || state.timezone === "naive") return n;
  const offset = parseWall(wall(n, true)) - n;
  return n - offset;
}

// Time-axis ticks on round wall-clock instants, at most `max` of them: minutes to weeks
// (weeks from Mondays), then calendar months and years. Returns [{t, text}].
const STEPS = [60e3, 5 * 60e3, 15 * 60e3, 30 * 60e3, 3600e3, 3 * 3600e3, 6 * 3600e3, 12 * 3600e3,
  86400e3, 2 * 86400e3, 7 * 86400e3];
function timeTicks(x0, x1, max) {
  const span = x1 - x0;
  // Views ms to wall-clock ms (the same for naive views; the zone's offset at x0 otherwise).
  const offset = state.timezone === "naive" ? 0 : parseWall(wall(x0, true)) - x0;
  const step = STEPS.find((st) => span / st <= max);
  const out = [];
  if (step) {
    const monday = step === 7 * 86400e3 ? 4 * 86400e3 : 0; // 1970-01-01 was a Thursday
    for (let w = Math.ceil((x0 + offset - monday) / step) * step + monday; w - offset <= x1; w += step) {
      const text = new Date(w).toISOString();
      const midnight = text.slice(11, 16) === "00:00";
      out.push({ t: w - offset, text: step >= 86400e3 || midnight ? text.slice(5, 10) : text.slice(11, 16) });
    }
    return out;
  }
  const months = [1, 2, 3, 6, 12, 24, 60, 120].find((k) => span / (k * 30.44 * 86400e3) <= max) || 240;
  const d = new Date(x0 + offset);
  let y = d.getUTCFullYear(), m = d.getUTCMonth() + 1; // the first month start after x0
  if (m === 12) { y++; m = 0; }
  while ((y * 12 + m) % months) { m++; if (m === 12) { y++; m = 0; } }
  for (;;) {
    const w = Date.UTC(y, m, 1);
    if (w - offset > x1) break;
    const text = new Date(w).toISOString();
    out.push({ t: w - offset, text: months >= 12 ? text.slice(0, 4) : text.slice(0, 7) });
    m += months;
    y += Math.floor(m / 12);
    m %= 12;
  }
  return out;
}

function autoGranularity(span) {
  if (span <= 2 * 86400e3) return "minute";
  if (span <= 92 * 86400e3) return "hour";
  return "day";
}

// ---- data -------------------------------------------------------------------------------

async function getJSON(url) {
  const r = await fetch(url);
  const body = await r.json().catch(() => ({ error: "not JSON" }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function meterInfo() { return state.meters.find((m) => m.meter === state.meter); }

function applyPreset(preset) {
  const m = meterInfo();
  if (!m) return;
  const newest = m.newest_reading_ms;
  const to = Math.ceil(newest / 60e3) * 60e3;
  let from;
  if (preset === "all") {
    from = fromWall(m.first_day + "T00:00");
    if (from === null) from = to - SPAN.year;
  } else {
    from = to - SPAN[preset];
  }
  state.preset = preset;
  setRange(from, to);
}

function setRange(from, to) {
  state.from = from;
  state.to = to;
  $("from").value = wall(from);
  $("to").value = wall(to);
  for (const b of document.querySelectorAll("#presets button")) {
    b.classList.toggle("active", b.dataset.preset === state.preset);
  }
}

function query(extra) {
  const p = new URLSearchParams({ meter: state.meter, from: wall(state.from, true), to: wall(state.to, true) });
  if (extra) for (const [k, v] of Object.entries(extra)) p.set(k, v);
  return p.toString();
}

async function load() {
  const span = state.to - state.from;
  const chosen = $("granularity").value;
  state.granularity = chosen === "auto" ? autoGranularity(span) : chosen;
  $("csv").href = `/api/v1/views/${state.granularity}?${query({ format: "csv" })}`;
  const ticket = ++state.loading;
  $("status").textContent = "loading…";
  try {
    const t0 = performance.now();
    const answer = await getJSON(`/api/v1/views/${state.granularity}?${query({ columns: COLUMNS })}`);
    if (ticket !== state.loading) return;
    const t1 = performance.now();
    state.rows = answer.rows;
    state.freshness = answer.freshness;
    message("");
    drawCharts();
    showStatus();
    state.timings.load = { rows: state.rows.length, fetch: t1 - t0, draw: performance.now() - t1 };
  } catch (e) {
    if (ticket === state.loading) { message(e.message); state.rows = []; drawCharts(); }
  }
  try {
    const found = await getJSON(`/api/v1/insights?${new URLSearchParams({ meter: state.meter,
      from: wall(state.from, true), to: wall(state.to, true) })}`);
    if (ticket === state.loading) { state.insights = found; drawInsights(found); }
  } catch (e) {
    if (ticket === state.loading) drawInsights(null, e.message);
  }
}

function message(text) {
  $("message").hidden = !text;
  $("message").textContent = text;
}

function showStatus() {
  const f = state.freshness || {};
  const newest = f.newest_reading || "no data";
  const live = state.lastLive ? `, live ${wall(state.lastLive, true).slice(11)}` : "";
  $("status").textContent = `${state.rows.length} ${state.granularity} rows (${f.batch_rows ?? 0} batch, ${f.speed_rows ?? 0} speed), newest ${newest}${live}`;
  $("status").classList.toggle("live", !!state.lastLive);
}

// ---- charts -----------------------------------------------------------------------------

function el(name, attrs, parent) {
  const e = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function niceTicks(lo, hi, n) {
  const step0 = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Math.round(v / step) * step);
  return out;
}

// Points of one series at most two a pixel column (the column's min and max, in order), with
// a break wherever windows are missing.
function pathOf(rows, col, x, y, width) {
  const len = LEN[state.granularity] * (state.granularity === "day" ? 1.1 : 1);
  const perPx = rows.length / Math.max(width, 1);
  let d = "", prevT = null, bucket = null;
  const flush = () => {
    if (!bucket) return;
    const pts = bucket.min.i <= bucket.max.i ? [bucket.min, bucket.max] : [bucket.max, bucket.min];
    for (const p of pts) { d += (bucket.start ? "M" : "L") + x(p.t).toFixed(1) + " " + y(p.v).toFixed(1); bucket.start = false; }
    bucket = null;
  };
  rows.forEach((r, i) => {
    const v = r[col], t = r.window_start_ms;
    if (v === null || v === undefined) { flush(); prevT = null; return; }
    const gap = prevT === null || t - prevT > 1.5 * len;
    if (perPx <= 2) {
      d += (gap ? "M" : "L") + x(t).toFixed(1) + " " + y(v).toFixed(1);
    } else {
      const px = Math.floor(x(t));
      if (gap || !bucket || bucket.px !== px) {
        const start = gap || !bucket ? (gap ? true : false) : false;
        flush();
        bucket = { px, start, min: { t, v, i }, max: { t, v, i } };
      } else {
        if (v < bucket.min.v) bucket.min = { t, v, i };
        if (v > bucket.max.v) bucket.max = { t, v, i };
      }
    }
    prevT = t;
  });
  flush();
  return d;
}

function drawCharts() {
  const box = $("charts");
  if (!box.dataset.built) {
    for (const p of PANELS) {
      const div = document.createElement("div");
      div.className = "chart";
      div.id = "chart-" + p.id;
      div.innerHTML = `<h2>${p.title}${p.unit ? " (" + p.unit + ")" : ""}</h2><div class="legend">` +
        p.series.map((s) => `<span><i style="background:${s.color}"></i>${s.name}</span>`).join("") + "</div>";
      box.appendChild(div);
    }
    box.dataset.built = "1";
  }
  for (const p of PANELS) drawChart(p);
}

function drawChart(panel) {
  const div = $("chart-" + panel.id);
  const old = div.querySelector("svg");
  if (old) old.remove();
  const W = Math.max(div.clientWidth - 20, 300), H = 220, L = 56, R = 10, T = 8, B = 26;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, height: H, "data-panel": panel.id }, div);
  const rows = state.rows;
  const x0 = state.from, x1 = state.to;
  let lo = Infinity, hi = -Infinity;
  for (const s of panel.series) for (const r of rows) {
    const v = r[s.col];
    if (v !== null && v !== undefined) { if (v < lo) lo = v; if (v > hi) hi = v; }
  }
  if (!(lo <= hi)) { el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, svg).textContent = "no data in this range"; return; }
  if (hi - lo < 1e-9) { hi += 0.5; lo -= 0.5; }
  const padY = (hi - lo) * 0.06; lo -= padY; hi += padY;
  const x = (t) => L + (t - x0) / (x1 - x0) * (W - L - R);
  const y = (v) => T + (hi - v) / (hi - lo) * (H - T - B);
  const grid = el("g", { class: "grid" }, svg), axis = el("g", { class: "axis" }, svg);
  for (const v of niceTicks(lo, hi, 5)) {
    el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v) }, grid);
    el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, axis).textContent = +v.toFixed(3);
  }
  const span = x1 - x0;
  for (const tick of timeTicks(x0, x1, Math.max(2, Math.floor((W - L - R) / 80)))) {
    const px = x(tick.t);
    el("line", { x1: px, x2: px, y1: T, y2: H - B }, grid);
    const anchor = px - L < 24 ? "start" : W - R - px < 24 ? "end" : "middle";
    el("text", { x: px, y: H - 8, "text-anchor": anchor }, axis).textContent = tick.text;
  }
  for (const s of panel.series) {
    const values = rows.map((r) => r[s.col]).filter((v) => v !== null && v !== undefined);
    el("path", { class: "series", d: pathOf(rows, s.col, x, y, W - L - R), stroke: s.color,
      "data-name": s.name, "data-column": s.col, "data-count": values.length,
      "data-first": values.length ? values[0] : "", "data-last": values.length ? values[values.length - 1] : "" }, svg);
  }
  const cursor = el("line", { class: "cursor", y1: T, y2: H - B, visibility: "hidden" }, svg);
  const sel = el("rect", { class: "selection", y: T, height: H - T - B, visibility: "hidden" }, svg);
  const toT = (clientX) => {
    const rect = svg.getBoundingClientRect();
    const px = (clientX - rect.left) * W / rect.width;
    return { px, t: x0 + (px - L) / (W - L - R) * span };
  };
  let drag = null;
  svg.addEventListener("mousedown", (e) => { drag = toT(e.clientX); });
  svg.addEventListener("mousemove", (e) => {
    const { px, t } = toT(e.clientX);
    const r = nearest(rows, t);
    if (r) {
      const cx = x(r.window_start_ms);
      cursor.setAttribute("x1", cx); cursor.setAttribute("x2", cx); cursor.setAttribute("visibility", "visible");
      const tip = $("tooltip");
      tip.hidden = false;
      tip.innerHTML = `<b>${r.window_start}</b> (${r.source})<br>` + panel.series.map((s) =>
        `${s.name}: ${r[s.col] === null ? "–" : (+r[s.col]).toFixed(3)} ${panel.unit}`).join("<br>");
      tip.style.left = (e.clientX + 14) + "px";
      tip.style.top = (e.clientY + 10) + "px";
    }
    if (drag) {
      const a = Math.min(drag.px, px), b = Math.max(drag.px, px);
      sel.setAttribute("x", a); sel.setAttribute("width", b - a); sel.setAttribute("visibility", "visible");
    }
  });
  svg.addEventListener("mouseleave", () => { cursor.setAttribute("visibility", "hidden"); $("tooltip").hidden = true; });
  svg.addEventListener("mouseup", (e) => {
    if (!drag) return;
    const end = toT(e.clientX);
    const a = Math.min(drag.t, end.t), b = Math.max(drag.t, end.t);
    const moved = Math.abs(end.px - drag.px);
    drag = null;
    sel.setAttribute("visibility", "hidden");
    if (moved > 5 && b - a >= 60e3) {
      state.preset = "custom";
      setRange(Math.floor(a / 60e3) * 60e3, Math.ceil(b / 60e3) * 60e3);
      load();
    }
  });
}

function nearest(rows, t) {
  if (!rows.length) return null;
  let lo = 0, hi = rows.length - 1;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (rows[mid].window_start_ms < t) lo = mid + 1; else hi = mid; }
  if (lo > 0 && Math.abs(rows[lo - 1].window_start_ms - t) < Math.abs(rows[lo].window_start_ms - t)) lo--;
  return rows[lo];
}

// ---- insights ---------------------------------------------------------------------------

function fmt(v, digits) { return v === null || v === undefined ? "–" : (+v).toFixed(digits); }

function dl(target, pairs) {
  target.innerHTML = pairs.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("");
}

function drawInsights(i, error) {
  if (!i) {
    dl($("summary"), [["insights", error || "none"]]);
    return;
  }
  const cur = i.cost.currency;
  dl($("summary"), [
    ["energy", `${fmt(i.total_kwh, 1)} kWh over ${i.days_with_data} days`],
    ["standby baseload", `${fmt(i.baseload_w, 0)} W`],
    ["baseload a year", `${fmt(i.baseload_kwh_per_year, 0)} kWh, ${fmt(i.baseload_cost_per_year, 0)} ${cur}`],
    ["peak hours", i.peak_hours.map((h) => pad(h) + ":00").join(", ")],
  ]);
  $("shares").innerHTML = i.shares.map((s) => `<div class="share" data-part="${s.name}"><span>${s.name.replace(/_/g, " ")}</span>` +
    `<div class="bar" style="width:${(Math.max(s.share, 0) * 100).toFixed(1)}%"></div><span>${fmt(s.kwh, 1)} kWh, ${fmt(s.share * 100, 1)} %</span></div>`).join("");
  dl($("cost"), [
    ["energy cost", `${fmt(i.cost.energy, 2)} ${cur}`],
    ["standing charges", `${fmt(i.cost.standing, 2)} ${cur}`],
    ["in the peak period", `${fmt(i.cost.peak_share * 100, 1)} % of the energy`],
    ["shifting laundry + water heater", `${fmt(i.cost.shiftable_peak_kwh, 1)} kWh in the peak: saves ${fmt(i.cost.shift_saving_per_month, 2)} ${cur} a month, ${fmt(i.cost.shift_saving_per_year, 2)} ${cur} a year`],
  ]);
  $("unusual").innerHTML = i.unusual_days.length
    ? "<tr><th>day</th><th>kWh</th><th>typical</th><th>deviations</th></tr>" + i.unusual_days.map((d) =>
      `<tr><td>${d.date}</td><td>${fmt(d.kwh, 1)}</td><td>${fmt(d.typical_kwh, 1)}</td><td>${d.deviations > 0 ? "+" : ""}${fmt(d.deviations, 1)}</td></tr>`).join("")
    : "<tr><td>none: every day was close to the typical for its weekday</td></tr>";
  $("compare").innerHTML = "<tr><th>against</th><th>from</th><th>kWh</th><th>change</th></tr>" + i.comparisons.map((c) =>
    `<tr><td>${c.against.replace(/_/g, " ")}</td><td>${c.from}</td><td>${c.kwh === null ? "no data" : fmt(c.kwh, 1)}</td><td>${c.change === null ? "–" : (c.change > 0 ? "+" : "") + fmt(c.change * 100, 1) + " %"}</td></tr>`).join("");
  drawProfile(i);
}

function drawProfile(i) {
  const div = $("profile");
  div.innerHTML = "";
  const W = Math.max(div.clientWidth, 300), H = 200, L = 56, R = 10, T = 8, B = 24;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, height: H, "data-panel": "typical-day" }, div);
  const lines = [["all days", i.typical_day, "#1f6feb"], ["weekdays", i.typical_weekday, "#f79009"], ["weekends", i.typical_weekend, "#12b76a"]];
  const legend = document.createElement("div");
  legend.className = "legend";
  legend.innerHTML = lines.map(([name, , color]) => `<span><i style="background:${color}"></i>${name}</span>`).join("");
  div.insertBefore(legend, svg);
  const hi = Math.max(1, ...lines.flatMap((l) => l[1].filter((v) => v !== null)));
  const x = (h) => L + h / 24 * (W - L - R), y = (v) => T + (1 - v / (hi * 1.08)) * (H - T - B);
  const axis = el("g", { class: "axis" }, svg), grid = el("g", { class: "grid" }, svg);
  for (const v of niceTicks(0, hi * 1.08, 4)) {
    el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v) }, grid);
    el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, axis).textContent = v;
  }
  for (let h = 0; h <= 24; h += 3) {
    const anchor = h === 0 ? "start" : h === 24 ? "end" : "middle";
    el("text", { x: x(h), y: H - 6, "text-anchor": anchor }, axis).textContent = pad(h) + ":00";
  }
  for (const [name, values, color] of lines) {
    let d = "";
    values.forEach((v, h) => { if (v !== null) d += `${d ? "L" : "M"}${x(h).toFixed(1)} ${y(v).toFixed(1)}L${x(h + 1).toFixed(1)} ${y(v).toFixed(1)}`; });
    el("path", { class: "series", d, stroke: color, "data-name": name, "stroke-width": 2 }, svg);
  }
}

// ---- live -------------------------------------------------------------------------------

function follow() {
  if (state.live) state.live.close();
  const source = new EventSource(`/api/v1/live?meter=${encodeURIComponent(state.meter)}`);
  state.live = source;
  let pending = false;
  source.addEventListener("windows", (e) => {
    const update = JSON.parse(e.data);
    if (update.granularity !== state.granularity) return;
    state.lastLive = Date.now();
    const newest = update.rows.reduce((a, r) => Math.max(a, r.window_start_ms), -Infinity);
    // A preset follows the newest data; a chosen range only takes what falls inside it.
    if (state.preset !== "custom" && newest + LEN[update.granularity] > state.to) {
      const shift = newest + LEN[update.granularity] - state.to;
      setRange(state.from + shift, state.to + shift);
      const m = meterInfo();
      if (m) m.newest_reading_ms = Math.max(m.newest_reading_ms, newest + LEN[update.granularity]);
    }
    const byStart = new Map(state.rows.map((r, k) => [r.window_start_ms, k]));
    for (const r of update.rows) {
      if (r.window_start_ms < state.from || r.window_start_ms >= state.to) continue;
      const k = byStart.get(r.window_start_ms);
      if (k === undefined) state.rows.push(r); else state.rows[k] = r;
    }
    state.rows.sort((a, b) => a.window_start_ms - b.window_start_ms);
    while (state.rows.length && state.rows[0].window_start_ms < state.from) state.rows.shift();
    if (!pending) {
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        drawCharts();
        showStatus();
        state.timings.shown = { at: viewsNow(), newest: newestShown() };
        if (typeof window.wattflowShown === "function") window.wattflowShown(state.timings.shown);
      });
    }
  });
}

// ---- start ------------------------------------------------------------------------------

async function start() {
  // Until the views hold a meter (a pipeline just started), ask again every two seconds.
  for (;;) {
    try {
      const m = await getJSON("/api/v1/meters");
      state.meters = m.meters;
      state.timezone = m.timezone || "naive";
      if (state.meters.length) break;
      message("The views hold no meter yet: waiting for the first readings…");
      $("status").textContent = "no data";
    } catch (e) {
      message(e.message);
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
  message("");
  const select = $("meter");
  select.innerHTML = state.meters.map((m) => `<option>${m.meter}</option>`).join("");
  state.meter = state.meters[0].meter;
  select.addEventListener("change", () => { state.meter = select.value; applyPreset(state.preset === "custom" ? "day" : state.preset); load(); follow(); });
  for (const b of document.querySelectorAll("#presets button")) {
    b.addEventListener("click", () => { applyPreset(b.dataset.preset); load(); });
  }
  for (const id of ["from", "to"]) {
    $(id).addEventListener("change", () => {
      const from = fromWall($("from").value), to = fromWall($("to").value);
      if (from !== null && to !== null && from < to) { state.preset = "custom"; setRange(from, to); load(); }
    });
  }
  $("granularity").addEventListener("change", load);
  window.addEventListener("resize", () => { drawCharts(); if (state.insights) drawProfile(state.insights); });
  applyPreset("day");
  await load();
  follow();
}

start();
