// The detail panel of one task: progress bar, elapsed time and time left, live log, result or
// error, Cancel and Retry. Its data comes from TaskFeed; this module only renders and acts.

import { ApiError, describeError, request, serverNow } from "./api.js";
import { Estimator } from "./estimator.js";
import {
  STATUS_LABEL, clock, elapsedMs, h, isTerminal, localTime, percentOf, percentText, roughly,
} from "./format.js";
import { TaskExtras } from "./task-extras.js";
import { TaskFeed } from "./task-feed.js";

const MAX_LOG_LINES = 5000; // the DOM keeps the newest lines; the full log stays at links.logs

const FEED_TEXT = {
  live: "Live",
  reconnecting: "Reconnecting…",
  polling: "Polling", // the host cannot stream
  done: "Complete",
};

/** Why a PENDING task waits (docs/flow-control.md), from the resource's flow-control fields. */
function waitingText(t) {
  if (t.status !== "PENDING") return "–";
  if (t.waiting_reason === "paused" || t.paused) return "Queue paused";
  if (t.scheduled_for && Date.parse(t.scheduled_for) > serverNow()) return `Scheduled for ${localTime(t.scheduled_for, true)}`;
  const key = t.concurrency_key ? ` (key ${t.concurrency_key})` : "";
  if (t.waiting_reason === "concurrency_limited") return `Concurrency limit reached${key}`;
  if (t.waiting_reason === "rate_limited") return `Rate limited${key}`;
  return t.expires_at ? `Queued · expires ${localTime(t.expires_at, true)}` : "Queued";
}

export class TaskView {
  /** @param {{onTask: (task) => void, onOpen: (id) => void}} hooks */
  constructor(root, hooks) {
    this.root = root;
    this.hooks = hooks;
    this.empty = root.querySelector("#detail-empty");
    this.template = document.querySelector("#task-template");
    this.task = null;
    this.feed = null;
    this.slots = {};
    this.announced = "";
  }

  get taskId() {
    return this.task?.task_id ?? this.pendingId ?? null;
  }

  clear() {
    this.feed?.stop();
    this.feed = null;
    this.task = null;
    this.pendingId = null;
    this.root.replaceChildren(this.empty);
  }

  message(title, text) {
    this.root.replaceChildren(h("div", { class: "empty" },
      h("h2", { id: "detail-title", tabindex: "-1", text: title }), h("p", { text })));
  }

  /** Open task `id`: read it, render it, follow it live. */
  async show(id, { focus = false, scroll = false, notice = "" } = {}) {
    this.feed?.stop();
    this.feed = null;
    this.extras = null;
    this.task = null;
    this.pendingId = id;
    this.message("Loading task…", `Reading task ${id}.`);
    let res;
    try {
      res = await request(`/tasks/${encodeURIComponent(id)}`);
    } catch (err) {
      if (this.pendingId !== id) return;
      if (err instanceof ApiError && err.status === 404) this.message("Task not found", `There is no task ${id}.`);
      else this.message("Could not load the task", `${describeError(err)} It will load when the API is back.`);
      return;
    }
    if (this.pendingId !== id) return; // another task was opened meanwhile
    this.task = res.data;
    this.render();
    this.slots["action-status"].textContent = notice;
    if (focus) this.focus(scroll);
    this.feed = new TaskFeed(this.task, {
      onUpdate: () => this.update(),
      onLogs: (lines) => this.appendLogs(lines),
      onState: (state) => this.setFeedState(state),
      onGone: () => this.message("Task not found", `Task ${id} no longer exists.`),
      onStep: () => this.extras?.stepsChanged(),
      onOutput: (data) => this.extras?.addOutputEvent(data),
    });
    this.extras = new TaskExtras(this.slots, id, this.feed.abort.signal);
    this.extras.start();
    this.estimator = new Estimator();
    this.estimator.add(percentOf(this.task), serverNow());
    this.feed.start(res.etag);
  }

  /** The API came back: load the open task if it could not be loaded, or let its feed recover now. */
  recover() {
    if (this.pendingId && !this.task) this.show(this.pendingId);
    else this.feed?.nudge();
  }

  /** Move focus to the panel's heading (and, in one column, scroll the panel to the top). */
  focus(scroll = false) {
    const heading = this.root.querySelector("#detail-title");
    heading?.focus({ preventScroll: scroll });
    if (scroll) this.root.scrollIntoView({ block: "start" });
  }

  render() {
    const frag = this.template.content.cloneNode(true);
    this.slots = {};
    for (const el of frag.querySelectorAll("[data-slot]")) this.slots[el.dataset.slot] = el;
    this.bar = frag.querySelector("[role=progressbar]");
    this.fill = frag.querySelector(".fill");
    this.cancelButton = frag.querySelector("[data-action=cancel]");
    this.retryButton = frag.querySelector("[data-action=retry]");
    this.cancelButton.addEventListener("click", () => this.cancel());
    this.retryButton.addEventListener("click", () => this.retry());
    const t = this.task;
    this.slots.type.textContent = t.task_type;
    this.slots.id.textContent = t.task_id;
    this.slots.json.href = t.links.self;
    this.slots.created.textContent = localTime(t.created_at);
    this.slots.created.title = localTime(t.created_at, true);
    this.announced = "";
    this.root.replaceChildren(frag);
    this.update();
  }

  update() {
    const t = this.task;
    if (!t || !this.slots.badge) return;
    const s = this.slots;
    const pct = percentOf(t);
    this.estimator?.add(pct, serverNow());
    s.badge.textContent = STATUS_LABEL[t.status] || t.status;
    s.badge.className = `badge status-${t.status}`;
    this.bar.setAttribute("aria-valuenow", String(Math.floor(pct)));
    this.bar.setAttribute("aria-valuetext", `${percentText(t)}${t.progress?.message ? `, ${t.progress.message}` : ""}`);
    this.bar.dataset.status = t.status;
    this.fill.style.setProperty("width", `${pct}%`);
    s.percent.textContent = percentText(t);
    const p = t.progress || {};
    const counts = p.total ? `${p.current ?? 0} / ${p.total}` : "";
    s.message.textContent = [counts, p.message].filter(Boolean).join(" · ");
    s.attempts.textContent = String(t.attempts ?? "–");
    s.priority.textContent = String(t.priority ?? 0);
    s.waiting.textContent = waitingText(t);
    s.trace.textContent = t.trace_id || "–";
    this.announce(t, pct);
    this.cancelButton.hidden = isTerminal(t.status);
    this.cancelButton.disabled = Boolean(t.cancel_requested);
    this.cancelButton.textContent = t.cancel_requested ? "Cancelling…" : "Cancel task";
    this.retryButton.hidden = !["FAILED", "CANCELLED"].includes(t.status);
    this.renderOutcome(t);
    if (t.status !== this.shownStatus) { // a wait began or ended, a step may have been recorded
      this.shownStatus = t.status;
      this.extras?.stepsChanged();
    }
    this.tick(serverNow());
    this.hooks.onTask(t);
  }

  /** Screen readers hear status changes and every 10 %, not every tick. */
  announce(t, pct) {
    const text = `${STATUS_LABEL[t.status] || t.status}${t.status === "RUNNING" ? `, ${Math.floor(pct / 10) * 10} %` : ""}`;
    if (text !== this.announced) {
      this.announced = text;
      this.slots.announce.textContent = `Task ${text}`;
    }
  }

  renderOutcome(t) {
    const { outcome, "outcome-title": title, "outcome-body": body } = this.slots;
    outcome.hidden = !isTerminal(t.status);
    if (outcome.hidden) return;
    outcome.className = `outcome outcome-${t.status}`;
    if (t.status === "SUCCESS") {
      title.textContent = "Result";
      const content = t.result_url
        ? h("p", {}, "The result is large and stored apart: ", h("a", { href: t.result_url, text: "download it" }))
        : h("pre", { class: "json", tabindex: "0", "aria-label": "Result JSON", text: JSON.stringify(t.result, null, 2) });
      body.replaceChildren(content);
    } else if (t.status === "FAILED") {
      title.textContent = "Error";
      const err = t.error || {};
      body.replaceChildren(h("p", { class: "error-text" },
        h("strong", { text: err.type ? `${err.type}: ` : "" }), err.message || "The task failed."));
    } else if (t.status === "EXPIRED") {
      title.textContent = "Expired";
      body.replaceChildren(h("p", { text: `The task was not started by ${t.expires_at || "its deadline"}; it never ran.` }));
    } else {
      title.textContent = "Cancelled";
      body.replaceChildren(h("p", { text: "The task was cancelled before it finished." }));
    }
  }

  setFeedState(state) {
    if (this.slots.feed) this.slots.feed.textContent = FEED_TEXT[state] || state;
  }

  /** Elapsed and time left, once a second. */
  tick(now) {
    const t = this.task;
    if (!t || !this.slots.elapsed) return;
    const elapsed = elapsedMs(t, now);
    if (elapsed !== null) this.slots.elapsed.textContent = clock(elapsed);
    else this.slots.elapsed.textContent = t.status === "PENDING" ? `waiting ${clock(now - Date.parse(t.created_at))}` : "–";
    const left = t.status === "RUNNING" ? this.estimator?.remaining(t, now) : null;
    if (t.status === "SUCCESS") this.slots.eta.textContent = "done";
    else if (isTerminal(t.status)) this.slots.eta.textContent = "–";
    else this.slots.eta.textContent = left === null || left === undefined ? "estimating…" : roughly(left);
  }

  appendLogs(lines) {
    const log = this.slots.log;
    if (!log) return;
    const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    for (const line of lines) {
      const li = h("li", { "data-seq": line.seq, class: `lvl-${line.level}` },
        h("time", { text: localTime(line.timestamp || new Date(serverNow()).toISOString()) }),
        h("span", { class: "level", text: line.level }),
        h("span", { class: "msg", text: line.message }));
      // Usually the newest line: append. A backfilled older line goes to its place by seq.
      let before = null;
      for (let el = log.lastElementChild; el && Number(el.dataset.seq) > line.seq; el = el.previousElementSibling) {
        before = el;
      }
      log.insertBefore(li, before);
    }
    while (log.childElementCount > MAX_LOG_LINES) log.firstElementChild.remove();
    this.slots["log-empty"].hidden = log.childElementCount > 0;
    this.slots["log-count"].textContent = `(${this.feed?.logSeqs.size ?? log.childElementCount})`;
    if (nearBottom) log.scrollTop = log.scrollHeight;
  }

  async cancel() {
    const t = this.task;
    this.cancelButton.disabled = true;
    this.slots["action-status"].textContent = "Asking the server to cancel…";
    try {
      const res = await request(t.links.cancel, { method: "DELETE" });
      if (res.status === 202) {
        this.task.cancel_requested = true;
        this.slots["action-status"].textContent = "Cancellation requested: the worker stops at its next check.";
        this.update();
      } else {
        this.slots["action-status"].textContent = "Cancelled.";
        if (!this.feed || this.feed.done) this.show(t.task_id); // no stream will tell us
      }
    } catch (err) {
      this.cancelButton.disabled = false;
      const text = err instanceof ApiError && err.status === 409 ? "It already finished." : describeError(err);
      this.slots["action-status"].textContent = `Not cancelled: ${text}`;
    }
  }

  async retry() {
    const t = this.task;
    this.retryButton.disabled = true;
    this.slots["action-status"].textContent = "Asking the server to retry…";
    try {
      const { data } = await request(t.links.retry || `/tasks/${encodeURIComponent(t.task_id)}/retry`, {
        method: "POST",
      });
      const id = data?.task_id || t.task_id;
      if (id !== t.task_id) this.hooks.onOpen(id);
      else this.show(id, { notice: "Retry submitted: the task is queued again." }); // same id, events go on
    } catch (err) {
      const missing = err instanceof ApiError && [404, 405].includes(err.status);
      this.slots["action-status"].textContent = missing
        ? `Retry is not available on this server yet (it answered ${err.status}).`
        : `Not retried: ${describeError(err)}`;
    } finally {
      this.retryButton.disabled = false;
    }
  }
}
