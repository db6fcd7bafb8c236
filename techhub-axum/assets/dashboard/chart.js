// The throughput chart: succeeded and failed jobs per minute over the last hour, as an SVG bar chart.
import { h } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  element.append(...children);
  return element;
}

/** Counts of finished jobs per minute: minute (ms since epoch, floored) -> { succeeded, failed }. */
export class Throughput {
  #minutes = new Map();

  add(state, finishedAt) {
    if (state !== "succeeded" && state !== "failed") return;
    const minute = Math.floor(new Date(finishedAt).getTime() / 60000) * 60000;
    const counts = this.#minutes.get(minute) || { succeeded: 0, failed: 0 };
    counts[state] += 1;
    this.#minutes.set(minute, counts);
  }

  clear() { this.#minutes.clear(); }

  /** The last 60 minutes, oldest first. */
  series(now = Date.now()) {
    const last = Math.floor(now / 60000) * 60000;
    const series = [];
    for (let i = 59; i >= 0; i--) {
      const minute = last - i * 60000;
      series.push({ minute, ...(this.#minutes.get(minute) || { succeeded: 0, failed: 0 }) });
    }
    return series;
  }
}

export function throughputChart(throughput) {
  const series = throughput.series();
  const max = Math.max(1, ...series.map((point) => point.succeeded + point.failed));
  const width = 600;
  const height = 140;
  const bar = width / series.length;
  const total = series.reduce((sum, point) => ({ s: sum.s + point.succeeded, f: sum.f + point.failed }), { s: 0, f: 0 });
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height + 16}`, role: "img",
    "aria-label": `Jobs finished per minute over the last hour: ${total.s} succeeded, ${total.f} failed; busiest minute ${max}` });
  series.forEach((point, index) => {
    const x = index * bar + 1;
    const okHeight = (point.succeeded / max) * height;
    const badHeight = (point.failed / max) * height;
    if (point.succeeded) chart.append(svg("rect", { class: "succeeded", x, y: height - okHeight, width: bar - 2, height: okHeight }));
    if (point.failed) chart.append(svg("rect", { class: "failed", x, y: height - okHeight - badHeight, width: bar - 2, height: badHeight }));
  });
  chart.append(svg("line", { class: "axis", x1: 0, y1: height, x2: width, y2: height }));
  chart.append(svg("text", { x: 0, y: height + 13 }, "-60 min"), svg("text", { x: width - 24, y: height + 13 }, "now"));
  chart.append(svg("text", { x: 2, y: 10 }, `${max}/min`));
  return h("figure", { class: "chart" }, chart,
    h("figcaption", { class: "legend" },
      h("span", {}, h("span", { class: "sw succeeded" }), `${total.s} succeeded`),
      h("span", {}, h("span", { class: "sw failed" }), `${total.f} failed`)));
}
