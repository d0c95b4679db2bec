// Bulk actions on the task list: tick rows (or "all matching the filters"), then Cancel or Retry
// them as ONE bulk operation (POST /bulk, docs/bulk.md) and follow its progress (GET /bulk/{id}).
//
// Ticked rows go as a task_id filter (the ids); "all matching" sends the list's own filters
// (status and type), so it reaches tasks on pages not loaded yet. Without a status filter the
// action's own states are sent (cancel: PENDING and RUNNING; retry: FAILED and CANCELLED), as the
// server requires a filter. The operation's progress is polled every 0.5 s (honouring
// Retry-After), and the list is re-read once it ends.

import { describeError, request } from "./api.js";
import { setText } from "./format.js";

const ACTION_STATUSES = { cancel: ["PENDING", "RUNNING"], retry: ["FAILED", "CANCELLED"] };
const POLL_MS = 500;

export class BulkActions {
  constructor(root, list) {
    this.list = list;
    this.bar = root.querySelector("#bulk-bar");
    this.all = root.querySelector("#bulk-all");
    this.count = root.querySelector("#bulk-count");
    this.state = root.querySelector("#bulk-state");
    this.meter = root.querySelector("#bulk-progress");
    this.buttons = {
      cancel: root.querySelector("#bulk-cancel"),
      retry: root.querySelector("#bulk-retry"),
    };
    this.busy = false;
    this.all.addEventListener("change", () => this.update());
    for (const [action, button] of Object.entries(this.buttons)) {
      button.addEventListener("click", () => this.run(action));
    }
    list.onChecked = () => this.update();
    this.update();
  }

  /** The filter of the operation the buttons would start, or null when nothing is selected. */
  filter(action) {
    if (this.all.checked) {
      const { status, task_type } = this.list.filters();
      const filt = { status: status ? [status] : ACTION_STATUSES[action] };
      if (task_type) filt.task_type = task_type;
      return filt;
    }
    const ids = [...this.list.checked];
    return ids.length ? { task_id: ids } : null;
  }

  update() {
    const n = this.list.checked.size;
    const label = this.all.checked ? "All tasks matching the filters" : n ? `${n} selected` : "";
    setText(this.count, label);
    for (const button of Object.values(this.buttons)) button.disabled = this.busy || !(this.all.checked || n);
  }

  async run(action) {
    const filt = this.filter(action);
    if (!filt || this.busy) return;
    this.busy = true;
    this.update();
    this.meter.hidden = true;
    setText(this.state, `Starting ${action}…`);
    this.state.className = "bulk-state";
    try {
      const { data } = await request("/bulk", { method: "POST", body: { action, filter: filt } });
      await this.follow(data);
      this.all.checked = false;
      this.list.clearChecked();
    } catch (err) {
      setText(this.state, `Could not ${action}: ${describeError(err)}`);
      this.state.className = "bulk-state error";
    } finally {
      this.busy = false;
      this.update();
      this.list.refresh();
    }
  }

  async follow(op) {
    const verb = op.action === "cancel" ? "Cancelling" : "Retrying";
    this.meter.hidden = false;
    for (;;) {
      this.meter.max = Math.max(1, op.total);
      this.meter.value = op.processed;
      this.bar.dataset.bulkStatus = op.status;
      if (op.status === "SUCCESS") {
        setText(this.state, `${op.action === "cancel" ? "Cancelled" : "Retried"} ${op.done} of ${op.total}`
          + (op.skipped ? ` (${op.skipped} had moved on)` : "") + (op.failed ? `, ${op.failed} failed` : "") + ".");
        this.meter.value = this.meter.max;
        return;
      }
      if (op.status !== "PENDING" && op.status !== "RUNNING") {
        setText(this.state, `The ${op.action} ended ${op.status.toLowerCase()} after ${op.processed} of ${op.total}.`);
        return;
      }
      setText(this.state, `${verb}: ${op.processed} of ${op.total}…`);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      ({ data: op } = await request(op.links.self));
    }
  }
}
