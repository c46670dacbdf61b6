// app.js: the dashboard's entry, loaded by index.html as a module. It owns the login (the key
// lives in sessionStorage only, and travels only in the Authorization header), logout, the hash
// router and the navigation; each view lives in a module of its own. The page is a client of
// the public HTTP API (docs/design/dashboard.md) and of nothing else: what it shows, a script
// can read.

import { state, isAdmin, noFilters } from "./state.js";
import { $, h } from "./dom.js";
import { api, startEvents, stopEvents } from "./api.js";
import { renderOverview } from "./overview.js";
import { renderJobs, renderJob } from "./jobs.js";
import { renderBatches } from "./batches.js";
import { renderNodes } from "./nodes.js";
import { renderKeys } from "./keys.js";

const KEY_STORAGE = "obb.key";

const VIEWS = {
  overview: { title: "Overview", nav: true, render: renderOverview },
  jobs: { title: "Jobs", nav: true, render: renderJobs },
  job: { title: "Job", render: renderJob },
  batches: { title: "Batches", nav: true, render: renderBatches },
  nodes: { title: "Nodes", nav: true, admin: true, render: renderNodes },
  keys: { title: "Keys", nav: true, admin: true, render: renderKeys },
};

async function login(key) {
  state.key = key;
  const who = await api("/v1/dashboard/whoami");
  state.who = who;
  sessionStorage.setItem(KEY_STORAGE, key);
  showApp();
  startEvents();
  route();
}

export function logout(message) {
  stopView();
  stopEvents();
  sessionStorage.removeItem(KEY_STORAGE);
  state.key = null;
  state.who = null;
  state.overview = null;
  // The next session starts as a first one would: a USER after an ADMIN in this tab must not
  // inherit the admin's filters (a key filter it could not even see) or pages.
  state.jobs.filters = noFilters();
  state.jobs.cursors = [null];
  state.jobs.page = null;
  state.batches.cursors = [null];
  state.batches.page = null;
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

function parseHash() {
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  if (name === "jobs" && rest.length && rest[0]) {
    // A malformed escape (#/jobs/%E0) names no job: the jobs table, rather than an exception.
    try {
      return { name: "job", id: decodeURIComponent(rest.join("/")) };
    } catch {
      return { name: "jobs" };
    }
  }
  return { name: VIEWS[name] ? name : "overview" };
}

function stopView() {
  state.generation += 1;
  for (const timer of state.view?.timers || []) clearTimeout(timer);
  state.view = null;
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
