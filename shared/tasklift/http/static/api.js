// The one place the dashboard talks HTTP to tasklift (same origin, API.md v1).
//
// Every call reports whether the API answered, so the page can show one "API unreachable" banner
// and clear it by itself when any request succeeds again. Problem details (RFC 9457) become
// ApiError with `.problem` (title, detail, errors[].loc/msg) and the parsed Retry-After.
//
// Credentials: with anonymous access off the API answers 401; the page then asks for an API key,
// keeps it for this browser tab only (sessionStorage) and sends it as `Authorization: Bearer`.
// EventSource cannot send headers: streams use the short-lived token in the task's links.stream.

/** The API answered with a 4xx/5xx; `problem` is its problem+json body (or null). */
export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem;
    this.retryAfter = retryAfter;
  }
}

/** The API did not answer at all (down, restarting, network gone). */
export class NetworkError extends Error {
  constructor(message) {
    super(message);
    this.name = "NetworkError";
  }
}

// 502/503/504 mean "the API (or its store) is not there right now", not "your request is wrong".
const UNAVAILABLE = new Set([502, 503, 504]);

const listeners = new Set();
const authListeners = new Set();
let health = { ok: true, message: "" };
let clockOffset = 0;
const KEY_SLOT = "tasklift.dashboard.key";
let credential = sessionStorage.getItem(KEY_SLOT);

/** Call `fn()` when the API wants credentials (a 401) that the page does not have or that failed. */
export function onAuthRequired(fn) {
  authListeners.add(fn);
}

/** Use `key` for every request from now on (null forgets it). */
export function setCredential(key) {
  credential = key || null;
  if (credential) sessionStorage.setItem(KEY_SLOT, credential);
  else sessionStorage.removeItem(KEY_SLOT);
}

export const hasCredential = () => Boolean(credential);

/** Headers every request carries (the API key, when the user gave one). */
export function authHeaders() {
  return credential ? { Authorization: `Bearer ${credential}` } : {};
}

/** `link` (a path from the API, which may already carry a query) with `params` set in its query. */
export function withQuery(link, params) {
  const url = new URL(link, location.origin);
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, String(value));
  return url.origin === location.origin ? url.pathname + url.search : url.href;
}

/** Call `fn({ok, message})` whenever the API goes from reachable to unreachable or back. */
export function onHealth(fn) {
  listeners.add(fn);
}

export function apiHealth() {
  return health;
}

function setHealth(ok, message = "") {
  if (ok === health.ok && message === health.message) return;
  health = { ok, message };
  for (const fn of listeners) fn(health);
}

/** Now on the server's clock (task times are the server's; a skewed laptop must not show -3 s). */
export function serverNow() {
  return Date.now() + clockOffset;
}

function noteServerDate(value) {
  const server = Date.parse(value || "");
  if (Number.isNaN(server)) return;
  const offset = server - Date.now();
  // The Date header has 1 s resolution: only correct for a skew that resolution cannot explain.
  clockOffset = Math.abs(offset) > 2000 ? offset : 0;
}

/** Seconds from a Retry-After header (delta-seconds or HTTP date), or null. */
export function parseRetryAfter(value) {
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, (at - Date.now()) / 1000);
}

function parseBody(text) {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { detail: text.slice(0, 200) };
  }
}

/**
 * One request. Resolves to {status, data, etag, retryAfter}; a 304 resolves with data null.
 * Throws ApiError for 4xx/5xx, NetworkError when nothing answered, AbortError when aborted.
 */
export async function request(path, { method = "GET", body, headers = {}, etag, signal } = {}) {
  const init = {
    method, signal, cache: "no-store", headers: { Accept: "application/json", ...authHeaders(), ...headers },
  };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  if (etag) init.headers["If-None-Match"] = etag;
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    setHealth(false, "The tasklift API is not answering.");
    throw new NetworkError("The tasklift API is not answering.");
  }
  noteServerDate(res.headers.get("Date"));
  const retryAfter = parseRetryAfter(res.headers.get("Retry-After"));
  let data = null;
  if (res.status !== 304 && res.status !== 204) {
    try {
      data = parseBody(await res.text());
    } catch (err) {
      if (err.name === "AbortError") throw err;
      setHealth(false, "The connection to the tasklift API broke.");
      throw new NetworkError("The connection to the tasklift API broke.");
    }
  }
  if (UNAVAILABLE.has(res.status)) {
    setHealth(false, data?.detail || `The tasklift API answered ${res.status}.`);
  } else {
    setHealth(true);
  }
  if (res.status === 401) for (const fn of authListeners) fn();
  if (res.status >= 400) throw new ApiError(res.status, data, retryAfter);
  return { status: res.status, data, etag: res.headers.get("ETag") || etag || null, retryAfter };
}

/** A short human sentence for any error thrown by request(). */
export function describeError(err) {
  let text = err?.message || String(err);
  if (err instanceof ApiError) {
    const p = err.problem || {};
    text = p.detail || p.title || `The API answered ${err.status}`;
  }
  text = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?…]$/.test(text) ? text : `${text}.`;
}

/** A random Idempotency-Key (crypto.randomUUID needs a secure context; getRandomValues does not). */
export function newIdempotencyKey() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
