// The notifications view (admins): delivery statistics, the endpoints (create, disable or enable, rotate the
// signing secret), and the delivery log with each notification's attempts.
import { badge, clear, debounce, facts, h, table, time, toast } from "./dom.js";

const EVENT_TYPES = ["build.succeeded", "build.failed", "build.cancelled", "job.failed", "user.registered", "endpoint.disabled"];
const CHANNELS = ["email", "webhook", "slack", "log"];
const STATUSES = ["pending", "sent", "failed"];

export function notificationsView({ api, live, root, report, pager, query, section, confirmThen }) {
  const stats = h("div");
  const endpoints = h("div");
  const secret = h("div", { role: "status", "aria-live": "polite" });
  const log = h("div");
  const detail = h("div", { "aria-live": "polite" });
  const filters = { channel: "", status: "" };
  let selected = null;
  const pages = pager(() => loadLog().catch(report));

  const kind = h("select", { name: "kind" }, h("option", { value: "webhook" }, "webhook"), h("option", { value: "slack" }, "slack"));
  const url = h("input", { name: "url", type: "url", required: true, placeholder: "https://hooks.example.com/techhub" });
  const description = h("input", { name: "description", placeholder: "what it is for" });
  const events = EVENT_TYPES.map((name) => h("label", { class: "inline" }, h("input", { type: "checkbox", name: "event_types", value: name, checked: name === "build.failed" }), name));
  const create = h("form", { class: "card", "aria-label": "New endpoint", onsubmit: (event) => {
    event.preventDefault();
    const eventTypes = events.map((label) => label.firstChild).filter((box) => box.checked).map((box) => box.value);
    api.post("/api/v1/notifications/endpoints", { kind: kind.value, url: url.value.trim(), description: description.value.trim(), event_types: eventTypes })
      .then((created) => {
        showSecret(created.endpoint, created.secret);
        create.reset();
        return loadEndpoints();
      }).catch(report);
  } }, h("h4", {}, "New endpoint"), h("div", { class: "toolbar" }, h("label", {}, "Kind", kind), h("label", {}, "URL", url), h("label", {}, "Description", description)),
  h("fieldset", {}, h("legend", {}, "Events"), events), h("button", { type: "submit", class: "primary" }, "Create endpoint"));

  const channel = h("select", { name: "channel" }, h("option", { value: "" }, "any"), CHANNELS.map((name) => h("option", { value: name }, name)));
  const status = h("select", { name: "status" }, h("option", { value: "" }, "any"), STATUSES.map((name) => h("option", { value: name }, name)));
  const logFilters = h("form", { class: "toolbar", role: "search", onsubmit: (event) => {
    event.preventDefault();
    Object.assign(filters, { channel: channel.value, status: status.value });
    pages.reset();
    loadLog().catch(report);
  } }, h("label", {}, "Channel", channel), h("label", {}, "Status", status), h("button", { type: "submit" }, "Filter"));

  clear(root, h("h2", {}, "Notifications"), section("Statistics", stats), section("Endpoints", secret, endpoints, create),
    section("Delivery log", logFilters, h("div", { class: "split" }, h("div", {}, log, pages.element), h("div", {}, detail))));

  function showSecret(endpoint, value) {
    if (!value) { clear(secret); return; }
    clear(secret, h("div", { class: "card" }, h("strong", {}, `Signing secret of ${endpoint.url} (shown this once): `), h("code", { class: "mono" }, value)));
  }

  async function loadStats() {
    const rows = await api.get("/api/v1/notifications/stats");
    clear(stats, table([
      { label: "Channel", cell: (row) => row.channel },
      { label: "Pending", num: true, cell: (row) => row.pending },
      { label: "Sent", num: true, cell: (row) => row.sent },
      { label: "Failed", num: true, cell: (row) => row.failed },
    ], rows, { caption: "Deliveries per channel" }));
  }

  async function loadEndpoints() {
    const rows = await api.get("/api/v1/notifications/endpoints");
    clear(endpoints, table([
      { label: "Kind", cell: (e) => e.kind },
      { label: "URL", cell: (e) => h("code", {}, e.url) },
      { label: "Events", cell: (e) => e.event_types.join(", ") },
      { label: "State", cell: (e) => (e.enabled ? badge("ok") : [badge("error"), " ", e.disabled_reason || "disabled"]) },
      { label: "Failing", cell: (e) => (e.failure_streak ? `${e.failure_streak} in a row` : "—") },
      { label: "Actions", cell: (e) => h("div", { class: "row-actions" },
        h("button", { type: "button", class: e.enabled ? "danger" : null, onclick: () => confirmThen(`${e.enabled ? "Disable" : "Enable"} ${e.url}?`, async () => {
          await api.patch(`/api/v1/notifications/endpoints/${e.id}`, { enabled: !e.enabled });
          await loadEndpoints();
        }).catch(report) }, e.enabled ? "Disable" : "Enable"),
        e.kind === "webhook" ? h("button", { type: "button", onclick: () => confirmThen(`Rotate the signing secret of ${e.url}? The old one keeps signing for 24 h.`, async () => {
          const rotated = await api.post(`/api/v1/notifications/endpoints/${e.id}/rotate-secret`);
          showSecret(e, rotated.secret);
          toast("Secret rotated");
        }).catch(report) }, "Rotate secret") : null) },
    ], rows, { caption: "Endpoints" }));
  }

  async function loadLog() {
    const page = await api.get(`/api/v1/notifications${query({ ...filters, limit: 50, cursor: pages.cursor })}`);
    pages.update(page);
    clear(log, table([
      { label: "Channel", cell: (n) => n.channel },
      { label: "Recipient", cell: (n) => n.recipient },
      { label: "Subject", cell: (n) => h("a", { href: "#/notifications", onclick: (event) => { event.preventDefault(); showDetail(n.id).catch(report); } }, n.subject || "(none)") },
      { label: "Status", cell: (n) => badge(n.status) },
      { label: "Attempts", num: true, cell: (n) => n.attempts },
      { label: "Created", cell: (n) => time(n.created_at) },
    ], page.items, { caption: "Notifications", onRow: (n) => showDetail(n.id).catch(report), selected: (n) => n.id === selected }));
  }

  async function showDetail(id) {
    selected = id;
    const n = await api.get(`/api/v1/notifications/${id}`);
    clear(detail, h("section", { class: "card", "aria-label": "Notification detail" }, h("h3", {}, n.subject || "Notification"),
      facts([["Id", h("code", {}, n.id)], ["Channel", n.channel], ["Recipient", n.recipient], ["Status", badge(n.status)],
        ["Event", n.event_type || "—"], ["Template", n.template || "—"], ["Created", time(n.created_at)], ["Sent", time(n.sent_at)],
        ["Last error", n.last_error || "—"]]),
      h("h4", {}, "Attempts"),
      table([
        { label: "At", cell: (d) => time(d.at) },
        { label: "Status", cell: (d) => (d.status_code ?? "—") },
        { label: "Error", cell: (d) => d.error || "—" },
        { label: "Took", num: true, cell: (d) => `${d.duration_ms} ms` },
      ], n.deliveries || [], { caption: "Delivery attempts" }),
      h("div", { class: "row-actions" }, h("button", { type: "button", onclick: () => confirmThen("Send it again?", async () => {
        await api.post(`/api/v1/notifications/${id}/resend`);
        toast("Resend queued");
        await showDetail(id);
      }).catch(report) }, "Resend"))));
  }

  const reload = debounce(() => { loadStats().catch(report); loadLog().catch(report); loadEndpoints().catch(report); }, 400);
  const stop = live.listen((message) => { if (message.type === "reconnected" || message.topic === "notifications" || message.type?.startsWith("endpoint.")) reload(); });
  loadStats().catch(report);
  loadEndpoints().catch(report);
  loadLog().catch(report);
  return stop;
}
