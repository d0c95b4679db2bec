// Form fields generated from a task type's input JSON Schema (GET /task-types, Pydantic's dialect).
//
//   number / integer        → <input type=number> with min/max/step
//   string (enum → select)  → <input type=text|url>
//   boolean                 → checkbox
//   array of numbers/strings→ a comma-separated list
//   object, anything else   → a JSON textarea
//
// Defaults are shown pre-filled. The checks here are hints that save a round trip; the server's
// 422 problem+json stays the authority and its errors[].loc/msg land next to the same fields.

import { h } from "./format.js";

/** Follow `$ref` into `$defs` and unwrap Optional[X] (anyOf [X, null]). */
function resolve(schema, root) {
  let s = schema || {};
  if (s.$ref?.startsWith("#/$defs/")) s = { ...root.$defs?.[s.$ref.slice(8)], ...s, $ref: undefined };
  const variants = s.anyOf || s.oneOf;
  if (variants) {
    const real = variants.filter((v) => v.type !== "null");
    if (real.length === 1) {
      const inner = resolve(real[0], root);
      return { ...inner, title: s.title ?? inner.title, description: s.description ?? inner.description,
        default: s.default, nullable: true };
    }
  }
  return s;
}

function kindOf(s) {
  if (Array.isArray(s.enum)) return "enum";
  if (s.type === "boolean") return "boolean";
  if (s.type === "integer" || s.type === "number") return "number";
  if (s.type === "string") return "string";
  if (s.type === "array" && ["number", "integer"].includes(s.items?.type)) return "numbers";
  if (s.type === "array" && s.items?.type === "string" && !s.items.enum) return "strings";
  return "json";
}

function hintFor(s, kind) {
  const parts = [];
  if (s.description) parts.push(s.description);
  if (kind === "numbers") parts.push("numbers separated by commas");
  if (kind === "strings") parts.push("values separated by commas");
  if (kind === "json") parts.push(s.type === "object" ? "a JSON object" : "JSON");
  if (s.minimum !== undefined) parts.push(`≥ ${s.minimum}`);
  if (s.exclusiveMinimum !== undefined) parts.push(`> ${s.exclusiveMinimum}`);
  if (s.maximum !== undefined) parts.push(`≤ ${s.maximum}`);
  if (s.exclusiveMaximum !== undefined) parts.push(`< ${s.exclusiveMaximum}`);
  if (s.maxItems !== undefined) parts.push(`at most ${s.maxItems} items`);
  if (s.default !== undefined && s.default !== null) parts.push(`default ${JSON.stringify(s.default)}`);
  return parts.join(" · ");
}

function initialValue(s, kind) {
  const d = s.default;
  if (d === undefined || d === null) return "";
  if (kind === "numbers" || kind === "strings") return d.join(", ");
  if (kind === "json") return JSON.stringify(d, null, 2);
  return String(d);
}

function checkNumber(n, s, integer) {
  if (!Number.isFinite(n)) return "Enter a number.";
  if (integer && !Number.isInteger(n)) return "Enter a whole number.";
  if (s.minimum !== undefined && n < s.minimum) return `Must be at least ${s.minimum}.`;
  if (s.exclusiveMinimum !== undefined && n <= s.exclusiveMinimum) return `Must be more than ${s.exclusiveMinimum}.`;
  if (s.maximum !== undefined && n > s.maximum) return `Must be at most ${s.maximum}.`;
  if (s.exclusiveMaximum !== undefined && n >= s.exclusiveMaximum) return `Must be less than ${s.exclusiveMaximum}.`;
  return null;
}

/** Parse one field's raw value: {value} to send, {omit: true}, or {error}. */
function parseField(field) {
  const { kind, schema: s, input, required } = field;
  if (kind === "boolean") return { value: input.checked };
  if (kind === "number" && input.validity.badInput) return { error: "Enter a number." };
  const raw = input.value.trim();
  if (raw === "") return required ? { error: "This field is required." } : { omit: true };
  switch (kind) {
    case "number": {
      const n = Number(raw);
      const error = checkNumber(n, s, s.type === "integer");
      return error ? { error } : { value: n };
    }
    case "enum":
      return { value: s.enum.find((v) => String(v) === raw) ?? raw };
    case "string":
      if (s.minLength !== undefined && raw.length < s.minLength) return { error: `At least ${s.minLength} characters.` };
      if (s.maxLength !== undefined && raw.length > s.maxLength) return { error: `At most ${s.maxLength} characters.` };
      return { value: input.value };
    case "numbers": {
      const items = raw.split(/[\s,;]+/).filter(Boolean);
      const values = [];
      for (const [i, item] of items.entries()) {
        const error = checkNumber(Number(item), s.items, s.items.type === "integer");
        if (error) return { error: `Item ${i + 1} (“${item}”): ${error}` };
        values.push(Number(item));
      }
      return checkItems(values, s);
    }
    case "strings":
      return checkItems(raw.split(",").map((v) => v.trim()).filter(Boolean), s);
    default: {
      let value;
      try {
        value = JSON.parse(raw);
      } catch (err) {
        return { error: `Not valid JSON: ${err.message}` };
      }
      if (s.type === "object" && (typeof value !== "object" || value === null || Array.isArray(value))) {
        return { error: "Enter a JSON object, like {\"key\": \"value\"}." };
      }
      return { value };
    }
  }
}

function checkItems(values, s) {
  if (s.minItems !== undefined && values.length < s.minItems) return { error: `At least ${s.minItems} items.` };
  if (s.maxItems !== undefined && values.length > s.maxItems) return { error: `At most ${s.maxItems} items.` };
  return { value: values };
}

function control(id, name, s, kind, describedBy) {
  const common = { id, name, "aria-describedby": describedBy };
  if (kind === "boolean") return h("input", { ...common, type: "checkbox", checked: s.default === true });
  if (kind === "enum") {
    return h("select", common, s.enum.map((v) => h("option", { value: String(v), text: String(v) })));
  }
  if (kind === "json") {
    const rows = Math.min(8, Math.max(3, initialValue(s, kind).split("\n").length));
    return h("textarea", { ...common, rows, spellcheck: "false", class: "mono" });
  }
  if (kind === "number") {
    return h("input", { ...common, type: "number", inputmode: s.type === "integer" ? "numeric" : "decimal",
      step: s.type === "integer" ? "1" : "any", min: s.minimum, max: s.maximum });
  }
  const url = s.format === "uri" || s.format === "url";
  return h("input", { ...common, type: url ? "url" : "text", autocomplete: "off",
    inputmode: kind === "numbers" ? "decimal" : undefined, placeholder: url ? "https://…" : undefined });
}

/** The fields of one task type, built into `container`. */
export class SchemaFields {
  constructor(container, schema, idPrefix) {
    this.container = container;
    this.fields = new Map();
    const root = schema || {};
    const required = new Set(root.required || []);
    container.replaceChildren();
    for (const [name, raw] of Object.entries(root.properties || {})) {
      const s = resolve(raw, root);
      const kind = kindOf(s);
      const id = `${idPrefix}-${name}`;
      const hint = hintFor(s, kind);
      const input = control(id, name, s, kind, [hint && `${id}-hint`, `${id}-error`].filter(Boolean).join(" "));
      if (kind !== "boolean") input.value = initialValue(s, kind);
      if (required.has(name)) input.setAttribute("aria-required", "true");
      const label = h("label", { for: id }, s.title || name,
        required.has(name) ? h("span", { class: "req", text: " (required)" }) : null);
      const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
      const box = h("div", { class: kind === "boolean" ? "field check" : "field", "data-field": name },
        kind === "boolean" ? [input, label] : [label, input],
        hint ? h("p", { class: "hint", id: `${id}-hint`, text: hint }) : null, error);
      container.append(box);
      this.fields.set(name, { name, kind, schema: s, input, error, required: required.has(name) });
    }
    if (!this.fields.size) container.append(h("p", { class: "hint", text: "This task type takes no input." }));
  }

  /** The values to send, or the client-side errors by field name. */
  read() {
    const values = {};
    const errors = new Map();
    for (const field of this.fields.values()) {
      const parsed = parseField(field);
      if (parsed.error) errors.set(field.name, [parsed.error]);
      else if (!parsed.omit) values[field.name] = parsed.value;
    }
    return { values, errors };
  }

  has(name) {
    return this.fields.has(name);
  }

  clearErrors() {
    for (const field of this.fields.values()) this.showError(field, []);
  }

  showError(field, messages) {
    field.error.textContent = messages.join(" ");
    field.error.hidden = messages.length === 0;
    if (messages.length) field.input.setAttribute("aria-invalid", "true");
    else field.input.removeAttribute("aria-invalid");
  }

  /**
   * Show errors next to their fields. `errors` is a Map name → messages, or the server's
   * problem errors [{loc: ["body", "field", …], msg}]. Returns the errors no field could take.
   */
  showErrors(errors) {
    const byField = new Map();
    const rest = [];
    const entries = errors instanceof Map
      ? [...errors].flatMap(([name, msgs]) => msgs.map((msg) => ({ loc: [name], msg })))
      : errors;
    for (const { loc = [], msg } of entries) {
      const path = (loc[0] === "body" ? loc.slice(1) : loc).map(String);
      if (!this.fields.has(path[0])) {
        rest.push(path.length ? `${path.join(".")}: ${msg}` : msg);
        continue;
      }
      const where = path.slice(1).map((p) => (/^\d+$/.test(p) ? `item ${Number(p) + 1}` : p)).join(", ");
      byField.set(path[0], [...(byField.get(path[0]) || []), where ? `${where}: ${msg}` : msg]);
    }
    for (const field of this.fields.values()) this.showError(field, byField.get(field.name) || []);
    return { fields: [...byField.keys()].map((name) => this.fields.get(name)), rest };
  }
}
