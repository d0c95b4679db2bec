// Small pure helpers: task states, numbers and times as people read them, and element building.
// Text always goes in through textContent (never innerHTML), so task data cannot inject markup.

/** Statuses after which nothing changes any more (API.md task lifecycle). */
export const TERMINAL = new Set(["SUCCESS", "FAILED", "CANCELLED", "EXPIRED"]);

export const STATUS_LABEL = {
  PENDING: "Pending",
  RUNNING: "Running",
  SUCCESS: "Succeeded",
  FAILED: "Failed",
  CANCELLED: "Cancelled",
  EXPIRED: "Expired",
};

export const isTerminal = (status) => TERMINAL.has(status);

/** Build an element: h("p", {class: "x", text: "hi", "aria-label": "…"}, child, …). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") el.textContent = value;
    else if (key === "class") el.className = value;
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Set an element's text only when it changes: a live region re-announces any write. */
export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/** Percent done (0–100) from a progress object; a finished task is complete by definition. */
export function percentOf(task) {
  if (task.status === "SUCCESS") return 100;
  const p = task.progress || {};
  let value = Number(p.percent);
  if (!Number.isFinite(value) && p.total > 0) value = (100 * p.current) / p.total;
  if (!Number.isFinite(value)) value = 0;
  return Math.min(100, Math.max(0, value));
}

/** "42 %": floored, so a running task never claims 100 % before it is done. */
export function percentText(task) {
  const value = percentOf(task);
  return `${task.status === "SUCCESS" ? 100 : Math.floor(value)} %`;
}

const pad = (n) => String(n).padStart(2, "0");

/** A duration as a clock: "0:42", "12:05", "1:02:03". */
export function clock(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  return hours ? `${hours}:${pad(minutes)}:${pad(seconds)}` : `${minutes}:${pad(seconds)}`;
}

/** A rough duration for estimates: "about 12 s", "about 4 min 10 s", "about 2 h 5 min". */
export function roughly(ms) {
  const s = Math.max(1, Math.round(ms / 1000));
  if (s < 60) return `about ${s} s`;
  if (s < 3600) {
    const m = Math.floor(s / 60);
    const rest = m < 10 ? Math.round((s % 60) / 10) * 10 : 0;
    return rest && rest < 60 ? `about ${m} min ${rest} s` : `about ${m} min`;
  }
  const hrs = Math.floor(s / 3600);
  const min = Math.round((s % 3600) / 60);
  return min ? `about ${hrs} h ${min} min` : `about ${hrs} h`;
}

/** "just now", "3 min ago", "5 h ago", or a date for older times. */
export function relative(iso, now) {
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return "–";
  const s = Math.round((now - at) / 1000);
  if (s < 10) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(at).toLocaleDateString(undefined, { day: "numeric", month: "short", year: "numeric" });
}

/** A local time ("22:17:45"), with the date when it is not today (or when `withDate` says so). */
export function localTime(iso, withDate = false) {
  const at = new Date(Date.parse(iso));
  if (Number.isNaN(at.getTime())) return "";
  const opts = { hour: "2-digit", minute: "2-digit", second: "2-digit" };
  if (withDate || at.toDateString() !== new Date().toDateString()) Object.assign(opts, { day: "numeric", month: "short" });
  return at.toLocaleString(undefined, opts);
}

/** How long a task has been waiting or running (ms), or null before it could have started. */
export function elapsedMs(task, now) {
  const start = Date.parse(task.started_at || "");
  if (Number.isNaN(start)) return null;
  const end = Date.parse(task.completed_at || "");
  return (Number.isNaN(end) ? now : end) - start;
}

export const shortId = (id) => String(id || "").slice(0, 8);
