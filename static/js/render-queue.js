// One requestAnimationFrame render for everything that changed, with bounded work per frame:
// a streaming reply only stores its text when a delta arrives; the frame renders it.
const dirty = new Set();
let scheduled = false;
let afterFrame = () => {};

// About this many characters of newly closed Markdown are rendered (and highlighted) per frame;
// the rest waits for the next frame, so a long reply or snapshot never blocks the page.
export const CLOSED_CHARS_PER_FRAME = 6000;

export function schedule(view) {
  dirty.add(view);
  if (!scheduled) {
    scheduled = true;
    requestAnimationFrame(frame);
  }
}

/** Called once after each frame's renders (the page keeps the newest text in view). */
export function onFrameRendered(callback) { afterFrame = callback; }

function frame() {
  scheduled = false;
  let budget = CLOSED_CHARS_PER_FRAME;
  const views = [...dirty];
  dirty.clear();
  for (const view of views) {
    const result = view.renderStep(budget);
    budget = Math.max(0, budget - result.spent);
    if (result.more) schedule(view);
  }
  afterFrame();
}
