// The JSON API with the session cookie and the CSRF token; errors come back as {status, code, message, fields, detail}.
function csrfToken() {
  const found = document.cookie.split("; ").find((part) => part.startsWith("csrftoken="));
  return found ? decodeURIComponent(found.slice("csrftoken=".length)) : "";
}

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || (status >= 500 ? "unavailable" : (status === 413 ? "too_large" : "invalid"));
    this.fields = error.fields || {};
    this.detail = error.detail || {};
    this.serverMessage = error.message || "";
  }
}

/** `body`: an object (sent as JSON) or FormData (sent as multipart, the browser sets the boundary). */
export async function request(method, url, body) {
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body instanceof FormData) {
    options.body = body;
  } else if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  if (method !== "GET") options.headers["X-CSRFToken"] = csrfToken();
  let answer;
  try {
    answer = await fetch(url, options);
  } catch {
    throw new ApiError(0, { error: { code: "unavailable" } });
  }
  if (answer.status === 204) return null;
  let data = null;
  try { data = await answer.json(); } catch { data = null; }
  if (!answer.ok) throw new ApiError(answer.status, data);
  return data;
}

function withFile(file) {
  const form = new FormData();
  form.append("file", file, file.name || "file");
  return form;
}

export const api = {
  listConversations: (query) => request("GET", `/api/conversations/${query ? `?q=${encodeURIComponent(query)}` : ""}`),
  createConversation: (fields) => request("POST", "/api/conversations/", fields),
  conversation: (id) => request("GET", `/api/conversations/${id}/`),
  updateConversation: (id, fields) => request("PATCH", `/api/conversations/${id}/`, fields),
  deleteConversation: (id) => request("DELETE", `/api/conversations/${id}/`),
  exportUrl: (id, format) => `/api/conversations/${id}/export?format=${format}`,
  models: () => request("GET", "/api/models/"),
  account: () => request("GET", "/api/account/"),
  saveAccount: (fields) => request("PATCH", "/api/account/", fields),
  presets: () => request("GET", "/api/presets/"),
  createPreset: (fields) => request("POST", "/api/presets/", fields),
  deletePreset: (id) => request("DELETE", `/api/presets/${id}/`),
  upload: (file) => request("POST", "/api/uploads/", withFile(file)),
  importFile: (file) => request("POST", "/api/import", withFile(file)),
};
