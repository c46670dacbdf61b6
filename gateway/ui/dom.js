// dom.js: building the page's elements (h() for HTML, svg() for the charts), formatting times,
// durations and numbers, the notice area, and modal dialogs. It knows no view and no endpoint.

// A refused key (401) anywhere ends the session: the one import back into the entry. It is
// called only once the page runs, never while the modules load, so the cycle is harmless.
import { logout } from "./app.js";

const SVG_NS = "http://www.w3.org/2000/svg";

export function $(selector, root = document) {
  return root.querySelector(selector);
}

// Builds an element; text is always set as text, never parsed as HTML, so no API value can
// inject markup.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttributes(el, attrs);
  appendChildren(el, children);
  return el;
}

export function svg(tag, attrs, ...children) {
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

export function appendChildren(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

function pad(n) {
  return String(n).padStart(2, "0");
}

export function fmtTime(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const d = new Date(seconds * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtAgo(seconds) {
  if (!seconds) return "never";
  const age = Math.max(0, Math.round(Date.now() / 1000 - seconds));
  if (age < 60) return `${age} s ago`;
  if (age < 3600) return `${Math.floor(age / 60)} min ago`;
  return `${Math.floor(age / 3600)} h ago`;
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return "—";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

// A span between two of a job's times, which are whole seconds: shown to the second, not as
// a precision the API does not give.
export function fmtSpan(from, to) {
  if (!from || !to) return "—";
  const seconds = Math.max(0, to - from);
  return seconds === 0 ? "< 1 s" : `${seconds} s`;
}

export function fmtPercent(ratio) {
  return `${((ratio || 0) * 100).toFixed(1)} %`;
}

export function time(seconds) {
  return h("time", { datetime: seconds ? new Date(seconds * 1000).toISOString() : null }, fmtTime(seconds));
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

export function pretty(value) {
  return h("pre", { class: "json", tabindex: "0" }, JSON.stringify(value, null, 2));
}

export function table(caption, headers, rows, empty) {
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

export function field(id, label, control) {
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}

export function notify(message, kind = "error") {
  const box = $("#notice");
  const close = h("button", { type: "button", class: "icon", "aria-label": "Dismiss message" }, "×");
  const item = h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, message, close);
  close.addEventListener("click", () => item.remove());
  box.replaceChildren(item);
  if (kind !== "error") setTimeout(() => item.remove(), 5000);
}

export function showError(error) {
  if (error?.name === "AbortError") return;
  if (error?.status === 401) {
    logout(`the key was refused: ${error.message}`);
    return;
  }
  notify(error?.message || String(error));
}

// Runs a button's action with the button disabled meanwhile, and shows an API error's message.
export async function act(button, work) {
  button.disabled = true;
  try {
    await work();
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
    // A dialog closed meanwhile could not give the focus back to the disabled button.
    if (document.activeElement === document.body) refocus(button);
  }
}

// Focuses `el`, or, when a repaint has replaced it meanwhile (the nodes' poll, a live event),
// the element that took its place: the one with the same `data-focus` key.
function refocus(el) {
  if (el?.isConnected) {
    el.focus?.();
    return;
  }
  const key = el?.getAttribute?.("data-focus");
  if (key) document.querySelector(`[data-focus="${CSS.escape(key)}"]`)?.focus();
}

// A modal <dialog>: Escape closes it (its `cancel`), the focus stays inside it while open and
// goes back to the button that opened it (or the one a repaint put in its place) when it closes.
export function openDialog(title, body, buttons) {
  const id = `dialog-${Date.now()}`;
  const dialog = h("dialog", { class: "dialog", "aria-labelledby": id },
    h("form", { method: "dialog" }, h("h2", { id }, title), body, h("div", { class: "actions" }, buttons)));
  const opener = document.activeElement;
  dialog.addEventListener("close", () => {
    dialog.remove();
    refocus(opener);
  });
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

export function confirmDialog(title, message, confirmLabel) {
  return new Promise((resolve) => {
    const dialog = openDialog(title, h("p", {}, message), [
      h("button", { type: "submit", value: "cancel", autofocus: true }, "Keep"),
      h("button", { type: "submit", value: "ok", class: "danger" }, confirmLabel),
    ]);
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"));
  });
}
