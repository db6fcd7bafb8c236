//! # TechHub core
//!
//! The back end every app rebuilds, as a library: users with secure passwords and tokens, background jobs
//! that survive crashes and report progress live, build pipelines, and notifications, all behind a pluggable
//! [`Storage`](storage::Storage) trait.
//!
//! This crate holds the domain ([`model`]), the storage traits ([`storage`]), time ([`clock`]), errors
//! ([`Error`], [`ErrorKind`]), the event bus ([`events`]) and the [`TechHub`] handle. Stores live in their own
//! crates (`techhub-store-memory`, `techhub-store-sled`, `techhub-store-sqlite`); the HTTP face in
//! `techhub-axum`.
//!
//! | feature       | what it adds |
//! |---------------|--------------|
//! | `conformance` | [`storage::conformance`]: the behaviour suite every storage adapter must pass |
//!
//! # Example
//!
//! A user and its welcome-email job are stored in one atomic write; a worker claims the job under a lease
//! and completes it.
//!
//! ```
//! use std::time::Duration;
//! use techhub_core::clock::ManualClock;
//! use techhub_core::model::{Email, Job, JobState, NewJob, Role, User, WorkerId};
//! use techhub_core::TechHub;
//! use techhub_store_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let clock = ManualClock::at_epoch();
//! let hub = TechHub::builder().storage(MemoryStore::new()).clock(clock.clone()).build()?;
//! let now = hub.now();
//!
//! // A user and the job that welcomes it commit together, or not at all.
//! let user = User::new(Email::parse(" Ada@Example.com ")?, "Ada", Role::User, now);
//! let welcome = Job::new(
//!     NewJob::new("email.welcome", serde_json::json!({ "user_id": user.id })).queue("email"),
//!     now,
//! )?;
//! let user = hub.storage().insert_user(user, vec![welcome]).await?;
//! assert_eq!(user.email.as_str(), "ada@example.com");
//!
//! // A worker claims the job under a 30 s lease, then completes it.
//! let worker = WorkerId::new("worker-1");
//! let queues = ["email".to_owned()];
//! let job = hub.storage().claim(&queues, &worker, now, Duration::from_secs(30)).await?.expect("job is due");
//! assert_eq!((job.kind.as_str(), job.attempt), ("email.welcome", 1));
//!
//! clock.advance(Duration::from_secs(2));
//! let lease = job.lease().expect("running jobs have a lease");
//! let done = hub.storage().complete(&lease, serde_json::json!({ "sent": true }), None, hub.now()).await?;
//! assert_eq!(done.state, JobState::Succeeded);
//! # Ok(())
//! # }
//! ```

mod actor;
mod auth;
pub mod clock;
pub mod config;
mod error;
pub mod events;
mod hub;
pub mod jobs;
pub mod model;
pub mod notify;
pub mod storage;

pub use actor::Actor;
pub use config::Config;
pub use error::{Error, ErrorKind, FieldError, Result};
pub use hub::{TechHub, TechHubBuilder};
