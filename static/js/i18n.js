// The script's words, from Django's JavaScript catalogue (/jsi18n/, domain djangojs),
// and every error code's text in the member's language. The server's `message` is shown
// only for a code this file has no words for.
// Named like Django's own functions so `makemessages -d djangojs` finds every word.
const catalogue = () => (globalThis.django && globalThis.django.gettext ? globalThis.django : null);

export function gettext(text) {
  const c = catalogue();
  return c ? c.gettext(text) : text;
}

export function ngettext(singular, plural, count) {
  const c = catalogue();
  return c ? c.ngettext(singular, plural, count) : (count === 1 ? singular : plural);
}

/** Fill %(name)s placeholders from `values` (the words stay text: never HTML). */
export function fill(template, values) {
  return template.replace(/%\(([a-z_]+)\)s/g, (whole, name) => (values && name in values ? String(values[name]) : whole));
}

// Each literal is written out with gettext() so makemessages finds it.
const byCode = {
  busy: () => gettext("A reply is still streaming in this conversation: wait for it or stop it."),
  invalid: () => gettext("That request is not valid."),
  not_found: () => gettext("No such conversation."),
  upstream_auth: () => gettext("The model server refused the server's credentials; an administrator must check the API key."),
  upstream_rate_limited: () => gettext("The model server is rate limiting requests; try again shortly."),
  upstream_unavailable: () => gettext("Could not connect to the model server."),
  upstream_error: () => gettext("The model server reported an error."),
  timeout: () => gettext("The model server stopped sending; the reply timed out."),
  too_large: () => gettext("That is more than the server accepts."),
  quota: () => gettext("The model account has run out of quota."),
  usage_limit: () => gettext("You have reached a usage limit your team set."),
  rate_limited: () => gettext("You are sending too fast; wait a moment."),
  interrupted: () => gettext("The server stopped before this reply finished; the text so far is kept."),
  unauthenticated: () => gettext("You are signed out: sign in again to continue."),
  csrf: () => gettext("The page is out of date: reload it and try again."),
  unavailable: () => gettext("The server is unavailable for a moment; try again shortly."),
  method_not_allowed: () => gettext("That request is not valid."),
};

const byReason = {
  "busy/draining": () => gettext("This server is restarting; send again in a moment."),
  "not_found/message": () => gettext("No such message in this conversation."),
  "not_found/signed_out": () => gettext("You are signed out: sign in again to continue."),
  "not_found/deleted": () => gettext("This conversation was deleted."),
  "upstream_rate_limited/retry_after": () => gettext("The model server is rate limiting requests; try again in %(retry_after)s seconds."),
  "upstream_unavailable/connect_timeout": () => gettext("The model server did not accept the connection in time."),
  "upstream_unavailable/status": () => gettext("The model server is unavailable (HTTP %(status)s)."),
  "upstream_unavailable/blocked": () => gettext("The model server's address is not allowed (%(blocked)s). An operator can allow it with UPSTREAM_ALLOWED_HOSTS."),
  "upstream_unavailable/models": () => gettext("Could not reach the model server."),
  "upstream_error/not_a_stream": () => gettext("The model server answered with something other than a stream."),
  "upstream_error/broke_off": () => gettext("The connection to the model server broke off mid-reply."),
  "upstream_error/transport": () => gettext("The request to the model server failed (%(kind)s)."),
  "upstream_error/no_done": () => gettext("The model server's stream ended before the reply was complete."),
  "upstream_error/malformed_chunk": () => gettext("The model server sent a malformed chunk."),
  "upstream_error/no_choices": () => gettext("The model server sent an answer without choices."),
  "upstream_error/redirect": () => gettext("The model server answered with a redirect (HTTP %(status)s), which is not followed; an administrator must check the model server's base URL."),
  "upstream_error/rejected": () => gettext("The model server rejected the request (HTTP %(status)s)."),
  "upstream_error/model_list": () => gettext("The model server sent an unreadable model list."),
  "upstream_error/internal": () => gettext("The reply failed because of an error on the server."),
  "timeout/status": () => gettext("The model server timed out."),
  "too_large/context": () => gettext("The conversation is too long for this model."),
  "too_large/reply": () => gettext("The reply passed the server's limit of %(limit)s characters and was cut there."),
  "too_large/frame": () => gettext("Frames are limited to %(limit)s bytes."),
  "too_large/message": () => gettext("Messages are limited to %(limit)s characters."),
  "too_large/parts": () => gettext("A message can have at most %(limit)s parts."),
  "usage_limit/tokens_per_day": () => gettext("You have used today's %(limit)s tokens, the limit your team set. It resets at %(resets_at)s."),
  "usage_limit/tokens_per_month": () => gettext("You have used this month's %(limit)s tokens, the limit your team set. It resets at %(resets_at)s."),
  "usage_limit/requests_per_minute": () => gettext("You have sent %(limit)s requests this minute, the limit your team set; try again in %(retry_after)s seconds."),
  "invalid/model_not_allowed": () => gettext("The model %(model)s is not available to you; pick another in the conversation's settings."),
  "invalid/model_without_images": () => gettext("The model %(model)s does not take images; pick one that does, or send text only."),
  "invalid/image_type": () => gettext("Images must be PNG, JPEG, WebP or GIF."),
  "invalid/image_missing": () => gettext("Send the image as the form field 'file'."),
  "invalid/image_unreadable": () => gettext("This image cannot be read; it may be damaged."),
  "invalid/image_not_found": () => gettext("That image is not one of yours, or it was deleted."),
  "too_large/image_bytes": () => gettext("Images are limited to %(limit)s bytes."),
  "too_large/image_pixels": () => gettext("Images are limited to %(limit)s pixels."),
  "rate_limited/frames": () => gettext("You are sending too fast; wait %(retry_after)s seconds before the next request."),
  "interrupted/not_saved": () => gettext("The reply could not be saved because the database was unavailable; the text saved before that is kept."),
  "interrupted/restart": () => gettext("The server restarted before this reply finished; the text so far is kept."),
};

/** An error's words in the page's language, from its code and detail; the server's only as a last resort. */
export function errorText(code, detail, serverMessage) {
  detail = readable(detail || {});
  const words = byReason[`${code}/${detail.reason}`] || byCode[code];
  if (!words) return serverMessage || byCode.upstream_error();
  let text = fill(words(), detail);
  if (/%\([a-z_]+\)s/.test(text)) text = fill(byCode[code] ? byCode[code]() : text, detail);
  if (detail.upstream_message) {
    text = fill(gettext("%(ours)s The model server said: %(theirs)s"), { ours: text, theirs: detail.upstream_message });
  }
  return text;
}

/** A reset time in the reader's own time and language, not an ISO string. */
function readable(detail) {
  if (typeof detail.resets_at !== "string") return detail;
  const when = new Date(detail.resets_at);
  if (Number.isNaN(when.getTime())) return detail;
  return { ...detail, resets_at: when.toLocaleString(document.documentElement.lang || undefined, { dateStyle: "medium", timeStyle: "short" }) };
}

/** Every code this page has words for (tests check that each server code is covered). */
export const knownCodes = () => Object.keys(byCode);
