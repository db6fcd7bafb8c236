// The dashboard in a real browser: Debian's chromium driven by playwright-core (never a downloaded browser).
// Needs a running example server with TECHHUB_BUILD_EXECUTOR=process: BASE, ADMIN_EMAIL, ADMIN_PASSWORD, and
// SHOTS (where each view's screenshot goes). scripts/browser-tests.sh sets all of that up.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BASE = process.env.BASE;
const ADMIN = { email: process.env.ADMIN_EMAIL, password: process.env.ADMIN_PASSWORD };
const SHOTS = process.env.SHOTS;
const WAIT = 20000;
mkdirSync(SHOTS, { recursive: true });

let context;
let profile;
const problems = [];
/** Every URL any page asked for, WebSockets included: a token must never be in one. */
const urls = [];

async function api(method, path, token, body) {
  const response = await fetch(`${BASE}${path}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function token(account) {
  return (await api("POST", "/api/v1/auth/login", null, account)).access_token;
}

/** A page whose console errors, failed requests and uncaught exceptions are all recorded. */
async function newPage(name) {
  // Every page has its own tokens (kept in page memory), so pages of one context are separate sessions.
  const page = await context.newPage();
  page.on("console", (message) => { if (message.type() === "error") problems.push(`${name} console: ${message.text()}`); });
  page.on("pageerror", (error) => problems.push(`${name} page error: ${error.message}`));
  page.on("dialog", (dialog) => dialog.accept());
  page.on("request", (request) => urls.push(request.url()));
  page.on("websocket", (socket) => urls.push(socket.url()));
  return page;
}

async function signIn(page, account) {
  await page.goto(`${BASE}/dashboard/`);
  await page.getByLabel("Email").fill(account.email);
  await page.getByLabel("Password").fill(account.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#live[data-state=on]").waitFor({ timeout: WAIT });
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

function jobRow(page, id) {
  return page.locator(`tr[data-id="${id}"]`);
}

before(async () => {
  profile = mkdtempSync(join(tmpdir(), "techhub-chromium-"));
  // A fresh profile directory each run (Playwright passes it as --user-data-dir).
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

test("sign-in page, then the overview with live counts and the throughput chart", async () => {
  const page = await newPage("overview");
  await page.goto(`${BASE}/dashboard/`);
  await shot(page, "00-sign-in");
  await signIn(page, ADMIN);
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  await page.locator("figure.chart svg").waitFor({ timeout: WAIT });
  await page.locator("[data-stat='jobs:queued']").waitFor();
  await shot(page, "01-overview");
  // The tokens live in the page's memory only.
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
  assert.equal(stored, "{}{}", "nothing kept in storage or cookies");
  await page.close();
});

test("a job goes from queued to succeeded live, and a queued one is cancelled", async () => {
  const admin = await token(ADMIN);
  const page = await newPage("jobs");
  await signIn(page, ADMIN);
  await page.goto(`${BASE}/dashboard/#/jobs`);
  await page.getByRole("heading", { name: "Jobs" }).waitFor();
  await page.locator("table").first().waitFor();
  const marker = await page.evaluate(() => { window.__notReloaded = true; return true; });
  assert.ok(marker);

  // Due in three seconds: the page shows it queued first, then succeeded, from events alone.
  const runAt = new Date(Date.now() + 3000).toISOString();
  const { job_id: soon } = await api("POST", "/api/v1/jobs", admin, { kind: "users.export", payload: { format: "csv" }, run_at: runAt });
  const row = jobRow(page, soon);
  await row.locator(".badge.queued").waitFor({ timeout: WAIT });
  await shot(page, "02-jobs-queued");
  await row.locator(".badge.succeeded").waitFor({ timeout: WAIT });
  assert.equal(await page.evaluate(() => window.__notReloaded), true, "the page was not reloaded");
  await row.getByRole("link").click();
  await page.getByRole("button", { name: "Download file" }).waitFor({ timeout: WAIT });

  // Due in an hour: cancelled from the page, with the confirmation accepted.
  const later = new Date(Date.now() + 3600 * 1000).toISOString();
  const { job_id: waiting } = await api("POST", "/api/v1/jobs", admin, { kind: "users.export", payload: { format: "json" }, run_at: later });
  const waitingRow = jobRow(page, waiting);
  await waitingRow.getByRole("button", { name: /Cancel job/ }).click();
  await waitingRow.locator(".badge.cancelled").waitFor({ timeout: WAIT });
  const job = await api("GET", `/api/v1/jobs/${waiting}`, admin);
  assert.equal(job.state, "cancelled");
  // The tabs answer the keyboard: from "all", the right arrow twice reaches "running".
  await page.getByRole("tab", { name: "all" }).focus();
  await page.keyboard.press("ArrowRight");
  await page.keyboard.press("ArrowRight");
  assert.equal(await page.getByRole("tab", { name: "running" }).getAttribute("aria-selected"), "true");
  await page.getByRole("tab", { name: "succeeded" }).click();
  await jobRow(page, soon).waitFor({ timeout: WAIT });
  await jobRow(page, soon).getByRole("link").click();
  await page.getByRole("heading", { name: /^Job users.export/ }).waitFor();
  await page.getByLabel("Payload").getByText('"format": "csv"').waitFor();
  await shot(page, "03-jobs");
  await page.close();
});

test("a dropped socket reconnects and catches up by reading the current state", async () => {
  const admin = await token(ADMIN);
  const page = await newPage("reconnect");
  // The page's socket goes through the test, which can drop it and hold the next attempts.
  let online = true;
  let current = null;
  const held = [];
  await page.routeWebSocket(/\/api\/v1\/events/, (socket) => {
    if (!online) { held.push(socket); return; }
    current = socket;
    socket.connectToServer();
  });
  await signIn(page, ADMIN);
  await page.goto(`${BASE}/dashboard/#/jobs`);
  await page.locator("table").first().waitFor();
  online = false;
  await current.close({ code: 1012, reason: "dropped by the test" });
  await page.locator("#live[data-state=connecting]").waitFor({ timeout: WAIT });
  // Done while the page hears nothing: it must learn of it after reconnecting.
  const { job_id: missed } = await api("POST", "/api/v1/users/export", admin, { format: "json" });
  await api("GET", `/api/v1/jobs/${missed}`, admin);
  assert.equal(await jobRow(page, missed).count(), 0, "the page cannot know of it yet");
  online = true;
  for (const socket of held) await socket.close({ code: 1012, reason: "try again" });
  await page.locator("#live[data-state=on]").waitFor({ timeout: WAIT });
  await jobRow(page, missed).waitFor({ timeout: WAIT });
  await page.close();
});

test("a narrow window keeps every view usable", async () => {
  const page = await newPage("narrow");
  await page.setViewportSize({ width: 390, height: 844 });
  await signIn(page, ADMIN);
  await page.goto(`${BASE}/dashboard/#/jobs`);
  await page.locator("table").first().waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow} px`);
  await shot(page, "11-narrow-jobs");
  await page.close();
});

test("a build's log is followed live, with its module DAG", async () => {
  const admin = await token(ADMIN);
  const page = await newPage("builds");
  await signIn(page, ADMIN);
  const build = await api("POST", "/api/v1/builds", admin, {
    project: "shop", ref: "main",
    modules: [
      { name: "compile", command: "echo compiling; sleep 1; echo compiled" },
      { name: "test", command: "for i in 1 2 3 4 5; do echo test line $i; sleep 0.4; done", depends_on: ["compile"] },
      { name: "package", command: "echo packaged", depends_on: ["test"] },
    ],
  });
  await page.goto(`${BASE}/dashboard/#/builds/${build.id}`);
  const log = page.getByLabel("Build log");
  await log.getByText("test line 1").waitFor({ timeout: WAIT });
  await log.getByText("test line 5").waitFor({ timeout: WAIT });
  await log.getByText("[package] packaged").waitFor({ timeout: WAIT });
  await page.locator(".dag .module.succeeded[data-module=package]").waitFor({ timeout: WAIT });
  const lines = await log.locator("span").evaluateAll((spans) => spans.map((span) => Number(span.dataset.seq)));
  assert.deepEqual(lines, [...lines].sort((a, b) => a - b), "lines in order");
  assert.equal(new Set(lines).size, lines.length, "no line twice");
  await page.locator("tr.selected .badge.succeeded").waitFor({ timeout: WAIT });
  await shot(page, "04-builds");
  await page.close();
});

test("the queues, users, audit and system views (logs followed live)", async () => {
  const admin = await token(ADMIN);
  const page = await newPage("admin views");
  await signIn(page, ADMIN);
  await page.goto(`${BASE}/dashboard/#/queues`);
  await page.getByRole("cell", { name: "default" }).first().waitFor({ timeout: WAIT });
  await shot(page, "05-queues");
  await page.goto(`${BASE}/dashboard/#/users`);
  await page.getByRole("cell", { name: ADMIN.email, exact: true }).waitFor({ timeout: WAIT });
  await page.getByRole("button", { name: "Sessions" }).first().click();
  await page.getByRole("heading", { name: /^Sessions of/ }).waitFor({ timeout: WAIT });
  await shot(page, "06-users");
  await page.goto(`${BASE}/dashboard/#/audit`);
  await page.getByRole("cell", { name: "login.succeeded" }).first().waitFor({ timeout: WAIT });
  await shot(page, "07-audit");
  await page.goto(`${BASE}/dashboard/#/system`);
  await page.getByText("Schema version").first().waitFor({ timeout: WAIT });
  const serverLog = page.getByLabel("Server log");
  await serverLog.locator("span").first().waitFor({ timeout: WAIT });
  // A job run now logs its finish: the record arrives over the socket.
  const { job_id } = await api("POST", "/api/v1/users/export", admin, { format: "csv" });
  await serverLog.getByText(job_id).first().waitFor({ timeout: WAIT });
  await shot(page, "08-system");
  await page.close();
});

test("the notifications view: an endpoint created, its secret rotated, disabled; the delivery log", async () => {
  const page = await newPage("notifications");
  await signIn(page, ADMIN);
  await page.goto(`${BASE}/dashboard/#/notifications`);
  await page.getByRole("heading", { name: "Notifications" }).waitFor();
  await page.getByLabel("URL").fill("http://127.0.0.1:9/techhub-hook");
  await page.getByLabel("Description").fill("browser test");
  await page.getByRole("button", { name: "Create endpoint" }).click();
  await page.getByText(/shown this once/).waitFor({ timeout: WAIT });
  const first = await page.locator("code.mono").textContent();
  assert.match(first, /^whsec_/);
  const row = page.locator("tr", { hasText: "http://127.0.0.1:9/techhub-hook" });
  await row.getByRole("button", { name: "Rotate secret" }).click();
  await page.getByText(/shown this once/).waitFor({ timeout: WAIT });
  await page.waitForFunction((before) => document.querySelector("code.mono")?.textContent !== before, first, { timeout: WAIT });
  await row.getByRole("button", { name: "Disable" }).click();
  await row.getByRole("button", { name: "Enable" }).waitFor({ timeout: WAIT });
  await page.getByRole("table", { name: "Deliveries per channel" }).waitFor();
  await shot(page, "12-notifications");
  await page.close();
});

test("a user sees only its own jobs, and no admin view", async () => {
  const admin = await token(ADMIN);
  const { job_id: adminJob } = await api("POST", "/api/v1/users/export", admin, { format: "csv" });
  const user = { email: `browser-${Date.now()}@example.com`, password: "a browser test passphrase" };
  await api("POST", "/api/v1/auth/register", null, { ...user, name: "Browser" });
  // Its own build (an external executor's: users give no commands). Users cannot enqueue jobs over HTTP, so its
  // job list holds only what the server did for it; the admin's jobs must not be there.
  const userToken = await token(user);
  const own = await api("POST", "/api/v1/builds", userToken, { project: "mine", modules: [{ name: "lint" }] });
  const page = await newPage("user");
  await signIn(page, user);
  for (const name of ["Users", "System", "Audit", "Queues", "Notifications"]) {
    assert.equal(await page.getByRole("link", { name, exact: true }).isVisible(), false, `${name} is hidden from users`);
  }
  await page.goto(`${BASE}/dashboard/#/jobs`);
  await page.getByRole("heading", { name: "Jobs" }).waitFor();
  await page.locator("table tbody tr").first().waitFor({ timeout: WAIT });
  assert.equal(await jobRow(page, adminJob).count(), 0, "the admin's job is not listed");
  const ids = await page.locator("table tbody tr[data-id]").evaluateAll((rows) => rows.map((row) => row.dataset.id));
  for (const id of ids) {
    const job = await api("GET", `/api/v1/jobs/${id}`, userToken);
    assert.ok(job.id === id, "every listed job is readable by the user");
  }
  // Asking for another user's job by its address shows nothing of it.
  await page.goto(`${BASE}/dashboard/#/jobs/${adminJob}`);
  await page.locator("#toast.show").waitFor({ timeout: WAIT });
  assert.equal(await page.getByRole("heading", { name: /^Job / }).count(), 0);
  await shot(page, "09-user-jobs");
  // Builds too: its own, not the admin's.
  await page.goto(`${BASE}/dashboard/#/builds`);
  await jobRow(page, own.id).waitFor({ timeout: WAIT });
  const builds = await page.locator("table tbody tr[data-id]").evaluateAll((rows) => rows.map((row) => row.dataset.id));
  assert.deepEqual(builds, [own.id], "only the user's build is listed");
  await page.close();
});

test("the API reference page renders the served document", async () => {
  const page = await newPage("docs");
  await page.goto(`${BASE}/docs/`);
  await page.getByText("TechHub API").first().waitFor({ timeout: WAIT });
  await page.locator(".opblock-tag").first().waitFor({ timeout: WAIT });
  await shot(page, "10-docs");
  await page.close();
});

test("no token ever appears in a URL", () => {
  assert.ok(urls.some((url) => url.includes("/api/v1/events")), "the pages opened the events socket");
  const leaking = urls.filter((url) => /eyJ|access_token|refresh_token/.test(url));
  assert.deepEqual(leaking, []);
});

test("no console errors, page errors or failed requests on any page", () => {
  // The deliberate 404 of the last user test is an API answer shown in the page, not a browser error: the
  // console reports failed fetches as errors, so that one request is the only one allowed.
  const unexpected = problems.filter((text) => !/Failed to load resource: the server responded with a status of 404/.test(text));
  assert.deepEqual(unexpected, []);
});
