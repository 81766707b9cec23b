// Markdown to safe HTML, in one function: markdown-it (html: false) -> DOMPurify -> the caller inserts.
// Model output and member text are untrusted: raw HTML is never passed through, and whatever
// markdown-it or KaTeX emits is sanitized before it reaches the page.
import { gettext } from "./i18n.js";

let parser = null;

function build() {
  const { markdownit, texmath, katex, markdownitTaskLists } = globalThis;
  // texmath's "brackets" finds \[…\] only at the start of a block; replies also write it mid-line.
  texmath.rules.brackets_inline = {
    block: [],
    inline: [{ name: "math_inline_bracket_display", rex: /\\\[(.+?)\\\]/gy, tmpl: "<eqn>$1</eqn>", tag: "\\[", displayMode: true }],
  };
  const md = markdownit({ html: false, linkify: true, breaks: false })
    .use(texmath, { engine: katex, delimiters: ["dollars", "brackets", "brackets_inline"], katexOptions: { throwOnError: false, strict: "ignore" } })
    .use(markdownitTaskLists);

  // Links open in a new tab and tell the target nothing: set here, not by editing the HTML afterwards.
  const renderToken = (tokens, i, options, env, self) => self.renderToken(tokens, i, options);
  const linkOpen = md.renderer.rules.link_open || renderToken;
  md.renderer.rules.link_open = (tokens, i, options, env, self) => {
    tokens[i].attrSet("target", "_blank");
    tokens[i].attrSet("rel", "noopener noreferrer");
    return linkOpen(tokens, i, options, env, self);
  };

  // Code blocks: the language named, a copy button, and colours only when asked (closed blocks).
  md.renderer.rules.fence = (tokens, i, options, env) => {
    const token = tokens[i];
    const language = (token.info || "").trim().split(/\s+/)[0].toLowerCase();
    const known = language && globalThis.hljs && globalThis.hljs.getLanguage(language);
    let code = md.utils.escapeHtml(token.content);
    if (env.highlight && known) {
      try { code = globalThis.hljs.highlight(token.content, { language, ignoreIllegals: true }).value; } catch { /* plain */ }
    }
    const label = md.utils.escapeHtml(language || gettext("text"));
    const cls = known ? ` class="hljs language-${md.utils.escapeHtml(language)}"` : ' class="hljs"';
    return `<div class="code-block"><div class="code-head"><span class="code-lang">${label}</span>` +
      `<button type="button" class="copy-code">${md.utils.escapeHtml(gettext("Copy"))}</button></div>` +
      `<pre><code${cls}>${code}</code></pre></div>\n`;
  };
  return md;
}

const PURIFY = {
  // eq/eqn: texmath's wrappers; semantics/annotation: KaTeX's MathML (DOMPurify drops them by default).
  ADD_TAGS: ["eq", "eqn", "semantics", "annotation"],
  ADD_ATTR: ["target"],
  FORBID_TAGS: ["style", "form", "input", "textarea", "select"],
  ALLOW_UNKNOWN_PROTOCOLS: false,
};
const TASK_PURIFY = { ...PURIFY, FORBID_TAGS: ["style", "form", "textarea", "select"] };

/** Safe HTML for `text`. `highlight`: colour code blocks (done once a block is closed, never per frame). */
export function renderMarkdown(text, { highlight = false } = {}) {
  if (!parser) parser = build();
  const html = parser.render(text, { highlight });
  // Task lists are checkboxes (disabled, from markdown-it-task-lists); other inputs never pass.
  const config = html.includes("task-list-item-checkbox") ? TASK_PURIFY : PURIFY;
  return globalThis.DOMPurify.sanitize(html, config);
}

/**
 * A scanner that finds where a streaming text's *closed* part ends: the start of a top-level
 * block that follows a blank line (or a closed code fence), outside any fence or $$ block.
 * Everything before it renders the same whatever comes later, so it is rendered once; only
 * the open tail is rendered again while the reply grows. It reads each line once.
 */
export class BlockSplitter {
  constructor() {
    this.scanned = 0;      // index of the first line not yet read
    this.closedEnd = 0;    // the closed part is text.slice(0, closedEnd)
    this.points = [];      // where each closed block group starts (ascending)
    this.fence = null;     // the open fence's marker ("```", "~~~~"), or null
    this.math = false;     // inside a $$ … $$ block
    this.blankBefore = false;
    this.fenceClosedBefore = false;
  }

  /** Read the complete lines of `text` not read yet; returns the end of the closed part. */
  advance(text) {
    let start = this.scanned;
    for (;;) {
      const newline = text.indexOf("\n", start);
      if (newline === -1) break;
      this.line(text.slice(start, newline), start);
      start = newline + 1;
    }
    this.scanned = start;
    return this.closedEnd;
  }

  line(line, at) {
    const trimmed = line.trimStart();
    const indent = line.length - trimmed.length;
    if (this.fence) {
      if (indent < 4 && trimmed.startsWith(this.fence) && trimmed.slice(this.fence.length).trim() === ""
          && !/[^`~]/.test(trimmed.trimEnd())) {
        this.fence = null;
        this.fenceClosedBefore = true;
      }
      return;
    }
    if (this.math) {
      if (trimmed.trimEnd().endsWith("$$")) this.math = false;
      this.blankBefore = false;
      return;
    }
    const blank = trimmed === "";
    // A block that starts at column 0 after a blank line (or right after a closed fence) cannot
    // belong to what came before, except as a list's lazy continuation, which needs no blank line.
    if (!blank && indent === 0 && (this.blankBefore || this.fenceClosedBefore) && at > this.closedEnd) {
      this.closedEnd = at;
      this.points.push(at);
    }
    this.fenceClosedBefore = false;
    if (blank) { this.blankBefore = true; return; }
    this.blankBefore = false;
    const opening = /^(`{3,}|~{3,})/.exec(trimmed);
    if (indent < 4 && opening && !(opening[1][0] === "`" && trimmed.slice(opening[1].length).includes("`"))) {
      this.fence = opening[1];
      return;
    }
    if (trimmed.startsWith("$$") && !(trimmed.length > 2 && trimmed.trimEnd().endsWith("$$") && trimmed.trimEnd().length >= 4)) {
      this.math = true;
    }
  }
}
