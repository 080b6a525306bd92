// Page elements built from data, and the number and date formats the pages share.
//
// Everything the server returns (memory text, file names, error messages) goes into the page as text nodes,
// never as markup: `el` has no innerHTML path at all.

/**
 * A new element. ``props``: `class`, `text`, `on` (event name → handler), and any other key set as a
 * property (`hidden`, `type`, `value`, `disabled`, …) or, when it contains a dash (`aria-label`,
 * `data-id`), as an attribute. ``children``: nodes or strings; null, undefined and false are skipped.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "on") for (const [name, handler] of Object.entries(value)) node.addEventListener(name, handler);
    else if (key.includes("-")) node.setAttribute(key, value === true ? "" : String(value));
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

/**
 * Moves focus to ``target`` after something asynchronous finished, unless the user has since moved it: only
 * when focus is nowhere (on the body, as when the focused button was hidden or removed) or still inside one of
 * ``from`` (the control that started it).
 */
export function focusIfIdle(target, ...from) {
  const active = document.activeElement;
  if (!active || active === document.body || from.some((node) => node?.contains(active))) target?.focus();
}

const numbers = new Intl.NumberFormat();

/** ``1234`` → "1,234" in the reader's locale. */
export function count(n) {
  return numbers.format(n ?? 0);
}

/** ``count`` with a noun: "1 memory", "3 memories", "1,204 messages". */
export function plural(n, one, many = `${one}s`) {
  return `${count(n)} ${n === 1 ? one : many}`;
}

/** An ISO timestamp as a date (and time when ``withTime``) in the reader's locale and zone. */
export function when(iso, { withTime = false } = {}) {
  if (!iso) return "";
  const date = new Date(iso);
  return withTime
    ? date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" })
    : date.toLocaleDateString(undefined, { dateStyle: "medium" });
}

/** A calendar date ("2030-03-03") in the reader's locale: read as a local date, so no zone shifts its day. */
export function day(isoDate) {
  const [y, m, d] = isoDate.split("-").map(Number);
  return new Date(y, m - 1, d).toLocaleDateString(undefined, { dateStyle: "medium" });
}

/** ``bytes`` as "512 KB", "3.4 MB". */
export function size(bytes) {
  const units = ["bytes", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(value < 10 ? 1 : 0) : value} ${units[unit]}`;
}
