// keys.js: the keys view (admins only): create a key (its secret shown once), revoke one, and
// edit a key's limits in a dialog.

import { $, h, time, table, field, notify, showError, act, openDialog, confirmDialog } from "./dom.js";
import { api, enc } from "./api.js";
import { heading, keepFocus, actionButton } from "./view.js";

const LIMIT_FIELDS = [
  ["weight", "Weight (share of leases, 1–1000)"],
  ["requests_per_minute", "Requests per minute"],
  ["tokens_per_minute", "Tokens per minute"],
  ["max_queued_jobs", "Most jobs queued"],
  ["max_concurrent_jobs", "Most jobs running"],
  ["max_priority", "Earliest priority allowed (1–5)"],
  ["default_priority", "Default priority (1–5)"],
];

export function renderKeys(ctx) {
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

// A create, a revoke and a reconnect may cross: only the latest request paints.
let asked = 0;

async function loadKeys(ctx, list) {
  const mine = ++asked;
  try {
    const keys = await api("/admin/keys");
    if (ctx.alive() && mine === asked) keepFocus(() => paintKeys(ctx, list, keys.data));
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
