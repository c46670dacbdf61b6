// batches.js: the batches table, its progress kept current by job events and a poll, its
// files and cancel; a batch's id leads to its lines in the jobs table.

import { PAGE_SIZE, state } from "./state.js";
import { h, time, statusBadge, table, showError, act, confirmDialog } from "./dom.js";
import { api, query, enc, download } from "./api.js";
import { heading, keepFocus, throttle, every, actionButton, pager } from "./view.js";

const BATCH_ACTIVE = new Set(["validating", "in_progress", "finalizing", "cancelling"]);
const BATCH_CANCELLABLE = new Set(["validating", "in_progress"]);
const BATCHES_POLL_MS = 5000;

export function renderBatches(ctx) {
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
