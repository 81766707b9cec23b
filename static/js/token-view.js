// A reply's tokens with their probabilities (the `logprobs` a model server sent when asked):
// each token shaded by how likely the model found it, its alternatives in a small popover on
// hover or focus. Every token is model output: set as text, never as HTML.
import { fill, gettext } from "./i18n.js";

let tip = null; // one popover for the page
let tipOwner = null;

function percent(logprob) {
  const p = Math.exp(Number(logprob));
  const format = new Intl.NumberFormat(document.documentElement.lang || undefined,
    { style: "percent", maximumFractionDigits: p < 0.001 ? 3 : 1 });
  return format.format(Number.isFinite(p) ? p : 0);
}

/** A token as the popover shows it: quoted, its spaces and line breaks visible. */
const shown = (token) => JSON.stringify(String(token ?? ""));

function ensureTip() {
  if (tip) return tip;
  tip = document.createElement("div");
  tip.id = "token-tip";
  tip.className = "token-tip";
  tip.setAttribute("role", "tooltip");
  tip.hidden = true;
  document.body.append(tip);
  const hide = () => hideTip();
  document.addEventListener("scroll", hide, { capture: true, passive: true });
  document.addEventListener("keydown", (event) => { if (event.key === "Escape") hide(); });
  return tip;
}

function hideTip() {
  if (!tip) return;
  tip.hidden = true;
  if (tipOwner) tipOwner.removeAttribute("aria-describedby");
  tipOwner = null;
}

function showTip(span, entry) {
  const box = ensureTip();
  const head = document.createElement("div");
  head.className = "token-tip-head";
  head.textContent = `${shown(entry.token)}  ${percent(entry.logprob)}`;
  const parts = [head];
  const alternatives = (entry.top_logprobs || []).filter((alt) => alt && alt.token !== entry.token);
  if (alternatives.length) {
    const title = document.createElement("div");
    title.className = "token-tip-title";
    title.textContent = gettext("Alternatives");
    const list = document.createElement("ol");
    for (const alt of alternatives) {
      const li = document.createElement("li");
      li.textContent = `${shown(alt.token)}  ${percent(alt.logprob)}`;
      list.append(li);
    }
    parts.push(title, list);
  }
  box.replaceChildren(...parts);
  box.hidden = false;
  tipOwner = span;
  span.setAttribute("aria-describedby", box.id);
  // Below the token, kept inside the window (a phone is narrow).
  const at = span.getBoundingClientRect();
  const width = box.offsetWidth;
  const height = box.offsetHeight;
  const left = Math.max(4, Math.min(at.left, window.innerWidth - width - 4));
  const below = at.bottom + 4;
  const top = below + height > window.innerHeight - 4 ? Math.max(4, at.top - height - 4) : below;
  box.style.left = `${left}px`;
  box.style.top = `${top}px`;
}

/** The token view of `logprobs` (choices[0].logprobs.content): an element to show in place of the body. */
export function tokenView(logprobs) {
  const view = document.createElement("div");
  view.className = "token-view";
  const legend = document.createElement("p");
  legend.className = "token-legend";
  legend.textContent = gettext("Each token is shaded by its probability: green likely, red unlikely. Hover over or focus a token to see the alternatives.");
  const text = document.createElement("div");
  text.className = "token-text";
  const entries = Array.isArray(logprobs) ? logprobs : [];
  for (const [index, entry] of entries.entries()) {
    if (!entry || typeof entry !== "object") continue;
    const span = document.createElement("span");
    span.className = "token";
    span.tabIndex = 0;
    span.dataset.index = String(index);
    const token = String(entry.token ?? "");
    span.textContent = token.replace(/\n/g, "↵\n");
    const p = Math.min(1, Math.max(0, Math.exp(Number(entry.logprob)) || 0));
    // Green for likely, through yellow, to red for unlikely; stronger the less likely.
    span.style.backgroundColor = `hsla(${Math.round(120 * p)}, 75%, 48%, ${(0.16 + 0.5 * (1 - p)).toFixed(2)})`;
    span.setAttribute("aria-label", fill(gettext("%(token)s, probability %(percent)s"), { token: shown(token), percent: percent(entry.logprob) }));
    text.append(span);
  }
  const find = (event) => {
    const span = event.target.closest && event.target.closest(".token");
    return span && text.contains(span) ? span : null;
  };
  const open = (event) => {
    const span = find(event);
    if (span) showTip(span, entries[Number(span.dataset.index)]);
  };
  const close = (event) => {
    const span = find(event);
    if (span && tipOwner === span) hideTip();
  };
  text.addEventListener("mouseover", open);
  text.addEventListener("focusin", open);
  text.addEventListener("mouseout", close);
  text.addEventListener("focusout", close);
  view.append(legend, text);
  return view;
}

export { hideTip as hideTokenTip };
