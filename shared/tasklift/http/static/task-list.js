// The task list: GET /tasks, newest first, filtered by status and type, paged by next_cursor.
//
// Keeping rows fresh without hammering the server — the call made here:
// - The task open in the detail panel streams (one EventSource); its row is updated from that
//   stream at once. Streaming every row instead would hold one connection per task, and browsers
//   allow only six per host over HTTP/1.1, so a busy list would starve the page's own requests.
// - Every other row comes from re-reading the list: every 3 s while a row on screen is still
//   pending or running, every 15 s when all are finished (to pick up tasks submitted elsewhere),
//   never while the tab is hidden, and at once when it is shown again. If the list answers with
//   an ETag we send If-None-Match (a 304 costs nothing), and a Retry-After (429/503) is obeyed.
// - Rows are updated in place, never rebuilt, so keyboard focus stays where it is.

import { describeError, request, serverNow } from "./api.js";
import {
  STATUS_LABEL, clock, elapsedMs, h, isTerminal, localTime, percentOf, percentText, relative, setText, shortId,
} from "./format.js";

const PAGE = 20;
const ACTIVE_MS = 3_000;
const IDLE_MS = 15_000;

// RFC 3339 with 0–6 fraction digits → a key that sorts as time does ("…:01Z" vs "…:01.5Z").
const timeKey = (iso) => {
  const [, base = iso, frac = ""] = /^(.*?:\d\d)(?:\.(\d+))?(?:Z|[+-]00:00)$/.exec(iso) || [];
  return `${base}.${frac.padEnd(6, "0")}`;
};
// The server's order: newest first, ties by id.
const byNewest = (a, b) =>
  timeKey(b.created_at).localeCompare(timeKey(a.created_at)) || b.task_id.localeCompare(a.task_id);

/** The one line a row has room for: the error, the latest progress message, or what it waits for. */
function rowMessage(task) {
  if (task.status === "FAILED") return task.error?.message || "failed";
  if (task.cancel_requested && !isTerminal(task.status)) return "cancelling…";
  if (task.status === "PENDING") return task.attempts > 0 ? "queued for another attempt" : "waiting for a worker";
  if (task.status === "WAITING") return "waiting for a signal or a timer (no worker held)";
  return task.progress?.message || "";
}

const liveFields = ({ status, progress, result, error, attempts, cancel_requested }) =>
  ({ status, progress, result, error, attempts, cancel_requested });

export class TaskList {
  /** @param {{onSelect: (id) => void}} hooks */
  constructor(root, hooks) {
    this.hooks = hooks;
    this.list = root.querySelector("#task-list");
    this.state = root.querySelector("#list-state");
    this.count = root.querySelector("#task-count");
    this.more = root.querySelector("#load-more");
    this.statusFilter = root.querySelector("#filter-status");
    this.typeFilter = root.querySelector("#filter-type");
    this.tasks = new Map();
    this.rows = new Map();
    this.checked = new Set(); // ticked rows (bulk-actions.js acts on them)
    this.onChecked = null;
    this.cursor = null;
    this.selected = null;
    this.etag = null;
    this.timer = null;
    this.generation = 0;
    this.loaded = false;
    this.more.addEventListener("click", () => this.loadMore());
    this.statusFilter.addEventListener("change", () => this.reload());
    this.typeFilter.addEventListener("change", () => this.reload());
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.refresh();
    });
  }

  setTypes(types) {
    const current = this.typeFilter.value;
    this.typeFilter.replaceChildren(h("option", { value: "", text: "All" }),
      ...types.map((t) => h("option", { value: t.name, text: t.name })));
    this.typeFilter.value = types.some((t) => t.name === current) ? current : "";
  }

  query(extra) {
    const params = new URLSearchParams(extra);
    if (this.statusFilter.value) params.set("status", this.statusFilter.value);
    if (this.typeFilter.value) params.set("task_type", this.typeFilter.value);
    return `/tasks?${params}`;
  }

  /** The list's filters, as the bulk actions send them. */
  filters() {
    return { status: this.statusFilter.value || null, task_type: this.typeFilter.value || null };
  }

  clearChecked() {
    this.checked.clear();
    for (const row of this.rows.values()) row.querySelector(".row-check").checked = false;
    this.onChecked?.();
  }

  get filtered() {
    return Boolean(this.statusFilter.value || this.typeFilter.value);
  }

  /** Start over with the first page (filters changed, or the first load). */
  async reload() {
    this.generation += 1;
    this.tasks.clear();
    this.rows.clear();
    this.checked.clear();
    this.onChecked?.();
    this.list.replaceChildren();
    this.cursor = null;
    this.etag = null;
    this.loaded = false;
    this.list.setAttribute("aria-busy", "true");
    this.showState("Loading tasks…");
    await this.refresh();
  }

  /** Re-read the newest tasks (as many as are shown) and merge them in; then schedule the next read. */
  async refresh() {
    clearTimeout(this.timer);
    const generation = this.generation;
    let delay = IDLE_MS;
    try {
      const limit = Math.min(100, Math.max(PAGE, this.tasks.size));
      const res = await request(this.query({ limit }), { etag: this.etag });
      if (generation !== this.generation) return;
      this.etag = res.etag;
      if (res.status === 200) this.merge(res.data, !this.loaded);
      this.loaded = true;
      delay = [...this.tasks.values()].some((t) => !isTerminal(t.status)) ? ACTIVE_MS : IDLE_MS;
    } catch (err) {
      if (generation !== this.generation) return;
      if (!this.loaded) this.showState(`Could not load tasks: ${describeError(err)} Retrying…`, true);
      delay = 1000 * Math.min(30, Math.max(3, err.retryAfter ?? 5));
    } finally {
      this.list.removeAttribute("aria-busy");
    }
    // Two overlapping refreshes (timer + recovery) must still leave exactly one timer.
    clearTimeout(this.timer);
    if (generation === this.generation && !document.hidden) this.timer = setTimeout(() => this.refresh(), delay);
  }

  async loadMore() {
    if (!this.cursor) return;
    const generation = this.generation;
    this.more.disabled = true;
    try {
      const { data } = await request(this.query({ limit: PAGE, cursor: this.cursor }));
      if (generation !== this.generation) return;
      for (const task of data.items) this.put(task);
      this.cursor = data.next_cursor;
      this.render();
    } catch (err) {
      this.showState(`Could not load older tasks: ${describeError(err)}`, true);
    } finally {
      this.more.disabled = false;
    }
  }

  /** Merge a fresh first page: it is the truth for the span of time it covers. */
  merge(page, first) {
    const fresh = new Set(page.items.map((t) => t.task_id));
    const oldest = page.items.at(-1);
    for (const [id, task] of this.tasks) {
      const covered = !page.next_cursor || (oldest && byNewest(task, oldest) <= 0);
      if (covered && !fresh.has(id) && id !== this.selected) this.remove(id);
    }
    for (const task of page.items) this.put(task);
    if (first || !page.next_cursor) this.cursor = page.next_cursor;
    this.render();
  }

  put(task) {
    const merged = { ...this.tasks.get(task.task_id), ...task };
    // The open task streams: its state from the stream is newer than any list read.
    if (this.live?.task_id === task.task_id && task !== this.live) Object.assign(merged, liveFields(this.live));
    this.tasks.set(task.task_id, merged);
  }

  remove(id) {
    if (this.checked.delete(id)) this.onChecked?.();
    this.tasks.delete(id);
    this.rows.get(id)?.remove();
    this.rows.delete(id);
  }

  /** A task changed elsewhere (submitted here, or its stream moved): show it now. */
  upsert(task, { live = false } = {}) {
    if (live) this.live = task;
    const known = this.tasks.has(task.task_id);
    const status = this.statusFilter.value;
    const type = this.typeFilter.value;
    if (!known && ((status && task.status !== status) || (type && task.task_type !== type))) return;
    // Older than every loaded row while older pages exist: it belongs to a page not loaded yet.
    const oldest = [...this.tasks.values()].sort(byNewest).at(-1);
    if (!known && this.cursor && oldest && byNewest(task, oldest) > 0) return;
    this.put(task);
    this.render();
  }

  select(id) {
    this.selected = id;
    if (this.live?.task_id !== id) this.live = null;
    for (const [taskId, row] of this.rows) {
      const button = row.firstElementChild;
      if (taskId === id) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
  }

  showState(text, isError = false) {
    setText(this.state, text);
    this.state.className = isError ? "list-state error" : "list-state";
    this.state.hidden = !text;
  }

  render() {
    const ordered = [...this.tasks.values()].sort(byNewest);
    let previous = null;
    for (const task of ordered) {
      let row = this.rows.get(task.task_id);
      if (!row) {
        row = this.createRow(task);
        this.rows.set(task.task_id, row);
        // Insert after the previous row in order; existing rows never move (created_at is fixed).
        this.list.insertBefore(row, previous ? previous.nextSibling : this.list.firstChild);
      }
      this.fillRow(row, task);
      previous = row;
    }
    const n = this.tasks.size;
    const active = ordered.filter((t) => !isTerminal(t.status)).length;
    setText(this.count, n ? `${n}${this.cursor ? "+" : ""} shown${active ? ` · ${active} active` : ""}` : "");
    this.more.hidden = !this.cursor;
    if (n) this.showState("");
    else if (this.filtered) this.showState("No tasks match these filters.");
    else this.showState("No tasks yet. Submit one with the form.");
    this.select(this.selected);
    this.tick(serverNow());
  }

  createRow(task) {
    const button = h("button", { type: "button", class: "row", "data-id": task.task_id,
      onclick: () => this.hooks.onSelect(task.task_id) },
      h("span", { class: "badge", "data-part": "badge" }),
      h("span", { class: "row-title" },
        h("span", { class: "row-type", "data-part": "type" }),
        h("span", { class: "row-id mono", "data-part": "id" })),
      h("span", { class: "row-time mono", "data-part": "time" }),
      h("span", { class: "mini", "aria-hidden": "true" }, h("span", { class: "mini-fill", "data-part": "fill" })),
      h("span", { class: "row-pct mono", "data-part": "pct" }),
      h("span", { class: "row-msg", "data-part": "msg" }),
      h("span", { class: "row-when", "data-part": "when" }));
    const check = h("input", { type: "checkbox", class: "row-check",
      "aria-label": `Select ${task.task_type} ${shortId(task.task_id)}`,
      onchange: (event) => {
        if (event.target.checked) this.checked.add(task.task_id);
        else this.checked.delete(task.task_id);
        this.onChecked?.();
      } });
    return h("li", { class: "row-item" }, button, check);
  }

  fillRow(row, task) {
    const part = (name) => row.querySelector(`[data-part=${name}]`);
    const badge = part("badge");
    badge.textContent = STATUS_LABEL[task.status] || task.status;
    badge.className = `badge status-${task.status}`;
    part("type").textContent = task.task_type;
    part("id").textContent = shortId(task.task_id);
    part("id").title = task.task_id;
    part("when").title = localTime(task.created_at, true);
    part("fill").style.setProperty("width", `${percentOf(task)}%`);
    part("fill").dataset.status = task.status;
    part("pct").textContent = percentText(task);
    part("msg").textContent = rowMessage(task);
  }

  /** Relative times and running clocks, once a second (text only). */
  tick(now) {
    for (const [id, row] of this.rows) {
      const task = this.tasks.get(id);
      if (!task) continue;
      row.querySelector("[data-part=when]").textContent = relative(task.created_at, now);
      const elapsed = elapsedMs(task, now);
      row.querySelector("[data-part=time]").textContent = elapsed === null ? "" : clock(elapsed);
    }
  }
}
