// Small DOM helpers: elements are built with text nodes only (never innerHTML), so no value from the API can
// become markup.

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

export function badge(value) {
  return h("span", { class: `badge ${value}` }, String(value).replace("_", " "));
}

export function time(value) {
  if (!value) return "—";
  const date = new Date(value);
  return h("time", { datetime: value, title: date.toISOString() }, date.toLocaleString());
}

export function ago(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

export function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${ms} ms`;
  return ago(ms / 1000);
}

export function bytes(count) {
  if (count === null || count === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

export function progress(percent, label) {
  return h("div", { class: "progress", role: "progressbar", "aria-valuenow": percent, "aria-valuemin": 0,
    "aria-valuemax": 100, "aria-label": label || "Progress" }, h("span", { "data-width": percent }));
}

/** Sets the widths of progress bars (CSSOM, which the style-src policy allows; attributes it would not). */
export function paintBars(root) {
  for (const bar of root.querySelectorAll("[data-width]")) bar.style.width = `${bar.dataset.width}%`;
}

export function table(columns, rows, { caption, onRow, selected } = {}) {
  return h("div", { class: "table-wrap" }, h("table", {},
    caption ? h("caption", { class: "sr-only" }, caption) : null,
    h("thead", {}, h("tr", {}, columns.map((column) => h("th", { scope: "col", class: column.num ? "num" : null }, column.label)))),
    h("tbody", {}, rows.length === 0
      ? h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, "Nothing here."))
      : rows.map((row) => {
        const tr = h("tr", { class: selected && selected(row) ? "selected" : null, dataset: row.id ? { id: row.id } : {} },
          columns.map((column) => h("td", { class: column.num ? "num" : null }, column.cell(row))));
        if (onRow) {
          tr.addEventListener("click", (event) => { if (!event.target.closest("button, a, select, input")) onRow(row); });
        }
        return tr;
      }))));
}

export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value ?? "—")]));
}

let toastTimer;
export function toast(message) {
  const element = document.getElementById("toast");
  element.textContent = message;
  element.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => element.classList.remove("show"), 3000);
}

/** Calls `fn` at most once per `ms`, after the last call (live events come in bursts). */
export function debounce(fn, ms = 300) {
  let timer;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}
