// app.js: the OpenBeepBoop dashboard in the browser. It owns the login (the key lives in
// sessionStorage only, and travels only in the Authorization header), hash routing, the live
// event stream, and one render function per view. It is a client of the public HTTP API
// (docs/design/dashboard.md) and of nothing else: what it shows, a script can read.
"use strict";

const KEY_STORAGE = "obb.key";
const PAGE_SIZE = 20;
const JOB_STATUSES = ["queued", "processing", "completed", "failed", "cancelled", "expired"];
const CANCELLABLE = new Set(["queued", "processing"]);
const RETRYABLE = new Set(["failed", "expired", "cancelled"]);
const BATCH_ACTIVE = new Set(["validating", "in_progress", "finalizing", "cancelling"]);
const BATCH_CANCELLABLE = new Set(["validating", "in_progress"]);
const SVG_NS = "http://www.w3.org/2000/svg";
// The overview event comes every 2 s: a stream silent for this long is dead (a half-open
// connection never errors by itself), so it is dropped and opened again.
const STREAM_SILENCE_MS = 20000;
const NODES_REFRESH_MS = 3000;
const BATCHES_POLL_MS = 5000;

const state = {
  key: null,
  who: null,
  stream: null,
  overview: null,
  view: null,
  generation: 0,
  jobs: { filters: { status: "", model: "", key_id: "", batch_id: "" }, cursors: [null], page: null, asked: 0 },
  batches: { cursors: [null], page: null, asked: 0 },
};

const VIEWS = {
  overview: { title: "Overview", nav: true, render: renderOverview },
  jobs: { title: "Jobs", nav: true, render: renderJobs },
  job: { title: "Job", render: renderJob },
  batches: { title: "Batches", nav: true, render: renderBatches },
  nodes: { title: "Nodes", nav: true, admin: true, render: renderNodes },
  keys: { title: "Keys", nav: true, admin: true, render: renderKeys },
};

// ---------------------------------------------------------------- DOM and formatting helpers

function $(selector, root = document) {
  return root.querySelector(selector);
}

// Builds an element; text is always set as text, never parsed as HTML, so no API value can
// inject markup.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttributes(el, attrs);
  appendChildren(el, children);
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttributes(el, attrs);
  appendChildren(el, children);
  return el;
}

function setAttributes(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
}

function appendChildren(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

function pad(n) {
  return String(n).padStart(2, "0");
}

function fmtTime(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const d = new Date(seconds * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtAgo(seconds) {
  if (!seconds) return "never";
  const age = Math.max(0, Math.round(Date.now() / 1000 - seconds));
  if (age < 60) return `${age} s ago`;
  if (age < 3600) return `${Math.floor(age / 60)} min ago`;
  return `${Math.floor(age / 3600)} h ago`;
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "—";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

// A span between two of a job's times, which are whole seconds: shown to the second, not as
// a precision the API does not give.
function fmtSpan(from, to) {
  if (!from || !to) return "—";
  const seconds = Math.max(0, to - from);
  return seconds === 0 ? "< 1 s" : `${seconds} s`;
}

function fmtPercent(ratio) {
  return `${((ratio || 0) * 100).toFixed(1)} %`;
}

function time(seconds) {
  return h("time", { datetime: seconds ? new Date(seconds * 1000).toISOString() : null }, fmtTime(seconds));
}

function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

function pretty(value) {
  return h("pre", { class: "json", tabindex: "0" }, JSON.stringify(value, null, 2));
}

function table(caption, headers, rows, empty) {
  if (!rows.length) return h("p", { class: "muted empty" }, empty);
  return h("div", { class: "scroller", role: "region", "aria-label": caption, tabindex: "0", "data-focus": `table:${caption}` },
    h("table", {},
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, headers.map(headerCell))),
      h("tbody", {}, rows)));
}

// A header is its text, or [text, "num"] for a column of numbers (aligned right, as they are).
function headerCell(header) {
  const [text, cls] = Array.isArray(header) ? header : [header, null];
  return h("th", { scope: "col", class: cls }, text);
}

function field(id, label, control) {
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}

function isAdmin() {
  return String(state.who?.role || "").toUpperCase() === "ADMIN";
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

// Re-rendering a list replaces its buttons; this puts the focus back on the button that had
// it (same `data-focus`), so that live updates do not throw a keyboard user out of a table.
function keepFocus(render) {
  const focused = document.activeElement?.getAttribute?.("data-focus");
  render();
  if (!focused) return;
  const again = document.querySelector(`[data-focus="${CSS.escape(focused)}"]`);
  again?.focus();
}

// ------------------------------------------------------------------------ talking to the API

class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function parseJson(text) {
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

function authHeaders(extra) {
  return { Authorization: `Bearer ${state.key}`, ...extra };
}

async function errorFrom(response) {
  const data = parseJson(await response.text());
  const message = data?.error?.message || `${response.status} ${response.statusText}`.trim();
  return new ApiError(response.status, message, data?.error?.code);
}

async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, headers: authHeaders(), signal, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorFrom(response);
  return parseJson(await response.text());
}

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(name, value);
  }
  return search.toString();
}

function enc(id) {
  return encodeURIComponent(id);
}

// Files are downloaded with the key in a header, then handed to the browser as a blob URL:
// a plain link could not carry the key.
async function download(fileId) {
  const response = await fetch(`/v1/files/${enc(fileId)}/content`, { headers: authHeaders() });
  if (!response.ok) throw await errorFrom(response);
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: `${fileId}.jsonl`, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

// ------------------------------------------------------------------- notices and dialogs

function notify(message, kind = "error") {
  const box = $("#notice");
  const close = h("button", { type: "button", class: "icon", "aria-label": "Dismiss message" }, "×");
  const item = h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, message, close);
  close.addEventListener("click", () => item.remove());
  box.replaceChildren(item);
  if (kind !== "error") setTimeout(() => item.remove(), 5000);
}

function showError(error) {
  if (error?.name === "AbortError") return;
  if (error?.status === 401) {
    logout(`the key was refused: ${error.message}`);
    return;
  }
  notify(error?.message || String(error));
}

// Runs a button's action with the button disabled meanwhile, and shows an API error's message.
async function act(button, work) {
  button.disabled = true;
  try {
    await work();
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
    // A dialog closed meanwhile could not give the focus back to the disabled button.
    if (button.isConnected && document.activeElement === document.body) button.focus();
  }
}

// A modal <dialog>: Escape closes it (its `cancel`), the focus stays inside it while open and
// goes back to the button that opened it when it closes.
function openDialog(title, body, buttons) {
  const id = `dialog-${Date.now()}`;
  const dialog = h("dialog", { class: "dialog", "aria-labelledby": id },
    h("form", { method: "dialog" }, h("h2", { id }, title), body, h("div", { class: "actions" }, buttons)));
  const opener = document.activeElement;
  dialog.addEventListener("close", () => {
    dialog.remove();
    opener?.focus?.();
  });
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

function confirmDialog(title, message, confirmLabel) {
  return new Promise((resolve) => {
    const dialog = openDialog(title, h("p", {}, message), [
      h("button", { type: "submit", value: "cancel", autofocus: true }, "Keep"),
      h("button", { type: "submit", value: "ok", class: "danger" }, confirmLabel),
    ]);
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"));
  });
}

// --------------------------------------------------------------------------- login and frame

async function login(key) {
  state.key = key;
  const who = await api("/v1/dashboard/whoami");
  state.who = who;
  sessionStorage.setItem(KEY_STORAGE, key);
  showApp();
  startEvents();
  route();
}

function logout(message) {
  stopView();
  stopEvents();
  sessionStorage.removeItem(KEY_STORAGE);
  state.key = null;
  state.who = null;
  state.overview = null;
  state.jobs.cursors = [null];
  state.batches.cursors = [null];
  $("#view").replaceChildren();
  showLogin(message);
}

function showLogin(message) {
  $("#app").hidden = true;
  $("#login").hidden = false;
  const error = $("#login-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("#login-key").value = "";
  $("#login-key").focus();
}

function showApp() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#whoami").replaceChildren(h("span", {}, state.who.name || state.who.key_id), " ",
    h("span", { class: "badge role" }, String(state.who.role).toUpperCase()));
  $("#nav").replaceChildren(...navItems());
}

function navItems() {
  return Object.entries(VIEWS)
    .filter(([, view]) => view.nav && (!view.admin || isAdmin()))
    .map(([name, view]) => h("li", {}, h("a", { href: `#/${name}`, "data-view": name }, view.title)));
}

async function submitLogin(event) {
  event.preventDefault();
  const button = $("#login-form button");
  const key = $("#login-key").value.trim();
  button.disabled = true;
  try {
    await login(key);
  } catch (error) {
    state.key = null;
    showLogin(error.status === 403 ? `this key cannot use the dashboard: ${error.message}` : error.message);
  } finally {
    button.disabled = false;
  }
}

// ----------------------------------------------------------------------------------- routing

function parseHash() {
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  if (name === "jobs" && rest.length && rest[0]) return { name: "job", id: decodeURIComponent(rest.join("/")) };
  return { name: VIEWS[name] ? name : "overview" };
}

function stopView() {
  state.generation += 1;
  for (const timer of state.view?.timers || []) clearTimeout(timer);
  state.view = null;
}

// A timeout that the view's end cancels, and that a live view forgets once it has run (a
// busy queue sets one a second for as long as the tab is open).
function later(ctx, ms, fn) {
  const timer = setTimeout(() => {
    ctx.timers.delete(timer);
    if (ctx.alive()) fn();
  }, ms);
  ctx.timers.add(timer);
}

function route() {
  if (!state.who) return;
  const where = parseHash();
  if (VIEWS[where.name].admin && !isAdmin()) {
    location.replace("#/overview");
    return;
  }
  stopView();
  const generation = state.generation;
  const root = $("#view");
  root.replaceChildren();
  const ctx = { root, timers: new Set(), alive: () => state.generation === generation };
  state.view = ctx;
  markNav(where.name === "job" ? "jobs" : where.name);
  document.title = `${VIEWS[where.name].title} · OpenBeepBoop`;
  VIEWS[where.name].render(ctx, where.id);
}

function markNav(name) {
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function heading(text, ...extra) {
  return h("div", { class: "view-head" }, h("h1", {}, text), extra);
}

// Calls `fn` at most once per `ms` for a burst of calls, and never after the view is left.
function throttle(ctx, fn, ms = 1000) {
  let last = 0;
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    later(ctx, Math.max(0, last + ms - Date.now()), () => {
      pending = false;
      last = Date.now();
      fn();
    });
  };
}

function every(ctx, ms, fn) {
  ctx.timers.add(setInterval(() => ctx.alive() && fn(), ms));
}

// -------------------------------------------------------------------------- the live stream

// EventSource cannot send an Authorization header, so the stream is read with fetch() and a
// reader. A dropped stream is opened again after 1, 2, 4 … 30 s (with jitter, so that many
// tabs do not come back at once); a successful open resets the delay.
async function startEvents() {
  stopEvents();
  const controller = new AbortController();
  state.stream = controller;
  let delay = 1000;
  let dropped = false;
  while (!controller.signal.aborted) {
    try {
      await readEvents(controller.signal, () => {
        delay = 1000;
        setLive(true);
        if (dropped) state.view?.reload?.();
      });
    } catch (error) {
      if (controller.signal.aborted) return;
      if (error.status === 401) return showError(error);
    }
    if (controller.signal.aborted) return;
    dropped = true;
    setLive(false);
    await sleep(delay * (1 + Math.random() / 2), controller.signal);
    delay = Math.min(delay * 2, 30000);
  }
}

function stopEvents() {
  state.stream?.abort();
  state.stream = null;
  setLive(false);
}

function setLive(live) {
  const badge = $("#live");
  badge.textContent = live ? "live" : "reconnecting";
  badge.classList.toggle("on", live);
}

async function readEvents(signal, opened) {
  const connection = new AbortController();
  const hangUp = () => connection.abort();
  signal.addEventListener("abort", hangUp, { once: true });
  let watchdog = setTimeout(hangUp, STREAM_SILENCE_MS);
  try {
    const response = await fetch("/v1/dashboard/events", {
      headers: authHeaders({ Accept: "text/event-stream" }), signal: connection.signal, cache: "no-store",
    });
    if (!response.ok) throw await errorFrom(response);
    opened();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      clearTimeout(watchdog);
      watchdog = setTimeout(hangUp, STREAM_SILENCE_MS);
      buffer = dispatchFrames(buffer + value.replace(/\r\n?/g, "\n"));
    }
  } finally {
    clearTimeout(watchdog);
    signal.removeEventListener("abort", hangUp);
  }
}

// Dispatches every complete frame (ended by a blank line) and returns what is left.
function dispatchFrames(buffer) {
  let end;
  while ((end = buffer.indexOf("\n\n")) >= 0) {
    dispatchFrame(buffer.slice(0, end));
    buffer = buffer.slice(end + 2);
  }
  return buffer;
}

function dispatchFrame(frame) {
  let name = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const fieldName = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (fieldName === "event") name = value;
    else if (fieldName === "data") data.push(value);
  }
  const payload = parseJson(data.join("\n"));
  if (payload) handleEvent(name, payload);
}

function handleEvent(name, payload) {
  if (name === "overview") {
    state.overview = payload;
    state.view?.onOverview?.(payload);
  } else if (name === "job") {
    state.view?.onJob?.(payload);
  } else if (name === "resync") {
    // The gateway dropped events for this stream (it fell behind): what is shown may be
    // stale, so the view loads again.
    state.view?.reload?.();
  }
}

// ---------------------------------------------------------------------------------- overview

function renderOverview(ctx) {
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

// -------------------------------------------------------------------------------------- jobs

function renderJobs(ctx) {
  const list = h("div", { id: "jobs-list" }, h("p", { class: "muted" }, "Loading…"));
  ctx.root.append(heading("Jobs"), jobSearchForm(), jobFilterForm(ctx, list), list);
  const reloadFirstPage = throttle(ctx, () => loadJobs(ctx, list));
  ctx.onJob = (event) => onJobInList(ctx, list, event, reloadFirstPage);
  ctx.reload = () => loadJobs(ctx, list);
  loadJobs(ctx, list);
}

function jobSearchForm() {
  const input = h("input", { id: "job-search", type: "search", placeholder: "job-…", spellcheck: "false", required: true });
  return h("form", { class: "search", role: "search", onsubmit: (event) => {
    event.preventDefault();
    const id = input.value.trim();
    if (id) location.hash = `#/jobs/${enc(id)}`;
  } }, field("job-search", "Find a job by id", input), h("button", { type: "submit" }, "Open"));
}

function jobFilterForm(ctx, list) {
  const filters = state.jobs.filters;
  const status = h("select", { id: "filter-status" }, h("option", { value: "" }, "any"),
    JOB_STATUSES.map((s) => h("option", { value: s, selected: filters.status === s }, s)));
  const inputs = {
    status,
    model: h("input", { id: "filter-model", value: filters.model, spellcheck: "false" }),
    batch_id: h("input", { id: "filter-batch", value: filters.batch_id, placeholder: "batch_…", spellcheck: "false" }),
    key_id: isAdmin() ? h("input", { id: "filter-key", value: filters.key_id, placeholder: "key_…", spellcheck: "false" }) : null,
  };
  const summary = h("summary", {}, filterSummary(filters));
  const apply = (event) => {
    event.preventDefault();
    for (const [name, input] of Object.entries(inputs)) filters[name] = input ? input.value.trim() : "";
    summary.textContent = filterSummary(filters);
    state.jobs.cursors = [null];
    loadJobs(ctx, list);
  };
  const form = h("form", { class: "filters", onsubmit: apply, "aria-label": "Filter jobs" },
    field("filter-status", "Status", status),
    field("filter-model", "Model", inputs.model),
    field("filter-batch", "Batch", inputs.batch_id),
    inputs.key_id && field("filter-key", "Key", inputs.key_id),
    h("button", { type: "submit", class: "primary" }, "Apply filters"));
  // On a phone the filters start folded, so that the table is on the first screen.
  const active = Object.values(filters).some(Boolean);
  return h("details", { class: "filter-box", open: active || window.matchMedia("(min-width: 601px)").matches },
    summary, form);
}

function filterSummary(filters) {
  return Object.values(filters).some(Boolean) ? "Filters (on)" : "Filters";
}

async function loadJobs(ctx, list) {
  const { filters, cursors } = state.jobs;
  const params = { ...filters, key_id: isAdmin() ? filters.key_id : "", limit: PAGE_SIZE, after: cursors.at(-1) };
  // A filter change and a live reload may cross: only the latest request paints.
  const asked = ++state.jobs.asked;
  try {
    const page = await api(`/v1/jobs?${query(params)}`);
    if (!ctx.alive() || asked !== state.jobs.asked) return;
    state.jobs.page = page;
    keepFocus(() => paintJobs(ctx, list));
  } catch (error) {
    showError(error);
  }
}

function paintJobs(ctx, list) {
  const page = state.jobs.page;
  const headers = ["Job", "Status", "Model", ["Priority", "num"], ["Attempts", "num"], "Created", ...(isAdmin() ? ["Key"] : []), "Actions"];
  const rows = page.data.map((job) => jobRow(ctx, list, job));
  list.replaceChildren(
    table("Jobs, newest first", headers, rows, "No job matches."),
    pager(state.jobs, page, () => loadJobs(ctx, list)));
}

function jobRow(ctx, list, job) {
  return h("tr", { "data-id": job.id },
    h("td", {}, h("a", { href: `#/jobs/${enc(job.id)}`, class: "mono" }, job.id)),
    h("td", {}, statusBadge(job.status)),
    h("td", {}, job.model),
    h("td", { class: "num" }, job.priority),
    h("td", { class: "num" }, job.attempts),
    h("td", {}, time(job.created_at)),
    isAdmin() ? h("td", { class: "mono" }, job.key_id || "—") : null,
    h("td", { class: "actions" }, jobActions(job, (updated) => replaceJobRow(ctx, list, updated))));
}

function replaceJobRow(ctx, list, job) {
  const page = state.jobs.page;
  const index = page.data.findIndex((j) => j.id === job.id);
  if (index < 0) return;
  page.data[index] = { ...page.data[index], ...job };
  const row = list.querySelector(`tr[data-id="${CSS.escape(job.id)}"]`);
  if (row) keepFocus(() => row.replaceWith(jobRow(ctx, list, page.data[index])));
}

// A job's status changes in place; a new job that the filters let through, on the first page,
// reloads that page (at most once a second): the server applies the filters, the key's too,
// which an event does not carry.
function onJobInList(ctx, list, event, reloadFirstPage) {
  const shown = state.jobs.page?.data.find((job) => job.id === event.id);
  if (shown) {
    replaceJobRow(ctx, list, { id: event.id, status: event.status, priority: event.priority ?? shown.priority });
    return;
  }
  if (event.from === null && state.jobs.cursors.length === 1 && eventMatches(event, state.jobs.filters)) {
    reloadFirstPage();
  }
}

function eventMatches(event, filters) {
  return (!filters.status || filters.status === event.status) &&
    (!filters.model || filters.model === event.model) &&
    (!filters.batch_id || filters.batch_id === event.batch_id);
}

// The actions a job allows: cancel (anyone, on a job still running or queued), retry and
// reprioritize (admins). `done` gets the job as the API answers it.
function jobActions(job, done) {
  const actions = [];
  if (CANCELLABLE.has(job.status)) {
    actions.push(actionButton(`cancel:${job.id}`, "Cancel", `Cancel job ${job.id}`, async () => {
      if (!(await confirmDialog("Cancel the job?", `Job ${job.id} will not run (or stops at its node's next heartbeat).`, "Cancel job"))) return;
      done(await api(`/v1/jobs/${enc(job.id)}/cancel`, { method: "POST" }));
      notify(`job ${job.id} cancelled`, "ok");
    }, "danger"));
  }
  if (isAdmin() && RETRYABLE.has(job.status)) {
    actions.push(actionButton(`retry:${job.id}`, "Retry", `Retry job ${job.id}`, async () => {
      done(await api(`/admin/jobs/${enc(job.id)}/retry`, { method: "POST" }));
      notify(`job ${job.id} queued again`, "ok");
    }));
  }
  return actions;
}

function actionButton(focusKey, text, label, work, cls) {
  const button = h("button", { type: "button", class: cls, "data-focus": focusKey, "aria-label": label }, text);
  button.addEventListener("click", () => act(button, work));
  return button;
}

// Next and Previous keep a stack of `after` cursors: the server pages forward only.
function pager(paging, page, load) {
  const previous = h("button", { type: "button", disabled: paging.cursors.length === 1, "data-focus": "pager:previous" }, "← Previous");
  const next = h("button", { type: "button", disabled: !page.has_more, "data-focus": "pager:next" }, "Next →");
  previous.addEventListener("click", () => { paging.cursors.pop(); load(); });
  next.addEventListener("click", () => { paging.cursors.push(page.last_id); load(); });
  return h("nav", { class: "pager", "aria-label": "Pages" }, previous, h("span", { class: "muted" }, `Page ${paging.cursors.length}`), next);
}

// ---------------------------------------------------------------------------------- one job

function renderJob(ctx, id) {
  const body = h("div", { id: "job-body" }, h("p", { class: "muted" }, "Loading…"));
  ctx.root.append(h("p", {}, h("a", { href: "#/jobs" }, "← Jobs")), heading("Job ", h("code", { class: "title-id" }, id)), body);
  const load = () => loadJob(ctx, body, id);
  const reload = throttle(ctx, load);
  ctx.onJob = (event) => event.id === id && reload();
  ctx.reload = load;
  load();
}

async function loadJob(ctx, body, id) {
  try {
    const job = await api(`/v1/jobs/${enc(id)}?include=request`);
    if (ctx.alive()) keepFocus(() => paintJob(ctx, body, job));
  } catch (error) {
    if (!ctx.alive()) return;
    body.replaceChildren(h("p", { class: "notice error" }, error.message));
    if (error.status === 401) showError(error);
  }
}

function paintJob(ctx, body, job) {
  const repaint = (updated) => paintJob(ctx, body, { ...job, ...updated });
  body.replaceChildren();
  appendChildren(body, [
    h("div", { class: "toolbar" }, jobActions(job, repaint), priorityForm(job, repaint)),
    jobFacts(job),
    jobSection("Request", job.request),
    jobSection("Result", job.result),
    jobSection("Error", job.error),
    jobHistory(job.events || [])]);
}

function jobFacts(job) {
  const facts = [
    ["Status", statusBadge(job.status)], ["Model", job.model], ["Endpoint", job.endpoint],
    ["Priority", job.priority], ["Attempts", job.attempts], ["Node", job.node || "—"],
    ["Queue position", job.queue_position ?? "—"], ["Key", job.key_id || "—"],
    ["Created", time(job.created_at)], ["Started", time(job.started_at)],
    ["Finished", time(job.finished_at)], ["Expires", time(job.expires_at)], ["Updated", time(job.updated_at)],
    ["Queue wait", fmtSpan(job.created_at, job.started_at)],
    ["Processing", fmtSpan(job.started_at, job.finished_at)],
    ["End to end", fmtSpan(job.created_at, job.finished_at)],
  ];
  return h("dl", { class: "facts" }, facts.map(([name, value]) => h("div", {}, h("dt", {}, name), h("dd", { "data-fact": name }, value))));
}

function jobSection(title, value) {
  if (value === null || value === undefined) return null;
  return h("section", { class: "json-section" }, h("h2", {}, title), pretty(value));
}

function jobHistory(events) {
  const items = events.map((event) => h("li", {}, time(event.at), " ", describeJobEvent(event)));
  return h("section", {}, h("h2", {}, "History"),
    items.length ? h("ol", { class: "history" }, items) : h("p", { class: "muted" }, "No retry or reprioritization yet."));
}

function describeJobEvent(event) {
  if (event.type === "retried") {
    const why = event.error?.message ? `: ${event.error.message}` : "";
    return `retried from ${event.from} after ${event.attempts} attempt${event.attempts === 1 ? "" : "s"}${why}`;
  }
  if (event.type === "reprioritized") return `priority ${event.from} → ${event.to}`;
  return JSON.stringify(event);
}

function priorityForm(job, done) {
  if (!isAdmin() || job.status !== "queued") return null;
  const select = h("select", { id: "job-priority" },
    [1, 2, 3, 4, 5].map((p) => h("option", { value: p, selected: p === job.priority }, p)));
  const button = h("button", { type: "submit", "data-focus": "priority" }, "Set priority");
  return h("form", { class: "inline", onsubmit: (event) => {
    event.preventDefault();
    act(button, async () => {
      done(await api(`/admin/jobs/${enc(job.id)}/priority`, { method: "POST", body: { priority: Number(select.value) } }));
      notify(`job ${job.id} now runs at priority ${select.value}`, "ok");
    });
  } }, field("job-priority", "Priority (1 runs first)", select), button);
}

// ----------------------------------------------------------------------------------- batches

function renderBatches(ctx) {
  const list = h("div", { id: "batches-list" }, h("p", { class: "muted" }, "Loading…"));
  const refresh = h("button", { type: "button" }, "Refresh");
  refresh.addEventListener("click", () => act(refresh, () => loadBatches(ctx, list)));
  ctx.root.append(heading("Batches", refresh), list);
  const pending = new Set();
  const flush = throttle(ctx, () => refreshBatches(ctx, list, pending));
  ctx.onJob = (event) => {
    if (event.batch_id && shownBatch(event.batch_id)) {
      pending.add(event.batch_id);
      flush();
    }
  };
  // A batch moves without a job event too (validating → in_progress, finalizing → completed).
  every(ctx, BATCHES_POLL_MS, () => {
    for (const batch of state.batches.page?.data || []) if (BATCH_ACTIVE.has(batch.status)) pending.add(batch.id);
    if (pending.size) flush();
  });
  ctx.reload = () => loadBatches(ctx, list);
  loadBatches(ctx, list);
}

function shownBatch(id) {
  return state.batches.page?.data.some((batch) => batch.id === id);
}

async function loadBatches(ctx, list) {
  const asked = ++state.batches.asked;
  try {
    const page = await api(`/v1/batches?${query({ limit: PAGE_SIZE, after: state.batches.cursors.at(-1) })}`);
    if (!ctx.alive() || asked !== state.batches.asked) return;
    state.batches.page = page;
    keepFocus(() => paintBatches(ctx, list));
  } catch (error) {
    showError(error);
  }
}

async function refreshBatches(ctx, list, pending) {
  const ids = [...pending];
  pending.clear();
  for (const id of ids) {
    try {
      const batch = await api(`/v1/batches/${enc(id)}`);
      if (ctx.alive()) replaceBatchRow(ctx, list, batch);
    } catch (error) {
      showError(error);
    }
  }
}

function paintBatches(ctx, list) {
  const page = state.batches.page;
  const rows = page.data.map((batch) => batchRow(ctx, list, batch));
  list.replaceChildren(
    table("Batches, newest first", ["Batch", "Status", "Endpoint", "Progress", "Created", "Files", "Actions"], rows, "No batch yet."),
    pager(state.batches, page, () => loadBatches(ctx, list)));
}

function replaceBatchRow(ctx, list, batch) {
  const page = state.batches.page;
  const index = page.data.findIndex((b) => b.id === batch.id);
  if (index < 0) return;
  page.data[index] = batch;
  const row = list.querySelector(`tr[data-id="${CSS.escape(batch.id)}"]`);
  if (row) keepFocus(() => row.replaceWith(batchRow(ctx, list, batch)));
}

// A batch's id links to the jobs table, filtered to its lines.
function batchJobsLink(batch) {
  const showLines = () => {
    state.jobs.filters = { status: "", model: "", key_id: "", batch_id: batch.id };
    state.jobs.cursors = [null];
  };
  return h("a", { href: "#/jobs", class: "mono", onclick: showLines, title: "Its lines in the jobs table" }, batch.id);
}

function batchRow(ctx, list, batch) {
  return h("tr", { "data-id": batch.id },
    h("td", {}, batchJobsLink(batch)),
    h("td", {}, statusBadge(batch.status)),
    h("td", { class: "mono" }, batch.endpoint),
    h("td", {}, batchProgress(batch)),
    h("td", {}, time(batch.created_at)),
    h("td", { class: "actions" }, fileButton(batch, "output_file_id", "Output"), fileButton(batch, "error_file_id", "Errors")),
    h("td", { class: "actions" }, batchCancel(ctx, list, batch)));
}

function batchProgress(batch) {
  const counts = batch.request_counts || { total: 0, completed: 0, failed: 0 };
  const done = (counts.completed || 0) + (counts.failed || 0);
  return h("div", { class: "progress" },
    h("progress", { max: Math.max(counts.total, 1), value: done, "aria-label": `Progress of batch ${batch.id}` }),
    h("span", { class: "small" }, `${done} / ${counts.total}`, counts.failed ? ` (${counts.failed} failed)` : ""));
}

function fileButton(batch, name, text) {
  const id = batch[name];
  if (!id) return null;
  return actionButton(`${name}:${batch.id}`, text, `Download the ${text.toLowerCase()} file of batch ${batch.id}`, () => download(id));
}

function batchCancel(ctx, list, batch) {
  if (!BATCH_CANCELLABLE.has(batch.status)) return null;
  return actionButton(`cancel:${batch.id}`, "Cancel", `Cancel batch ${batch.id}`, async () => {
    if (!(await confirmDialog("Cancel the batch?", `Its queued lines end at once; finished lines stay in its output.`, "Cancel batch"))) return;
    replaceBatchRow(ctx, list, await api(`/v1/batches/${enc(batch.id)}/cancel`, { method: "POST" }));
  }, "danger");
}

// ------------------------------------------------------------------------------------- nodes

function renderNodes(ctx) {
  const list = h("div", { id: "nodes-list" }, h("p", { class: "muted" }, "Loading…"));
  ctx.root.append(heading("Nodes", h("span", { class: "muted small" }, `refreshed every ${NODES_REFRESH_MS / 1000} s`)), list);
  const load = () => loadNodes(ctx, list);
  ctx.reload = load;
  every(ctx, NODES_REFRESH_MS, load);
  load();
}

async function loadNodes(ctx, list) {
  try {
    const nodes = await api("/admin/nodes");
    if (ctx.alive()) keepFocus(() => paintNodes(ctx, list, nodes.data));
  } catch (error) {
    showError(error);
  }
}

function paintNodes(ctx, list, nodes) {
  const rows = nodes.map((node) => nodeRow(ctx, list, node));
  list.replaceChildren(table("Nodes",
    ["Node", "Key", "Models", ["Capacity", "num"], ["In flight", "num"], "Last seen", "State", ["Done (1 h)", "num"], "Actions"],
    rows, "No node has connected yet."));
}

function nodeRow(ctx, list, node) {
  return h("tr", { "data-id": node.id, class: node.draining ? "draining" : null },
    h("td", { class: "mono" }, node.id),
    h("td", { class: "mono" }, node.key_id),
    h("td", {}, (node.models || []).join(", ")),
    // 0 is "not reported yet" (a node that has not sent a heartbeat), not a node that runs nothing.
    h("td", { class: "num", title: node.capacity ? null : "not reported yet" }, node.capacity || "—"),
    h("td", { class: "num" }, node.in_flight),
    h("td", { title: fmtTime(node.last_seen_at) }, fmtAgo(node.last_seen_at)),
    h("td", {}, h("span", { class: `badge ${node.alive ? "status-completed" : "status-expired"}` }, node.alive ? "alive" : "gone"),
      node.draining ? [" ", h("span", { class: "badge status-draining" }, "draining"), drainHeard(node)] : null),
    h("td", { class: "num" }, node.completed_last_hour),
    h("td", { class: "actions" }, nodeActions(ctx, list, node)));
}

// Whether the node's last heartbeat said it knows it is drained: until then it may still be
// finishing a fetch it made before.
function drainHeard(node) {
  if (node.draining_reported === undefined) return null;
  return h("span", { class: "muted small" }, node.draining_reported ? " confirmed by the node" : " not yet confirmed by the node");
}

function nodeActions(ctx, list, node) {
  const verb = node.draining ? "undrain" : "drain";
  const label = node.draining ? "Undrain" : "Drain";
  // One focus key for both labels, so that the focus stays on the button as it flips.
  const toggle = actionButton(`drain:${node.id}`, label, `${label} node ${node.id}`, async () => {
    await api(`/admin/nodes/${enc(node.id)}/${verb}`, { method: "POST" });
    await loadNodes(ctx, list);
  });
  const remove = actionButton(`remove:${node.id}`, "Remove", `Remove node ${node.id}`, async () => {
    if (!(await confirmDialog("Remove the node?", `Node ${node.id} is forgotten; it registers again if it calls in.`, "Remove node"))) return;
    await api(`/admin/nodes/${enc(node.id)}`, { method: "DELETE" });
    await loadNodes(ctx, list);
  }, "danger");
  return [toggle, remove];
}

// -------------------------------------------------------------------------------------- keys

const LIMIT_FIELDS = [
  ["weight", "Weight (share of leases, 1–1000)"],
  ["requests_per_minute", "Requests per minute"],
  ["tokens_per_minute", "Tokens per minute"],
  ["max_queued_jobs", "Most jobs queued"],
  ["max_concurrent_jobs", "Most jobs running"],
  ["max_priority", "Earliest priority allowed (1–5)"],
  ["default_priority", "Default priority (1–5)"],
];

function renderKeys(ctx) {
  const list = h("div", { id: "keys-list" }, h("p", { class: "muted" }, "Loading…"));
  const secret = h("div", { id: "key-secret" });
  ctx.root.append(heading("Keys"), createKeyForm(ctx, list, secret), secret, list);
  ctx.reload = () => loadKeys(ctx, list);
  loadKeys(ctx, list);
}

function createKeyForm(ctx, list, secret) {
  const name = h("input", { id: "key-name", required: true, maxlength: 128, spellcheck: "false" });
  const role = h("select", { id: "key-role" }, ["user", "admin", "node"].map((r) => h("option", { value: r }, r)));
  const button = h("button", { type: "submit", class: "primary" }, "Create key");
  return h("form", { class: "filters", "aria-label": "Create a key", onsubmit: (event) => {
    event.preventDefault();
    act(button, async () => {
      const created = await api("/admin/keys", { method: "POST", body: { name: name.value.trim(), role: role.value } });
      name.value = "";
      showSecret(secret, created);
      await loadKeys(ctx, list);
    });
  } }, field("key-name", "Name", name), field("key-role", "Role", role), button);
}

// The secret exists only in this answer: it is shown once, until dismissed.
function showSecret(box, created) {
  const dismiss = h("button", { type: "button" }, "Dismiss");
  const copy = h("button", { type: "button" }, "Copy");
  const close = () => { box.replaceChildren(); $("#key-name")?.focus(); };
  dismiss.addEventListener("click", close);
  copy.addEventListener("click", () => navigator.clipboard?.writeText(created.key)
    .then(() => notify("key copied", "ok"), () => notify("the browser refused to copy; select the key instead")));
  const panel = h("div", { class: "secret", role: "status" },
    h("p", {}, `Key `, h("strong", {}, created.name), ` (${created.role}, ${created.id}) created. Copy it now: it is not shown again.`),
    h("code", { class: "secret-value", tabindex: "0" }, created.key),
    h("div", { class: "actions" }, copy, dismiss));
  panel.addEventListener("keydown", (event) => event.key === "Escape" && close());
  box.replaceChildren(panel);
  dismiss.focus();
}

async function loadKeys(ctx, list) {
  try {
    const keys = await api("/admin/keys");
    if (ctx.alive()) keepFocus(() => paintKeys(ctx, list, keys.data));
  } catch (error) {
    showError(error);
  }
}

function paintKeys(ctx, list, keys) {
  const rows = keys.map((key) => h("tr", { "data-id": key.id, class: key.revoked_at ? "revoked" : null },
    h("td", { class: "mono" }, key.id),
    h("td", {}, key.name),
    h("td", {}, String(key.role).toLowerCase()),
    h("td", { class: "mono" }, key.prefix),
    h("td", {}, time(key.created_at)),
    h("td", {}, key.revoked_at ? ["revoked ", time(key.revoked_at)] : "active"),
    h("td", { class: "actions" }, keyActions(ctx, list, key))));
  list.replaceChildren(table("Keys", ["Key", "Name", "Role", "Prefix", "Created", "State", "Actions"], rows, "No key."));
}

function keyActions(ctx, list, key) {
  if (key.revoked_at) return null;
  const limits = String(key.role).toLowerCase() === "node" ? null :
    actionButton(`limits:${key.id}`, "Limits", `Edit the limits of key ${key.id}`, () => editLimits(key));
  const revoke = actionButton(`revoke:${key.id}`, "Revoke", `Revoke key ${key.id}`, async () => {
    if (!(await confirmDialog("Revoke the key?", `Key ${key.name} (${key.id}) stops working at its next request.`, "Revoke key"))) return;
    await api(`/admin/keys/${enc(key.id)}`, { method: "DELETE" });
    await loadKeys(ctx, list);
    notify(`key ${key.id} revoked`, "ok");
  }, "danger");
  return [limits, revoke];
}

async function editLimits(key) {
  const limits = await api(`/admin/keys/${enc(key.id)}/limits`);
  const inputs = Object.fromEntries(LIMIT_FIELDS.map(([name]) =>
    [name, h("input", { id: `limit-${name}`, type: "number", min: 0, step: 1, value: limits[name] ?? "", placeholder: "no limit" })]));
  inputs.metrics_label = h("input", { id: "limit-metrics_label", value: limits.metrics_label ?? "", placeholder: "none", spellcheck: "false" });
  const fields = [...LIMIT_FIELDS, ["metrics_label", "Metrics label (a-z, 0-9, _)"]]
    .map(([name, label]) => field(`limit-${name}`, label, inputs[name]));
  // Save comes first so that Enter in a field saves (a form submits with its first button).
  const save = h("button", { type: "submit", value: "save", class: "primary" }, "Save limits");
  // Inside the dialog: the page's notice area is behind the modal's backdrop.
  const problem = h("p", { class: "notice error", role: "alert", hidden: true });
  const dialog = openDialog(`Limits of ${key.name}`, h("div", { class: "limits" },
    h("p", { class: "muted small" }, "An empty field is no limit (weight: 1). Saving replaces them all."), fields, problem),
  [save, h("button", { type: "submit", value: "cancel" }, "Close")]);
  $("form", dialog).addEventListener("submit", (event) => {
    if (event.submitter?.value === "cancel") return;
    event.preventDefault();
    saveLimits(key, inputs, dialog, save, problem);
  });
}

async function saveLimits(key, inputs, dialog, save, problem) {
  save.disabled = true;
  try {
    await api(`/admin/keys/${enc(key.id)}/limits`, { method: "PUT", body: limitsBody(inputs) });
    dialog.close();
    notify(`limits of ${key.id} saved`, "ok");
  } catch (error) {
    problem.textContent = error.message;
    problem.hidden = false;
  } finally {
    save.disabled = false;
  }
}

// Only the fields the API knows (it refuses others); an empty field is left out: no limit.
function limitsBody(inputs) {
  const body = {};
  for (const [name] of LIMIT_FIELDS) {
    const value = inputs[name].value.trim();
    if (value !== "") body[name] = Number(value);
  }
  const label = inputs.metrics_label.value.trim();
  if (label) body.metrics_label = label;
  return body;
}

// ------------------------------------------------------------------------------------- start

function start() {
  $("#login-form").addEventListener("submit", submitLogin);
  $("#logout").addEventListener("click", () => logout());
  $("#skip").addEventListener("click", () => $("#view").focus());
  window.addEventListener("hashchange", route);
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (!key) return showLogin();
  login(key).catch((error) => {
    state.key = null;
    sessionStorage.removeItem(KEY_STORAGE);
    showLogin(error.message);
  });
}

start();
