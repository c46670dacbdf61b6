// api.js: talking to the gateway: fetch() with the key in the Authorization header (never in a
// URL), the API's errors as ApiError, file downloads, and the live event stream, read with
// reconnects and handed to the view on screen. It paints nothing but the live badge.

import { state } from "./state.js";
import { $, h, showError } from "./dom.js";

// The overview event comes every 2 s: a stream silent for this long is dead (a half-open
// connection never errors by itself), so it is dropped and opened again.
const STREAM_SILENCE_MS = 20000;
// A stream that stayed up this long (or gave a frame) was a working one: its drop starts the
// reconnect delay over.
const STREAM_STEADY_MS = 10000;

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

export async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, headers: authHeaders(), signal, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorFrom(response);
  return parseJson(await response.text());
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(name, value);
  }
  return search.toString();
}

export function enc(id) {
  return encodeURIComponent(id);
}

// Files are downloaded with the key in a header, then handed to the browser as a blob URL:
// a plain link could not carry the key.
export async function download(fileId) {
  const response = await fetch(`/v1/files/${enc(fileId)}/content`, { headers: authHeaders() });
  if (!response.ok) throw await errorFrom(response);
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: `${fileId}.jsonl`, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

// EventSource cannot send an Authorization header, so the stream is read with fetch() and a
// reader. A dropped stream is opened again after 1, 2, 4 … 30 s (with jitter, so that many
// tabs do not come back at once). A stream that gave a frame, or stayed up STREAM_STEADY_MS,
// resets the delay; one only accepted (its headers) does not: a server that accepts and drops
// the stream at once would otherwise be called, and the view reloaded, every second.
export async function startEvents() {
  stopEvents();
  const controller = new AbortController();
  state.stream = controller;
  let delay = 1000;
  let dropped = false;
  while (!controller.signal.aborted) {
    let openedAt = null;
    let framed = false;
    try {
      await readEvents(controller.signal, () => {
        openedAt = Date.now();
        setLive(true);
        if (dropped) state.view?.reload?.();
      }, () => { framed = true; });
    } catch (error) {
      if (controller.signal.aborted) return;
      if (error.status === 401) return showError(error);
    }
    if (controller.signal.aborted) return;
    if (framed || (openedAt !== null && Date.now() - openedAt >= STREAM_STEADY_MS)) delay = 1000;
    dropped = true;
    setLive(false);
    await sleep(delay * (1 + Math.random() / 2), controller.signal);
    delay = Math.min(delay * 2, 30000);
  }
}

export function stopEvents() {
  state.stream?.abort();
  state.stream = null;
  setLive(false);
}

function setLive(live) {
  const badge = $("#live");
  badge.textContent = live ? "live" : "reconnecting";
  badge.classList.toggle("on", live);
}

async function readEvents(signal, opened, framed) {
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
      buffer += value.replace(/\r\n?/g, "\n");
      if (buffer.includes("\n\n")) framed();
      buffer = dispatchFrames(buffer);
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
