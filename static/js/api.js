// The JSON API with the session cookie and the CSRF token; errors come back as {status, code, message, fields}.
function csrfToken() {
  const found = document.cookie.split("; ").find((part) => part.startsWith("csrftoken="));
  return found ? decodeURIComponent(found.slice("csrftoken=".length)) : "";
}

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || (status >= 500 ? "unavailable" : "invalid");
    this.fields = error.fields || {};
  }
}

export async function request(method, url, body) {
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
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

export const api = {
  listConversations: (query) => request("GET", `/api/conversations/${query ? `?q=${encodeURIComponent(query)}` : ""}`),
  createConversation: (fields) => request("POST", "/api/conversations/", fields),
  updateConversation: (id, fields) => request("PATCH", `/api/conversations/${id}/`, fields),
  deleteConversation: (id) => request("DELETE", `/api/conversations/${id}/`),
  models: () => request("GET", "/api/models/"),
  saveAccount: (fields) => request("PATCH", "/api/account/", fields),
};
