// Schedules panel: the caller's cron / interval schedules (GET /schedules), each with its timing,
// next fire time and a link to its last task, and a Pause / Resume button
// (POST /schedules/{id}:pause | :resume). Re-read every 5 s while the page is visible.
// Creating and deleting stay in the API, the CLI and the client (docs/flow-control.md, "Schedules").

import { describeError, request } from "./api.js";
import { h, localTime, setText } from "./format.js";

const REFRESH_MS = 5000;

export class SchedulesPanel {
  constructor(root, { onOpenTask }) {
    this.list = root.querySelector("#schedule-list");
    this.state = root.querySelector("#schedule-state");
    this.onOpenTask = onOpenTask;
    this.refresh();
    setInterval(() => {
      if (document.visibilityState === "visible") this.refresh();
    }, REFRESH_MS);
  }

  async refresh() {
    try {
      const { data } = await request("/schedules?limit=50");
      this.render(data.items);
      setText(this.state, data.items.length ? "" : "No schedules yet: POST /schedules or `tasklift schedules create`.");
    } catch (err) {
      setText(this.state, `Could not load the schedules: ${describeError(err)}`);
    }
  }

  render(items) {
    this.list.replaceChildren(...items.map((s) => this.row(s)));
  }

  row(s) {
    const timing = s.cron ? `${s.cron} (${s.timezone})` : `every ${s.interval_seconds} s`;
    const next = s.paused ? "paused" : `next ${localTime(s.next_fire_at, true)}`;
    const last = s.last_task_id
      ? h("a", {
          href: `#task=${encodeURIComponent(s.last_task_id)}`,
          text: "last task",
          onclick: (event) => {
            event.preventDefault();
            this.onOpenTask(s.last_task_id);
          },
        })
      : h("span", { class: "muted", text: "not fired yet" });
    const action = s.paused ? "resume" : "pause";
    const button = h("button", {
      type: "button",
      class: "secondary",
      text: s.paused ? "Resume" : "Pause",
      "aria-label": `${s.paused ? "Resume" : "Pause"} schedule ${s.name}`,
      onclick: async () => {
        button.disabled = true;
        try {
          await request(`/schedules/${encodeURIComponent(s.schedule_id)}:${action}`, { method: "POST" });
          await this.refresh();
        } catch (err) {
          setText(this.state, `Could not ${action} ${s.name}: ${describeError(err)}`);
          button.disabled = false;
        }
      },
    });
    return h(
      "li",
      { class: `schedule${s.paused ? " paused" : ""}`, "data-schedule": s.schedule_id },
      h("strong", { text: s.name }),
      h("span", { class: "schedule-type", text: ` ${s.task_type} · ${timing}` }),
      h("span", { class: "schedule-next", text: next }),
      last,
      s.last_error ? h("span", { class: "field-error", text: s.last_error }) : null,
      button,
    );
  }
}
