// One message on screen: its Markdown body (rendered once per frame while it streams, closed
// blocks once), its images, what the model thought first (a "Thinking" section), its tokens'
// probabilities when it has them, its status in the member's language, and its actions.
import { BlockSplitter, renderMarkdown } from "./markdown.js";
import { errorText, fill, gettext } from "./i18n.js";
import { schedule } from "./render-queue.js";
import { hideTokenTip, tokenView } from "./token-view.js";

// Offsets are Unicode code points, as the server counts them (Python's len), not UTF-16 units.
export const codePoints = (text) => { let n = 0; for (const _ of text) n++; return n; };

export function textOf(content) {
  if (typeof content === "string") return content;
  return (content || []).map((part) => (part.type === "text" ? part.text : `[${gettext("image")}]`)).join("\n");
}

/** The text parts alone (the images are shown as pictures beside them). */
export function wordsOf(content) {
  if (typeof content === "string") return content;
  return (content || []).filter((part) => part.type === "text").map((part) => part.text).join("\n");
}

/** The image parts' urls. */
export function imagesOf(content) {
  if (!Array.isArray(content)) return [];
  return content.filter((part) => part && part.type === "image_url" && part.image_url && typeof part.image_url.url === "string")
    .map((part) => part.image_url.url);
}

// Shown as a picture: this server's own uploads and inline data: images (the page's CSP allows
// no other origin). Any other address is shown as a link, as text.
const SHOWN_AS_IMAGE = /^(\/api\/uploads\/[0-9a-f-]{36}$|data:image\/(png|jpeg|gif|webp);)/i;

// Followed as a link: web addresses and the above (never javascript: or any other scheme).
const LINKABLE = /^(https?:\/\/|\/api\/uploads\/|data:image\/)/i;

function imageElement(url) {
  const li = document.createElement("li");
  const link = document.createElement(LINKABLE.test(url) ? "a" : "span");
  if (link.tagName === "A") {
    link.href = url;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
  }
  if (SHOWN_AS_IMAGE.test(url)) {
    const img = document.createElement("img");
    img.src = url;
    img.alt = gettext("Attached image");
    img.loading = "lazy";
    link.append(img);
    link.title = gettext("Open the image");
  } else {
    link.className = "image-link";
    link.textContent = url.length > 80 ? `${url.slice(0, 77)}…` : url;
  }
  li.append(link);
  return li;
}

/** The words under a reply that did not simply complete; "" when there is nothing to say. */
export function statusText(message) {
  if (message.status === "stopped") return gettext("Stopped.");
  if (message.status === "error" || message.status === "interrupted") {
    const error = message.error || { code: message.status === "interrupted" ? "interrupted" : "upstream_error" };
    return errorText(error.code, error.detail, error.message);
  }
  if (message.status === "complete" && message.finish_reason === "length") {
    return gettext("Cut short: the reply reached its length limit (max tokens).");
  }
  if (message.status === "complete" && message.finish_reason === "content_filter") {
    return gettext("The model server's content filter stopped this reply.");
  }
  return "";
}

function button(className, label, title) {
  const el = document.createElement("button");
  el.type = "button";
  el.className = className;
  el.textContent = label;
  if (title) { el.title = title; el.setAttribute("aria-label", title); }
  return el;
}

/**
 * A message's element and its body's renderer. `actions`: regenerate(id), edit(id, text),
 * select(id), copy(text) — the page decides what each does.
 */
export class MessageView {
  constructor(message, actions) {
    this.id = message.id;
    this.role = message.role;
    this.actions = actions;
    this.el = document.createElement("li");
    this.el.dataset.id = message.id;
    this.body = document.createElement("div");
    this.body.className = message.role === "user" ? "body plain" : "body markdown";
    this.closedEl = document.createElement("div");
    this.tailEl = document.createElement("div");
    this.body.append(this.closedEl, this.tailEl);
    // What the model thought before it answered (some model servers send it), apart from the answer.
    this.reasoningBox = document.createElement("details");
    this.reasoningBox.className = "reasoning";
    this.reasoningBox.hidden = true;
    this.reasoningSummary = document.createElement("summary");
    this.reasoningSummary.textContent = gettext("Thinking");
    this.reasoningEl = document.createElement("div");
    this.reasoningEl.className = "reasoning-text";
    this.reasoningBox.append(this.reasoningSummary, this.reasoningEl);
    this.reasoning = "";
    this.reasoningLength = 0;
    this.reasoningShown = "";
    this.reasoningOpened = false; // opened by the page while the model thinks (closed when it answers)
    this.imagesEl = document.createElement("ul");
    this.imagesEl.className = "message-images";
    this.imagesEl.hidden = true;
    this.imagesShown = "";
    this.tokensEl = null; // the token view, made when first asked for
    this.note = document.createElement("div");
    this.note.className = "note";
    this.bar = document.createElement("div");
    this.bar.className = "message-actions";
    const meta = document.createElement("div");
    meta.className = "meta";
    this.roleEl = document.createElement("span");
    this.roleEl.className = "role";
    meta.append(this.roleEl);
    this.el.append(meta, this.reasoningBox, this.imagesEl, this.body, this.note, this.bar);
    this.resetText("");
    this.update(message);
  }

  resetText(text) {
    this.text = text;
    this.length = codePoints(text);
    this.splitter = new BlockSplitter();
    this.rendered = 0;       // this.text.slice(0, rendered) is in closedEl
    this.tailShown = null;   // the text the tail shows now
    this.closedEl.replaceChildren();
    this.tailEl.replaceChildren();
  }

  /** Take a stored message (a snapshot, a message frame, a done): its text, status and actions. */
  update(message) {
    this.message = { ...(this.message || {}), ...message };
    const m = this.message;
    this.el.className = `message ${m.role} ${m.status}`;
    this.roleEl.textContent = m.role === "user" ? gettext("You") : (m.model || gettext("Reply"));
    if (message.content !== undefined) {
      this.showImages(imagesOf(message.content));
      const text = m.role === "user" ? wordsOf(message.content) : textOf(message.content);
      if (text !== this.text) {
        if (text.startsWith(this.text)) { this.text = text; this.length = codePoints(text); } else this.resetText(text);
      }
    }
    if (typeof message.reasoning === "string" && message.reasoning !== this.reasoning) {
      this.reasoning = message.reasoning;
      this.reasoningLength = codePoints(message.reasoning);
    }
    this.final = m.status !== "streaming";
    const words = statusText(m);
    this.note.textContent = words;
    this.note.hidden = !words;
    this.note.setAttribute("role", words && m.status !== "stopped" ? "alert" : "status");
    this.drawActions();
    schedule(this);
  }

  showImages(urls) {
    const key = JSON.stringify(urls);
    if (key === this.imagesShown) return;
    this.imagesShown = key;
    this.imagesEl.replaceChildren(...urls.map(imageElement));
    this.imagesEl.hidden = urls.length === 0;
  }

  /** Append a delta at `offset` (code points). Returns false on a gap (the page starts again from a snapshot). */
  appendDelta(offset, content) {
    if (offset > this.length) return false;
    if (offset < this.length) content = Array.from(content).slice(this.length - offset).join("");
    if (!content) return true;
    this.text += content;
    this.length += codePoints(content);
    schedule(this);
    return true;
  }

  /** Append reasoning at `offset` (its own stream of code points); false on a gap. */
  appendReasoning(offset, content) {
    if (offset > this.reasoningLength) return false;
    if (offset < this.reasoningLength) content = Array.from(content).slice(this.reasoningLength - offset).join("");
    if (!content) return true;
    this.reasoning += content;
    this.reasoningLength += codePoints(content);
    schedule(this);
    return true;
  }

  finish(status, finishReason, usage, error) {
    this.update({ status, finish_reason: finishReason ?? null, usage: usage ?? null, error: error ?? this.message.error });
  }

  /** Called by the frame: render newly closed blocks within `budget` characters, then the open tail. */
  renderStep(budget) {
    if (this.reasoning !== this.reasoningShown) {
      // Plain text, never parsed: it is only what the model thought.
      this.reasoningEl.textContent = this.reasoning;
      this.reasoningShown = this.reasoning;
      this.reasoningBox.hidden = !this.reasoning;
    }
    this.foldReasoning();
    if (this.role === "user") {
      // The member's own words are shown as typed (as text: never parsed as HTML).
      if (this.tailShown !== this.text) { this.closedEl.textContent = this.text; this.tailShown = this.text; }
      return { spent: this.text.length, more: false };
    }
    const scanned = this.splitter.advance(this.text);
    const closedEnd = this.final ? this.text.length : scanned;
    const points = this.splitter.points;
    let spent = 0;
    while (this.rendered < closedEnd && spent < budget) {
      const next = points.find((point) => point > this.rendered) ?? closedEnd;
      const end = Math.min(next, closedEnd);
      const segment = document.createElement("div");
      segment.className = "segment";
      segment.innerHTML = renderMarkdown(this.text.slice(this.rendered, end), { highlight: true });
      this.closedEl.append(segment);
      spent += end - this.rendered;
      this.rendered = end;
    }
    const behind = this.rendered < closedEnd;
    const tail = behind ? "" : this.text.slice(this.rendered);
    if (tail !== this.tailShown) {
      // While closed blocks are still being rendered the tail waits (it would show them twice).
      this.tailEl.innerHTML = tail ? renderMarkdown(tail) : "";
      this.tailShown = tail;
      spent += tail.length;
    }
    return { spent, more: behind };
  }

  /** Open while the model thinks and has not begun its answer; folded away once the answer starts. */
  foldReasoning() {
    const thinking = Boolean(this.reasoning) && !this.text && !this.final;
    this.reasoningSummary.textContent = thinking ? gettext("Thinking…") : gettext("Thinking");
    this.reasoningBox.classList.toggle("thinking", thinking);
    if (thinking && !this.reasoningOpened) {
      this.reasoningOpened = true;
      this.reasoningBox.open = true;
    } else if (!thinking && this.reasoningOpened) { // the answer began (or the reply ended)
      this.reasoningOpened = false;
      this.reasoningBox.open = false;
    }
  }

  /** The token view in place of the body, or the body again. */
  toggleTokens(toggle) {
    const showing = !(this.tokensEl && !this.tokensEl.hidden);
    if (showing) {
      const view = tokenView(this.message.logprobs);
      if (this.tokensEl) this.tokensEl.replaceWith(view); else this.body.after(view);
      this.tokensEl = view;
    } else {
      this.tokensEl.hidden = true;
      hideTokenTip();
    }
    this.body.hidden = showing;
    toggle.setAttribute("aria-pressed", String(showing));
    toggle.textContent = showing ? gettext("Text") : gettext("Tokens");
  }

  drawActions() {
    const m = this.message;
    const streaming = m.status === "streaming";
    const parts = [];
    const siblings = m.sibling_ids || [];
    if (siblings.length > 1) {
      const index = siblings.indexOf(m.id);
      const switcher = document.createElement("span");
      switcher.className = "branch-switcher";
      const prev = button("branch-prev", "‹", gettext("Previous version"));
      const next = button("branch-next", "›", gettext("Next version"));
      const where = document.createElement("span");
      where.className = "branch-position";
      where.textContent = fill(gettext("%(index)s/%(count)s"), { index: index + 1, count: siblings.length });
      prev.disabled = index <= 0;
      next.disabled = index >= siblings.length - 1;
      prev.addEventListener("click", () => this.actions.select(siblings[index - 1]));
      next.addEventListener("click", () => this.actions.select(siblings[index + 1]));
      switcher.append(prev, where, next);
      parts.push(switcher);
    }
    if (!streaming) {
      const copy = button("copy-message", gettext("Copy"), gettext("Copy the message"));
      copy.addEventListener("click", () => this.actions.copy(this.text, copy));
      parts.push(copy);
      if (m.role === "assistant") {
        const failed = m.status === "error" || m.status === "interrupted" || m.finish_reason === "length"
          || m.finish_reason === "content_filter";
        const again = button(failed ? "retry" : "regenerate", failed ? gettext("Retry") : gettext("Regenerate"),
          failed ? gettext("Try this reply again") : gettext("Write this reply again"));
        again.addEventListener("click", () => this.actions.regenerate(m.id));
        parts.push(again);
        if (Array.isArray(m.logprobs) && m.logprobs.length) {
          const shownNow = Boolean(this.tokensEl && !this.tokensEl.hidden);
          const tokens = button("tokens-toggle", shownNow ? gettext("Text") : gettext("Tokens"),
            gettext("Show each token with its probability"));
          tokens.setAttribute("aria-pressed", String(shownNow));
          tokens.addEventListener("click", () => this.toggleTokens(tokens));
          parts.push(tokens);
        }
      } else if (m.role === "user") {
        const edit = button("edit", gettext("Edit"), gettext("Edit and send again"));
        edit.addEventListener("click", () => this.startEditing());
        parts.push(edit);
      }
    }
    this.bar.replaceChildren(...parts);
  }

  startEditing() {
    if (this.el.querySelector(".edit-box")) return;
    const form = document.createElement("form");
    form.className = "edit-box";
    const box = document.createElement("textarea");
    box.value = this.text;
    box.setAttribute("aria-label", gettext("Edit your message"));
    const send = button("primary", gettext("Send"));
    send.type = "submit";
    const cancel = button("", gettext("Cancel"));
    const row = document.createElement("div");
    row.className = "edit-actions";
    row.append(cancel, send);
    form.append(box, row);
    this.body.hidden = true;
    this.el.insertBefore(form, this.note);
    const close = () => { form.remove(); this.body.hidden = false; };
    cancel.addEventListener("click", close);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      // The question's images go with its new version.
      const images = Array.isArray(this.message.content) ? this.message.content.filter((part) => part.type === "image_url") : [];
      if (!box.value.trim() && !images.length) return;
      const content = images.length ? [...(box.value.trim() ? [{ type: "text", text: box.value }] : []), ...images] : box.value;
      if (this.actions.edit(this.id, content)) close();
    });
    box.addEventListener("keydown", (event) => {
      if (event.key === "Escape") close();
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    box.focus();
  }
}
