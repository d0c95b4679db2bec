// The "New task" form: a type picker over GET /task-types and that type's generated fields;
// submits POST /tasks with an Idempotency-Key so a double click or a resend after a network error
// creates one task, not two (API.md: same key + same body → the original 202 again).

import { ApiError, describeError, newIdempotencyKey, request } from "./api.js";
import { SchemaFields } from "./schema-fields.js";
import { h } from "./format.js";

const REMEMBERED_TYPE = "tasklift.dashboard.type";

export class TaskForm {
  /** @param {{onTypes: (types) => void, onSubmitted: (task) => void}} hooks */
  constructor(form, hooks) {
    this.form = form;
    this.hooks = hooks;
    this.types = [];
    this.fields = null;
    this.key = null;
    this.picker = form.querySelector("#task-type");
    this.typeHint = form.querySelector("#task-type-hint");
    this.container = form.querySelector("#type-fields");
    this.summary = form.querySelector("#form-errors");
    this.button = form.querySelector("#submit-button");
    this.status = form.querySelector("#submit-status");
    this.picker.addEventListener("change", () => this.pick(this.picker.value));
    form.addEventListener("input", () => {
      this.key = null; // a changed request is a new request
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
  }

  get loaded() {
    return this.types.length > 0;
  }

  async load() {
    this.status.textContent = "";
    try {
      const { data } = await request("/task-types");
      this.types = [...data].sort((a, b) => a.name.localeCompare(b.name));
    } catch (err) {
      this.picker.replaceChildren(h("option", { text: "Task types unavailable" }));
      this.status.textContent = `Could not load the task types: ${describeError(err)} Trying again…`;
      clearTimeout(this.reloadTimer);
      this.reloadTimer = setTimeout(() => this.loaded || this.load(), 5000);
      return false;
    }
    const remembered = localStorage.getItem(REMEMBERED_TYPE);
    const initial = this.types.some((t) => t.name === remembered) ? remembered : this.types[0]?.name;
    this.picker.replaceChildren(...this.types.map((t) => h("option", { value: t.name, text: t.name })));
    this.picker.disabled = this.types.length === 0;
    this.button.disabled = this.types.length === 0;
    if (initial) this.pick(initial);
    else this.status.textContent = "This server has no task types registered.";
    this.hooks.onTypes(this.types);
    return true;
  }

  pick(name) {
    const type = this.types.find((t) => t.name === name);
    if (!type) return;
    this.picker.value = name;
    localStorage.setItem(REMEMBERED_TYPE, name);
    this.typeHint.textContent = [type.description, type.queue && `queue ${type.queue}`].filter(Boolean).join(" · ");
    this.fields = new SchemaFields(this.container, type.input_schema, "field");
    this.key = null;
    this.showSummary([], null);
    this.status.textContent = "";
  }

  showSummary(rest, title) {
    this.summary.replaceChildren();
    this.summary.hidden = !title;
    if (!title) return;
    this.summary.append(h("p", { class: "summary-title", text: title }));
    if (rest.length) this.summary.append(h("ul", {}, rest.map((msg) => h("li", { text: msg }))));
  }

  /** Put errors next to their fields, move focus to the first one, and summarise the rest. */
  reject(errors, title) {
    const { fields, rest } = this.fields.showErrors(errors);
    this.showSummary(rest, title);
    if (fields.length) fields[0].input.focus();
    else this.summary.focus();
  }

  async submit() {
    if (!this.fields || this.button.disabled) return;
    const { values, errors } = this.fields.read();
    if (errors.size) {
      this.reject(errors, "Please correct the highlighted fields.");
      return;
    }
    this.fields.clearErrors();
    this.showSummary([], null);
    const body = { task_type: this.picker.value, ...values };
    // The submission's own metadata says where it came from, unless the type takes a `metadata` input.
    if (!this.fields.has("metadata")) body.metadata = { source: "dashboard" };
    this.key ||= newIdempotencyKey();
    this.button.disabled = true;
    this.status.textContent = "Submitting…";
    try {
      const { data } = await request("/tasks", { method: "POST", body, headers: { "Idempotency-Key": this.key } });
      this.key = null;
      this.status.textContent = `Submitted ${data.task_type} ${data.task_id.slice(0, 8)}.`;
      this.hooks.onSubmitted(data);
    } catch (err) {
      this.status.textContent = "";
      if (err instanceof ApiError && err.status === 422 && Array.isArray(err.problem?.errors)) {
        this.reject(err.problem.errors, `The server refused this task: ${describeError(err)}`);
      } else {
        const wait = err.retryAfter ? ` Try again in ${Math.ceil(err.retryAfter)} s.` : "";
        this.showSummary([], `Not submitted: ${describeError(err)}${wait}`);
        this.summary.focus();
      }
    } finally {
      this.button.disabled = false;
    }
  }
}
