// tasklift dashboard: wires the form, the list and the detail panel, the "API unreachable"
// banner, the URL (#task=<id>, so a link or a reload reopens the same task) and a 1 s clock.
// No build step: plain ES modules served from /static by the API itself.

import { apiHealth, hasCredential, onAuthRequired, onHealth, request, serverNow, setCredential } from "./api.js";
import { BulkActions } from "./bulk-actions.js";
import { SchedulesPanel } from "./schedules.js";
import { TaskForm } from "./task-form.js";
import { TaskList } from "./task-list.js";
import { TaskView } from "./task-view.js";

const banner = document.querySelector("#banner");
const conn = document.querySelector("#conn");

const list = new TaskList(document.querySelector(".tasks"), { onSelect: (id) => open(id, { focus: true }) });
new BulkActions(document.querySelector(".tasks"), list);
const view = new TaskView(document.querySelector("#detail"), {
  onTask: (task) => list.upsert(task, { live: true }),
  onOpen: (id) => open(id, { focus: true }),
});
new SchedulesPanel(document.querySelector(".schedules"), { onOpenTask: (id) => open(id, { focus: true }) });
const form = new TaskForm(document.querySelector("#submit-form"), {
  onTypes: (types) => list.setTypes(types),
  onSubmitted: (task) => {
    list.upsert(task);
    open(task.task_id);
  },
});

// The form folds away (a button, keyboard-operable); on a phone it starts folded so the list comes first.
const formToggle = document.querySelector("#form-toggle");
const formBody = document.querySelector("#submit-form");
function setFormOpen(open) {
  formToggle.setAttribute("aria-expanded", String(open));
  formBody.hidden = !open;
}
formToggle.addEventListener("click", () => setFormOpen(formBody.hidden));
setFormOpen(!matchMedia("(max-width: 599px)").matches);

function taskFromHash() {
  return new URLSearchParams(location.hash.slice(1)).get("task");
}

/** Show task `id` in the detail panel and remember it in the URL. */
function open(id, { focus = false } = {}) {
  list.select(id);
  if (taskFromHash() !== id) history.replaceState(null, "", `#task=${encodeURIComponent(id)}`);
  // In the one-column layout (phones) the panel is below the list: bring it up when it opens.
  const scroll = focus && matchMedia("(max-width: 899px)").matches;
  if (view.taskId !== id) view.show(id, { focus, scroll });
  else if (focus) view.focus(scroll);
}

window.addEventListener("hashchange", () => {
  const id = taskFromHash();
  if (id) open(id);
  else {
    list.select(null);
    view.clear();
  }
});

// --- the API's health: one banner, cleared by itself ------------------------------------------
let probe = null;

function showHealth({ ok, message }) {
  conn.dataset.state = ok ? "up" : "down";
  conn.querySelector(".conn-text").textContent = ok ? "Connected" : "Offline";
  if (ok) {
    banner.hidden = true;
    banner.textContent = "";
    clearTimeout(probe);
    probe = null;
    // Catch up on whatever did not load while the API was away.
    if (!form.loaded) form.load();
    list.refresh();
    view.recover();
    return;
  }
  const sentence = /[.!?]$/.test(message) ? message : `${message}.`;
  banner.textContent = `${sentence.charAt(0).toUpperCase()}${sentence.slice(1)} Retrying by itself; tasks keep running on the server.`;
  banner.hidden = false;
  if (!probe) scheduleProbe(1000);
}

/**
 * While the API is away, ask it with back-off (1 s, 2 s, 4 s … 10 s) until it answers. The probe is
 * a one-row list read, not /healthz: liveness says nothing about the task store the page needs.
 */
function scheduleProbe(delay) {
  probe = setTimeout(async () => {
    try {
      await request("/tasks?limit=1");
    } catch {
      // still down: request() kept the banner up
    }
    if (!apiHealth().ok) scheduleProbe(Math.min(10_000, delay * 2));
  }, delay);
}

onHealth(showHealth);

// --- credentials: only when the API asks (anonymous access off) -----------------------------------
const signin = document.querySelector("#signin");
const keyInput = document.querySelector("#api-key");
const signinError = document.querySelector("#signin-error");
const forgetKey = document.querySelector("#forget-key");

onAuthRequired(() => {
  if (!signin.hidden) return;
  signinError.hidden = !hasCredential();
  signinError.textContent = hasCredential() ? "The API refused this key. Enter another one." : "";
  signin.hidden = false;
  keyInput.focus();
});

signin.addEventListener("submit", (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  if (!key) {
    signinError.textContent = "Enter an API key.";
    signinError.hidden = false;
    keyInput.focus();
    return;
  }
  setCredential(key);
  keyInput.value = "";
  signin.hidden = true;
  forgetKey.hidden = false;
  reloadAll();
});

forgetKey.hidden = !hasCredential();
forgetKey.addEventListener("click", () => {
  setCredential(null);
  forgetKey.hidden = true;
  location.reload();
});

/** Read everything again (after signing in). */
function reloadAll() {
  form.load();
  list.reload();
  const id = taskFromHash();
  if (id) view.show(id);
}

// --- clocks: elapsed times and estimates, once a second while visible ---------------------------
setInterval(() => {
  if (document.hidden) return;
  const now = serverNow();
  list.tick(now);
  view.tick(now);
}, 1000);

// --- start ---------------------------------------------------------------------------------------
async function start() {
  const initial = taskFromHash();
  if (initial) open(initial);
  await Promise.all([form.load(), list.reload()]);
  if (apiHealth().ok) {
    conn.dataset.state = "up";
    conn.querySelector(".conn-text").textContent = "Connected";
  }
}

start();
