// The parts of the detail panel beyond progress and log (issue 23): the task's durable steps as a
// timeline with durations (GET /tasks/{id}/steps), its live output (GET /tasks/{id}/output, then
// the stream's `output` events), and, while it is WAITING on a signal, a form that sends it
// (POST /tasks/{id}/signals/{name} with a JSON body).

import { describeError, request, withQuery } from "./api.js";
import { h, localTime } from "./format.js";

const OUTPUT_PAGE = 1000;
const MAX_OUTPUT_CHARS = 200_000; // the DOM keeps the newest text; GET /output has it all

/** "12 ms", "3.4 s", "2 min 5 s". */
export function duration(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)} min ${s % 60} s`;
}

/** What a recorded step name says: "fetch#2", "wait#approval" (a signal), "sleep#1". */
function stepLabel(name) {
  if (name.startsWith("wait#")) return `waited for “${name.slice(5).split("#")[0]}”`;
  if (name.startsWith("sleep#")) return "slept";
  return name;
}

export class TaskExtras {
  constructor(slots, taskId, abortSignal) {
    this.slots = slots;
    this.taskId = taskId;
    this.abort = abortSignal;
    this.outputAfter = 0; // index of the last chunk shown
    this.outputText = "";
    this.stepsTimer = null;
    this.wait = null;
    slots["signal-form"].addEventListener("submit", (event) => {
      event.preventDefault();
      this.sendSignal();
    });
  }

  base() {
    return `/tasks/${encodeURIComponent(this.taskId)}`;
  }

  start() {
    this.refreshSteps();
    this.fetchOutput();
  }

  /** Read the steps listing again soon (several events in a row cost one read). */
  stepsChanged() {
    clearTimeout(this.stepsTimer);
    this.stepsTimer = setTimeout(() => this.refreshSteps(), 150);
  }

  async refreshSteps() {
    let data;
    try {
      ({ data } = await request(`${this.base()}/steps`, { signal: this.abort }));
    } catch (err) {
      if (err.name !== "AbortError") this.slots["steps-empty"].textContent = `Steps unavailable: ${describeError(err)}`;
      return;
    }
    if (this.abort.aborted) return;
    this.renderSteps(data.steps);
    this.renderWait(data.status === "WAITING" ? data.wait : null);
  }

  renderSteps(steps) {
    const list = this.slots.steps;
    const longest = Math.max(1, ...steps.map((s) => s.duration_ms));
    list.replaceChildren(...steps.map((step) => {
      const fill = h("span", { class: "step-fill" });
      fill.style.setProperty("width", `${Math.max(2, (100 * step.duration_ms) / longest)}%`); // CSSOM: CSP allows it
      return h("li", { "data-step": step.name, title: `attempt ${step.attempt}, finished ${localTime(step.finished_at, true)}` },
        h("span", { class: "step-name", text: stepLabel(step.name) }),
        h("span", { class: "step-bar" }, fill),
        h("span", { class: "step-duration", text: duration(step.duration_ms) }));
    }));
    this.slots["steps-empty"].hidden = steps.length > 0;
    this.slots["steps-empty"].textContent = "No steps recorded yet.";
  }

  renderWait(wait) {
    this.wait = wait;
    const { "wait-block": block, "wait-text": text, "signal-form": form, "signal-name": name } = this.slots;
    block.hidden = !wait;
    if (!wait) return;
    const until = wait.deadline ? ` until ${localTime(wait.deadline, true)}` : "";
    if (wait.signal === null) {
      text.textContent = `Sleeping${until}: no worker is held.`;
      form.hidden = true;
      return;
    }
    text.textContent = `Waiting for the signal “${wait.signal}”${wait.deadline ? ` (times out${until})` : ""}: no worker is held.`;
    form.hidden = false;
    if (!name.value) name.value = wait.signal;
  }

  async sendSignal() {
    const { "signal-name": name, "signal-payload": payload, "signal-status": status, "signal-send": send } = this.slots;
    let body;
    try {
      body = payload.value.trim() === "" ? null : JSON.parse(payload.value);
    } catch (err) {
      status.textContent = `The payload is not JSON: ${err.message}`;
      payload.setAttribute("aria-invalid", "true");
      return;
    }
    payload.removeAttribute("aria-invalid");
    send.disabled = true;
    status.textContent = "Sending the signal…";
    try {
      const { data } = await request(`${this.base()}/signals/${encodeURIComponent(name.value.trim())}`, {
        method: "POST", body,
      });
      status.textContent = data.delivered === "resumed"
        ? "Signal sent: the task resumes."
        : "Signal kept: the task takes it at its next wait for it.";
    } catch (err) {
      status.textContent = `Not sent: ${describeError(err)}`;
    } finally {
      send.disabled = false;
    }
    this.refreshSteps();
  }

  /** Every chunk stored so far (the stream's output events continue from there). */
  async fetchOutput() {
    try {
      for (;;) {
        const url = withQuery(`${this.base()}/output`, { after: this.outputAfter, limit: OUTPUT_PAGE });
        const { data } = await request(url, { signal: this.abort });
        if (this.abort.aborted) return;
        for (const chunk of data.chunks) this.addChunk(chunk.index, chunk.data);
        if (data.chunks.length < OUTPUT_PAGE) return;
      }
    } catch {
      // the live events still arrive; the next open of the task reads the rest
    }
  }

  /** An `output` event of the stream: chunks `first`, `first + 1`, …; ones already shown are skipped. */
  addOutputEvent(data) {
    (data.chunks || []).forEach((chunk, offset) => this.addChunk(data.first + offset, chunk));
  }

  addChunk(index, chunk) {
    if (index <= this.outputAfter) return;
    if (index !== this.outputAfter + 1) {
      this.fetchOutput(); // a gap (missed while reconnecting): read it in order
      return;
    }
    this.outputAfter = index;
    this.outputText += typeof chunk === "string" ? chunk : `${JSON.stringify(chunk)}\n`;
    if (this.outputText.length > MAX_OUTPUT_CHARS) this.outputText = this.outputText.slice(-MAX_OUTPUT_CHARS);
    const out = this.slots.output;
    const nearBottom = out.scrollHeight - out.scrollTop - out.clientHeight < 40;
    out.textContent = this.outputText;
    this.slots["output-empty"].hidden = true;
    out.hidden = false;
    if (nearBottom) out.scrollTop = out.scrollHeight;
  }
}
