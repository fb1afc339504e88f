// The campaigns list and the "New campaign" form.
import { api } from "./api.js";
import { $, el, num, pct, progressBar, statusBadge } from "./dom.js";
import { summary } from "./campaign.js";

export function renderList(campaigns) {
  const body = document.querySelector("#campaigns-table tbody");
  body.replaceChildren(
    ...campaigns.map((c) => {
      const s = summary(c);
      return el("tr", { "data-campaign": String(c.id) }, [
        el("td", { text: String(c.id) }),
        el("td", {}, [el("a", { href: "/dashboard/campaigns/" + c.id, text: c.name })]),
        el("td", {}, [statusBadge(c.status)]),
        el("td", {}, [progressBar(s.done, s.base)]),
        el("td", { className: "num", text: num(c.total) }),
        el("td", { className: "num", text: pct(s.accepted, s.base) }),
        el("td", { className: "num", text: pct(s.delivered, s.base) }),
        el("td", { className: "num", text: pct(s.read, s.base) }),
        el("td", { className: "num", text: num(s.failed) }),
        el("td", { className: "num", text: c.rate_now_per_s ? c.rate_now_per_s.toFixed(1) : "–" }),
      ]);
    })
  );
  $("campaigns-empty").hidden = campaigns.length > 0;
  $("campaigns-table").hidden = campaigns.length === 0;
}

// ------------------------------------------------------------------ the form

// API field -> input id. The API names fields in its 422 messages as "body.<field>: reason".
const FIELDS = {
  name: "f-name",
  template: "f-template",
  language: "f-language",
  region: "f-region",
  body_variables: "f-variables",
  named_variables: "f-keyed",
  rate_per_s: "f-rate",
  max_attempts: "f-attempts",
  phone_number_id: "f-sender",
  send_window: "f-window",
  send_window_tz: "f-zone",
  require_opt_in: "f-opt-in",
  check_contacts: "f-check",
};
const LABELS = {
  name: "Name",
  template: "Template",
  language: "Language",
  region: "Region",
  body_variables: "Variables",
  named_variables: "Keyed parameters",
  rate_per_s: "Rate",
  max_attempts: "Max attempts",
  phone_number_id: "Sender phone number ID",
  send_window: "Send window",
  send_window_tz: "Time zone of the window",
  require_opt_in: "Require opt-in",
  check_contacts: "Check contacts",
};

const text = (id) => $(id).value.trim();

function formBody() {
  const variables = text("f-variables")
    .split(",")
    .map((v) => v.trim())
    .filter(Boolean);
  const body = {
    name: text("f-name"),
    language: text("f-language") || "en",
    region: text("f-region"),
    body_variables: variables,
    named_variables: $("f-keyed").checked,
    require_opt_in: $("f-opt-in").checked,
    check_contacts: $("f-check").checked,
  };
  for (const [field, id] of [["template", "f-template"], ["phone_number_id", "f-sender"], ["send_window", "f-window"], ["send_window_tz", "f-zone"]]) {
    if (text(id)) body[field] = text(id);
  }
  // Numbers go as the operator typed them: the API says what is wrong with them.
  if (text("f-rate")) body.rate_per_s = Number.isNaN(Number(text("f-rate"))) ? text("f-rate") : Number(text("f-rate"));
  if (text("f-attempts")) body.max_attempts = Number.isNaN(Number(text("f-attempts"))) ? text("f-attempts") : Number(text("f-attempts"));
  return body;
}

// What the page can tell before asking: every problem at once (the API checks it all again).
function localProblems(body) {
  const problems = [];
  if (!body.name) problems.push(["name", "enter a name"]);
  if (!/^[A-Za-z]{2}$/.test(body.region)) problems.push(["region", "enter a two-letter region code, e.g. DE"]);
  const rate = body.rate_per_s;
  if (rate !== undefined && !(typeof rate === "number" && rate > 0 && rate <= 1000)) problems.push(["rate_per_s", "enter a rate above 0 and at most 1,000"]);
  const attempts = body.max_attempts;
  if (attempts !== undefined && !(Number.isInteger(attempts) && attempts >= 1 && attempts <= 20)) problems.push(["max_attempts", "enter a whole number from 1 to 20"]);
  if (body.send_window && !/^\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2}$/.test(body.send_window)) problems.push(["send_window", "enter the window as HH:MM-HH:MM, e.g. 09:00-20:00"]);
  if (body.send_window && !body.send_window_tz) problems.push(["send_window_tz", "enter the zone of the window, e.g. Europe/Berlin"]);
  if (!body.send_window && body.send_window_tz) problems.push(["send_window", "enter a window for this zone, or leave the zone blank"]);
  if (body.named_variables && body.body_variables.some((v) => !/^[a-z0-9_]+$/.test(v))) problems.push(["body_variables", "keyed parameters are lowercase letters, digits and _"]);
  return problems;
}

// "body.region: String should match ...; body.rate_per_s: Input should be ..." -> [[field, reason]]
export function apiProblems(message) {
  return message
    .split(/;\s+(?=(?:body|query|path)[.:])/)
    .map((part) => {
      const m = part.match(/^(?:body|query|path)(?:\.([A-Za-z_]+)[^:]*)?:\s*(.*)$/s);
      if (!m) return [null, part.trim()];
      return [m[1] && FIELDS[m[1]] ? m[1] : null, m[2].replace(/^Value error, /, "")];
    });
}

function clearProblems() {
  for (const [field, id] of Object.entries(FIELDS)) {
    const error = $(id + "-error");
    const box = document.querySelector('[data-field="' + field + '"]');
    box.classList.remove("invalid");
    $(id).removeAttribute("aria-invalid");
    if (error) {
      error.hidden = true;
      error.textContent = "";
    }
  }
  $("create-summary").hidden = true;
}

function showProblems(problems) {
  clearProblems();
  const items = [];
  for (const [field, reason] of problems) {
    if (field) {
      const id = FIELDS[field];
      const error = $(id + "-error");
      error.hidden = false;
      error.textContent = (error.textContent ? error.textContent + "; " : "") + "Error: " + reason;
      document.querySelector('[data-field="' + field + '"]').classList.add("invalid");
      $(id).setAttribute("aria-invalid", "true");
      items.push(el("li", {}, [el("a", { href: "#" + id, text: LABELS[field] + ": " + reason })]));
    } else {
      items.push(el("li", { text: reason }));
    }
  }
  const summaryBox = $("create-summary");
  summaryBox.querySelector("ul").replaceChildren(...items);
  summaryBox.hidden = false;
  summaryBox.focus();
}

let inFlight = false;

async function submit(event) {
  event.preventDefault();
  if (inFlight) return; // sends nothing twice
  const body = formBody();
  const problems = localProblems(body);
  if (problems.length) return showProblems(problems);
  clearProblems();
  inFlight = true;
  const button = $("create-submit");
  button.disabled = true;
  $("create-status").textContent = "creating…";
  try {
    const campaign = await api("/campaigns", { method: "POST", body });
    $("create-status").textContent = "created campaign " + campaign.id;
    location.assign("/dashboard/campaigns/" + campaign.id);
    return; // stays disabled while the next page loads
  } catch (err) {
    $("create-status").textContent = "";
    showProblems(err.status === 422 ? apiProblems(err.message) : [[null, err.message]]);
  }
  inFlight = false;
  button.disabled = false;
}

export function startCreateForm() {
  $("create-form").addEventListener("submit", submit);
  // The summary's links move the focus to the field, not just the scroll position.
  $("create-summary").addEventListener("click", (event) => {
    const link = event.target.closest("a[href^='#f-']");
    if (!link) return;
    event.preventDefault();
    $(link.getAttribute("href").slice(1)).focus();
  });
  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  $("zones").replaceChildren(...zones.map((z) => el("option", { value: z })));
  if (location.hash === "#new-campaign") $("new-campaign").focus();
}
