// The server's JSON API and the bearer token. The token lives in sessionStorage only (gone with the tab).
const KEY = "soma-token";

export const auth = {
  get token() { return sessionStorage.getItem(KEY); },
  set token(value) {
    if (value) sessionStorage.setItem(KEY, value);
    else sessionStorage.removeItem(KEY);
  },
};

/** An API failure: the server's `{"error": {message, type, code}}` plus the HTTP status. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code || null;
  }
}

/** Throws `ApiError` for a non-2xx answer; returns the parsed JSON body (null for 204). */
export async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json", ...(options.headers || {}) };
  const token = auth.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { ...options, headers });
  if (response.status === 204) return null;
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

/** `fetch` with the bearer token; throws `ApiError` for a non-2xx answer, else returns the `Response` (streams). */
export async function authorizedFetch(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  const token = auth.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) throw await errorFrom(response);
  return response;
}

/**
 * POSTs ``file`` as the raw request body and returns the parsed JSON answer; throws `ApiError` for a
 * non-2xx answer, `TypeError` when the request could not be sent (offline, connection reset).
 *
 * XMLHttpRequest rather than fetch: only it reports upload progress, which a phone sending a large export
 * needs to show. ``onProgress(sentBytes, totalBytes)``; an aborted ``signal`` rejects with an `AbortError`.
 */
export function uploadFile(path, file, { onProgress, signal } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    const token = auth.token;
    if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.responseType = "text";
    if (onProgress) xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON: the status says enough */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body));
    };
    xhr.onerror = () => reject(new TypeError("the upload failed: no connection to the server"));
    xhr.onabort = () => reject(new DOMException("the upload was cancelled", "AbortError"));
    if (signal) {
      if (signal.aborted) { reject(new DOMException("the upload was cancelled", "AbortError")); return; }
      signal.addEventListener("abort", () => xhr.abort(), { once: true });
    }
    xhr.send(file);
  });
}

/** Reads an error answer that may or may not be JSON (the calls endpoint answers SDP on success). */
export async function errorFrom(response) {
  const body = await response.json().catch(() => ({}));
  return new ApiError(response.status, body);
}
