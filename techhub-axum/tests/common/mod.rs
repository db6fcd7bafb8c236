//! The shared harness of the black-box suite: a real server on `127.0.0.1:0`, an admin, accounts, a real HTTP
//! client and a real WebSocket client, and assertions on problem responses.
//!
//! The store is a fresh memory store, with `TECHHUB_TEST_STORE=sqlite` a SQLite file in a temporary
//! directory (the default store of every real user), or with `TECHHUB_TEST_STORE=postgres` a fresh database
//! on the PostgreSQL test server (the one `TECHHUB_TEST_POSTGRES_URL` names, or one the store's test harness
//! starts for the test process): the test script runs the suite on all three.

#![allow(dead_code)]

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use techhub_axum::HttpConfig;
use techhub_core::builds::ProcessExecutor;
use techhub_core::clock::ManualClock;
use techhub_core::config::{Argon2Params, AuthConfig};
use techhub_core::jobs::{HandlerOptions, JobError, WorkerConfig, WorkerHandle, handler_fn};
use techhub_core::notify::OutboxNotifier;
use techhub_core::storage::DynStorage;
use techhub_core::users::Registration;
use techhub_core::{Config, TechHub};
use techhub_store_memory::MemoryStore;
use techhub_store_postgres::test_server::TestServer;
use techhub_store_postgres::{PostgresOptions, PostgresStore};
use techhub_store_sqlite::SqliteStore;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The password of every account the harness creates.
pub(crate) const PASSWORD: &str = "correct horse battery staple";
/// The admin's address.
pub(crate) const ADMIN_EMAIL: &str = "admin@example.com";
/// The `detail` of the router's own 404 (no route at all), as opposed to a handler's 404.
pub(crate) const NO_ROUTE_DETAIL: &str = "no resource at this path";
/// The base of links in emails.
pub(crate) const PUBLIC_URL: &str = "https://app.test";
/// How long any wait in the suite may take before the test fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// A job kind that returns its payload at once.
pub(crate) const ECHO: &str = "test.echo";
/// A job kind that runs until it is cancelled.
pub(crate) const BLOCK: &str = "test.block";
/// A job kind that fails for good on its only attempt.
pub(crate) const FAIL: &str = "test.fail";

/// A WebSocket client over a plain TCP stream.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How to start a server.
pub(crate) struct Options {
    /// The HTTP settings.
    pub(crate) http: HttpConfig,
    /// A manual clock for the hub (time-dependent tests); the system clock otherwise.
    pub(crate) clock: Option<ManualClock>,
    /// Whether to run workers (`default` and `email` queues) in the process.
    pub(crate) workers: bool,
    /// The store (by default a fresh one of the kind `TECHHUB_TEST_STORE` names: `memory`, `sqlite` or
    /// `postgres`).
    pub(crate) store: Option<DynStorage>,
    /// The hub's public URL ([`PUBLIC_URL`] by default).
    pub(crate) public_url: Option<&'static str>,
    /// Whether module commands run here (a process executor, and workers on the `builds` queue).
    pub(crate) build_executor: bool,
    /// Notification settings (webhook address policy, retry schedule); the defaults otherwise.
    pub(crate) notify: Option<techhub_core::NotifyConfig>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            http: HttpConfig::default(),
            clock: None,
            workers: true,
            store: None,
            public_url: None,
            build_executor: false,
            notify: None,
        }
    }
}

/// A signed-in account.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    /// The user's id.
    pub(crate) id: String,
    /// The user's email.
    pub(crate) email: String,
    /// A live access token.
    pub(crate) access: String,
    /// Its refresh token.
    pub(crate) refresh: String,
}

/// A running server and the hub behind it.
pub(crate) struct Server {
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
    /// `127.0.0.1:<port>`.
    pub(crate) addr: SocketAddr,
    /// The hub the router serves.
    pub(crate) hub: TechHub,
    /// Where emails land.
    pub(crate) outbox: OutboxNotifier,
    /// The HTTP client (no proxy: nothing leaves 127.0.0.1).
    pub(crate) http: reqwest::Client,
    /// The admin, signed in.
    pub(crate) admin: Account,
    workers: Option<WorkerHandle>,
    serving: tokio::task::JoinHandle<()>,
    /// What the default store lives in (a SQLite file's directory, a PostgreSQL database), removed with the
    /// server.
    _data: Option<Box<dyn Any + Send>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

/// A server with default settings and workers.
pub(crate) async fn start() -> Server {
    start_with(Options::default()).await
}

/// A server with `options`.
pub(crate) async fn start_with(options: Options) -> Server {
    let (store, data) = match options.store.clone() {
        Some(store) => (store, None),
        None => fresh_store().await,
    };
    let outbox = OutboxNotifier::new();
    let mut auth = AuthConfig::default();
    // Cheap hashing: the rules are the same, only the cost differs.
    auth.argon2 = Argon2Params { memory_kib: 256, iterations: 1, parallelism: 1 };
    let mut builder = TechHub::builder()
        .shared_storage(store)
        .notifier(outbox.clone())
        .config(
            Config::default()
                .auth(auth)
                .public_url(options.public_url.unwrap_or(PUBLIC_URL))
                .notify(options.notify.clone().unwrap_or_default()),
        )
        .handler(ECHO, handler_fn(|ctx| async move { Ok(json!({ "echo": ctx.payload().clone() })) }))
        .handler(
            BLOCK,
            handler_fn(|ctx| async move {
                ctx.progress(10, "waiting to be cancelled");
                ctx.cancelled().await;
                Err(JobError::permanent("cancelled"))
            }),
        )
        .handler_with(
            FAIL,
            HandlerOptions::default().max_attempts(1),
            handler_fn(|_ctx| async move { Err(JobError::permanent("failing on purpose")) }),
        );
    if let Some(clock) = &options.clock {
        builder = builder.clock(clock.clone());
    }
    if options.build_executor {
        builder = builder.build_executor(ProcessExecutor::new().grace(Duration::from_millis(300)));
    }
    let hub = builder.build().expect("hub");
    let admin_user = hub.users().ensure_admin(ADMIN_EMAIL, PASSWORD).await.expect("admin");
    let pair = hub.auth().login(ADMIN_EMAIL, PASSWORD).await.expect("admin signs in");
    let admin = Account {
        id: admin_user.id.to_string(),
        email: ADMIN_EMAIL.to_owned(),
        access: pair.access_token,
        refresh: pair.refresh_token,
    };
    let workers = options.workers.then(|| {
        let mut config = WorkerConfig::default().queue("default", 2).queue("email", 1);
        if options.build_executor {
            config = config.queue(techhub_core::builds::BUILD_QUEUE, 2);
        }
        hub.start_workers(config).expect("workers")
    });

    let app = techhub_axum::router(hub.clone(), options.http);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let serving = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.expect("serves");
    });
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    Server { base: format!("http://{addr}"), addr, hub, outbox, http, admin, workers, serving, _data: data }
}

/// A fresh store of the kind `TECHHUB_TEST_STORE` names (`memory`, the default, `sqlite` or `postgres`), with
/// what it lives in: the directory of a SQLite file, or a database of the PostgreSQL test server.
async fn fresh_store() -> (DynStorage, Option<Box<dyn Any + Send>>) {
    match std::env::var("TECHHUB_TEST_STORE").as_deref() {
        Ok("sqlite") => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store = SqliteStore::open(dir.path().join("techhub.db")).expect("the SQLite store opens");
            (Arc::new(store), Some(Box::new(dir)))
        }
        Ok("postgres") => {
            let database = TestServer::shared().database().await;
            // A small pool: every test has its own database on one server, and the tests of a binary run at once.
            let options = PostgresOptions::default().max_connections(4);
            let store = PostgresStore::connect(database.url(), options).await.expect("the PostgreSQL store connects");
            (Arc::new(store), Some(Box::new(database)))
        }
        Ok("memory") | Err(_) => (Arc::new(MemoryStore::new()), None),
        Ok(other) => panic!("TECHHUB_TEST_STORE={other:?}: expected memory, sqlite or postgres"),
    }
}

impl Server {
    /// The absolute URL of `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request, with a bearer token if given.
    pub(crate) fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.request(Method::GET, path, token).send().await.expect("GET")
    }

    /// `DELETE path`.
    pub(crate) async fn delete(&self, path: &str, token: Option<&str>) -> Response {
        self.request(Method::DELETE, path, token).send().await.expect("DELETE")
    }

    /// `POST path` with a JSON body.
    pub(crate) async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        self.request(Method::POST, path, token).json(body).send().await.expect("POST")
    }

    /// `PATCH path` with a JSON body.
    pub(crate) async fn patch(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        self.request(Method::PATCH, path, token).json(body).send().await.expect("PATCH")
    }

    /// `POST path` with a raw body of `content_type`.
    pub(crate) async fn post_raw(&self, path: &str, token: Option<&str>, content_type: &str, body: String) -> Response {
        self.request(Method::POST, path, token)
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .expect("POST")
    }

    /// A registered, signed-in user (through the core: no HTTP, so no rate limit is spent).
    pub(crate) async fn account(&self, email: &str) -> Account {
        let registration = Registration { email: email.into(), password: PASSWORD.into(), name: Some("Tester".into()) };
        let user = self.hub.users().register(registration).await.expect("registers");
        let pair = self.hub.auth().login(email, PASSWORD).await.expect("signs in");
        Account {
            id: user.id.to_string(),
            email: user.email.to_string(),
            access: pair.access_token,
            refresh: pair.refresh_token,
        }
    }

    /// Signs in over HTTP: the token pair.
    pub(crate) async fn login(&self, email: &str, password: &str) -> Value {
        let response = self.post("/api/v1/auth/login", None, &json!({ "email": email, "password": password })).await;
        assert_eq!(response.status(), StatusCode::OK, "login of {email}");
        body(response).await
    }

    /// Polls `GET /api/v1/jobs/{id}` until `done` holds for the job.
    pub(crate) async fn wait_job(&self, token: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let path = format!("/api/v1/jobs/{id}");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let response = self.get(&path, Some(token)).await;
            assert_eq!(response.status(), StatusCode::OK, "GET {path}");
            let job = body(response).await;
            if done(&job) {
                return job;
            }
            assert!(tokio::time::Instant::now() < deadline, "job {id} never reached the awaited state: {job}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for a job to reach `state`.
    pub(crate) async fn wait_state(&self, token: &str, id: &str, state: &str) -> Value {
        self.wait_job(token, id, |job| job["state"] == state).await
    }

    /// Waits for the latest email to `to` whose subject contains `subject`.
    pub(crate) async fn wait_mail(&self, to: &str, subject: &str) -> techhub_core::notify::Message {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let found = self
                    .outbox
                    .messages()
                    .into_iter()
                    .rev()
                    .find(|message| message.to == to && message.subject.contains(subject));
                if let Some(message) = found {
                    return message;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no mail to {to} about {subject:?}"))
    }

    /// The `ws://` URL of the events socket, with an access token in the query if given.
    pub(crate) fn events_url(&self, token: Option<&str>) -> String {
        match token {
            Some(token) => format!("ws://{}/api/v1/events?access_token={token}", self.addr),
            None => format!("ws://{}/api/v1/events", self.addr),
        }
    }

    /// An events socket authenticated by query, past its `authenticated` acknowledgement.
    pub(crate) async fn events(&self, token: &str) -> Ws {
        let (mut ws, _) = tokio_tungstenite::connect_async(self.events_url(Some(token))).await.expect("connects");
        assert_eq!(next_json(&mut ws).await["type"], "authenticated");
        ws
    }

    /// The current value of a metric without labels in `GET /metrics` (0 when absent).
    pub(crate) async fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics", None).await.text().await.expect("metrics text");
        text.lines()
            .filter_map(|line| line.strip_prefix(name))
            .filter_map(|rest| rest.strip_prefix(' '))
            .filter_map(|value| value.trim().parse::<f64>().ok())
            .next()
            .unwrap_or(0.0)
    }
}

/// The JSON body of a response.
pub(crate) async fn body(response: Response) -> Value {
    let status = response.status();
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("a {status} body that is not JSON ({error}): {text}"))
}

/// Asserts the headers of a problem of `status`: `application/problem+json`, and for 401
/// `WWW-Authenticate: Bearer`.
#[track_caller]
pub(crate) fn assert_problem_headers(headers: &HeaderMap, status: StatusCode) {
    let content_type = headers.get(CONTENT_TYPE).map(|value| value.to_str().expect("ascii").to_owned());
    assert_eq!(content_type.as_deref(), Some("application/problem+json"), "content type of a {status}");
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(headers.get("www-authenticate").map(|value| value.as_bytes()), Some(&b"Bearer"[..]));
    }
}

/// Asserts `response` is a problem with `status` and `code` (and, for 401, `WWW-Authenticate: Bearer`);
/// returns its body.
pub(crate) async fn assert_problem(response: Response, status: StatusCode, code: &str) -> Value {
    let actual = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    assert_eq!(actual, status, "status of a response whose body is {text}");
    assert_problem_headers(&headers, status);
    let problem: Value = serde_json::from_str(&text).expect("a JSON problem");
    assert_eq!(problem["code"], code, "{problem}");
    assert_eq!(problem["status"], status.as_u16(), "{problem}");
    assert!(problem["title"].is_string() && problem["type"].is_string() && problem["detail"].is_string(), "{problem}");
    problem
}

/// Asserts the headers every response carries.
#[track_caller]
pub(crate) fn assert_security_headers(headers: &HeaderMap) {
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("content-security-policy", "default-src 'none'"),
    ] {
        assert_eq!(headers.get(name).and_then(|value| value.to_str().ok()), Some(value), "{name}");
    }
    assert!(headers.get("x-request-id").is_some_and(|id| !id.is_empty()), "x-request-id");
}

/// The header `name` of a response, as text.
pub(crate) fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|value| value.to_str().expect("a text header"))
}

/// A time in RFC 3339, `by` from now.
pub(crate) fn in_future(by: Duration) -> String {
    (chrono::Utc::now() + by).to_rfc3339()
}

/// The token of an emailed link (`...?token=<token>`).
pub(crate) fn link_token(text: &str, path: &str) -> String {
    let marker = format!("{PUBLIC_URL}/{path}?token=");
    let start = text.find(&marker).unwrap_or_else(|| panic!("no {marker} link in {text}")) + marker.len();
    text[start..].split_whitespace().next().expect("a token").to_owned()
}

/// The next text message of a socket, as JSON (skipping pings and pongs); panics on close or timeout.
pub(crate) async fn next_json<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Value {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).expect("a JSON message"),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    })
    .await
    .expect("a message in time")
}

/// Reads messages until one for which `wanted` holds, returning it and every message read before it.
pub(crate) async fn until<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    wanted: impl Fn(&Value) -> bool,
) -> (Value, Vec<Value>) {
    let mut before = Vec::new();
    loop {
        let message = next_json(ws).await;
        if wanted(&message) {
            return (message, before);
        }
        before.push(message);
    }
}

/// Reads (and drops) messages until the server closes: the close code.
pub(crate) async fn close_code<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> u16 {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(Message::Close(None))) => panic!("closed without a code"),
                Some(Ok(_)) => {}
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("closed in time")
}

/// Sends a JSON text message.
pub(crate) async fn send_json<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, value: &Value) {
    ws.send(Message::text(value.to_string())).await.expect("sends");
}
