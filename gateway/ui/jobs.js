// jobs.js: the jobs table (search, filters, paging, live updates) and one job's page (its
// facts, request, result and history), with the actions a job allows: cancel, retry, priority.

import { PAGE_SIZE, state, isAdmin } from "./state.js";
import { h, appendChildren, fmtSpan, time, statusBadge, pretty, table, field, notify, showError, act, confirmDialog } from "./dom.js";
import { api, query, enc } from "./api.js";
import { heading, keepFocus, throttle, actionButton, pager } from "./view.js";

const JOB_STATUSES = ["queued", "processing", "completed", "failed", "cancelled", "expired"];
const CANCELLABLE = new Set(["queued", "processing"]);
const RETRYABLE = new Set(["failed", "expired", "cancelled"]);

export function renderJobs(ctx) {
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
    // The event carries the status, not what came with it (attempts, node, error): once the
    // job runs or ends, its row is read again. A failed read leaves the row as it is.
    if (event.status !== "queued") {
      api(`/v1/jobs/${enc(event.id)}`)
        .then((job) => replaceJobRow(ctx, list, job))
        .catch(() => {});
    }
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

export function renderJob(ctx, id) {
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
  // An action's answer is not the whole job (it leaves out what it cleared: result, error,
  // times, node): the page loads the job again, as it first did.
  const reload = () => loadJob(ctx, body, job.id);
  body.replaceChildren();
  appendChildren(body, [
    h("div", { class: "toolbar" }, jobActions(job, reload), priorityForm(job, reload)),
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
