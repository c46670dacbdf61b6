// view.js: what every view is built from: its heading, timers that end with it (later,
// throttle, every), action buttons, the pager, and the focus kept across re-renders. The
// view's context (ctx) itself is made by the router, in app.js.

import { h, act } from "./dom.js";

export function heading(text, ...extra) {
  return h("div", { class: "view-head" }, h("h1", {}, text), extra);
}

// Re-rendering a list replaces its buttons; this puts the focus back on the button that had
// it (same `data-focus`), so that live updates do not throw a keyboard user out of a table.
export function keepFocus(render) {
  const focused = document.activeElement?.getAttribute?.("data-focus");
  render();
  if (!focused) return;
  const again = document.querySelector(`[data-focus="${CSS.escape(focused)}"]`);
  again?.focus();
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

// Calls `fn` at most once per `ms` for a burst of calls, and never after the view is left.
export function throttle(ctx, fn, ms = 1000) {
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

export function every(ctx, ms, fn) {
  ctx.timers.add(setInterval(() => ctx.alive() && fn(), ms));
}

export function actionButton(focusKey, text, label, work, cls) {
  const button = h("button", { type: "button", class: cls, "data-focus": focusKey, "aria-label": label }, text);
  button.addEventListener("click", () => act(button, work));
  return button;
}

// Next and Previous keep a stack of `after` cursors: the server pages forward only.
export function pager(paging, page, load) {
  const previous = h("button", { type: "button", disabled: paging.cursors.length === 1, "data-focus": "pager:previous" }, "← Previous");
  const next = h("button", { type: "button", disabled: !page.has_more, "data-focus": "pager:next" }, "Next →");
  previous.addEventListener("click", () => { paging.cursors.pop(); load(); });
  next.addEventListener("click", () => { paging.cursors.push(page.last_id); load(); });
  return h("nav", { class: "pager", "aria-label": "Pages" }, previous, h("span", { class: "muted" }, `Page ${paging.cursors.length}`), next);
}
