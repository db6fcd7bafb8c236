//! The plugin's commands through Tauri's mock runtime: each request goes through the real IPC path of a
//! window labelled `main`, with the app's real context (its capabilities and the `techhub` permissions), to
//! a hub on SQLite in a temporary folder with its workers running.
//!
//! Tests are plain `#[test]`s: the plugin starts its workers with Tauri's own async runtime, which cannot
//! be entered from inside another one.

use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tauri::ipc::{CallbackFn, InvokeBody, InvokeResponseBody};
use tauri::test::{INVOKE_KEY, MockRuntime, get_ipc_response, mock_builder};
use tauri::webview::InvokeRequest;
use tauri::{App, Listener, Manager, WebviewUrl, WebviewWindow, WebviewWindowBuilder};
use techhub_core::events::EventKind;
use techhub_core::jobs::{JobContext, JobError, JobHandler, WorkerConfig};
use techhub_core::model::{JobState, NewJob};
use techhub_core::users::{Registration, TransferFormat};
use techhub_core::{Actor, TechHub};
use techhub_desktop::plugin::{self, HubState, OpenedHub};
use techhub_store_sqlite::SqliteStore;

const ADMIN_EMAIL: &str = "admin@example.com";
const PASSWORD: &str = "correct horse battery staple";
/// How long to wait for something that happens in well under a second; only a hung app reaches it.
const PATIENCE: Duration = Duration::from_secs(60);

/// A job that runs until it is asked to stop: it keeps a worker (and a lease) busy.
struct WaitForStop;

#[async_trait]
impl JobHandler for WaitForStop {
    async fn run(&self, ctx: JobContext) -> Result<Value, JobError> {
        ctx.cancelled().await;
        Err(JobError::permanent("stopped"))
    }
}

struct Harness {
    app: App<MockRuntime>,
    window: WebviewWindow<MockRuntime>,
    /// What the plugin sent through the window's channels.
    channel: Receiver<Value>,
    /// The `techhub:state` events the app emitted.
    states: Receiver<Value>,
    exports: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().to_owned();
    let exports = data.join("exports");
    let exports_for_plugin = exports.clone();
    let (channel_sender, channel) = mpsc::channel();
    let channel_sender = Mutex::new(channel_sender);
    let app = mock_builder()
        // The mock webview runs no JavaScript: catch what the plugin sends to the window's channels.
        .channel_interceptor(move |_webview, _callback, _index, body| {
            if let InvokeResponseBody::Json(json) = body {
                let value = serde_json::from_str(json).expect("channel messages are JSON");
                let _ = channel_sender.lock().expect("not poisoned").send(value);
            }
            true
        })
        .plugin(plugin::init(move |_app| {
            let hub = TechHub::builder()
                .storage(SqliteStore::open(data.join("techhub.db"))?)
                .handler("desktop.wait", WaitForStop)
                .build()?;
            tauri::async_runtime::block_on(hub.users().ensure_admin(ADMIN_EMAIL, PASSWORD))?;
            let mut workers = WorkerConfig::default().queue("default", 2);
            workers.shutdown_grace = Duration::from_millis(50);
            workers.progress_interval = Duration::from_millis(1);
            Ok(OpenedHub { hub, workers: Some(workers), exports_dir: exports_for_plugin })
        }))
        .build(techhub_desktop::context())
        .expect("the app builds");
    let (state_sender, states) = mpsc::channel();
    let state_sender = Mutex::new(state_sender);
    app.listen_any(plugin::live::STATE_EVENT, move |event| {
        let value = serde_json::from_str(event.payload()).expect("events are JSON");
        let _ = state_sender.lock().expect("not poisoned").send(value);
    });
    let window = WebviewWindowBuilder::new(&app, "main", WebviewUrl::default()).build().expect("a window");
    Harness { app, window, channel, states, exports, _dir: dir }
}

impl Harness {
    /// Invokes `plugin:techhub|<command>` as the window's JavaScript would.
    fn invoke(&self, command: &str, args: Value) -> Result<Value, Value> {
        let request = InvokeRequest {
            cmd: format!("plugin:techhub|{command}"),
            callback: CallbackFn(0),
            error: CallbackFn(1),
            url: "tauri://localhost".parse().expect("a URL"),
            body: InvokeBody::Json(args),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_owned(),
        };
        get_ipc_response(&self.window, request).map(|body| body.deserialize::<Value>().expect("responses are JSON"))
    }

    fn ok(&self, command: &str, args: Value) -> Value {
        self.invoke(command, args).unwrap_or_else(|error| panic!("{command} failed: {error}"))
    }

    fn err(&self, command: &str, args: Value) -> Value {
        match self.invoke(command, args) {
            Ok(value) => panic!("{command} succeeded: {value}"),
            Err(error) => error,
        }
    }

    fn register_and_sign_in(&self, email: &str) -> Value {
        self.ok("register", json!({ "email": email, "password": PASSWORD, "name": "Someone" }));
        self.ok("sign_in", json!({ "email": email, "password": PASSWORD }))
    }

    fn hub(&self) -> TechHub {
        self.app.state::<HubState>().hub().clone()
    }

    /// Waits for the state event `kind` about `subject`, returning every state event seen before it.
    fn wait_for_state(&self, kind: &str, subject: &str) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let event = self.states.recv_timeout(PATIENCE).unwrap_or_else(|_| panic!("no {kind}; saw {seen:?}"));
            let done = event["type"] == kind && event["subject"] == subject;
            seen.push(event);
            if done {
                return seen;
            }
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        tauri::async_runtime::block_on(self.app.state::<HubState>().shutdown());
    }
}

#[test]
fn a_person_registers_signs_in_and_the_window_never_sees_a_token() {
    let harness = harness();
    assert_eq!(harness.ok("current_user", json!({})), Value::Null);
    let registered = harness.ok("register", json!({ "email": "ada@example.com", "password": PASSWORD, "name": "Ada" }));
    assert_eq!(registered["email"], "ada@example.com");
    assert_eq!(registered["role"], "user");

    let signed_in = harness.ok("sign_in", json!({ "email": "ada@example.com", "password": PASSWORD }));
    assert_eq!(signed_in["id"], registered["id"]);
    let text = signed_in.to_string();
    assert!(!text.contains("token") && !text.contains("eyJ"), "a token reached the window: {text}");
    assert_eq!(harness.ok("current_user", json!({}))["email"], "ada@example.com");
    assert_eq!(harness.ok("list_jobs", json!({}))["items"], json!([]));

    harness.ok("sign_out", json!({}));
    assert_eq!(harness.ok("current_user", json!({})), Value::Null);
    let after = harness.err("list_jobs", json!({}));
    assert_eq!((after["kind"].as_str(), after["code"].as_str()), (Some("unauthenticated"), Some("not_signed_in")));
}

#[test]
fn errors_arrive_with_the_core_kind_and_code() {
    let harness = harness();
    harness.ok("register", json!({ "email": "ada@example.com", "password": PASSWORD }));

    let taken = harness.err("register", json!({ "email": "ada@example.com", "password": PASSWORD }));
    assert_eq!((taken["kind"].as_str(), taken["code"].as_str()), (Some("conflict"), Some("email_taken")));

    let wrong = harness.err("sign_in", json!({ "email": "ada@example.com", "password": "not the password" }));
    assert_eq!(
        (wrong["kind"].as_str(), wrong["code"].as_str()),
        (Some("unauthenticated"), Some("invalid_credentials"))
    );

    let malformed = harness.err("register", json!({ "email": "not an address", "password": PASSWORD }));
    assert_eq!(malformed["kind"], "invalid_input");
    assert_eq!(malformed["fields"][0]["field"], "email", "{malformed}");

    // A plain user may not export users: the core says so, the command passes it on.
    harness.ok("sign_in", json!({ "email": "ada@example.com", "password": PASSWORD }));
    let refused = harness.err("start_export", json!({ "format": "csv" }));
    assert_eq!((refused["kind"].as_str(), refused["code"].as_str()), (Some("forbidden"), Some("forbidden")));
}

#[test]
fn a_user_is_refused_another_users_job_and_never_hears_of_it() {
    let harness = harness();
    let hub = harness.hub();
    let bob = harness.register_and_sign_in("bob@example.com");
    // Ada's job is queued and started while Bob is signed in: the bus carries its events past Bob's window.
    let ada = tauri::async_runtime::block_on(hub.users().register(Registration {
        email: "ada@example.com".to_owned(),
        password: PASSWORD.to_owned(),
        name: None,
    }))
    .expect("registered");
    // Users cannot enqueue jobs directly: the app (the system) does it on Ada's behalf.
    let spec = NewJob { created_by: Some(ada.id), ..NewJob::new("desktop.wait", json!({})) };
    let ada_job = tauri::async_runtime::block_on(hub.jobs().enqueue(&Actor::System, spec)).expect("enqueued").id;

    harness.ok("watch", json!({ "channel": "__CHANNEL__:7" }));
    let job_id = ada_job.to_string();
    for command in ["cancel_job", "save_export"] {
        let refused = harness.err(command, json!({ "jobId": job_id }));
        assert_eq!(refused["kind"], "not_found", "{command}: {refused}");
    }
    assert_eq!(harness.ok("list_jobs", json!({}))["items"], json!([]));
    let still = tauri::async_runtime::block_on(hub.jobs().get(&Actor::System, ada_job)).expect("the job");
    assert!(!still.cancel_requested && still.state != JobState::Cancelled, "{still:?}");

    // Bob's own build's events reach him; Ada's job's events, published before them, never did.
    let spec = json!({ "project": "bobs", "modules": [{ "name": "one" }] });
    let build = harness.ok("create_build", json!({ "spec": spec }));
    assert_eq!(build["created_by"], bob["id"]);
    let seen = harness.wait_for_state("build.queued", build["id"].as_str().expect("an id"));
    assert!(seen.iter().all(|event| event["subject"] != job_id.as_str()), "Bob saw Ada's job: {seen:?}");
}

#[test]
fn an_export_streams_its_progress_to_the_channel_and_its_file_is_saved() {
    let harness = harness();
    // Enough users that the export runs across several progress ticks (the runtime publishes progress at
    // its interval, 1 ms here, not at every report).
    let hub = harness.hub();
    let csv: String = std::iter::once("email,name,role\n".to_owned())
        .chain((0..2000).map(|n| format!("user{n}@example.com,User {n},user\n")))
        .collect();
    let mut bus = hub.subscribe();
    let import = tauri::async_runtime::block_on(hub.users().import(&Actor::System, TransferFormat::Csv, csv))
        .expect("an import");
    tauri::async_runtime::block_on(async {
        loop {
            let event = bus.recv().await.expect("the bus");
            if event.subject == *import.id.as_uuid() && event.kind == EventKind::JobSucceeded {
                break;
            }
        }
    });

    harness.ok("sign_in", json!({ "email": ADMIN_EMAIL, "password": PASSWORD }));
    harness.ok("watch", json!({ "channel": "__CHANNEL__:7" }));
    let job = harness.ok("start_export", json!({ "format": "csv" }));
    let job_id = job["id"].as_str().expect("an id").to_owned();

    let states = harness.wait_for_state("job.succeeded", &job_id);
    assert!(states.iter().any(|event| event["type"] == "job.started" && event["subject"] == job_id.as_str()));
    // The bridge forwards the bus in order: the job's progress went to the channel before its success event.
    let streamed: Vec<Value> = harness.channel.try_iter().collect();
    let progress: Vec<&Value> = streamed
        .iter()
        .filter(|event| event["type"] == "job.progress" && event["subject"] == job_id.as_str())
        .collect();
    assert!(!progress.is_empty(), "no progress of the export on the channel: {streamed:?}");
    assert!(progress.iter().all(|event| event["data"]["percent"].is_u64()), "{progress:?}");
    assert!(states.iter().all(|event| event["type"] != "job.progress"), "progress came as a state event");

    let path = harness.ok("save_export", json!({ "jobId": job_id }));
    let path = std::path::PathBuf::from(path.as_str().expect("a path"));
    assert!(path.starts_with(&harness.exports), "{path:?}");
    let saved = std::fs::read_to_string(&path).expect("the saved file");
    assert!(saved.contains(ADMIN_EMAIL), "{saved}");
}

#[test]
fn an_admin_manages_users_and_a_plain_user_may_not() {
    let harness = harness();
    let ada = harness.register_and_sign_in("ada@example.com");
    let refused = harness.err("list_users", json!({}));
    assert_eq!(refused["kind"], "forbidden");

    harness.ok("sign_in", json!({ "email": ADMIN_EMAIL, "password": PASSWORD }));
    let users = harness.ok("list_users", json!({}));
    assert_eq!(users["items"].as_array().map(Vec::len), Some(2), "{users}");
    let patch = json!({ "userId": ada["id"], "patch": { "role": "admin" }, "expectedVersion": ada["version"] });
    assert_eq!(harness.ok("update_user", patch.clone())["role"], "admin");
    let stale = harness.err("update_user", patch);
    assert_eq!(stale["code"], "version_mismatch", "{stale}");
    harness.ok("delete_user", json!({ "userId": ada["id"] }));
    assert_eq!(harness.ok("list_users", json!({}))["items"].as_array().map(Vec::len), Some(1));
}

#[test]
fn shutting_down_stops_the_workers_and_releases_running_jobs() {
    let harness = harness();
    let hub = harness.hub();
    let mut bus = hub.subscribe();
    let job =
        tauri::async_runtime::block_on(hub.jobs().enqueue(&Actor::System, NewJob::new("desktop.wait", json!({}))))
            .expect("enqueued");
    tauri::async_runtime::block_on(async {
        loop {
            let event = bus.recv().await.expect("the bus");
            if event.subject == *job.id.as_uuid() && event.kind == EventKind::JobStarted {
                break;
            }
        }
    });
    tauri::async_runtime::block_on(harness.app.state::<HubState>().shutdown());
    let released = tauri::async_runtime::block_on(hub.jobs().get(&Actor::System, job.id)).expect("the job");
    assert_eq!(released.state, JobState::Queued, "{released:?}");
    assert_eq!(released.lease_holder, None);
    assert_eq!(released.attempt, job.attempt, "a released job is not charged an attempt");
}
