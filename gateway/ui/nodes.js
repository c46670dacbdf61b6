// nodes.js: the nodes view (admins only): the table, refreshed on a timer, and drain, undrain
// and remove.

import { h, fmtTime, fmtAgo, table, showError, confirmDialog } from "./dom.js";
import { api, enc } from "./api.js";
import { heading, keepFocus, every, actionButton } from "./view.js";

const NODES_REFRESH_MS = 3000;

export function renderNodes(ctx) {
  const list = h("div", { id: "nodes-list" }, h("p", { class: "muted" }, "Loading…"));
  ctx.root.append(heading("Nodes", h("span", { class: "muted small" }, `refreshed every ${NODES_REFRESH_MS / 1000} s`)), list);
  const load = () => loadNodes(ctx, list);
  ctx.reload = load;
  ctx.loading = 0;
  // A slow gateway is not asked again while it has not answered.
  every(ctx, NODES_REFRESH_MS, () => ctx.loading || load());
  load();
}

// The poll, an action and a reconnect may cross: only the latest request paints.
let asked = 0;

async function loadNodes(ctx, list) {
  const mine = ++asked;
  ctx.loading += 1;
  try {
    const nodes = await api("/admin/nodes");
    if (ctx.alive() && mine === asked) keepFocus(() => paintNodes(ctx, list, nodes.data));
  } catch (error) {
    showError(error);
  } finally {
    ctx.loading -= 1;
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
