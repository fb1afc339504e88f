// DOM and formatting helpers shared by every page.

export const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";

export function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "className") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children || []) node.append(child);
  return node;
}

export function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

const nf = new Intl.NumberFormat();
export const num = (n) => (n === null || n === undefined ? "–" : nf.format(n));
export const pct = (part, whole) => (whole > 0 ? ((100 * part) / whole).toFixed(1) + "%" : "–");
export const sum = (counts, states) => states.reduce((acc, s) => acc + (counts[s] || 0), 0);

export function bytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
  return (n / 1024 / 1024).toFixed(1) + " MiB";
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  const h = Math.floor(s / 3600);
  return h + " h " + Math.floor((s % 3600) / 60) + " min";
}

export function shown(value) {
  if (value === null || value === undefined || value === "") return "–";
  if (value === true) return "yes";
  if (value === false) return "no";
  if (typeof value === "string" && /^\d{4}-\d\d-\d\dT/.test(value)) return new Date(value).toLocaleString();
  return String(value);
}

export function statusBadge(status) {
  return el("span", { className: "status status-" + status, text: status });
}

export function progressBar(done, base) {
  const share = base > 0 ? Math.min(1, done / base) : 0;
  const bar = el("div", { className: "progress", title: pct(done, base) + " done" }, [el("div", { className: "progress-fill" })]);
  bar.firstChild.style.width = (share * 100).toFixed(1) + "%";
  return el("div", { className: "progress-wrap" }, [bar, el("span", { className: "small", text: pct(done, base) })]);
}

export function showBanner(message) {
  const banner = $("banner");
  banner.hidden = !message;
  banner.textContent = message || "";
}

// A line of result text that is read out (role=status) and coloured by outcome.
export function say(node, text, kind) {
  node.textContent = text;
  node.className = kind === "error" ? "error" : kind === "ok" ? "ok" : "";
}

export const STATES = [
  // order of the stacked bar: the campaign's flow from left to right
  ["read", "Read"],
  ["delivered", "Delivered"],
  ["sent", "Sent"],
  ["in_progress", "In progress"],
  ["retry_scheduled", "Retry scheduled"],
  ["initial", "Initial"],
  ["delivery_failed", "Delivery failed"],
  ["sending_failed", "Sending failed"],
  ["error", "Error"],
  ["removed", "Removed"],
  ["canceled_by_admin", "Canceled by admin"],
  ["invalid_record", "Invalid record"],
];
