// The contact registry's lookup: a person's record, its campaigns, and the operator's
// changes (block, unblock, opt out, opt in, remove), each confirmed first.
import { api } from "./api.js";
import { $, el, say, shown, statusBadge } from "./dom.js";

const RECORD = [
  ["status", "Status"],
  ["wa_id", "wa_id"],
  ["unavailable_since", "Unavailable since"],
  ["unavailable_code", "Proved by code"],
  ["blocked_at", "Blocked at"],
  ["blocked_reason", "Block reason"],
  ["opted_in", "Opted in"],
  ["opted_in_at", "Opted in at"],
  ["opt_in_source", "Opt-in source"],
  ["opted_out", "Opted out"],
  ["opted_out_at", "Opted out at"],
  ["opt_out_source", "Opt-out source"],
  ["check_status", "Contacts check"],
  ["checked_at", "Checked at"],
  ["first_seen_at", "First seen"],
  ["last_sent_at", "Last sent"],
  ["removed_at", "Record removed at"],
];

let person = null;
let phone = null;

const QUESTIONS = {
  block: (p) => "Block " + p + "? No campaign will send to this number until it is unblocked.",
  unblock: (p) => "Unblock " + p + "? Campaigns may send to this number again.",
  "opt-out": (p) => "Record an opt-out for " + p + "? Only the person's own opt-in lifts it.",
  "opt-in": (p) => "Record an opt-in for " + p + "? Do this only when the person asked: it also lifts any opt-out.",
  remove: (p) => "Remove the registry record of " + p + "? Its block, UNAVAILABLE status, opt-in and check are forgotten; an opt-out stays.",
};

function renderButtons(p) {
  const removed = Boolean(p.removed_at);
  const enabled = {
    block: p.status !== "BLOCKED",
    unblock: p.status === "BLOCKED",
    "opt-out": !p.opted_out,
    "opt-in": true,
    remove: !removed,
  };
  for (const button of document.querySelectorAll("[data-person]")) button.disabled = !enabled[button.dataset.person];
}

function renderContact(p) {
  person = p;
  $("contact-result").hidden = false;
  $("contact-title").textContent = p.phone_e164 || phone;
  renderButtons(p);
  document.querySelector("#contact-record tbody").replaceChildren(
    ...RECORD.map(([key, label]) => el("tr", { "data-field": key }, [el("th", { scope: "row", text: label }), el("td", { text: shown(p[key]) })]))
  );
  const campaigns = p.campaigns || [];
  document.querySelector("#contact-campaigns tbody").replaceChildren(
    ...campaigns.map((c) =>
      el("tr", { "data-campaign": String(c.campaign_id) }, [
        el("td", { text: String(c.campaign_id) }),
        el("td", {}, [el("a", { href: "/dashboard/campaigns/" + c.campaign_id, text: c.campaign_name })]),
        el("td", {}, [statusBadge(c.campaign_status)]),
        el("td", { className: "contact-state", text: c.state }),
        el("td", { text: c.reason_code ? c.reason_code + (c.reason ? ": " + c.reason : "") : "–" }),
        el("td", { text: shown(c.sent_at) }),
      ])
    )
  );
  $("contact-campaigns-empty").hidden = campaigns.length > 0;
  $("contact-campaigns").hidden = campaigns.length === 0;
}

const path = (p) => "/contacts/" + encodeURIComponent(p);

async function lookUp(value) {
  phone = value;
  const message = $("contact-message");
  message.textContent = "looking up " + value + "…";
  message.className = "muted";
  say($("person-result"), "");
  try {
    const found = await api(path(value));
    message.textContent = "";
    renderContact(found);
    history.replaceState(null, "", location.pathname + "#phone=" + encodeURIComponent(value));
  } catch (err) {
    $("contact-result").hidden = true;
    message.textContent = err.status === 404 ? "No record of " + value + "." : err.message;
    message.className = "error";
  }
}

async function act(action) {
  const number = (person && person.phone_e164) || phone;
  if (!number || !window.confirm(QUESTIONS[action](number))) return;
  const result = $("person-result");
  say(result, action + "…");
  try {
    if (action === "remove") {
      const removed = await api(path(number), { method: "DELETE" });
      say(result, "Record removed" + (removed.opted_out ? "; the opt-out stays." : "."), "ok");
      const still = await api(path(number)).catch(() => null);
      if (still) renderContact(still);
      else $("contact-result").hidden = true;
      return;
    }
    const body = action === "block" && $("block-reason").value.trim() ? { reason: $("block-reason").value.trim() } : undefined;
    renderContact(await api(path(number) + "/" + action, { method: "POST", body }));
    say(result, action + ": done", "ok");
  } catch (err) {
    say(result, action + " refused: " + err.message, "error");
  }
}

export function startPeople() {
  $("contact-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("contact-phone").value.trim();
    if (value) lookUp(value);
  });
  for (const button of document.querySelectorAll("[data-person]")) button.addEventListener("click", () => act(button.dataset.person));
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  const value = (fragment.get("phone") || "").trim();
  if (value) {
    $("contact-phone").value = value;
    lookUp(value);
  }
}
