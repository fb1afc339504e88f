// wa-campaigns console: plain ES modules, no build step, no external resources.
// Every API call carries the bearer token; the pages themselves are public and hold no data.
// Pages: /dashboard (campaigns and the New campaign form), /dashboard/campaigns/{id}
// (status, commands, upload, counts, retry, contacts), /dashboard/contacts (the registry).
import { api, forgetToken, setToken, takeTokenFromFragment, token, whenUnauthorized } from "./console/api.js";
import { $, showBanner } from "./console/dom.js";
import { refreshCampaign, startCampaignPage } from "./console/campaign.js";
import { startContacts } from "./console/contacts.js";
import { renderList, startCreateForm } from "./console/list.js";
import { renderOps } from "./console/ops.js";
import { startPeople } from "./console/people.js";
import { startRetry } from "./console/retry.js";
import { startUpload } from "./console/upload.js";

const POLL_MS = 2000;
const match = location.pathname.match(/^\/dashboard\/campaigns\/(\d+)\/?$/);
const campaignId = match ? Number(match[1]) : null;
const peoplePage = /^\/dashboard\/contacts\/?$/.test(location.pathname);
const VIEWS = campaignId !== null
  ? ["campaign-view", "upload-view", "detail-view", "retry-view", "contacts-view", "ops-view"]
  : peoplePage
    ? ["contact-view", "ops-view"]
    : ["list-view", "create-view", "ops-view"];
const ALL_VIEWS = ["list-view", "create-view", "campaign-view", "upload-view", "detail-view", "retry-view", "contacts-view", "contact-view", "ops-view"];

// ------------------------------------------------------------------ token prompt

function showPage(visible) {
  for (const id of VIEWS) $(id).hidden = !visible;
  $("token-view").hidden = visible;
}

// Other pages' sections leave the document: every label and button name is unique on a page.
function dropOtherPages() {
  for (const id of ALL_VIEWS) if (!VIEWS.includes(id)) $(id).remove();
}

// The prompt replaces the page until a token is given; a refused one says so.
function askForToken(message) {
  stopPolling();
  showPage(false);
  showBanner("");
  $("token-message").textContent = message || "";
  $("token-message").hidden = !message;
  $("token-input").value = "";
  $("live").textContent = "no token";
  $("token-input").focus();
}

function useToken(event) {
  event.preventDefault();
  const value = $("token-input").value.trim();
  if (!value) {
    $("token-message").hidden = false;
    $("token-message").textContent = "Enter a token.";
    return;
  }
  setToken(value);
  showPage(true);
  restart();
}

// ------------------------------------------------------------------ polling

async function refresh() {
  const jobs = [api("/ops/queues").then(renderOps)];
  if (campaignId !== null) {
    jobs.push(...refreshCampaign(campaignId));
  } else if (!peoplePage) {
    jobs.push(api("/campaigns").then(renderList));
  }
  const results = await Promise.allSettled(jobs);
  if (!token()) return; // refused: the prompt is up
  const failed = results.find((r) => r.status === "rejected");
  showBanner(failed ? failed.reason.message : "");
  $("live").textContent = failed ? "error" : "live · " + new Date().toLocaleTimeString();
  $("live").className = failed ? "live stale" : "live";
}

// One polling chain at a time: a new generation stops the older chains.
let generation = 0;
let timer = null;

async function loop(gen) {
  try {
    await refresh();
  } finally {
    if (gen === generation && !document.hidden && token()) timer = setTimeout(() => loop(gen), POLL_MS);
  }
}

function stopPolling() {
  generation += 1;
  clearTimeout(timer);
}

function restart() {
  stopPolling();
  loop(generation);
}

// ------------------------------------------------------------------ start

function start() {
  dropOtherPages();
  takeTokenFromFragment();
  whenUnauthorized((refused) => {
    // The calls in flight with the same token are refused too: the first one says why.
    if (!refused && !$("token-view").hidden) return;
    askForToken(refused ? "The API token was refused: it was revoked or has expired. Enter a valid token to go on." : "");
  });
  $("token-form").addEventListener("submit", useToken);
  $("token-button").addEventListener("click", () => {
    forgetToken();
    askForToken("");
  });
  if (campaignId !== null) {
    startCampaignPage(campaignId);
    startUpload(campaignId);
    startRetry(campaignId);
    startContacts(campaignId);
  } else if (peoplePage) {
    startPeople();
  } else {
    startCreateForm();
  }
  // A hidden tab stops polling; it catches up at once when shown again.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) stopPolling();
    else if (token()) restart();
  });
  if (!token()) return askForToken("");
  showPage(true);
  restart();
}

start();
