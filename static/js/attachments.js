// Images attached to the message being written: picked with the button, pasted or dropped,
// uploaded at once (POST /api/uploads/), shown as removable thumbnails, and sent as image_url
// parts that name the stored upload (docs/protocol.md, "Images"). The server decides what is an
// image: its refusal is shown next to the composer, and the rest of the box stays as it was.
import { api } from "./api.js";
import { errorText, fill, gettext } from "./i18n.js";

/**
 * strip: the list the thumbnails go in; onError(text): where refusals are said;
 * onChange(): the set or its uploads changed (the page enables sending again).
 */
export function setupAttachments({ strip, onError, onChange }) {
  let items = []; // {key, file, preview, upload: {id, url} | null, el}
  let nextKey = 1;

  function draw() {
    strip.hidden = items.length === 0;
    strip.replaceChildren(...items.map((item) => item.el));
    onChange();
  }

  function element(item) {
    const li = document.createElement("li");
    li.className = "attachment uploading";
    const name = item.file.name || gettext("Pasted image");
    li.title = name; // a file name is text
    const img = document.createElement("img");
    img.src = item.preview;
    img.alt = name;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "attachment-remove";
    remove.textContent = "✕";
    const label = fill(gettext("Remove %(name)s"), { name });
    remove.title = label;
    remove.setAttribute("aria-label", label);
    remove.addEventListener("click", () => drop(item.key));
    li.append(img, remove);
    return li;
  }

  function drop(key) {
    const item = items.find((i) => i.key === key);
    if (!item) return;
    URL.revokeObjectURL(item.preview);
    items = items.filter((i) => i.key !== key);
    draw();
  }

  async function upload(item) {
    try {
      item.upload = await api.upload(item.file);
      item.el.classList.remove("uploading");
      onChange();
    } catch (error) {
      if (!items.includes(item)) return; // removed meanwhile
      drop(item.key);
      const why = errorText(error.code, error.detail, error.serverMessage);
      onError(fill(gettext("%(name)s was not attached: %(reason)s"), { name: item.file.name || gettext("Pasted image"), reason: why }));
    }
  }

  return {
    /** Files from the button, a paste or a drop: each is uploaded; the server says which are not images. */
    add(files) {
      for (const file of files) {
        const item = { key: nextKey++, file, preview: URL.createObjectURL(file), upload: null };
        item.el = element(item);
        items.push(item);
        upload(item);
      }
      draw();
    },
    /** Still uploading: sending waits. */
    busy: () => items.some((item) => !item.upload),
    isEmpty: () => items.length === 0,
    /** The image_url parts of what is attached (uploaded ones). */
    parts: () => items.filter((item) => item.upload)
      .map((item) => ({ type: "image_url", image_url: { url: item.upload.url } })),
    /** The message went: forget the images it took (by their stored urls). */
    sent(urls) {
      for (const item of items.filter((i) => i.upload && urls.includes(i.upload.url))) URL.revokeObjectURL(item.preview);
      items = items.filter((item) => !(item.upload && urls.includes(item.upload.url)));
      draw();
    },
  };
}

/**
 * The files of a paste or a drop (a DataTransfer), non-images too: the server says why not. A paste
 * that carries text as well is text (a spreadsheet's cells come with a picture of themselves).
 */
export function filesOf(transfer, { paste = false } = {}) {
  if (!transfer) return [];
  if (paste && (transfer.getData("text/plain") || "").trim()) return [];
  return Array.from(transfer.files || []);
}
