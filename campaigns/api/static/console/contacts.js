// The campaign's contacts: search by phone or state, select, remove with per-item results.
import { api } from "./api.js";
import { $, STATES, el, say } from "./dom.js";
import { onCampaign } from "./campaign.js";

const PAGE = 50;
let campaignId = null;
let query = null; // the search whose results are shown
let nextAfter = null;
// The API removes contacts only while the campaign is not sending (409 otherwise).
const REMOVABLE = ["draft", "scheduled", "paused"];
let removable = false;
const phoneOf = new Map(); // contact id -> the phone shown, for the removal results

function selected() {
  return [...document.querySelectorAll("#contacts-table tbody input[type=checkbox]:checked")].map((box) => Number(box.value));
}

function updateButtons() {
  const count = selected().length;
  const remove = $("contacts-remove");
  remove.disabled = count === 0 || !removable;
  remove.textContent = count ? "Remove selected (" + count + ")" : "Remove selected";
}

function row(c) {
  phoneOf.set(c.id, c.phone_e164 || c.phone_raw);
  const label = "Select line " + c.line + ", " + (c.phone_e164 || c.phone_raw);
  return el("tr", { "data-contact": String(c.id) }, [
    el("td", {}, [el("input", { type: "checkbox", value: String(c.id), "aria-label": label })]),
    el("td", { className: "num", text: String(c.line) }),
    el("td", { text: c.phone_e164 || c.phone_raw }),
    el("td", { className: "contact-state", text: c.state }),
    el("td", { text: c.reason_code ? c.reason_code + (c.reason ? ": " + c.reason : "") : "–" }),
  ]);
}

async function search(more, prefix) {
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (query.phone) params.set("phone", query.phone);
  if (query.state) params.set("state", query.state);
  if (more && nextAfter !== null) params.set("after_id", String(nextAfter));
  const status = $("contacts-message");
  say(status, "searching…");
  try {
    const page = await api("/campaigns/" + campaignId + "/contacts?" + params);
    const body = document.querySelector("#contacts-table tbody");
    if (more) body.append(...page.items.map(row));
    else body.replaceChildren(...page.items.map(row));
    nextAfter = page.next_after_id;
    $("contacts-more").hidden = nextAfter === null;
    $("contacts-results").hidden = body.children.length === 0;
    $("contacts-all").checked = false;
    say(status, (prefix || "") + (body.children.length ? body.children.length + " contacts shown" : "No contact matches."), prefix ? "ok" : "");
    updateButtons();
  } catch (err) {
    say(status, err.message, "error");
  }
}

async function removeSelected() {
  const ids = selected();
  if (!ids.length) return;
  if (!window.confirm("Remove " + ids.length + " contact(s) from this campaign? They will not be sent.")) return;
  const button = $("contacts-remove");
  button.disabled = true;
  const status = $("contacts-message");
  try {
    const result = await api("/campaigns/" + campaignId + "/contacts/remove", { method: "POST", body: { contact_ids: ids } });
    $("remove-result").hidden = false;
    document.querySelector("#remove-table tbody").replaceChildren(
      ...result.items.map((item) =>
        el("tr", { "data-result": item.result }, [el("td", { text: phoneOf.get(item.contact_id) || item.contact }), el("td", { text: item.result }), el("td", { text: item.message || "–" })])
      )
    );
    await search(false, result.removed + " removed. ");
  } catch (err) {
    say(status, "Removal refused: " + err.message, "error");
    button.disabled = false;
  }
}

export function startContacts(id) {
  campaignId = id;
  $("contacts-state").append(...STATES.map(([value, label]) => el("option", { value, text: label })));
  $("contacts-form").addEventListener("submit", (event) => {
    event.preventDefault();
    query = { phone: $("contacts-phone").value.trim(), state: $("contacts-state").value };
    search(false);
  });
  $("contacts-more").addEventListener("click", () => search(true));
  $("contacts-remove").addEventListener("click", removeSelected);
  $("contacts-all").addEventListener("change", () => {
    for (const box of document.querySelectorAll("#contacts-table tbody input[type=checkbox]")) box.checked = $("contacts-all").checked;
    updateButtons();
  });
  $("contacts-table").addEventListener("change", updateButtons);
  onCampaign((c) => {
    removable = REMOVABLE.includes(c.status);
    $("contacts-allowed").textContent = removable
      ? "Removal works while the campaign is draft, scheduled or paused."
      : "The campaign is " + c.status + ": contacts can be removed only while it is draft, scheduled or paused.";
    updateButtons();
  });
}
