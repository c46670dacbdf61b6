// state.js: the page's one mutable state (the key, who holds it, the live stream, the view on
// screen, the last overview, each list's filters and paging) and the role check that reads it.
// It holds data only: nothing here talks to the API or touches the DOM.

export const PAGE_SIZE = 20;

export const state = {
  key: null,
  who: null,
  stream: null,
  overview: null,
  view: null,
  generation: 0,
  jobs: { filters: noFilters(), cursors: [null], page: null, asked: 0 },
  batches: { cursors: [null], page: null, asked: 0 },
};

// The jobs table's filters as a session starts: none.
export function noFilters() {
  return { status: "", model: "", key_id: "", batch_id: "" };
}

export function isAdmin() {
  return String(state.who?.role || "").toUpperCase() === "ADMIN";
}
