// The one helper the page's parts build their elements with.

/** A new `tag` element of `doc`, with `className` and `text` (as textContent) when given. */
export function el(doc, tag, className, text) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}
