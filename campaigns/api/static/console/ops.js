// The queues and workers panel, on every page.
import { $, duration, el, num } from "./dom.js";

let last = null; // {at, waits} for the limiter waits/s

export function renderOps(ops) {
  $("flower-link").href = ops.flower_url;
  document.querySelector("#queues-table tbody").replaceChildren(
    ...ops.queues.map((q) =>
      el("tr", { "data-queue": q.name }, [
        el("td", { text: q.name }),
        el("td", { className: "num", text: num(q.depth) }),
        el("td", { className: "num", text: q.oldest_task_age_s === null ? "–" : duration(q.oldest_task_age_s) }),
        el("td", { className: "num" + (q.workers_alive === 0 ? " error" : ""), text: q.workers_alive === null ? "?" : String(q.workers_alive) }),
      ])
    )
  );
  $("o-workers").textContent = ops.workers_error ? "?" : String(ops.workers.length);
  $("o-tasks").textContent = ops.tasks_per_s === null ? "–" : ops.tasks_per_s.toFixed(1);
  $("o-reserved").textContent = num(ops.reserved);
  $("o-waits-total").textContent = num(ops.limiter.waits);
  const now = Date.now();
  if (last && now > last.at) {
    $("o-waits").textContent = (Math.max(0, ops.limiter.waits - last.waits) / ((now - last.at) / 1000)).toFixed(1);
  }
  last = { at: now, waits: ops.limiter.waits };
  const names = ops.workers.map((w) => w.name + " [" + w.queues.join(",") + "]").join(" · ");
  $("workers-caption").textContent = ops.workers_error
    ? "workers could not be asked: " + ops.workers_error
    : (names || "no worker answered") + (ops.workers_sampled_at ? " — sampled " + duration(Date.now() / 1000 - ops.workers_sampled_at) + " ago" : "");
}
