// Follows one task live: an EventSource on its links.stream (API.md "Server-Sent Events").
//
// No line twice, none missed:
// - Every SSE event id is the task's event sequence number, strictly increasing. `lastSeq` is the
//   highest one applied; an event at or below it is a duplicate and is dropped. The seqs of the log
//   lines shown are kept too, so a line that arrives both from GET /logs and from the stream shows once.
// - EventSource resumes by itself with Last-Event-ID after a dropped connection, a server restart
//   or the end of a bounded-window response: the server replays everything after that id.
// - When *we* open a stream (first time, or after the browser gave up), it is a new stream: it
//   starts with a `status` snapshot taken after the server subscribed. Only once that snapshot is
//   here do we read GET /logs?after=<highest log seq>, so every line older than the snapshot comes
//   from that read and every newer one from the stream: no gap between the two.
//
// Recovery: the browser gives up (readyState CLOSED) on an HTTP error status (a proxy's 502 while
// the API restarts, or a 401 once the stream link's token expired); we then re-read the task for a
// fresh link, probe it with back-off and open a fresh stream once it answers 200. If the host has no stream endpoint (404 for a task that exists, 405, 501), we
// fall back to long polling GET /tasks/{id}?wait= with If-None-Match, honouring Retry-After.
// A watchdog compares the task's ETag every 30 s: if it changed while the stream stayed silent,
// the connection is stale (a NAT or proxy dropped it without a word) and is reopened.

import { ApiError, authHeaders, request, withQuery } from "./api.js";
import { isTerminal } from "./format.js";

const WATCHDOG_MS = 30_000;
const QUIET_BEFORE_RECONNECTING_MS = 3_000;
const LOG_PAGE = 1000;

/** Resolves after `ms`, or as soon as one of `signals` aborts. */
const sleep = (ms, ...signals) =>
  new Promise((resolve) => {
    if (signals.some((s) => s.aborted)) return resolve();
    const timer = setTimeout(resolve, ms);
    for (const s of signals) {
      s.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      }, { once: true });
    }
  });

export class TaskFeed {
  /**
   * @param {object} task the resource from GET /tasks/{id}
   * @param {{onUpdate: (patch) => void, onLogs: (lines) => void, onState: (state, detail?) => void,
   *          onGone: () => void}} hooks
   */
  constructor(task, hooks) {
    this.task = task;
    this.hooks = hooks;
    this.lastSeq = 0;
    this.logSeqs = new Set();
    this.maxLogSeq = 0;
    this.es = null;
    this.abort = new AbortController();
    this.failures = 0;
    this.etag = null;
    this.sawEventSince = false;
    this.quietTimer = null;
    this.watchdog = null;
    this.done = false;
    this.wakeup = new AbortController();
  }

  get stopped() {
    return this.abort.signal.aborted;
  }

  start(etag) {
    this.etag = etag;
    if (isTerminal(this.task.status)) {
      this.finish({ reread: false }); // the resource was just read: only the log is missing
      return;
    }
    this.openStream();
    this.watchdog = setInterval(() => this.checkStale(), WATCHDOG_MS);
  }

  stop() {
    this.abort.abort();
    this.closeStream();
    clearInterval(this.watchdog);
  }

  /** The API is reachable again: cut short any back-off so the stream recovers now. */
  nudge() {
    this.wakeup.abort();
    this.wakeup = new AbortController();
  }

  closeStream() {
    clearTimeout(this.quietTimer);
    this.es?.close();
    this.es = null;
  }

  openStream() {
    if (this.stopped) return;
    this.closeStream();
    const es = new EventSource(this.task.links.stream);
    let fresh = true; // a stream we opened starts with a snapshot → backfill logs after it
    const handle = (event) => {
      if (es !== this.es) return;
      clearTimeout(this.quietTimer);
      this.failures = 0;
      this.sawEventSince = true;
      this.hooks.onState("live");
      const backfill = fresh;
      fresh = false;
      this.apply(event);
      if (backfill && !this.done) this.fetchLogs();
    };
    for (const kind of ["status", "progress", "log", "step", "output"]) es.addEventListener(kind, handle);
    es.addEventListener("open", () => {
      if (es !== this.es) return;
      clearTimeout(this.quietTimer);
      this.hooks.onState("live");
    });
    es.addEventListener("error", () => {
      if (es !== this.es || this.done) return;
      if (es.readyState === EventSource.CLOSED) {
        this.closeStream();
        this.recover();
        return;
      }
      // CONNECTING: the browser reconnects by itself (also after every bounded-window response),
      // so only say "reconnecting" if it takes longer than a normal resume.
      clearTimeout(this.quietTimer);
      this.quietTimer = setTimeout(() => this.hooks.onState("reconnecting"), QUIET_BEFORE_RECONNECTING_MS);
    });
    this.es = es;
  }

  apply(event) {
    const seq = Number(event.lastEventId);
    if (!Number.isFinite(seq) || seq <= this.lastSeq) return; // replayed: already applied
    this.lastSeq = seq;
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    if (event.type === "log") {
      this.addLogs([{ seq, timestamp: null, level: data.level, message: data.message }]);
      if (data.status && data.status !== this.task.status) this.update({ status: data.status });
      return;
    }
    if (event.type === "step" || event.type === "output") { // task-extras.js: the timeline, the output
      (event.type === "step" ? this.hooks.onStep : this.hooks.onOutput)?.(data);
      return;
    }
    const patch = { status: data.status };
    for (const key of ["progress", "result", "result_url", "error", "attempts", "cancel_requested"]) {
      if (key in data) patch[key] = data[key];
    }
    const changed = patch.status !== this.task.status;
    this.update(patch);
    if (isTerminal(patch.status)) this.finish();
    else if (changed) this.refreshResource(); // started_at etc. are not in the event
  }

  update(patch) {
    Object.assign(this.task, patch);
    this.hooks.onUpdate(patch);
  }

  addLogs(lines) {
    const fresh = lines.filter((line) => !this.logSeqs.has(line.seq));
    for (const line of fresh) {
      this.logSeqs.add(line.seq);
      this.maxLogSeq = Math.max(this.maxLogSeq, line.seq);
    }
    if (fresh.length) this.hooks.onLogs(fresh);
  }

  /** Every log line after the highest one we hold (GET /tasks/{id}/logs, paged). */
  async fetchLogs() {
    // Page on from the last line of each page, not from maxLogSeq: live lines arriving meanwhile
    // raise maxLogSeq past lines this read has not reached yet.
    let after = this.maxLogSeq;
    try {
      for (;;) {
        const url = withQuery(this.task.links.logs, { after, limit: LOG_PAGE });
        const { data } = await request(url, { signal: this.abort.signal });
        if (this.stopped) return;
        this.addLogs(data);
        if (data.length < LOG_PAGE) return;
        after = data.at(-1).seq;
      }
    } catch (err) {
      if (err.name !== "AbortError") this.hooks.onState("reconnecting");
    }
  }

  async refreshResource() {
    try {
      const { data, etag } = await request(this.task.links.self, { signal: this.abort.signal });
      if (this.stopped) return;
      this.etag = etag;
      if (this.done) {
        this.update({ ...data }); // after the terminal event nothing is newer than the resource
        return;
      }
      // Only fields the stream does not carry: the stream's status/progress may already be newer.
      const { started_at, completed_at, updated_at, trace_id, attempts } = data;
      this.update({ started_at, completed_at, updated_at, trace_id, attempts });
    } catch {
      // The watchdog or the stream itself will catch up.
    }
  }

  /** The terminal event is here: stop streaming, take the final resource and every last log line. */
  async finish({ reread = true } = {}) {
    if (this.done) return;
    this.done = true;
    this.closeStream();
    clearInterval(this.watchdog);
    this.hooks.onState("done");
    await Promise.all([this.fetchLogs(), reread && this.refreshResource()]);
  }

  /** The browser gave up on the stream (an HTTP error status): find out why, then reopen, poll or stop. */
  async recover() {
    this.hooks.onState("reconnecting");
    for (;;) {
      this.failures += 1;
      const backoff = Math.min(30_000, 1000 * 2 ** Math.min(this.failures - 1, 5));
      await sleep(backoff, this.abort.signal, this.wakeup.signal);
      if (this.stopped) return;
      const verdict = await this.probe();
      if (this.stopped || verdict === "retry") continue;
      if (verdict === "stream") this.openStream();
      else if (verdict === "poll") this.poll();
      else if (verdict === "gone") this.hooks.onGone();
      else this.finish();
      return;
    }
  }

  /**
   * Re-read the task (its links.stream carries a short-lived token that may have expired), then
   * ask the stream URL once, only for its status (EventSource never tells): 200 → stream again;
   * 204 → it already ended; 404/405/501 → this host has no stream, poll; anything else (502 from a
   * proxy while the API restarts, no answer at all) → try again later.
   */
  async probe() {
    try {
      const { data } = await request(this.task.links.self, { signal: this.abort.signal });
      this.task.links = data.links;
      if (isTerminal(data.status)) {
        this.update({ ...data });
        return "done";
      }
    } catch (err) {
      return err instanceof ApiError && err.status === 404 ? "gone" : "retry";
    }
    const probe = new AbortController();
    const stop = () => probe.abort();
    this.abort.signal.addEventListener("abort", stop);
    try {
      const res = await fetch(this.task.links.stream, {
        headers: { Accept: "text/event-stream", "Last-Event-ID": String(this.lastSeq), ...authHeaders() },
        cache: "no-store",
        signal: probe.signal,
      });
      probe.abort(); // the status is all we wanted; the real stream is an EventSource
      if (res.status === 200) return "stream";
      if (res.status === 204) return "done";
      if ([404, 405, 501].includes(res.status)) return "poll"; // the task exists: the endpoint does not
      return "retry";
    } catch {
      return "retry";
    } finally {
      this.abort.signal.removeEventListener("abort", stop);
    }
  }

  /** Long polling when this host cannot stream: GET ?wait= with If-None-Match, then new log lines. */
  async poll() {
    this.hooks.onState("polling");
    let etag = null;
    while (!this.stopped && !this.done) {
      const began = Date.now();
      let pause = 0;
      try {
        const res = await request(withQuery(this.task.links.self, { wait: 20 }), { etag, signal: this.abort.signal });
        if (res.status === 200) {
          etag = res.etag;
          this.update({ ...res.data });
          await this.fetchLogs();
          if (isTerminal(res.data.status)) return this.finish();
        }
        // A host without long polling answers at once: then wait as long as Retry-After asks.
        if (Date.now() - began < 1000) pause = 1000 * Math.max(1, res.retryAfter ?? 1);
      } catch (err) {
        if (err.name === "AbortError") return;
        if (err instanceof ApiError && err.status === 404) return this.hooks.onGone();
        pause = 1000 * Math.max(2, err.retryAfter ?? 5);
      }
      await sleep(pause, this.abort.signal);
    }
  }

  /** A silent stream while the task changed means the connection is stale: reopen it. */
  async checkStale() {
    if (this.done || !this.es) return;
    const quiet = !this.sawEventSince;
    this.sawEventSince = false;
    try {
      const res = await request(this.task.links.self, { etag: this.etag, signal: this.abort.signal });
      if (res.status === 200) {
        this.etag = res.etag;
        if (quiet && !this.stopped && !this.done) this.openStream();
      }
    } catch {
      // The page-wide health banner reports an unreachable API; EventSource keeps retrying.
    }
  }
}
