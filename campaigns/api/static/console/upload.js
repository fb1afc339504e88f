// Upload a CSV, check it, then send (GOV.UK Notify's "check before you send"):
// pick or drop a file -> preview of its head (POST .../uploads/preview) -> Upload streams
// the file (XMLHttpRequest: progress of the bytes sent) -> the server's rows read, valid and
// invalid while the ingest worker reads it -> the report.
import { api, download, sendFile } from "./api.js";
import { $, bytes, el, num } from "./dom.js";
import { onCampaign } from "./campaign.js";

const HEAD_BYTES = 64 * 1024; // what the preview reads of a file
const FINAL = ["completed", "refused", "failed"];
const POLL_FIRST_MS = 300;
const POLL_MAX_MS = 2000;
const REJECTED_SHOWN = 10;
const REASONS = {
  empty_phone: "Empty phone",
  not_a_number: "Not a phone number",
  invalid_number: "Not a valid number for its region",
  missing_variable: "Missing template variable",
  parameter_too_long: "Template variable too long",
  duplicate: "Duplicate",
  opted_out: "Opted out",
  blocked: "Blocked by an operator",
  unavailable: "Unavailable (not on WhatsApp)",
  not_opted_in: "No opt-in (required)",
  invalid_opted_in: "Opt-in cell not yes/no",
};
const DELIMITERS = { ",": "comma (,)", ";": "semicolon (;)", "\t": "tab", "|": "pipe (|)" };

let campaignId = null;
let file = null;
let busy = false; // a transfer or an ingest in progress
let allowed = false;
let transfer = null; // {abort}
let previewSeq = 0;

function setAllowed(c) {
  allowed = c.status === "draft" || c.status === "paused";
  $("upload-allowed").textContent = allowed
    ? "Uploads are taken while the campaign is draft or paused."
    : "The campaign is " + c.status + ": uploads are taken only while it is draft or paused.";
  $("csv-file").disabled = !allowed || busy;
  $("upload-button").disabled = !allowed || busy || !file;
}

function message(text) {
  const node = $("upload-message");
  node.hidden = !text;
  node.textContent = text || "";
}

// ------------------------------------------------------------------ preview

function choose(chosen) {
  if (!chosen || busy) return;
  file = chosen;
  message("");
  $("report").hidden = true;
  $("server-progress").hidden = true;
  $("transfer").hidden = true;
  $("phone-column").replaceChildren();
  $("upload-button").disabled = !allowed;
  preview();
}

async function preview() {
  const seq = ++previewSeq;
  const params = new URLSearchParams();
  if (file.size > HEAD_BYTES) params.set("truncated", "true");
  const chosen = $("phone-column").value;
  if (chosen) params.set("phone_column", chosen);
  try {
    const body = await api("/campaigns/" + campaignId + "/uploads/preview?" + params, {
      method: "POST",
      raw: file.slice(0, HEAD_BYTES),
    });
    if (seq === previewSeq) renderPreview(body);
  } catch (err) {
    if (seq === previewSeq) message("The preview failed: " + err.message);
  }
}

function renderPreview(p) {
  $("preview").hidden = false;
  $("p-file").textContent = file.name + " (" + bytes(file.size) + ")";
  $("p-encoding").textContent = p.encoding || "–";
  $("p-delimiter").textContent = p.delimiter ? DELIMITERS[p.delimiter] || p.delimiter : "–";
  $("p-phone").textContent = p.phone_column || "not found: choose one below";
  const problems = $("preview-problems");
  problems.hidden = p.problems.length === 0;
  problems.querySelector("ul").replaceChildren(...p.problems.map((x) => el("li", { text: x.message, "data-code": x.code })));
  renderPhoneChoice(p);
  document.querySelector("#variables-table tbody").replaceChildren(
    ...Object.entries(p.variables).map(([name, column]) =>
      el("tr", { className: column ? "" : "bad" }, [el("td", { text: name }), el("td", { text: column || "no column: every row would be refused" })])
    )
  );
  $("variables-table").hidden = Object.keys(p.variables).length === 0;
  const head = el("tr", {}, [el("th", { scope: "col", className: "num", text: "Line" }), ...p.columns.map((c) => el("th", { scope: "col", text: c || '""' })), el("th", { scope: "col", text: "Will be" })]);
  document.querySelector("#preview-rows thead").replaceChildren(head);
  document.querySelector("#preview-rows tbody").replaceChildren(
    ...p.rows.map((r) => {
      const verdict = r.valid === null ? "–" : r.valid ? "valid " + r.phone_e164 : "rejected: " + (r.reason || r.reason_code);
      return el("tr", { className: r.valid === false ? "bad" : "" }, [
        el("td", { className: "num", text: String(r.line) }),
        ...r.cells.map((cell) => el("td", { text: cell })),
        el("td", { className: r.valid === false ? "verdict-bad" : r.valid ? "verdict-ok" : "", text: verdict }),
      ]);
    })
  );
}

function renderPhoneChoice(p) {
  const select = $("phone-column");
  const picked = select.value;
  const options = [el("option", { value: "", text: p.phone_column && !picked ? "detected: " + p.phone_column : "detect automatically" })];
  for (const column of p.columns) if (column) options.push(el("option", { value: column, text: column }));
  select.replaceChildren(...options);
  select.value = p.columns.includes(picked) ? picked : "";
}

// ------------------------------------------------------------------ upload

function showTransfer(sent, total) {
  $("transfer").hidden = false;
  const bar = $("bytes-progress");
  bar.max = Math.max(1, total);
  bar.value = sent;
  $("bytes-text").textContent = bytes(sent) + " of " + bytes(total) + " sent";
}

function setBusy(value) {
  busy = value;
  $("csv-file").disabled = value || !allowed;
  $("upload-button").disabled = value || !allowed || !file;
  $("phone-column").disabled = value;
}

async function upload() {
  if (busy || !file) return;
  setBusy(true);
  message("");
  $("report").hidden = true;
  const params = new URLSearchParams({ filename: file.name });
  if ($("phone-column").value) params.set("phone_column", $("phone-column").value);
  showTransfer(0, file.size);
  $("abort-button").hidden = false;
  transfer = sendFile("/campaigns/" + campaignId + "/uploads?" + params, file, showTransfer);
  let accepted;
  try {
    accepted = await transfer.promise;
  } catch (err) {
    // A refused file (400, 413) or a stopped transfer: the server kept nothing.
    message((err.status ? "The file was refused: " : "The upload did not finish: ") + err.message + ". Nothing was stored.");
    return done();
  } finally {
    $("abort-button").hidden = true;
    transfer = null;
  }
  showTransfer(file.size, file.size);
  await follow(accepted);
  done();
}

function done() {
  setBusy(false);
}

function renderServer(u) {
  $("server-progress").hidden = false;
  const status = $("u-status");
  status.textContent = u.status;
  status.className = "status status-" + (u.status === "completed" ? "completed" : u.status === "processing" ? "running" : u.status === "received" ? "scheduled" : "cancelled");
  $("u-counts").textContent = "Rows read " + num(u.rows_read) + " · valid " + num(u.valid) + " · invalid " + num(u.invalid);
}

// Polls the upload at a bounded interval (300 ms growing to 2 s) until it is final.
async function follow(u) {
  let wait = POLL_FIRST_MS;
  renderServer(u);
  while (!FINAL.includes(u.status)) {
    await new Promise((resolve) => setTimeout(resolve, wait));
    wait = Math.min(POLL_MAX_MS, wait * 1.5);
    try {
      u = await api("/uploads/" + u.id);
    } catch (err) {
      if (err.status === 401) return;
      continue; // a lost poll: the next one catches up
    }
    renderServer(u);
  }
  if (u.status === "completed") return report(u);
  message((u.status === "refused" ? "The file was refused: " : "The upload failed: ") + (u.error || u.status) + (u.status === "refused" ? ". Nothing of it was stored." : ""));
}

async function report(u) {
  $("report").hidden = false;
  $("report").dataset.upload = String(u.id);
  $("report-title").textContent = "Upload report: " + u.filename;
  $("r-read").textContent = num(u.rows_read);
  $("r-valid").textContent = num(u.valid);
  $("r-invalid").textContent = num(u.invalid);
  const reasons = Object.entries(u.reasons || {}).sort((a, b) => b[1] - a[1]);
  document.querySelector("#report-reasons tbody").replaceChildren(
    ...reasons.map(([code, n]) => el("tr", { "data-reason": code }, [el("td", { text: REASONS[code] || code }), el("td", { className: "num", text: num(n) })]))
  );
  $("report-reasons").hidden = reasons.length === 0;
  $("report-download").hidden = u.invalid === 0;
  $("report-download").textContent = "Download every rejected row (CSV, " + num(u.invalid) + ")";
  const query = "state=invalid_record&upload_id=" + u.id;
  const page = u.invalid ? await api("/campaigns/" + campaignId + "/contacts?" + query + "&limit=" + REJECTED_SHOWN) : { items: [] };
  document.querySelector("#report-rejected tbody").replaceChildren(
    ...page.items.map((c) =>
      el("tr", {}, [el("td", { className: "num", text: String(c.line) }), el("td", { text: c.phone_raw }), el("td", { text: c.reason || c.reason_code || "–" })])
    )
  );
  $("report-rejected").hidden = page.items.length === 0;
  $("report").focus();
}

function downloadReport() {
  const id = $("report").dataset.upload;
  download("/campaigns/" + campaignId + "/contacts.csv?state=invalid_record&upload_id=" + id, "upload-" + id + "-rejected.csv").catch((err) =>
    message("The download failed: " + err.message)
  );
}

// ------------------------------------------------------------------ wiring

function wireDrop() {
  const zone = $("drop-zone");
  for (const kind of ["dragenter", "dragover"]) {
    zone.addEventListener(kind, (event) => {
      event.preventDefault();
      if (allowed && !busy) zone.classList.add("over");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (!allowed || busy || !event.dataTransfer.files.length) return;
    $("csv-file").files = event.dataTransfer.files;
    choose(event.dataTransfer.files[0]);
  });
}

export function startUpload(id) {
  campaignId = id;
  $("report").tabIndex = -1;
  $("csv-file").addEventListener("change", () => choose($("csv-file").files[0]));
  $("phone-column").addEventListener("change", () => file && preview());
  $("upload-button").addEventListener("click", upload);
  $("abort-button").addEventListener("click", () => transfer && transfer.abort());
  $("report-download").addEventListener("click", downloadReport);
  wireDrop();
  onCampaign(setAllowed);
}

