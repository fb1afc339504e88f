// wa-campaigns dashboard: plain JS, no build step, no external resources.
// Every API call carries the bearer token; the page itself is public and holds no data.
"use strict";

(function () {
  const POLL_MS = 2000;
  const TOKEN_KEY = "wa-campaigns-token";
  const STATES = [
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
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const match = location.pathname.match(/^\/dashboard\/campaigns\/(\d+)\/?$/);
  const campaignId = match ? Number(match[1]) : null;
  const contactsPage = /^\/dashboard\/contacts\/?$/.test(location.pathname);
  const SUPPRESSION = [
    ["blocked", "Blocked by an operator"],
    ["unavailable", "Unavailable (not on WhatsApp)"],
    ["opted_out", "Opted out"],
    ["not_opted_in", "No opt-in (required)"],
    ["not_on_whatsapp", "Contacts check: not on WhatsApp"],
  ];
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
  let lastCampaign = null;
  let lastOps = null; // {at, waits} for the limiter waits/s
  let timer = null;

  // ------------------------------------------------------------------ token

  // A link may carry the token in the fragment (/dashboard#token=...): browsers never send
  // the fragment to a server, so it reaches no access log, proxy or Referer. The query
  // string is never read: a token there would already have been sent and logged.
  function takeTokenFromFragment() {
    const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
    const token = (fragment.get("token") || "").trim();
    if (!location.hash.includes("token=")) return;
    if (token) localStorage.setItem(TOKEN_KEY, token);
    fragment.delete("token");
    // Keep the token out of the address bar, history and screenshots.
    const rest = fragment.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  }

  function token() {
    let value = localStorage.getItem(TOKEN_KEY);
    if (!value) {
      value = (window.prompt("API token (from API_TOKENS or `wa-campaigns token create`):") || "").trim();
      if (value) localStorage.setItem(TOKEN_KEY, value);
    }
    return value;
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, options) {
    const opts = Object.assign({ method: "GET" }, options || {});
    const headers = { Authorization: "Bearer " + (token() || ""), Accept: "application/json" };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method: opts.method,
      headers: headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      cache: "no-store",
    });
    if (response.status === 401) {
      localStorage.removeItem(TOKEN_KEY);
      throw new ApiError(401, "unauthenticated", "the API token was refused; reload to enter another");
    }
    if (!response.ok) {
      let code = "http_" + response.status;
      let message = response.statusText;
      try {
        const problem = await response.json(); // every refusal: {code, message}
        code = problem.code || code;
        message = problem.message || message;
      } catch (ignored) {
        /* not JSON */
      }
      throw new ApiError(response.status, code, message);
    }
    return opts.raw ? response : response.json();
  }

  // ------------------------------------------------------------------ formatting

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }

  const nf = new Intl.NumberFormat();
  const num = (n) => (n === null || n === undefined ? "–" : nf.format(n));
  const pct = (part, whole) => (whole > 0 ? ((100 * part) / whole).toFixed(1) + "%" : "–");
  const sum = (counts, states) => states.reduce((acc, s) => acc + (counts[s] || 0), 0);

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.round(seconds);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    const h = Math.floor(s / 3600);
    return h + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  // Contacts that can be sent: everything but rejected rows.
  function summary(c) {
    const counts = c.counts || {};
    const base = c.total - (counts.invalid_record || 0);
    const done = base - sum(counts, PENDING);
    return {
      base: base,
      done: done,
      accepted: sum(counts, ACCEPTED),
      delivered: (counts.delivered || 0) + (counts.read || 0),
      read: counts.read || 0,
      failed: sum(counts, FAILED),
    };
  }

  function statusBadge(status) {
    return el("span", { className: "status status-" + status, text: status });
  }

  function progressBar(done, base) {
    const share = base > 0 ? Math.min(1, done / base) : 0;
    const bar = el("div", { className: "progress", title: pct(done, base) + " done" }, [
      el("div", { className: "progress-fill" }),
    ]);
    bar.firstChild.style.width = (share * 100).toFixed(1) + "%";
    return el("div", { className: "progress-wrap" }, [bar, el("span", { className: "small", text: pct(done, base) })]);
  }

  function showBanner(message) {
    const banner = $("banner");
    banner.hidden = !message;
    banner.textContent = message || "";
  }

  // ------------------------------------------------------------------ list view

  function renderList(campaigns) {
    const body = document.querySelector("#campaigns-table tbody");
    body.replaceChildren(
      ...campaigns.map((c) => {
        const s = summary(c);
        const link = el("a", { href: "/dashboard/campaigns/" + c.id, text: c.name });
        return el("tr", { "data-campaign": String(c.id) }, [
          el("td", { text: String(c.id) }),
          el("td", {}, [link]),
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

  // ------------------------------------------------------------------ campaign view

  function renderCampaign(c) {
    lastCampaign = c;
    document.title = c.name + " – wa-campaigns";
    $("c-name").textContent = c.name;
    $("c-id").textContent = String(c.id);
    const status = $("c-status");
    status.textContent = c.status;
    status.className = "status status-" + c.status;
    status.dataset.status = c.status;
    $("c-reason").textContent = c.status_reason ? "(" + c.status_reason + ")" : "";
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
  }

  function renderStates(c) {
    const counts = c.counts || {};
    const bar = $("state-bar");
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
    bar.replaceChildren(...parts);

    const body = document.querySelector("#states-table tbody");
    body.replaceChildren(
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

  function renderRate(points, configured) {
    const chart = $("rate-chart");
    const W = 1000;
    const H = 200;
    const top = Math.max(1, configured || 0, ...points.map((p) => p.accepted)) * 1.1;
    const n = Math.max(1, points.length - 1);
    const xy = points.map((p, i) => [(W * i) / n, H - (H * p.accepted) / top]);
    const nodes = [];
    for (const frac of [0.25, 0.5, 0.75]) {
      nodes.push(svg("line", { x1: "0", x2: String(W), y1: String(H * frac), y2: String(H * frac), class: "grid-line" }));
    }
    if (configured) {
      const y = (H - (H * configured) / top).toFixed(1);
      nodes.push(svg("line", { x1: "0", x2: String(W), y1: y, y2: y, class: "target-line" }));
    }
    if (xy.length) {
      const line = xy.map(([x, y]) => x.toFixed(1) + "," + y.toFixed(1)).join(" ");
      nodes.push(svg("polygon", { points: "0," + H + " " + line + " " + W + "," + H, class: "rate-area" }));
      nodes.push(svg("polyline", { points: line, class: "rate-line" }));
    }
    chart.replaceChildren(...nodes);
    const last = points.slice(-10);
    const recent = last.length ? last.reduce((a, p) => a + p.accepted, 0) / last.length : 0;
    const peak = points.reduce((a, p) => Math.max(a, p.accepted), 0);
    $("rate-caption").textContent =
      "now " + recent.toFixed(1) + "/s · peak " + num(peak) + "/s · configured " + num(configured) +
      "/s (dashed) · scale 0–" + Math.round(top) + "/s";
  }

  function renderErrors(errors) {
    const body = document.querySelector("#errors-table tbody");
    body.replaceChildren(
      ...errors.map((e) =>
        el("tr", {}, [
          el("td", { className: "num", text: String(e.code) }),
          el("td", { text: e.meaning }),
          el("td", { className: "num", text: num(e.count) }),
        ])
      )
    );
    $("errors-empty").hidden = errors.length > 0;
    $("errors-table").hidden = errors.length === 0;
  }

  function renderUploads(uploads) {
    const body = document.querySelector("#uploads-table tbody");
    body.replaceChildren(
      ...uploads.map((u) => {
        const reasons = Object.entries(u.reasons || {})
          .sort((a, b) => b[1] - a[1])
          .map(([reason, n]) => reason + " " + num(n))
          .join(", ");
        return el("tr", {}, [
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

  // A plain link cannot send the bearer token: fetch, then hand the browser a blob.
  async function downloadRejected() {
    try {
      const response = await api("/campaigns/" + campaignId + "/contacts.csv?state=invalid_record", { raw: true });
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const a = el("a", { href: url, download: "campaign-" + campaignId + "-rejected.csv" });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      showBanner("download failed: " + err.message);
    }
  }

  async function runCommand(command) {
    if (!lastCampaign) return;
    const body = {};
    let question = command.charAt(0).toUpperCase() + command.slice(1) + ' campaign "' + lastCampaign.name + '"?';
    if (command === "start" && $("start-at").value) {
      body.at = new Date($("start-at").value).toISOString();
      question = 'Schedule campaign "' + lastCampaign.name + '" for ' + new Date(body.at).toLocaleString() + "?";
    }
    if (command === "cancel") question += " Every contact not sent yet becomes Canceled by admin; this cannot be undone.";
    if (!window.confirm(question)) return;
    const result = $("command-result");
    result.textContent = command + "…";
    result.className = "";
    try {
      const campaign = await api("/campaigns/" + campaignId + "/" + command, {
        method: "POST",
        body: command === "start" ? body : undefined,
      });
      renderCampaign(campaign);
      result.textContent = command + ": done";
    } catch (err) {
      result.textContent = command + " refused: " + err.message;
      result.className = "error";
    }
  }

  function renderSuppressed(body) {
    const rows = SUPPRESSION.map(([reason, label]) =>
      el("tr", { "data-reason": reason, className: body.reasons[reason] ? "" : "zero" }, [
        el("td", { text: label }),
        el("td", { className: "num", text: num(body.reasons[reason] || 0) }),
      ])
    );
    document.querySelector("#suppressed-table tbody").replaceChildren(...rows);
    $("suppressed-caption").textContent =
      num(body.total) + " contacts refused at upload (invalid_record) or at send time (sending_failed)";
  }

  // ------------------------------------------------------------------ contact lookup

  function shown(value) {
    if (value === null || value === undefined || value === "") return "–";
    if (value === true) return "yes";
    if (value === false) return "no";
    if (typeof value === "string" && /^\d{4}-\d\d-\d\dT/.test(value)) return new Date(value).toLocaleString();
    return String(value);
  }

  function renderContact(person) {
    $("contact-result").hidden = false;
    $("contact-title").textContent = person.phone_e164;
    document.querySelector("#contact-record tbody").replaceChildren(
      ...RECORD.map(([key, label]) =>
        el("tr", { "data-field": key }, [el("th", { text: label }), el("td", { text: shown(person[key]) })])
      )
    );
    const campaigns = person.campaigns || [];
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

  async function lookUp(phone) {
    const message = $("contact-message");
    message.textContent = "looking up " + phone + "…";
    message.className = "muted";
    try {
      const person = await api("/contacts/" + encodeURIComponent(phone));
      message.textContent = "";
      renderContact(person);
      history.replaceState(null, "", location.pathname + "#phone=" + encodeURIComponent(phone));
    } catch (err) {
      $("contact-result").hidden = true;
      message.textContent = err.status === 404 ? "No record of " + phone + "." : err.message;
      message.className = "error";
    }
  }

  function startContacts() {
    $("contact-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const phone = $("contact-phone").value.trim();
      if (phone) lookUp(phone);
    });
    const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
    const phone = (fragment.get("phone") || "").trim();
    if (phone) {
      $("contact-phone").value = phone;
      lookUp(phone);
    }
  }

  // ------------------------------------------------------------------ ops panel

  function renderOps(ops) {
    const flower = $("flower-link");
    flower.href = ops.flower_url;
    const body = document.querySelector("#queues-table tbody");
    body.replaceChildren(
      ...ops.queues.map((q) =>
        el("tr", { "data-queue": q.name }, [
          el("td", { text: q.name }),
          el("td", { className: "num", text: num(q.depth) }),
          el("td", { className: "num", text: q.oldest_task_age_s === null ? "–" : duration(q.oldest_task_age_s) }),
          el("td", {
            className: "num" + (q.workers_alive === 0 ? " error" : ""),
            text: q.workers_alive === null ? "?" : String(q.workers_alive),
          }),
        ])
      )
    );
    $("o-workers").textContent = ops.workers_error ? "?" : String(ops.workers.length);
    $("o-tasks").textContent = ops.tasks_per_s === null ? "–" : ops.tasks_per_s.toFixed(1);
    $("o-reserved").textContent = num(ops.reserved);
    $("o-waits-total").textContent = num(ops.limiter.waits);
    const now = Date.now();
    if (lastOps && now > lastOps.at) {
      const perS = Math.max(0, ops.limiter.waits - lastOps.waits) / ((now - lastOps.at) / 1000);
      $("o-waits").textContent = perS.toFixed(1);
    }
    lastOps = { at: now, waits: ops.limiter.waits };
    const names = ops.workers.map((w) => w.name + " [" + w.queues.join(",") + "]").join(" · ");
    $("workers-caption").textContent = ops.workers_error
      ? "workers could not be asked: " + ops.workers_error
      : (names || "no worker answered") +
        (ops.workers_sampled_at ? " — sampled " + duration(Date.now() / 1000 - ops.workers_sampled_at) + " ago" : "");
  }

  // ------------------------------------------------------------------ loop

  async function refresh() {
    const jobs = [api("/ops/queues").then(renderOps)];
    if (contactsPage) {
      // The lookup runs when asked; only the queue panel polls here.
    } else if (campaignId === null) {
      jobs.push(api("/campaigns").then(renderList));
    } else {
      jobs.push(
        api("/campaigns/" + campaignId).then((c) => {
          renderCampaign(c);
          return api("/campaigns/" + campaignId + "/rate?seconds=300").then((points) => renderRate(points, c.rate_per_s));
        }),
        api("/campaigns/" + campaignId + "/errors").then(renderErrors),
        api("/campaigns/" + campaignId + "/suppressed").then(renderSuppressed),
        api("/campaigns/" + campaignId + "/uploads").then(renderUploads)
      );
    }
    const results = await Promise.allSettled(jobs);
    const failed = results.find((r) => r.status === "rejected");
    showBanner(failed ? failed.reason.message : "");
    $("live").textContent = failed ? "error" : "live · " + new Date().toLocaleTimeString();
    $("live").className = failed ? "live stale" : "live";
  }

  // One polling chain at a time: restart() bumps the generation, older chains stop.
  let generation = 0;

  async function loop(gen) {
    try {
      await refresh();
    } finally {
      if (gen === generation && !document.hidden) timer = setTimeout(() => loop(gen), POLL_MS);
    }
  }

  function restart() {
    generation += 1;
    clearTimeout(timer);
    loop(generation);
  }

  function start() {
    takeTokenFromFragment();
    $("list-view").hidden = campaignId !== null || contactsPage;
    $("campaign-view").hidden = campaignId === null;
    $("contact-view").hidden = !contactsPage;
    if (contactsPage) startContacts();
    for (const button of document.querySelectorAll("[data-command]")) {
      button.addEventListener("click", () => runCommand(button.dataset.command));
    }
    $("download-rejected").addEventListener("click", downloadRejected);
    $("token-button").addEventListener("click", () => {
      localStorage.removeItem(TOKEN_KEY);
      token();
      restart();
    });
    // A hidden tab stops polling; it catches up at once when shown again.
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) {
        generation += 1;
        clearTimeout(timer);
      } else restart();
    });
    restart();
  }

  start();
})();
