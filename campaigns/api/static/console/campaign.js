// The campaign page: status and commands, counts, charts, errors, suppressed, uploads.
import { api, download } from "./api.js";
import { $, STATES, duration, el, num, pct, say, showBanner, sum, svg } from "./dom.js";

const PENDING = ["initial", "in_progress", "retry_scheduled"];
const ACCEPTED = ["sent", "delivered", "read", "delivery_failed"];
const FAILED = ["error", "sending_failed", "delivery_failed"];
// Which admin commands make sense in which status; the API has the final word (409).
const ALLOWED = {
  start: ["draft"],
  pause: ["running", "scheduled"],
  resume: ["paused"],
  cancel: ["draft", "scheduled", "running", "paused"],
};
const SUPPRESSION = [
  ["blocked", "Blocked by an operator"],
  ["unavailable", "Unavailable (not on WhatsApp)"],
  ["opted_out", "Opted out"],
  ["not_opted_in", "No opt-in (required)"],
  ["not_on_whatsapp", "Contacts check: not on WhatsApp"],
];

let current = null;
const listeners = [];
const errorListeners = [];

export const campaign = () => current;
// Other parts of the page (upload, retry, contacts) follow the campaign's status.
export const onCampaign = (listener) => listeners.push(listener);
// ... and the campaign's platform errors (the retry form's codes).
export const onErrors = (listener) => errorListeners.push(listener);

// Contacts that can be sent: everything but rejected rows.
export function summary(c) {
  const counts = c.counts || {};
  const base = c.total - (counts.invalid_record || 0);
  return {
    base,
    done: base - sum(counts, PENDING),
    accepted: sum(counts, ACCEPTED),
    delivered: (counts.delivered || 0) + (counts.read || 0),
    read: counts.read || 0,
    failed: sum(counts, FAILED),
  };
}

function settings(c) {
  const parts = [c.template ? "template " + c.template + " (" + c.language + ")" : "no template", "region " + c.region, c.rate_per_s + " msg/s"];
  if (c.body_variables.length) parts.push("variables " + c.body_variables.join(", "));
  if (c.send_window) parts.push("window " + c.send_window + " " + c.send_window_tz);
  if (c.require_opt_in) parts.push("opt-in required");
  if (c.check_contacts) parts.push("contacts checked");
  if (c.scheduled_at && c.status === "scheduled") parts.push("starts " + new Date(c.scheduled_at).toLocaleString());
  return "· " + parts.join(" · ");
}

export function renderCampaign(c) {
  current = c;
  document.title = c.name + " – wa-campaigns";
  $("c-name").textContent = c.name;
  $("c-id").textContent = String(c.id);
  const status = $("c-status");
  status.textContent = c.status;
  status.className = "status status-" + c.status;
  status.dataset.status = c.status;
  $("c-reason").textContent = c.status_reason ? "(" + c.status_reason + ")" : "";
  $("c-settings").textContent = settings(c);
  for (const button of document.querySelectorAll("[data-command]")) {
    button.disabled = !ALLOWED[button.dataset.command].includes(c.status);
  }
  const s = summary(c);
  $("k-total").textContent = num(c.total);
  $("k-progress").textContent = pct(s.done, s.base);
  $("k-sent").textContent = pct(s.accepted, s.base) + " (" + num(s.accepted) + ")";
  $("k-delivered").textContent = pct(s.delivered, s.base);
  $("k-read").textContent = pct(s.read, s.base);
  $("k-errors").textContent = num(s.failed);
  $("k-rate").textContent = (c.rate_now_per_s || 0).toFixed(1) + " /s";
  $("k-eta").textContent = duration(c.eta_seconds);
  renderStates(c);
  for (const listener of listeners) listener(c);
}

function renderStates(c) {
  const counts = c.counts || {};
  const parts = [];
  let x = 0;
  for (const [state, label] of STATES) {
    const n = counts[state] || 0;
    if (!n || !c.total) continue;
    const w = (1000 * n) / c.total;
    const rect = svg("rect", { x: x.toFixed(2), y: "0", width: w.toFixed(2), height: "28", class: "st-" + state });
    const title = svg("title");
    title.textContent = label + ": " + num(n);
    rect.append(title);
    parts.push(rect);
    x += w;
  }
  if (!parts.length) parts.push(svg("rect", { x: "0", y: "0", width: "1000", height: "28", class: "st-empty" }));
  $("state-bar").replaceChildren(...parts);
  document.querySelector("#states-table tbody").replaceChildren(
    ...STATES.map(([state, label]) =>
      el("tr", { "data-state": state, className: counts[state] ? "" : "zero" }, [
        el("td", {}, [el("span", { className: "swatch st-" + state })]),
        el("td", { text: label }),
        el("td", { className: "num", text: num(counts[state] || 0) }),
        el("td", { className: "num", text: pct(counts[state] || 0, c.total) }),
      ])
    )
  );
}

export function renderRate(points, configured) {
  const W = 1000;
  const H = 200;
  const top = Math.max(1, configured || 0, ...points.map((p) => p.accepted)) * 1.1;
  const n = Math.max(1, points.length - 1);
  const xy = points.map((p, i) => [(W * i) / n, H - (H * p.accepted) / top]);
  const nodes = [0.25, 0.5, 0.75].map((f) => svg("line", { x1: "0", x2: String(W), y1: String(H * f), y2: String(H * f), class: "grid-line" }));
  if (configured) {
    const y = (H - (H * configured) / top).toFixed(1);
    nodes.push(svg("line", { x1: "0", x2: String(W), y1: y, y2: y, class: "target-line" }));
  }
  if (xy.length) {
    const line = xy.map(([px, py]) => px.toFixed(1) + "," + py.toFixed(1)).join(" ");
    nodes.push(svg("polygon", { points: "0," + H + " " + line + " " + W + "," + H, class: "rate-area" }));
    nodes.push(svg("polyline", { points: line, class: "rate-line" }));
  }
  $("rate-chart").replaceChildren(...nodes);
  const last = points.slice(-10);
  const recent = last.length ? last.reduce((a, p) => a + p.accepted, 0) / last.length : 0;
  const peak = points.reduce((a, p) => Math.max(a, p.accepted), 0);
  $("rate-caption").textContent =
    "now " + recent.toFixed(1) + "/s · peak " + num(peak) + "/s · configured " + num(configured) + "/s (dashed) · scale 0–" + Math.round(top) + "/s";
}

export function renderErrors(errors) {
  document.querySelector("#errors-table tbody").replaceChildren(
    ...errors.map((e) =>
      el("tr", {}, [el("td", { className: "num", text: String(e.code) }), el("td", { text: e.meaning }), el("td", { className: "num", text: num(e.count) })])
    )
  );
  $("errors-empty").hidden = errors.length > 0;
  $("errors-table").hidden = errors.length === 0;
  for (const listener of errorListeners) listener(errors);
}

export function renderUploads(uploads) {
  document.querySelector("#uploads-table tbody").replaceChildren(
    ...uploads.map((u) => {
      const reasons = Object.entries(u.reasons || {})
        .sort((a, b) => b[1] - a[1])
        .map(([reason, n]) => reason + " " + num(n))
        .join(", ");
      return el("tr", { "data-upload": String(u.id) }, [
        el("td", { text: String(u.id) }),
        el("td", { text: u.filename }),
        el("td", { text: u.status + (u.error ? ": " + u.error : "") }),
        el("td", { className: "num", text: num(u.rows_read) }),
        el("td", { className: "num", text: num(u.valid) }),
        el("td", { className: "num", text: num(u.invalid) }),
        el("td", { className: "small", text: reasons || "–" }),
      ]);
    })
  );
  $("uploads-empty").hidden = uploads.length > 0;
  $("uploads-table").hidden = uploads.length === 0;
  const rejected = uploads.reduce((a, u) => a + (u.invalid || 0), 0);
  const button = $("download-rejected");
  button.disabled = rejected === 0;
  button.textContent = "Download rejected rows (CSV, " + num(rejected) + ")";
}

export function renderSuppressed(body) {
  document.querySelector("#suppressed-table tbody").replaceChildren(
    ...SUPPRESSION.map(([reason, label]) =>
      el("tr", { "data-reason": reason, className: body.reasons[reason] ? "" : "zero" }, [
        el("td", { text: label }),
        el("td", { className: "num", text: num(body.reasons[reason] || 0) }),
      ])
    )
  );
  $("suppressed-caption").textContent = num(body.total) + " contacts refused at upload (invalid_record) or at send time (sending_failed)";
}

export function downloadRejected(campaignId) {
  download("/campaigns/" + campaignId + "/contacts.csv?state=invalid_record", "campaign-" + campaignId + "-rejected.csv").catch((err) =>
    showBanner("download failed: " + err.message)
  );
}

async function runCommand(campaignId, command) {
  const c = current;
  if (!c) return;
  const body = {};
  let question = command.charAt(0).toUpperCase() + command.slice(1) + ' campaign "' + c.name + '"?';
  if (command === "start" && $("start-at").value) {
    body.at = new Date($("start-at").value).toISOString();
    question = 'Schedule campaign "' + c.name + '" for ' + new Date(body.at).toLocaleString() + "?";
  }
  if (command === "cancel") question += " Every contact not sent yet becomes Canceled by admin; this cannot be undone.";
  if (!window.confirm(question)) return;
  const result = $("command-result");
  say(result, command + "…");
  try {
    const answer = await api("/campaigns/" + campaignId + "/" + command, { method: "POST", body: command === "start" ? body : undefined });
    renderCampaign(answer);
    say(result, command + ": done", "ok");
  } catch (err) {
    say(result, command + " refused: " + err.message, "error");
  }
}

export function startCampaignPage(campaignId) {
  for (const button of document.querySelectorAll("[data-command]")) {
    button.addEventListener("click", () => runCommand(campaignId, button.dataset.command));
  }
  $("download-rejected").addEventListener("click", () => downloadRejected(campaignId));
}

export function refreshCampaign(campaignId) {
  const base = "/campaigns/" + campaignId;
  return [
    api(base).then((c) => {
      renderCampaign(c);
      return api(base + "/rate?seconds=300").then((points) => renderRate(points, c.rate_per_s));
    }),
    api(base + "/errors").then(renderErrors),
    api(base + "/suppressed").then(renderSuppressed),
    api(base + "/uploads").then(renderUploads),
  ];
}
