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

/** Reads an error answer that may or may not be JSON (the calls endpoint answers SDP on success). */
export async function errorFrom(response) {
  const body = await response.json().catch(() => ({}));
  return new ApiError(response.status, body);
}
