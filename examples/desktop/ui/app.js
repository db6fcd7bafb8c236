// The window of TechHub's desktop app. It only calls the `techhub` plugin's commands: the session (and its
// tokens) live in Rust; this page learns who is signed in, never how.
'use strict';

const { invoke, Channel } = window.__TAURI__.core;
const { listen, emit } = window.__TAURI__.event;

const $ = (id) => document.getElementById(id);
const call = (command, args) => invoke(`plugin:techhub|${command}`, args);

let me = null;
let registering = false;
let selectedBuild = null;
const jobs = new Map();
const builds = new Map();

// --- status line -------------------------------------------------------------------------------------

function say(text) {
  $('status').textContent = text;
  $('status').className = '';
}

// Errors arrive as { kind, code, message, fields }: branch on `code`, show `message`.
function fail(error) {
  const message = error && error.message ? error.message : String(error);
  $('status').textContent = error && error.code ? `${message} (${error.code})` : message;
  $('status').className = 'error';
  if (error && error.code === 'not_signed_in') show(null);
}

function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function button(label, onClick, className) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  if (className) b.className = className;
  b.addEventListener('click', () => Promise.resolve().then(onClick).catch(fail));
  return b;
}

const short = (id) => String(id).slice(-8);

// Resolves once the page has painted its current content (the frame after the next one has started).
const afterPaint = () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));

// --- signing in --------------------------------------------------------------------------------------

function show(user) {
  me = user;
  $('auth').hidden = !!user;
  $('signed-in').hidden = !user;
  $('who').hidden = !user;
  if (!user) return;
  $('who-name').textContent = user.name ? `${user.name} <${user.email}>` : user.email;
  $('who-role').textContent = user.role;
  const admin = user.role === 'admin';
  $('admin').hidden = !admin;
  document.querySelectorAll('[data-export], #sample-build').forEach((b) => { b.hidden = !admin; });
  reload()
    .then(afterPaint)
    .then(() => emit('desktop:signed-in-view-shown', { email: user.email, jobs: jobs.size, builds: builds.size }))
    .catch(fail);
}

function setRegistering(on) {
  registering = on;
  $('auth-title').textContent = on ? 'Register' : 'Sign in';
  $('auth-submit').textContent = on ? 'Register' : 'Sign in';
  $('auth-toggle').textContent = on ? 'Have an account? Sign in' : 'No account yet? Register';
  $('name-field').hidden = !on;
}

async function submitAuth(event) {
  event.preventDefault();
  const form = new FormData($('sign-in-form'));
  const email = form.get('email');
  const password = form.get('password');
  if (registering) {
    await call('register', { email, password, name: form.get('name') || null });
    say('Registered; signing in…');
  }
  const user = await call('sign_in', { email, password });
  $('sign-in-form').reset();
  setRegistering(false);
  say(`Signed in as ${user.email}`);
  if (!me || me.id !== user.id) show(user); // the `techhub:session` event may have shown it already
}

// --- lists -------------------------------------------------------------------------------------------

async function reload() {
  const [jobPage, buildPage] = await Promise.all([call('list_jobs', {}), call('list_builds', {})]);
  jobs.clear();
  jobPage.items.forEach((job) => jobs.set(job.id, job));
  builds.clear();
  buildPage.items.forEach((build) => builds.set(build.id, build));
  renderJobs();
  renderBuilds();
  if (me && me.role === 'admin') await reloadUsers();
}

function renderJobs() {
  const body = $('jobs');
  body.replaceChildren();
  if (jobs.size === 0) {
    const row = document.createElement('tr');
    row.append(cell('No jobs yet.', 'muted'));
    body.append(row);
  }
  for (const job of jobs.values()) {
    const row = document.createElement('tr');
    const progress = document.createElement('progress');
    progress.max = 100;
    progress.value = job.progress ? job.progress.percent : 0;
    const progressCell = document.createElement('td');
    progressCell.append(progress, ` ${progress.value}%`);
    const actions = document.createElement('td');
    actions.className = 'actions';
    if (job.state === 'queued' || job.state === 'running') {
      actions.append(button('Cancel', () => call('cancel_job', { jobId: job.id }), 'secondary'));
    }
    if (job.state === 'succeeded' && job.artifact) {
      actions.append(button('Save file', () => saveExport(job.id)));
    }
    row.append(cell(short(job.id)), cell(job.kind), cell(job.state, `state-${job.state}`), progressCell, actions);
    body.append(row);
  }
}

function renderBuilds() {
  const body = $('builds');
  body.replaceChildren();
  if (builds.size === 0) {
    const row = document.createElement('tr');
    row.append(cell('No builds yet.', 'muted'));
    body.append(row);
  }
  for (const build of builds.values()) {
    const row = document.createElement('tr');
    const modules = build.modules.map((m) => `${m.name}: ${m.status}`).join(', ');
    const actions = document.createElement('td');
    actions.className = 'actions';
    actions.append(button('Log', () => openLog(build.id), 'secondary'));
    if (build.status === 'queued' || build.status === 'running') {
      actions.append(button('Cancel', () => call('cancel_build', { buildId: build.id }), 'secondary'));
    }
    row.append(cell(short(build.id)), cell(build.project), cell(build.status, `state-${build.status}`), cell(modules), actions);
    body.append(row);
  }
}

async function reloadUsers() {
  const page = await call('list_users', {});
  const body = $('users');
  body.replaceChildren();
  for (const user of page.items) {
    const row = document.createElement('tr');
    const actions = document.createElement('td');
    actions.className = 'actions';
    if (user.id !== me.id) {
      const role = user.role === 'admin' ? 'user' : 'admin';
      actions.append(
        button(`Make ${role}`, () => updateUser(user, { role }), 'secondary'),
        button(user.active ? 'Disable' : 'Enable', () => updateUser(user, { active: !user.active }), 'secondary'),
        button('Delete', () => call('delete_user', { userId: user.id }).then(reloadUsers), 'danger'),
      );
    }
    row.append(cell(user.email), cell(user.name || ''), cell(user.role), cell(user.active ? 'yes' : 'no', user.active ? 'state-active' : 'state-failed'), actions);
    body.append(row);
  }
}

async function updateUser(user, patch) {
  await call('update_user', { userId: user.id, patch, expectedVersion: user.version });
  await reloadUsers();
}

// --- actions -----------------------------------------------------------------------------------------

async function startExport(format) {
  const job = await call('start_export', { format });
  jobs.set(job.id, job);
  renderJobs();
  say(`Export ${short(job.id)} queued`);
}

async function saveExport(jobId) {
  const path = await call('save_export', { jobId });
  $('saved').hidden = false;
  $('saved').textContent = `Saved to ${path}`;
  say(`Saved to ${path}`);
}

async function sampleBuild() {
  const spec = {
    project: 'sample',
    modules: [
      { name: 'fetch', command: 'for i in 1 2 3; do echo fetching part $i; sleep 0.3; done' },
      { name: 'compile', command: 'echo compiling; sleep 1; echo done', depends_on: ['fetch'] },
      { name: 'test', command: 'echo 12 tests passed', depends_on: ['compile'] },
    ],
  };
  const build = await call('create_build', { spec });
  builds.set(build.id, build);
  renderBuilds();
  await openLog(build.id);
}

async function openLog(buildId) {
  selectedBuild = buildId;
  const page = await call('read_build_log', { buildId });
  $('log').hidden = false;
  $('log').textContent = page.lines.map(formatLine).join('');
}

const formatLine = (line) => `[${line.module || 'build'}] ${line.text}\n`;

// --- live updates ------------------------------------------------------------------------------------

async function refreshJob(id) {
  const page = await call('list_jobs', {});
  page.items.forEach((job) => jobs.set(job.id, job));
  if (!jobs.has(id)) return;
  renderJobs();
}

async function refreshBuilds() {
  const page = await call('list_builds', {});
  page.items.forEach((build) => builds.set(build.id, build));
  renderBuilds();
}

// Rare state changes: reload what changed.
listen('techhub:state', ({ payload }) => {
  if (!me) return;
  if (payload.topic === 'jobs') refreshJob(payload.subject).catch(fail);
  if (payload.topic === 'builds') refreshBuilds().catch(fail);
  if (payload.topic === 'users' && me.role === 'admin') reloadUsers().catch(fail);
  if (payload.type === 'job.succeeded') say(`Job ${short(payload.subject)} succeeded`);
});
// The session changed elsewhere (signed in, role changed, signed out or disabled): show it unless shown.
listen('techhub:session', ({ payload }) => {
  const same = payload && me && payload.id === me.id && payload.role === me.role;
  if (!same) show(payload);
});
listen('techhub:lagged', () => { if (me) reload().catch(fail); });

// Frequent ones (progress, log lines) through a channel.
const live = new Channel();
live.onmessage = (event) => {
  if (event.type === 'job.progress' && jobs.has(event.subject)) {
    const job = jobs.get(event.subject);
    job.progress = { percent: event.data.percent, message: event.data.message };
    renderJobs();
  } else if (event.type === 'build.log' && event.subject === selectedBuild) {
    $('log').textContent += event.data.lines.map(formatLine).join('');
  } else if (event.type === 'build.progress' || event.type === 'module.progress') {
    refreshBuilds().catch(fail);
  }
};

// --- start -------------------------------------------------------------------------------------------

$('sign-in-form').addEventListener('submit', (event) => submitAuth(event).catch(fail));
$('auth-toggle').addEventListener('click', (event) => { event.preventDefault(); setRegistering(!registering); });
$('sign-out').addEventListener('click', () => call('sign_out').then(() => say('Signed out')).catch(fail));
$('sample-build').addEventListener('click', () => sampleBuild().catch(fail));
document.querySelectorAll('[data-export]').forEach((b) => b.addEventListener('click', () => startExport(b.dataset.export).catch(fail)));

(async () => {
  await call('watch', { channel: live });
  const user = await call('current_user');
  if (user) return show(user);
  const autofill = window.__TECHHUB_AUTOFILL__;
  if (autofill) {
    // Demo and end-to-end aid: type the given credentials into the form and submit it, as a person would.
    const form = $('sign-in-form');
    form.elements.email.value = autofill.email;
    form.elements.password.value = autofill.password;
    form.requestSubmit();
  }
})().catch(fail);
