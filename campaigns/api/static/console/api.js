// The API client: the bearer token, JSON calls, refusals as ApiError, and the file upload
// (XMLHttpRequest: fetch has no upload progress). Nothing here touches the page but the
// token prompt, which every 401 brings back with a message.

const TOKEN_KEY = "wa-campaigns-token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// A link may carry the token in the fragment (/dashboard#token=...): browsers never send
// the fragment to a server, so it reaches no access log, proxy or Referer. The query
// string is never read: a token there would already have been sent and logged.
export function takeTokenFromFragment() {
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  if (!location.hash.includes("token=")) return;
  const token = (fragment.get("token") || "").trim();
  if (token) localStorage.setItem(TOKEN_KEY, token);
  fragment.delete("token");
  // Keep the token out of the address bar, history and screenshots.
  const rest = fragment.toString();
  history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
}

export const token = () => localStorage.getItem(TOKEN_KEY) || "";
export const setToken = (value) => localStorage.setItem(TOKEN_KEY, value);
export const forgetToken = () => localStorage.removeItem(TOKEN_KEY);

// Called with refused=true when the server refused the token (revoked or expired), false
// when there is none: the page shows the token prompt and stops polling.
let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

function refusedToken() {
  const had = Boolean(token());
  forgetToken();
  onUnauthorized(had);
  return new ApiError(401, "unauthenticated", had ? "the API token was refused (revoked or expired)" : "no API token");
}

async function problemOf(response) {
  let code = "http_" + response.status;
  let message = response.statusText || "HTTP " + response.status;
  try {
    const problem = await response.json(); // every refusal: {code, message}
    code = problem.code || code;
    message = problem.message || message;
  } catch (ignored) {
    /* not JSON */
  }
  return new ApiError(response.status, code, message);
}

// options: {method, body (JSON), raw: bytes/Blob body, contentType, asResponse}
export async function api(path, options) {
  const opts = Object.assign({ method: "GET" }, options || {});
  if (!token()) throw refusedToken();
  const headers = { Authorization: "Bearer " + token(), Accept: "application/json" };
  let body;
  if (opts.raw !== undefined) {
    body = opts.raw;
    headers["Content-Type"] = opts.contentType || "text/csv";
  } else if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, { method: opts.method, headers, body, cache: "no-store" });
  if (response.status === 401) throw refusedToken();
  if (!response.ok) throw await problemOf(response);
  return opts.asResponse ? response : response.json();
}

// The file as the raw body of POST url, with progress of the bytes sent.
// Returns {promise, abort}; the promise resolves to the JSON answer or rejects with ApiError
// (status 0 for a network failure or an abort).
export function sendFile(url, file, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open("POST", url);
    xhr.setRequestHeader("Authorization", "Bearer " + token());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("Content-Type", "text/csv");
    xhr.upload.addEventListener("progress", (event) => {
      onProgress(event.loaded, event.lengthComputable ? event.total : file.size);
    });
    xhr.addEventListener("load", () => {
      let answer = null;
      try {
        answer = JSON.parse(xhr.responseText);
      } catch (ignored) {
        /* not JSON */
      }
      if (xhr.status === 401) return reject(refusedToken());
      if (xhr.status >= 200 && xhr.status < 300) return resolve(answer);
      const code = (answer && answer.code) || "http_" + xhr.status;
      const message = (answer && answer.message) || xhr.statusText || "HTTP " + xhr.status;
      reject(new ApiError(xhr.status, code, message));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network", "the connection failed before the server answered")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "the transfer was stopped")));
    xhr.send(file);
  });
  return { promise, abort: () => xhr.abort() };
}

// A plain link cannot send the bearer token: fetch, then hand the browser a blob.
export async function download(path, filename) {
  const response = await api(path, { asResponse: true });
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
