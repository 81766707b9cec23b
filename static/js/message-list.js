// The branch on screen: messages in order, each a MessageView, and following the newest text
// until the member scrolls up (then a "jump to latest" button). Where the latest reply's context
// began, when the model's context could not hold the whole branch, is marked.
import { fill, ngettext } from "./i18n.js";
import { MessageView } from "./message-view.js";
import { onFrameRendered } from "./render-queue.js";

const NEAR_BOTTOM_PX = 48;

export function setupMessageList({ list, scroller, jump, actions }) {
  const views = new Map();
  let following = true;

  // The cut: before the first message the latest reply's model saw, when earlier ones were dropped.
  const cutMark = document.createElement("li");
  cutMark.className = "context-cut";
  cutMark.setAttribute("role", "note");
  function markCut() {
    const replies = [...views.values()].filter((view) => view.message.role === "assistant" && view.message.context);
    const context = replies.length ? replies[replies.length - 1].message.context : null;
    const first = context && context.dropped > 0 ? views.get(context.first_message_id) : null;
    if (!first) { cutMark.remove(); return; }
    cutMark.textContent = fill(ngettext(
      "Earlier messages were not sent to the model (%(count)s dropped to fit its context).",
      "Earlier messages were not sent to the model (%(count)s dropped to fit its context).",
      context.dropped), { count: context.dropped });
    if (first.el.previousSibling !== cutMark) list.insertBefore(cutMark, first.el);
  }

  const atBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_BOTTOM_PX;
  function follow() {
    if (following) scroller.scrollTop = scroller.scrollHeight;
    jump.hidden = following || atBottom();
  }
  scroller.addEventListener("scroll", () => {
    following = atBottom();
    jump.hidden = following;
  }, { passive: true });
  jump.addEventListener("click", () => {
    following = true;
    follow();
  });
  onFrameRendered(follow);

  function add(message) {
    const view = new MessageView(message, actions);
    views.set(message.id, view);
    list.append(view.el);
    return view;
  }

  return {
    get: (id) => views.get(id),
    views: () => [...views.values()],
    /** A snapshot: the branch from scratch (views whose text is unchanged are kept). */
    reset(messages) {
      const keep = new Map();
      for (const message of messages) {
        const old = views.get(message.id);
        if (old) { old.update(message); keep.set(message.id, old); }
      }
      views.clear();
      list.replaceChildren();
      for (const message of messages) {
        const view = keep.get(message.id);
        if (view) { views.set(message.id, view); list.append(view.el); } else add(message);
      }
      following = true;
      markCut();
    },
    /**
     * A message frame: update it if shown; else it starts a branch after its parent (a new
     * question, a reply, an edit, a regenerated reply), so whatever followed the parent goes.
     */
    show(message) {
      const shown = views.get(message.id);
      if (shown) { shown.update(message); markCut(); return shown; }
      const ids = [...views.keys()];
      const cut = message.parent_id ? ids.indexOf(message.parent_id) + 1 : 0;
      if (message.parent_id && cut === 0) return null; // not on this branch: the next snapshot says
      for (const id of ids.slice(cut)) { views.get(id).el.remove(); views.delete(id); }
      // A new sibling: the old version's switcher must learn of it.
      if (message.sibling_ids) {
        for (const view of views.values()) {
          if (view.message.parent_id === message.parent_id && view.message.sibling_ids) {
            view.update({ sibling_ids: message.sibling_ids });
          }
        }
      }
      following = true;
      const view = add(message);
      markCut();
      return view;
    },
    streaming() {
      return [...views.values()].find((view) => view.message.status === "streaming") || null;
    },
    lastId() {
      const ids = [...views.keys()];
      return ids.length ? ids[ids.length - 1] : null;
    },
    isEmpty: () => views.size === 0,
  };
}
