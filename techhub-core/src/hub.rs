//! [`TechHub`], the handle applications keep, and its builder.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::auth::password::Passwords;
use crate::auth::throttle::{MailThrottle, SignInThrottle};
use crate::auth::{AccessTokens, AuthService, JwtKeys, SigningKey};
use crate::builds::{BUILD_QUEUE, BUILD_RUN, BuildExecutor, BuildLogs, BuildRunHandler, BuildService, RunningBuilds};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::events::{Event, EventBus};
use crate::jobs::held_events::HeldEvents;
use crate::jobs::signals::JobSignals;
use crate::jobs::{HandlerOptions, JobHandler, JobService, Registry};
use crate::notify::{
    HttpDelivery, Notifier, NotifyChannels, OutboxNotifier, SlackRateLimit, TemplateDefinition, Templates,
    register_builtin_handlers,
};
use crate::storage::{DynStorage, PeerInbox, Storage};
use crate::users::{UserService, register_transfer_handlers};
use crate::{Error, Result};

/// The engine: storage, clock, configuration and the event bus.
///
/// Cheap to clone (one `Arc` inside), `Send + Sync + 'static`: keep one in your app state and clone it into
/// tasks, request handlers and Tauri commands.
#[derive(Clone)]
pub struct TechHub {
    inner: Arc<HubInner>,
}

pub(crate) struct HubInner {
    storage: DynStorage,
    clock: Arc<dyn Clock>,
    config: Config,
    events: EventBus,
    handlers: Registry,
    signals: JobSignals,
    held_events: HeldEvents,
    notifier: Arc<dyn Notifier>,
    templates: Templates,
    notify_channels: NotifyChannels,
    passwords: Passwords,
    access_tokens: AccessTokens,
    sign_in_throttle: SignInThrottle,
    mail_throttle: MailThrottle,
    build_executor: Option<Arc<dyn BuildExecutor>>,
    build_logs: BuildLogs,
    running_builds: RunningBuilds,
    /// Whether this hub's notification rules run (they start once, at build inside a tokio runtime, else with
    /// the workers).
    rules_started: AtomicBool,
}

impl TechHub {
    /// Starts building a hub.
    pub fn builder() -> TechHubBuilder {
        TechHubBuilder::default()
    }

    /// The store.
    pub fn storage(&self) -> &DynStorage {
        &self.inner.storage
    }

    /// The clock every time in the hub comes from.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The current time, from the hub's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The event bus, for code that publishes events.
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// A new subscriber to every event the hub publishes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Starts the notification rules on the current tokio runtime, once per hub: at build when the hub is built
    /// inside a runtime, else with the workers ([`TechHub::start_workers`]). They run until the hub is dropped
    /// (they keep only a weak reference to it), so an API-only instance (no workers) also turns its own events
    /// into queued notifications, which the instances running workers deliver.
    pub(crate) fn start_rules(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if self.inner.rules_started.swap(true, Ordering::AcqRel) {
            return;
        }
        // Subscribed before returning, so no event published after this call is missed by the rules.
        let events = self.inner.events.subscribe_to(&crate::notify::rules::KINDS);
        runtime.spawn(crate::notify::rules::run(Arc::downgrade(&self.inner), events));
    }

    /// The hub behind a weak reference, while it lives.
    pub(crate) fn upgrade(inner: &Weak<HubInner>) -> Option<Self> {
        inner.upgrade().map(|inner| Self { inner })
    }

    /// The user service: register, read, list, update, delete, import, export.
    pub fn users(&self) -> UserService {
        UserService::new(self.clone())
    }

    /// The audit log: read it (admins), prune it.
    pub fn audit(&self) -> crate::audit::AuditService {
        crate::audit::AuditService::new(self.clone())
    }

    /// Operators' views: counts of everything, and the database (admins).
    pub fn system(&self) -> crate::system::SystemService {
        crate::system::SystemService::new(self.clone())
    }

    /// The authentication service: sign-in, sessions, password reset and change, email verification.
    pub fn auth(&self) -> AuthService {
        AuthService::new(self.clone())
    }

    pub(crate) fn passwords(&self) -> &Passwords {
        &self.inner.passwords
    }

    pub(crate) fn access_tokens(&self) -> &AccessTokens {
        &self.inner.access_tokens
    }

    pub(crate) fn sign_in_throttle(&self) -> &SignInThrottle {
        &self.inner.sign_in_throttle
    }

    pub(crate) fn mail_throttle(&self) -> &MailThrottle {
        &self.inner.mail_throttle
    }

    /// The build service: create, list, cancel and retry builds, drive modules, logs, statistics, progress.
    pub fn builds(&self) -> BuildService {
        BuildService::new(self.clone())
    }

    /// The executor that runs module commands in this process, if one was configured.
    pub fn build_executor(&self) -> Option<&Arc<dyn BuildExecutor>> {
        self.inner.build_executor.as_ref()
    }

    pub(crate) fn build_logs(&self) -> &BuildLogs {
        &self.inner.build_logs
    }

    pub(crate) fn running_builds(&self) -> &RunningBuilds {
        &self.inner.running_builds
    }

    /// The job service: enqueue, list, cancel and retry jobs.
    pub fn jobs(&self) -> JobService {
        JobService::new(self.clone())
    }

    /// The job kinds this hub has handlers for, sorted.
    pub fn job_kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.inner.handlers.kinds().map(str::to_owned).collect();
        kinds.sort_unstable();
        kinds
    }

    /// The email notifier (the outbox unless one was configured).
    pub fn notifier(&self) -> &Arc<dyn Notifier> {
        &self.inner.notifier
    }

    /// The message templates.
    pub fn templates(&self) -> &Templates {
        &self.inner.templates
    }

    /// The webhook and Slack machinery (HTTP client with its address policy, Slack rate limit).
    pub(crate) fn notify_channels(&self) -> &NotifyChannels {
        &self.inner.notify_channels
    }

    pub(crate) fn handlers(&self) -> &Registry {
        &self.inner.handlers
    }

    pub(crate) fn signals(&self) -> &JobSignals {
        &self.inner.signals
    }

    /// The events held until their attempts' settles are written.
    pub(crate) fn held_events(&self) -> &HeldEvents {
        &self.inner.held_events
    }
}

impl fmt::Debug for TechHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TechHub")
            .field("storage", &self.inner.storage.backend())
            .field("clock", &self.inner.clock)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Builds a [`TechHub`]: storage is required; the clock defaults to [`SystemClock`], the configuration to
/// [`Config::default`].
#[derive(Default)]
pub struct TechHubBuilder {
    storage: Option<DynStorage>,
    clock: Option<Arc<dyn Clock>>,
    config: Config,
    handlers: Registry,
    notifier: Option<Arc<dyn Notifier>>,
    jwt_keys: Option<JwtKeys>,
    build_executor: Option<Arc<dyn BuildExecutor>>,
    templates: Vec<TemplateDefinition>,
}

impl TechHubBuilder {
    /// Adds a message template, or overrides (variant by variant) a built-in one of the same id and locale.
    /// A template that does not parse makes [`TechHubBuilder::build`] fail with `InvalidInput`.
    #[must_use]
    pub fn template(mut self, definition: TemplateDefinition) -> Self {
        self.templates.push(definition);
        self
    }

    /// Signs access tokens with `keys` (e.g. `JwtKeys::new(SigningKey::hs256("k1", secret)?)`). Without keys
    /// the hub makes a random one: fine for tests and desktop apps, but tokens then die with the process.
    #[must_use]
    pub fn jwt_keys(mut self, keys: JwtKeys) -> Self {
        self.jwt_keys = Some(keys);
        self
    }

    /// Sends email through `notifier` (an [`SmtpNotifier`](crate::notify::SmtpNotifier), say). Without one,
    /// email goes to an [`OutboxNotifier`].
    #[must_use]
    pub fn notifier(mut self, notifier: impl Notifier) -> Self {
        self.notifier = Some(Arc::new(notifier));
        self
    }

    /// Runs module commands with `executor` (a [`ProcessExecutor`](crate::builds::ProcessExecutor), say).
    /// Without one, builds are driven by external executors only, and module commands are refused.
    #[must_use]
    pub fn build_executor(mut self, executor: impl BuildExecutor) -> Self {
        self.build_executor = Some(Arc::new(executor));
        self
    }

    /// Registers `handler` for jobs of `kind` (replacing any earlier one, built-ins included).
    #[must_use]
    pub fn handler(self, kind: impl Into<String>, handler: impl JobHandler) -> Self {
        self.handler_with(kind, HandlerOptions::default(), handler)
    }

    /// Registers `handler` for jobs of `kind` with defaults for its jobs (queue, attempts, timeout).
    #[must_use]
    pub fn handler_with(mut self, kind: impl Into<String>, options: HandlerOptions, handler: impl JobHandler) -> Self {
        self.handlers.insert(kind.into(), Arc::new(handler), options);
        self
    }

    /// Uses `storage`.
    #[must_use]
    pub fn storage(mut self, storage: impl Storage) -> Self {
        self.storage = Some(Arc::new(storage));
        self
    }

    /// Uses an already shared store (also `Arc::from(Box<dyn Storage>)`).
    #[must_use]
    pub fn shared_storage(mut self, storage: DynStorage) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Uses `clock` (a [`ManualClock`](crate::clock::ManualClock) in tests).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Uses `config`.
    #[must_use]
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The hub. Fails with [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) when no storage was
    /// given or the configuration is unusable.
    pub fn build(self) -> Result<TechHub> {
        let storage = self.storage.ok_or_else(|| Error::invalid_input("a TechHub needs a storage backend"))?;
        self.config.check()?;
        let peers = storage.peers();
        let events = EventBus::shared_with(self.config.event_capacity, peers.clone());
        let mut handlers = self.handlers;
        register_builtin_handlers(&mut handlers, &self.config);
        register_transfer_handlers(&mut handlers);
        // A build enforces its own timeout (at most a day); the job's only guards against a runner that hangs.
        let build_run = HandlerOptions::default()
            .queue(BUILD_QUEUE)
            .max_attempts(10)
            .timeout(std::time::Duration::from_secs(25 * 3600));
        handlers.insert(BUILD_RUN.to_owned(), Arc::new(BuildRunHandler), build_run);
        let keys = self.jwt_keys.unwrap_or_else(|| {
            tracing::warn!("no JWT keys configured: using a random key, so sessions end when the process does");
            JwtKeys::new(SigningKey::ephemeral())
        });
        let mut templates = Templates::built_in();
        for definition in self.templates {
            templates.insert(definition)?;
        }
        let notify = &self.config.notify;
        let notify_channels = NotifyChannels {
            http: HttpDelivery::new(notify.address_policy.clone(), notify.http.clone())?,
            slack: SlackRateLimit::new(notify.slack_per_second),
        };
        let auth = &self.config.auth;
        let passwords = Passwords::new(auth.argon2, auth.argon2_ceiling, auth.hashing_concurrency);
        let access_tokens = AccessTokens::new(keys, auth);
        let hub = TechHub {
            inner: Arc::new(HubInner {
                storage,
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                config: self.config,
                events,
                handlers,
                signals: JobSignals::default(),
                held_events: HeldEvents::default(),
                notifier: self.notifier.unwrap_or_else(|| Arc::new(OutboxNotifier::new())),
                templates,
                notify_channels,
                passwords,
                access_tokens,
                sign_in_throttle: SignInThrottle::default(),
                mail_throttle: MailThrottle::default(),
                build_executor: self.build_executor,
                build_logs: BuildLogs::default(),
                running_builds: RunningBuilds::default(),
                rules_started: AtomicBool::new(false),
            }),
        };
        // The rules turn this instance's own events into notifications whether or not it runs workers.
        hub.start_rules();
        if let Some(peers) = peers {
            let inbox: Weak<dyn PeerInbox> = Arc::downgrade(&hub.inner) as Weak<dyn PeerInbox>;
            peers.attach(inbox);
        }
        Ok(hub)
    }
}

/// What the other instances sharing the store signal reaches this hub's workers and subscribers.
impl PeerInbox for HubInner {
    fn jobs_due(&self, queue: &str, count: usize) {
        // One wake per job, up to the queue's workers here: each woken worker claims until the queue is empty.
        for _ in 0..count.min(self.signals.workers(queue).max(1)) {
            self.signals.wake(queue);
        }
    }

    fn event(&self, event: Event) {
        self.events.deliver_from_peer(event);
    }

    fn wants_events(&self) -> bool {
        self.events.wants_everything()
    }

    fn reconnected(&self) {
        self.signals.wake_all();
    }
}

impl fmt::Debug for TechHubBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TechHubBuilder")
            .field("storage", &self.storage.as_ref().map(|storage| storage.backend()))
            .field("config", &self.config)
            .field("handlers", &self.handlers)
            .field("build_executor", &self.build_executor.as_ref().map(|executor| executor.name()))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_static<T: Send + Sync + 'static + Clone>() {}

    #[test]
    fn hub_is_cheap_clone_send_sync_static() {
        assert_send_sync_static::<TechHub>();
    }

    #[test]
    fn builder_refuses_missing_storage() {
        let error = TechHub::builder().build().expect_err("no storage");
        assert_eq!(error.kind(), crate::ErrorKind::InvalidInput);
    }
}
