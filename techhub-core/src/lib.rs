//! # TechHub core
//!
//! The back end every app rebuilds, as a library: users with secure passwords and tokens, background jobs
//! that survive crashes and report progress live, build pipelines, and notifications, all behind a pluggable
//! [`Storage`](storage::Storage) trait.
//!
//! This crate holds the domain ([`model`]), the storage traits ([`storage`]), the job engine ([`jobs`]),
//! notifications ([`notify`]), time ([`clock`]), errors ([`Error`], [`ErrorKind`]), callers ([`Actor`]), the
//! event bus ([`events`]) and the [`TechHub`] handle. Stores live in their own
//! crates (`techhub-store-memory`, `techhub-store-sled`, `techhub-store-sqlite`); the HTTP face in
//! `techhub-axum`.
//!
//! | feature       | what it adds |
//! |---------------|--------------|
//! | `smtp` (default) | [`notify::SmtpNotifier`]: email over SMTP with lettre (tokio, rustls) |
//! | `conformance` | `storage::conformance`: the behaviour suite every storage adapter must pass |
//!
//! # Example
//!
//! A job handler, the worker runtime, live progress from the event bus, and a user whose welcome email is
//! stored in the same atomic write as the user (and delivered here to the in-memory outbox).
//!
//! ```
//! use serde_json::json;
//! use techhub_core::events::EventKind;
//! use techhub_core::jobs::{WorkerConfig, handler_fn};
//! use techhub_core::model::{Email, Job, JobState, NewJob, Role, User};
//! use techhub_core::notify::{EMAIL_QUEUE, OutboxNotifier, kinds};
//! use techhub_core::{Actor, TechHub};
//! use techhub_store_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let outbox = OutboxNotifier::new();
//! let hub = TechHub::builder()
//!     .storage(MemoryStore::new())
//!     .notifier(outbox.clone())
//!     .handler("report.build", handler_fn(|ctx| async move {
//!         ctx.progress(50, "halfway");
//!         Ok(json!({ "rows": 42 }))
//!     }))
//!     .build()?;
//! let mut events = hub.subscribe();
//! let workers = hub.start_workers(WorkerConfig::default().queue("default", 2).queue(EMAIL_QUEUE, 1))?;
//!
//! // Enqueue through the service (the actor's rights are checked) and watch it live.
//! let report = hub.jobs().enqueue(&Actor::System, NewJob::new("report.build", json!({ "month": "2030-01" }))).await?;
//! let patience = std::time::Duration::from_secs(10);
//! tokio::time::timeout(patience, async {
//!     loop {
//!         let event = events.recv().await?;
//!         if event.subject == *report.id.as_uuid() && event.kind == EventKind::JobSucceeded {
//!             return Ok::<_, tokio::sync::broadcast::error::RecvError>(());
//!         }
//!     }
//! })
//! .await??;
//! let report = hub.jobs().get(&Actor::System, report.id).await?;
//! assert_eq!((report.state, report.result), (JobState::Succeeded, Some(json!({ "rows": 42 }))));
//!
//! // A user and the job that welcomes it commit together, or not at all.
//! let ada = User::new(Email::parse(" Ada@Example.com ")?, "Ada", Role::User, hub.now());
//! let welcome = Job::new(NewJob::new(kinds::WELCOME, json!({ "user_id": ada.id })).queue(EMAIL_QUEUE), hub.now())?;
//! let ada = hub.storage().insert_user(ada, vec![welcome]).await?;
//! assert_eq!(ada.email.as_str(), "ada@example.com");
//! workers.wake();
//! tokio::time::timeout(patience, async {
//!     while outbox.last_to("ada@example.com").is_none() {
//!         tokio::time::sleep(std::time::Duration::from_millis(5)).await;
//!     }
//! })
//! .await?;
//! assert_eq!(outbox.last_to("ada@example.com").map(|mail| mail.subject), Some("Welcome to TechHub".to_owned()));
//! workers.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod actor;
pub mod audit;
pub mod auth;
pub mod builds;
pub mod clock;
pub mod config;
mod error;
pub mod events;
mod hub;
pub mod jobs;
pub mod model;
pub mod notify;
pub mod storage;
pub mod system;
pub mod users;

pub use actor::Actor;
pub use config::{BuildConfig, Config, NotifyConfig};
pub use error::{Error, ErrorKind, FieldError, Result};
pub use hub::{TechHub, TechHubBuilder};
