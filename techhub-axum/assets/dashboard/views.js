// The dashboard's views. Each renders into `root`, reads the API, follows the live feed (no polling: events
// trigger re-reads, debounced), catches up after a reconnect by reading again, and returns its cleanup.
import { ago, badge, bytes, clear, debounce, duration, facts, h, paintBars, progress, table, time } from "./dom.js";
import { Throughput, throughputChart } from "./chart.js";
import { notificationsView } from "./notifications.js";

const JOB_STATES = ["queued", "running", "succeeded", "failed", "cancelled"];
const BUILD_STATUSES = ["queued", "running", "succeeded", "failed", "cancelled", "timed_out"];
const FINISHED_MODULE = ["failed", "timed_out", "cancelled"];
const LEVELS = ["trace", "debug", "info", "warn", "error"];
const AUDIT_ACTIONS = ["login.succeeded", "login.failed", "account.locked", "password.changed", "password.reset",
  "session.revoked", "user.created", "user.updated", "user.deleted", "endpoint.created", "endpoint.secret_rotated"];

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) if (value !== undefined && value !== null && value !== "") search.set(name, value);
  const text = search.toString();
  return text ? `?${text}` : "";
}

function section(title, ...children) {
  return h("section", { class: "card", "aria-label": title }, h("h3", {}, title), ...children);
}

function statGrid(label, counts, order) {
  return h("div", { class: "grid", role: "list", "aria-label": label },
    order.map((name) => h("div", { class: "stat", role: "listitem", dataset: { stat: `${label}:${name}` } },
      h("span", { class: "n" }, String(counts?.[name] ?? 0)), h("span", { class: "l" }, name.replace("_", " ")))));
}

function confirmThen(message, action) {
  if (window.confirm(message)) return action();
  return Promise.resolve();
}

/** A cursor pager: remembers the cursors of the pages before, so "Previous" works too. */
function pager(onChange) {
  const cursors = [null];
  let next = null;
  const previousButton = h("button", { type: "button", onclick: () => { cursors.pop(); onChange(); } }, "Previous page");
  const nextButton = h("button", { type: "button", onclick: () => { cursors.push(next); onChange(); } }, "Next page");
  const element = h("div", { class: "toolbar", role: "navigation", "aria-label": "Pages" }, previousButton, nextButton);
  return {
    element,
    get cursor() { return cursors[cursors.length - 1]; },
    reset() { cursors.length = 1; },
    update(page) {
      next = page.next_cursor;
      previousButton.disabled = cursors.length === 1;
      nextButton.disabled = !next;
    },
  };
}

// ---------------------------------------------------------------- Overview

function overview({ api, live, root }) {
  const throughput = new Throughput();
  const counts = h("div");
  const chart = h("div");
  const queues = h("div");
  const builds = h("div");
  clear(root, h("h2", {}, "Overview"),
    section(api.isAdmin ? "Jobs by state" : "Your jobs by state", counts),
    section("Throughput, last hour (jobs finished per minute)", chart),
    api.isAdmin ? section("Queues", queues) : null,
    section(api.isAdmin ? "Builds by status" : "Your builds by status", builds));

  async function seedThroughput() {
    throughput.clear();
    const since = Date.now() - 3600 * 1000;
    for (const state of ["succeeded", "failed"]) {
      let cursor = null;
      for (let pages = 0; pages < 4; pages++) {
        const page = await api.get(`/api/v1/jobs${query({ state, limit: 500, cursor })}`);
        for (const job of page.items) if (job.finished_at && new Date(job.finished_at).getTime() >= since) throughput.add(state, job.finished_at);
        cursor = page.next_cursor;
        if (!cursor) break;
      }
    }
    clear(chart, throughputChart(throughput));
  }

  async function load() {
    if (api.isAdmin) {
      const [stats, queueList] = await Promise.all([api.get("/api/v1/system/stats"), api.get("/api/v1/queue")]);
      clear(counts, statGrid("jobs", stats.jobs, JOB_STATES));
      clear(builds, statGrid("builds", stats.builds, BUILD_STATUSES));
      clear(queues, table([
        { label: "Queue", cell: (q) => q.queue },
        { label: "Queued", num: true, cell: (q) => q.queued },
        { label: "Running", num: true, cell: (q) => q.running },
        { label: "Succeeded", num: true, cell: (q) => q.succeeded },
        { label: "Failed", num: true, cell: (q) => q.failed },
        { label: "Workers", num: true, cell: (q) => q.workers },
      ], queueList, { caption: "Queues" }));
    } else {
      const [jobs, buildPage] = await Promise.all([api.get("/api/v1/jobs?limit=500"), api.get("/api/v1/builds?limit=500")]);
      const jobCounts = {};
      for (const job of jobs.items) jobCounts[job.state] = (jobCounts[job.state] || 0) + 1;
      const buildCounts = {};
      for (const build of buildPage.items) buildCounts[build.status] = (buildCounts[build.status] || 0) + 1;
      clear(counts, statGrid("jobs", jobCounts, JOB_STATES));
      clear(builds, statGrid("builds", buildCounts, BUILD_STATUSES));
    }
  }

  const reload = debounce(() => load().catch(report), 250);
  const stop = live.listen((message) => {
    if (message.type === "reconnected") { load().catch(report); seedThroughput().catch(report); return; }
    if (message.type === "job.succeeded" || message.type === "job.failed") {
      throughput.add(message.type.slice(4), message.at);
      clear(chart, throughputChart(throughput));
    }
    if (message.topic === "jobs" || message.topic === "builds") reload();
  });
  load().catch(report);
  seedThroughput().catch(report);
  return stop;
}

// ---------------------------------------------------------------- Queues

function queuesView({ api, live, root }) {
  const body = h("div");
  clear(root, h("h2", {}, "Queues"), section("Depth, running and workers", body));
  async function load() {
    const list = await api.get("/api/v1/queue");
    clear(body, table([
      { label: "Queue", cell: (q) => q.queue },
      { label: "Queued (depth)", num: true, cell: (q) => q.queued },
      { label: "Running / workers", num: true, cell: (q) => `${q.running} / ${q.workers}` },
      { label: "Oldest queued", num: true, cell: (q) => (q.queued ? ago(q.oldest_queued_age_s) : "—") },
      { label: "Succeeded", num: true, cell: (q) => q.succeeded },
      { label: "Failed", num: true, cell: (q) => q.failed },
      { label: "Cancelled", num: true, cell: (q) => q.cancelled },
    ], list, { caption: "Queues" }));
  }
  const reload = debounce(() => load().catch(report), 250);
  const stop = live.listen((message) => { if (message.type === "reconnected" || message.topic === "jobs") reload(); });
  load().catch(report);
  return stop;
}

// ---------------------------------------------------------------- Jobs

function jobsView({ api, live, root, param }) {
  let state = "";
  let selected = param;
  const filters = { queue: "", kind: "" };
  const list = h("div");
  const detail = h("div", { "aria-live": "polite" });
  let rows = [];
  const pages = pager(() => load().catch(report));
  const tabs = h("div", { class: "tabs", role: "tablist", "aria-label": "Job states" },
    ["", ...JOB_STATES].map((name) => h("button", { type: "button", role: "tab", "aria-selected": String(name === state),
      dataset: { state: name || "all" },
      onclick: (event) => {
        state = name;
        for (const tab of tabs.children) tab.setAttribute("aria-selected", String(tab === event.currentTarget));
        pages.reset();
        load().catch(report);
      } }, name || "all")));
  // Arrow keys move between the tabs, as in any tab list.
  tabs.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
    const all = [...tabs.children];
    const step = event.key === "ArrowRight" ? 1 : all.length - 1;
    const next = all[(all.indexOf(document.activeElement) + step) % all.length];
    next.focus();
    next.click();
  });
  const queueInput = h("input", { name: "queue", placeholder: "any queue" });
  const kindInput = h("input", { name: "kind", placeholder: "any kind" });
  const filterForm = h("form", { class: "toolbar", role: "search", onsubmit: (event) => {
    event.preventDefault();
    filters.queue = queueInput.value.trim();
    filters.kind = kindInput.value.trim();
    pages.reset();
    load().catch(report);
  } }, h("label", {}, "Queue", queueInput), h("label", {}, "Kind", kindInput), h("button", { type: "submit" }, "Filter"));
  clear(root, h("h2", {}, "Jobs"), tabs, filterForm,
    h("div", { class: "split" }, h("div", {}, list, pages.element), h("div", {}, detail)));

  function actions(job) {
    return h("div", { class: "row-actions" },
      job.state === "queued" || job.state === "running"
        ? h("button", { type: "button", class: "danger", "aria-label": `Cancel job ${job.kind} ${job.id}`,
          onclick: () => confirmThen(`Cancel job ${job.kind}?`, async () => {
            await api.post(`/api/v1/jobs/${job.id}/cancel`);
            await refreshJob(job.id);
          }).catch(report) }, "Cancel") : null,
      api.isAdmin && (job.state === "failed" || job.state === "cancelled")
        ? h("button", { type: "button", "aria-label": `Retry job ${job.kind} ${job.id}`,
          onclick: () => confirmThen(`Retry job ${job.kind} with a fresh attempt budget?`, async () => {
            await api.post(`/api/v1/jobs/${job.id}/retry`);
            await refreshJob(job.id);
          }).catch(report) }, "Retry") : null);
  }

  function renderList() {
    clear(list, table([
      { label: "Kind", cell: (job) => h("a", { href: `#/jobs/${job.id}`, onclick: (event) => { event.preventDefault(); select(job.id); } }, job.kind) },
      { label: "Queue", cell: (job) => job.queue },
      { label: "State", cell: (job) => badge(job.state) },
      { label: "Progress", cell: (job) => progress(job.progress.percent, `Progress of ${job.kind}`) },
      { label: "Attempt", num: true, cell: (job) => `${job.attempt}/${job.max_attempts}` },
      { label: "Created", cell: (job) => time(job.created_at) },
      { label: "Actions", cell: actions },
    ], rows, { caption: "Jobs", onRow: (job) => select(job.id), selected: (job) => job.id === selected }));
    paintBars(list);
  }

  async function load() {
    const page = await api.get(`/api/v1/jobs${query({ state, queue: filters.queue, kind: filters.kind, limit: 50, cursor: pages.cursor })}`);
    rows = page.items;
    pages.update(page);
    renderList();
    if (selected) await showDetail(selected);
  }

  async function refreshJob(id) {
    const job = await api.get(`/api/v1/jobs/${id}`);
    const index = rows.findIndex((row) => row.id === id);
    if (index >= 0) {
      if (state && job.state !== state) rows.splice(index, 1);
      else rows[index] = job;
      renderList();
    }
    if (id === selected) renderDetail(job);
  }

  function select(id) {
    selected = id;
    renderList();
    showDetail(id).catch(report);
  }

  async function showDetail(id) {
    renderDetail(await api.get(`/api/v1/jobs/${id}`));
  }

  function renderDetail(job) {
    clear(detail, h("section", { class: "card", "aria-label": "Job detail" },
      h("h3", {}, `Job ${job.kind}`),
      facts([
        ["Id", h("code", {}, job.id)], ["State", badge(job.state)], ["Queue", job.queue], ["Priority", job.priority],
        ["Attempts", `${job.attempt} of ${job.max_attempts}`], ["Progress", `${job.progress.percent}% ${job.progress.message || ""}`],
        ["Created", time(job.created_at)], ["Run at", time(job.run_at)], ["Started", time(job.started_at)],
        ["Finished", time(job.finished_at)], ["Created by", job.created_by ? h("code", {}, job.created_by) : "the system"],
      ]),
      h("h4", {}, "Payload (secrets redacted by the server)"), h("pre", { "aria-label": "Payload" }, JSON.stringify(job.payload ?? null, null, 2)),
      job.last_error ? [h("h4", {}, "Last error"), h("pre", {}, job.last_error)] : null,
      job.result !== null && job.result !== undefined ? [h("h4", {}, "Result"), h("pre", {}, JSON.stringify(job.result, null, 2))] : null,
      h("div", { class: "row-actions" }, actions(job),
        job.has_artifact ? h("button", { type: "button", class: "primary", onclick: () => downloadArtifact(api, job.id).catch(report) }, "Download file") : null)));
  }

  const reload = debounce(() => load().catch(report), 300);
  const stop = live.listen((message) => {
    if (message.type === "reconnected") { reload(); return; }
    if (message.topic !== "jobs" || !message.data?.job_id) return;
    const id = message.data.job_id;
    if (rows.some((row) => row.id === id) || id === selected) refreshJob(id).catch(report);
    else if (message.type === "job.queued" || (state && message.data.state === state)) reload();
  });
  load().catch(report);
  return stop;
}

async function downloadArtifact(api, id) {
  const { blob, name } = await api.download(`/api/v1/jobs/${id}/artifact`);
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// ---------------------------------------------------------------- Builds

function levels(modules) {
  const depth = new Map();
  const byName = new Map(modules.map((module) => [module.name, module]));
  const visit = (module, trail = new Set()) => {
    if (depth.has(module.name)) return depth.get(module.name);
    if (trail.has(module.name)) return 0;
    trail.add(module.name);
    const level = Math.max(-1, ...module.depends_on.map((name) => (byName.has(name) ? visit(byName.get(name), trail) : -1))) + 1;
    depth.set(module.name, level);
    return level;
  };
  modules.forEach((module) => visit(module));
  const columns = [];
  for (const module of modules) (columns[depth.get(module.name)] ||= []).push(module);
  return columns;
}

function buildsView({ api, live, root, param }) {
  let selected = param;
  let build = null;
  let rows = [];
  const filters = { project: "", status: "" };
  const list = h("div");
  const detail = h("div");
  const stats = h("div");
  const pages = pager(() => load().catch(report));
  const log = { nextOffset: 0, paused: false, buffer: [], element: h("pre", { class: "log", "aria-label": "Build log", tabindex: "0" }) };
  const projectInput = h("input", { name: "project", placeholder: "any project" });
  const statusSelect = h("select", { name: "status" }, h("option", { value: "" }, "any"), BUILD_STATUSES.map((s) => h("option", { value: s }, s)));
  const filterForm = h("form", { class: "toolbar", role: "search", onsubmit: (event) => {
    event.preventDefault();
    filters.project = projectInput.value.trim();
    filters.status = statusSelect.value;
    pages.reset();
    load().catch(report);
  } }, h("label", {}, "Project", projectInput), h("label", {}, "Status", statusSelect), h("button", { type: "submit" }, "Filter"));
  clear(root, h("h2", {}, "Builds"), filterForm,
    h("div", { class: "split" }, h("div", {}, list, pages.element), h("div", {}, detail)),
    section("Statistics", stats));

  function renderList() {
    clear(list, table([
      { label: "Project", cell: (b) => h("a", { href: `#/builds/${b.id}`, onclick: (event) => { event.preventDefault(); select(b.id); } }, b.project) },
      { label: "Ref", cell: (b) => b.ref },
      { label: "Status", cell: (b) => badge(b.status) },
      { label: "Progress", cell: (b) => progress(b.progress, `Progress of ${b.project}`) },
      { label: "Duration", num: true, cell: (b) => duration(b.duration_ms) },
      { label: "Created", cell: (b) => time(b.created_at) },
    ], rows, { caption: "Builds", onRow: (b) => select(b.id), selected: (b) => b.id === selected }));
    paintBars(list);
  }

  async function load() {
    const page = await api.get(`/api/v1/builds${query({ ...filters, limit: 50, cursor: pages.cursor })}`);
    rows = page.items;
    pages.update(page);
    renderList();
    if (selected && !build) await showBuild(selected);
  }

  async function loadStats() {
    const [summary, modules] = await Promise.all([api.get("/api/v1/builds/stats/overview"), api.get("/api/v1/builds/stats/modules")]);
    const rate = (value) => (value === null || value === undefined ? "—" : `${Math.round(value * 100)}%`);
    clear(stats, facts([
      ["Builds", summary.total], ["Success rate", rate(summary.success_rate)],
      ["Duration p50 / p95", `${duration(summary.duration_ms.p50)} / ${duration(summary.duration_ms.p95)}`],
      ["Queued p50 / p95", `${duration(summary.queued_ms.p50)} / ${duration(summary.queued_ms.p95)}`],
    ]), h("h4", {}, "Modules"), table([
      { label: "Project", cell: (m) => m.project }, { label: "Module", cell: (m) => m.module },
      { label: "Runs", num: true, cell: (m) => m.runs }, { label: "Success", num: true, cell: (m) => rate(m.success_rate) },
      { label: "p50 / p95", num: true, cell: (m) => `${duration(m.duration_ms.p50)} / ${duration(m.duration_ms.p95)}` },
      { label: "Last", cell: (m) => badge(m.last_status) }, { label: "Flaky refs", num: true, cell: (m) => m.flaky },
    ], modules, { caption: "Module statistics" }));
  }

  function select(id) {
    selected = id;
    build = null;
    renderList();
    showBuild(id).catch(report);
  }

  async function showBuild(id) {
    build = await api.get(`/api/v1/builds/${id}`);
    log.nextOffset = 0;
    log.buffer = [];
    log.element.replaceChildren();
    renderBuild();
    await readLog();
  }

  function appendLines(lines) {
    const fresh = lines.filter((line) => line.seq >= log.nextOffset);
    if (!fresh.length) return;
    log.nextOffset = fresh[fresh.length - 1].seq + 1;
    if (log.paused) { log.buffer.push(...fresh); return; }
    writeLines(fresh);
  }

  function writeLines(lines) {
    for (const line of lines) {
      log.element.append(h("span", { class: line.stream, dataset: { seq: line.seq } }, `[${line.module || "build"}] ${line.text}\n`));
    }
    log.element.scrollTop = log.element.scrollHeight;
  }

  async function readLog() {
    // Pages of at most 5,000 lines; a short page is the end (live `build.log` events carry on from there).
    for (let pagesRead = 0; pagesRead < 100; pagesRead++) {
      const page = await api.get(`/api/v1/builds/${selected}/logs?offset=${log.nextOffset}`);
      appendLines(page.lines);
      log.nextOffset = Math.max(log.nextOffset, page.next_offset);
      if (page.lines.length < 5000) break;
    }
  }

  function renderBuild() {
    const finished = !["queued", "running"].includes(build.status);
    const follow = h("input", { type: "checkbox", checked: !log.paused, onchange: (event) => {
      log.paused = !event.target.checked;
      if (!log.paused) { writeLines(log.buffer); log.buffer = []; }
    } });
    clear(detail, h("section", { class: "card", "aria-label": "Build detail" },
      h("h3", {}, `Build ${build.project} @ ${build.ref}`),
      facts([["Id", h("code", {}, build.id)], ["Status", badge(build.status)], ["Progress", `${build.progress}%`],
        ["Created", time(build.created_at)], ["Duration", duration(build.duration_ms)], ["Queued for", duration(build.queued_ms)]]),
      !finished ? h("div", { class: "row-actions" }, h("button", { type: "button", class: "danger",
        onclick: () => confirmThen(`Cancel build ${build.project}?`, () => api.post(`/api/v1/builds/${build.id}/cancel`)).catch(report) }, "Cancel build")) : null,
      h("h4", {}, "Modules"),
      h("div", { class: "dag", role: "list", "aria-label": "Modules by dependency level" }, levels(build.modules).map((column, index) =>
        h("div", { class: "level", role: "group", "aria-label": `Level ${index + 1}` }, column.map((module) =>
          h("div", { class: `module ${module.status}`, role: "listitem", dataset: { module: module.name } },
            h("strong", {}, module.name), " ", badge(module.status),
            h("div", { class: "deps" }, module.depends_on.length ? `after ${module.depends_on.join(", ")}` : "no dependency"),
            h("div", { class: "deps" }, `${duration(module.duration_ms)} · attempt ${module.attempt}${module.exit_code !== null && module.exit_code !== undefined ? ` · exit ${module.exit_code}` : ""}`),
            module.message ? h("div", { class: "deps" }, module.message) : null,
            finished && FINISHED_MODULE.includes(module.status) ? h("button", { type: "button",
              onclick: () => confirmThen(`Run module ${module.name} again?`, () => api.post(`/api/v1/builds/${build.id}/modules/${encodeURIComponent(module.name)}/retry`)).catch(report) },
            "Retry module") : null))))),
      h("h4", {}, "Log"),
      h("label", { class: "inline" }, follow, "Follow live (untick to pause)"),
      log.element));
  }

  const refreshBuild = debounce(async () => {
    if (!selected) return;
    build = await api.get(`/api/v1/builds/${selected}`);
    const index = rows.findIndex((row) => row.id === build.id);
    if (index >= 0) { rows[index] = build; renderList(); }
    renderBuild();
  }, 150);
  const reload = debounce(() => { load().catch(report); loadStats().catch(report); }, 400);
  const stop = live.listen((message) => {
    if (message.type === "reconnected") {
      reload();
      if (selected) { refreshBuild(); readLog().catch(report); }
      return;
    }
    if (message.topic !== "builds") return;
    const id = message.data?.build_id;
    if (message.type === "build.log") { if (id === selected) appendLines(message.data.lines); return; }
    if (id === selected) refreshBuild();
    if (rows.some((row) => row.id === id) || message.type === "build.queued" || message.type.startsWith("build.")) reload();
  });
  load().catch(report);
  loadStats().catch(report);
  return stop;
}

// ---------------------------------------------------------------- Users

function usersView({ api, live, root }) {
  const filters = { q: "", role: "", active: "" };
  const list = h("div");
  const sessions = h("div");
  let rows = [];
  const pages = pager(() => load().catch(report));
  const search = h("input", { name: "q", type: "search", placeholder: "email or name" });
  const role = h("select", { name: "role" }, h("option", { value: "" }, "any"), h("option", { value: "user" }, "user"), h("option", { value: "admin" }, "admin"));
  const active = h("select", { name: "active" }, h("option", { value: "" }, "any"), h("option", { value: "true" }, "active"), h("option", { value: "false" }, "disabled"));
  const form = h("form", { class: "toolbar", role: "search", onsubmit: (event) => {
    event.preventDefault();
    Object.assign(filters, { q: search.value.trim(), role: role.value, active: active.value });
    pages.reset();
    load().catch(report);
  } }, h("label", {}, "Search", search), h("label", {}, "Role", role), h("label", {}, "Active", active), h("button", { type: "submit" }, "Search"));
  clear(root, h("h2", {}, "Users"), form, h("div", { class: "split" }, h("div", {}, list, pages.element), h("div", {}, sessions)));

  async function change(user, patch, message) {
    await confirmThen(message, async () => {
      await api.patch(`/api/v1/users/${user.id}`, patch);
      await load();
    });
  }

  async function load() {
    const page = await api.get(`/api/v1/users${query({ ...filters, limit: 50, cursor: pages.cursor })}`);
    rows = page.items;
    pages.update(page);
    clear(list, table([
      { label: "Email", cell: (u) => u.email },
      { label: "Name", cell: (u) => u.name || "—" },
      { label: "Role", cell: (u) => h("select", { "aria-label": `Role of ${u.email}`, onchange: (event) => {
        const value = event.target.value;
        event.target.value = u.role;
        change(u, { role: value }, `Make ${u.email} ${value === "admin" ? "an admin" : "a user"}?`).catch(report);
      } }, ["user", "admin"].map((name) => h("option", { value: name, selected: name === u.role }, name))) },
      { label: "Active", cell: (u) => h("input", { type: "checkbox", checked: u.active, "aria-label": `${u.email} may sign in`, onchange: (event) => {
        const value = event.target.checked;
        event.target.checked = u.active;
        change(u, { active: value }, `${value ? "Enable" : "Disable"} ${u.email}?`).catch(report);
      } }) },
      { label: "Created", cell: (u) => time(u.created_at) },
      { label: "", cell: (u) => h("button", { type: "button", onclick: () => showSessions(u).catch(report) }, "Sessions") },
    ], rows, { caption: "Users" }));
  }

  async function showSessions(user) {
    const list = await api.get(`/api/v1/users/${user.id}/sessions`);
    clear(sessions, h("section", { class: "card", "aria-label": "Sessions" }, h("h3", {}, `Sessions of ${user.email}`),
      table([
        { label: "Started", cell: (s) => time(s.started_at) },
        { label: "Refreshed", cell: (s) => time(s.refreshed_at) },
        { label: "Client", cell: (s) => `${s.user_agent || "?"} ${s.ip || ""}${s.current ? " (this one)" : ""}` },
        { label: "", cell: (s) => h("button", { type: "button", class: "danger", onclick: () => confirmThen("End this session?", async () => {
          await api.delete(`/api/v1/users/${user.id}/sessions/${s.id}`);
          await showSessions(user);
        }).catch(report) }, "End") },
      ], list, { caption: "Sessions" })));
  }

  const reload = debounce(() => load().catch(report), 300);
  const stop = live.listen((message) => { if (message.type === "reconnected" || message.topic === "users") reload(); });
  load().catch(report);
  return stop;
}

// ---------------------------------------------------------------- Audit

function auditView({ api, live, root }) {
  let action = "";
  const list = h("div");
  const pages = pager(() => load().catch(report));
  const select = h("select", { name: "action", onchange: (event) => { action = event.target.value; pages.reset(); load().catch(report); } },
    h("option", { value: "" }, "any"), AUDIT_ACTIONS.map((name) => h("option", { value: name }, name)));
  clear(root, h("h2", {}, "Audit log"), h("div", { class: "toolbar" }, h("label", {}, "Action", select)), list, pages.element);
  async function load() {
    const page = await api.get(`/api/v1/audit${query({ action, limit: 50, cursor: pages.cursor })}`);
    pages.update(page);
    clear(list, table([
      { label: "At", cell: (e) => time(e.at) }, { label: "Action", cell: (e) => e.action },
      { label: "Outcome", cell: (e) => badge(e.outcome === "success" ? "ok" : "error") },
      { label: "Actor", cell: (e) => (e.actor_id ? h("code", {}, e.actor_id.slice(0, 8)) : "—") },
      { label: "User", cell: (e) => (e.user_id ? h("code", {}, e.user_id.slice(0, 8)) : "—") },
      { label: "Address", cell: (e) => e.ip || "—" },
      { label: "Detail", cell: (e) => h("code", {}, JSON.stringify(e.detail)) },
    ], page.items, { caption: "Audit entries" }));
  }
  const reload = debounce(() => load().catch(report), 500);
  const stop = live.listen((message) => { if (message.type === "reconnected" || message.topic === "users") reload(); });
  load().catch(report);
  return stop;
}

// ---------------------------------------------------------------- System

function systemView({ api, live, root }) {
  const info = h("div");
  const database = h("div");
  const counts = h("div");
  const logs = h("pre", { class: "log", "aria-label": "Server log", tabindex: "0" });
  let level = "info";
  let following = true;
  let lastSeq = -1;
  const levelSelect = h("select", { name: "level", onchange: (event) => { level = event.target.value; loadLogs().catch(report); } },
    LEVELS.map((name) => h("option", { value: name, selected: name === level }, name)));
  const follow = h("input", { type: "checkbox", checked: true, onchange: (event) => { following = event.target.checked; live.followLogs(following); if (following) loadLogs().catch(report); } });
  clear(root, h("h2", {}, "System"), section("Server", info), section("Database", database), section("Counts", counts),
    section("Recent logs", h("div", { class: "toolbar" }, h("label", {}, "Lowest level", levelSelect), h("label", { class: "inline" }, follow, "Follow live")), logs));

  function writeRecord(record) {
    if (record.seq <= lastSeq || LEVELS.indexOf(record.level) < LEVELS.indexOf(level)) return;
    lastSeq = record.seq;
    const fields = Object.entries(record.fields || {}).map(([name, value]) => `${name}=${typeof value === "string" ? value : JSON.stringify(value)}`).join(" ");
    logs.append(h("span", { class: record.level === "error" ? "stderr" : record.level === "warn" ? "system" : null, dataset: { level: record.level } },
      `${record.at.slice(11, 23)} ${record.level.toUpperCase().padEnd(5)} ${record.target}: ${record.message} ${fields}\n`));
    while (logs.childElementCount > 1000) logs.firstChild.remove();
    logs.scrollTop = logs.scrollHeight;
  }

  async function loadLogs() {
    const records = await api.get(`/api/v1/system/logs${query({ level, limit: 300 })}`);
    logs.replaceChildren();
    lastSeq = -1;
    records.forEach(writeRecord);
  }

  async function load() {
    const [server, db, stats] = await Promise.all([api.get("/api/v1/system/info"), api.get("/api/v1/system/database"), api.get("/api/v1/system/stats")]);
    clear(info, facts([["Version", server.version], ["Uptime", ago(server.uptime_s)], ["Started", time(server.started_at)],
      ["Store", `${server.store.kind} (schema ${server.store.schema_version ?? "—"})`], ["Build executor", server.build_executor || "external only"],
      ["Workers", Object.entries(server.workers).map(([queue, n]) => `${queue}: ${n}`).join(", ") || "none"]]));
    clear(database, facts([["Kind", db.kind], ["Schema version", db.schema_version ?? "—"], ["Size", bytes(db.size_bytes)],
      ...Object.entries(db.details).map(([name, value]) => [name.replaceAll("_", " "), String(value)])]));
    clear(counts, h("h4", {}, "Users"), facts([["Total", stats.users.total], ["Active", stats.users.active], ["Admins", stats.users.admins]]),
      h("h4", {}, "Jobs"), statGrid("system-jobs", stats.jobs, JOB_STATES),
      h("h4", {}, "Builds"), statGrid("system-builds", stats.builds, BUILD_STATUSES),
      h("h4", {}, "Notifications"), statGrid("notifications", stats.notifications, ["pending", "sent", "failed"]));
  }

  const reload = debounce(() => load().catch(report), 1000);
  const stop = live.listen((message) => {
    if (message.type === "reconnected") { reload(); if (following) loadLogs().catch(report); return; }
    if (message.type === "log" && following) { writeRecord(message.data); return; }
    if (message.type === "log.lagged" && following) { loadLogs().catch(report); return; }
    if (message.topic) reload();
  });
  live.followLogs(true);
  load().catch(report);
  loadLogs().catch(report);
  return () => { live.followLogs(false); stop(); };
}

function report(error) {
  // Shown by the shell (unhandled rejections with a status become a toast); anything else is a bug.
  if (error && error.status) {
    const element = document.getElementById("toast");
    element.textContent = error.message;
    element.classList.add("show");
    setTimeout(() => element.classList.remove("show"), 3000);
    return;
  }
  console.error(error);
}

export const views = {
  overview: { title: "Overview", render: overview },
  queues: { title: "Queues", admin: true, render: queuesView },
  jobs: { title: "Jobs", render: jobsView },
  builds: { title: "Builds", render: buildsView },
  notifications: { title: "Notifications", admin: true,
    render: (context) => notificationsView({ ...context, report, pager, query, section, confirmThen }) },
  users: { title: "Users", admin: true, render: usersView },
  audit: { title: "Audit", admin: true, render: auditView },
  system: { title: "System", admin: true, render: systemView },
};
