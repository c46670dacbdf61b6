// overview.js: the overview view: the counters, the queue depth table and the last hour's SVG
// charts, painted from the live stream's snapshot or a fetched one.

import { state } from "./state.js";
import { h, svg, fmtMs, fmtPercent, time, table, showError } from "./dom.js";
import { api } from "./api.js";
import { heading, keepFocus } from "./view.js";

export function renderOverview(ctx) {
  const body = h("div", { id: "overview-body" }, h("p", { class: "muted" }, "Loading…"));
  ctx.root.append(heading("Overview"), body);
  ctx.onOverview = (snapshot) => keepFocus(() => paintOverview(body, snapshot));
  ctx.reload = () => loadOverview(ctx, body);
  if (state.overview) paintOverview(body, state.overview);
  loadOverview(ctx, body);
}

function loadOverview(ctx, body) {
  api("/v1/dashboard/overview").then((snapshot) => {
    state.overview = snapshot;
    if (ctx.alive()) paintOverview(body, snapshot);
  }, showError);
}

function paintOverview(body, snapshot) {
  const minutes = snapshot.last_hour?.minutes || [];
  body.replaceChildren(
    overviewCards(snapshot),
    h("h2", {}, "Queue depth"),
    depthTable(snapshot.depth || []),
    h("h2", {}, "Last hour"),
    h("div", { class: "charts" },
      throughputChart(minutes),
      latencyChart("Queue wait", minutes, "queue_wait_ms"),
      latencyChart("Processing", minutes, "processing_ms"),
      latencyChart("End to end", minutes, "end_to_end_ms")),
    h("p", { class: "muted small" }, `Scope: ${snapshot.scope === "all" ? "every key" : "this key's jobs"}. `,
      "Updated ", time(snapshot.generated_at), "."));
}

function overviewCards(snapshot) {
  const depth = snapshot.depth || [];
  const hour = snapshot.last_hour || {};
  const total = (name) => depth.reduce((sum, row) => sum + (row[name] || 0), 0);
  return h("dl", { class: "cards" },
    card("Queued", total("queued"), "queued"),
    card("Processing", total("processing"), "processing"),
    card("Completed (1 h)", hour.completed ?? 0, "completed"),
    card("Failed (1 h)", hour.failed ?? 0, "failed"),
    card("Error rate (1 h)", fmtPercent(hour.error_rate), "error-rate"),
    card("Nodes alive", snapshot.nodes_alive ?? 0, "nodes-alive"));
}

function card(label, value, name) {
  return h("div", { class: "card" }, h("dt", {}, label), h("dd", { "data-card": name }, value));
}

function depthTable(depth) {
  const rows = depth.map((row) => h("tr", {},
    h("td", {}, row.model), h("td", { class: "num" }, row.priority),
    h("td", { class: "num" }, row.queued), h("td", { class: "num" }, row.processing)));
  return table("Queue depth by model and priority", ["Model", ["Priority", "num"], ["Queued", "num"], ["Processing", "num"]], rows,
    "Nothing is queued or running.");
}

// A chart is a fixed 300×90 drawing scaled to its box; values are drawn against the largest
// one of the hour, which its label states.
const CHART = { width: 300, height: 90, top: 12 };

function chartFigure(title, summary, legend, shapes, max, unit) {
  return h("figure", { class: "chart" },
    h("figcaption", {}, h("strong", {}, title), " ", h("span", { class: "muted small" }, summary)),
    svg("svg", { viewBox: `0 0 ${CHART.width} ${CHART.height + 14}`, role: "img", "aria-label": `${title}: ${summary}` },
      svg("line", { x1: 0, x2: CHART.width, y1: CHART.height, y2: CHART.height, class: "axis" }),
      svg("text", { x: 2, y: 9, class: "tick" }, `max ${unit(max)}`),
      svg("text", { x: 2, y: CHART.height + 12, class: "tick" }, "−60 min"),
      svg("text", { x: CHART.width - 2, y: CHART.height + 12, class: "tick", "text-anchor": "end" }, "now"),
      shapes),
    h("ul", { class: "legend" }, legend.map(([name, cls]) => h("li", {}, h("span", { class: `swatch ${cls}` }), name))));
}

function scaleY(value, max) {
  return CHART.height - (value / max) * (CHART.height - CHART.top);
}

function throughputChart(minutes) {
  const max = Math.max(1, ...minutes.map((m) => (m.completed || 0) + (m.failed || 0)));
  const step = CHART.width / Math.max(minutes.length, 1);
  const bars = minutes.flatMap((m, i) => {
    const done = scaleY(m.completed || 0, max);
    const all = scaleY((m.completed || 0) + (m.failed || 0), max);
    return [
      svg("rect", { x: i * step + 0.5, width: Math.max(step - 1, 0.5), y: done, height: CHART.height - done, class: "bar ok" }),
      svg("rect", { x: i * step + 0.5, width: Math.max(step - 1, 0.5), y: all, height: done - all, class: "bar bad" }),
    ];
  });
  const done = minutes.reduce((sum, m) => sum + (m.completed || 0), 0);
  const failed = minutes.reduce((sum, m) => sum + (m.failed || 0), 0);
  return chartFigure("Throughput", `${done} completed, ${failed} failed`,
    [["completed", "ok"], ["failed", "bad"]], bars, max, (v) => `${v}/min`);
}

function latencyChart(title, minutes, name) {
  const values = minutes.flatMap((m) => [m[name]?.p50, m[name]?.p95]).filter((v) => v !== null && v !== undefined);
  const max = Math.max(1, ...values);
  const last = [...minutes].reverse().find((m) => m[name] && m[name].p50 !== null && m[name].p50 !== undefined);
  const summary = last ? `p50 ${fmtMs(last[name].p50)}, p95 ${fmtMs(last[name].p95)} (latest minute with jobs)` : "no finished job";
  const lines = ["p95", "p50"].map((pct) => latencySeries(minutes.map((m) => m[name]?.[pct]), max, pct));
  return chartFigure(title, summary, [["p50", "p50"], ["p95", "p95"]], lines, max, fmtMs);
}

// The x of minute `i` of `count`, inset so that a dot on either edge is drawn whole.
function scaleX(i, count) {
  const inset = 4;
  return inset + (i * (CHART.width - 2 * inset)) / Math.max(count - 1, 1);
}

// A line through the minutes that have a value (a minute without one breaks it), with a dot
// on each, so that a quiet hour's lone minute still shows.
function latencySeries(values, max, cls) {
  let path = "";
  let drawing = false;
  const dots = [];
  values.forEach((value, i) => {
    if (value === null || value === undefined) {
      drawing = false;
      return;
    }
    const x = scaleX(i, values.length).toFixed(1);
    const y = scaleY(value, max).toFixed(1);
    path += `${drawing ? " L" : " M"} ${x} ${y}`;
    drawing = true;
    dots.push(svg("circle", { cx: x, cy: y, r: 2.5, class: `dot ${cls}` }));
  });
  return [path ? svg("path", { d: path.trim(), class: `line ${cls}` }) : null, dots];
}
