//! Background jobs: the service callers use, the handlers that run jobs, and the worker runtime.
//!
//! - [`JobService`] (from [`TechHub::jobs`](crate::TechHub::jobs)): enqueue, list, cancel, retry, stats.
//! - [`JobHandler`] / [`TypedJobHandler`] / [`handler_fn`]: registered by kind on the builder.
//! - [`WorkerConfig`] and [`TechHub::start_workers`](crate::TechHub::start_workers): the runtime that claims
//!   jobs under leases, heartbeats, retries with backoff, rescues jobs of dead workers, fires cron schedules,
//!   prunes old jobs and shuts down gracefully.

mod backoff;
mod context;
mod handler;
pub(crate) mod held_events;
mod runtime;
mod service;
pub(crate) mod signals;
pub mod telemetry;

pub use backoff::Backoff;
pub use context::JobContext;
pub(crate) use handler::Registry;
pub use handler::{HandlerOptions, JobError, JobHandler, Typed, TypedJobHandler, handler_fn};
pub use runtime::{QueueConfig, RateLimit, Retention, Schedule, WorkerConfig, WorkerHandle};
pub use service::{JobService, QueueStats};
