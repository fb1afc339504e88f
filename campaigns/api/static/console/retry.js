// Retry the failed: POST /campaigns/{id}/retry with states, reason codes, error codes.
import { api } from "./api.js";
import { $, el, num, say } from "./dom.js";
import { onCampaign, onErrors, renderCampaign } from "./campaign.js";

let campaignId = null;
let shownCodes = "";

const RETRYABLE = ["running", "paused", "completed"];

function counts(c) {
  $("retry-submit").disabled = !RETRYABLE.includes(c.status);
  for (const state of ["error", "sending_failed"]) {
    document.querySelector('[data-count="' + state + '"]').textContent = "(" + num((c.counts || {})[state] || 0) + ")";
  }
}

// The platform error codes seen in the campaign, as checkboxes; rebuilt only when the set
// changes, so a poll never takes a tick or the focus away.
function renderRetryCodes(errors) {
  const key = errors.map((e) => e.code).join(",");
  if (key === shownCodes) {
    for (const e of errors) {
      const count = document.querySelector('[data-code-count="' + e.code + '"]');
      if (count) count.textContent = "(" + num(e.count) + ")";
    }
    return;
  }
  const ticked = new Set([...document.querySelectorAll("input[name=retry-code]:checked")].map((b) => b.value));
  shownCodes = key;
  const box = $("retry-codes");
  box.querySelectorAll("label").forEach((node) => node.remove());
  for (const e of errors) {
    const input = el("input", { type: "checkbox", name: "retry-code", value: String(e.code), checked: ticked.has(String(e.code)) });
    box.append(el("label", { className: "inline" }, [input, " " + e.code + " " + e.meaning + " ", el("span", { className: "muted", "data-code-count": String(e.code), text: "(" + num(e.count) + ")" })]));
  }
  $("retry-codes-empty").hidden = errors.length > 0;
}

function retryBody() {
  const states = [...document.querySelectorAll("input[name=retry-state]:checked")].map((b) => b.value);
  const errorCodes = [...document.querySelectorAll("input[name=retry-code]:checked")].map((b) => Number(b.value));
  const reasons = [...document.querySelectorAll("input[name=retry-reason]:checked")].map((b) => b.value);
  const body = { states, include_unknown: $("retry-unknown").checked };
  if (reasons.length) body.reason_codes = reasons;
  if (errorCodes.length) body.error_codes = errorCodes;
  return body;
}

function renderResult(r) {
  const queued = Object.entries(r.queued || {})
    .map(([state, n]) => state + " " + num(n))
    .join(", ");
  const skipped = Object.entries(r.skipped || {})
    .filter(([, n]) => n)
    .map(([why, n]) => why.replace(/_/g, " ") + " " + num(n))
    .join(", ");
  const lines = ["Queued " + num(r.total) + (queued ? " (" + queued + ")" : "") + "."];
  if (skipped) lines.push("Skipped: " + skipped + ".");
  if (r.warning) lines.push(r.warning);
  say($("retry-result"), lines.join(" "), "ok");
}

async function submit(event) {
  event.preventDefault();
  const body = retryBody();
  const result = $("retry-result");
  if (!body.states.length) return say(result, "Tick at least one state.", "error");
  const filters = [body.states.join(" and ")];
  if (body.error_codes) filters.push("codes " + body.error_codes.join(", "));
  if (body.reason_codes) filters.push("reasons " + body.reason_codes.join(", "));
  if (!window.confirm("Retry the contacts in " + filters.join("; ") + "? They are queued to be sent again.")) return;
  const button = $("retry-submit");
  button.disabled = true;
  say(result, "retrying…");
  try {
    const answer = await api("/campaigns/" + campaignId + "/retry", { method: "POST", body });
    renderResult(answer);
    if (answer.campaign) renderCampaign(answer.campaign);
  } catch (err) {
    say(result, "Retry refused: " + err.message, "error");
  } finally {
    button.disabled = false;
  }
}

export function startRetry(id) {
  campaignId = id;
  $("retry-form").addEventListener("submit", submit);
  onCampaign(counts);
  onErrors(renderRetryCodes);
}
