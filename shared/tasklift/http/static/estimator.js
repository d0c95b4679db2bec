// Time left from the rate of progress.
//
// The rate is measured over the progress seen in the last minute (tasks often speed up or slow
// down: a recent rate beats the lifetime average); until there is a minute's worth of samples
// spanning a few seconds, it falls back to the average since the task started.

import { elapsedMs, percentOf } from "./format.js";

const WINDOW_MS = 60_000;
const MIN_SPAN_MS = 3_000;

export class Estimator {
  constructor() {
    this.samples = []; // [{at, percent}], oldest first
  }

  add(percent, at) {
    const last = this.samples.at(-1);
    if (last && last.percent === percent) return;
    if (last && percent < last.percent) this.samples = []; // a retry started over
    this.samples.push({ at, percent });
    while (this.samples.length > 2 && at - this.samples[0].at > WINDOW_MS) this.samples.shift();
  }

  /** Milliseconds left for a running task, or null when there is nothing to go on yet. */
  remaining(task, now) {
    const percent = percentOf(task);
    if (percent <= 0 || percent >= 100) return null;
    let rate = null; // percent per ms
    const first = this.samples[0];
    const last = this.samples.at(-1);
    if (first && last && last.at - first.at >= MIN_SPAN_MS && last.percent > first.percent) {
      rate = (last.percent - first.percent) / (last.at - first.at);
    } else {
      const elapsed = elapsedMs(task, now);
      if (elapsed > 0) rate = percent / elapsed;
    }
    if (!rate) return null;
    // Time already spent since the last progress report counts against the estimate.
    const since = last ? Math.max(0, now - last.at) : 0;
    return Math.max(0, (100 - percent) / rate - since);
  }
}
