//! Typed configuration of a [`TechHub`](crate::TechHub).

use std::time::Duration;

/// How a hub behaves. Build it with [`Config::default`] and change what you need.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// How many events a subscriber may fall behind before it starts missing them (default 1024).
    pub event_capacity: usize,
    /// The product name used in emails (default "TechHub").
    pub app_name: String,
    /// The base URL of links in emails, e.g. `https://app.example.com` (default `http://127.0.0.1:8080`).
    /// Configured, never taken from a request, so a forged `Host` header cannot redirect reset links.
    pub public_url: String,
    /// The sender of emails (default `TechHub <no-reply@localhost>`).
    pub email_from: String,
    /// How long a password-reset link works (default 30 min).
    pub password_reset_ttl: Duration,
    /// How long an email-verification link works (default 24 h).
    pub email_verify_ttl: Duration,
    /// Passwords, sessions and sign-in throttling.
    pub auth: AuthConfig,
    /// How long audit log entries are kept (default 90 days); older ones are pruned.
    pub audit_retention: Duration,
    /// Builds: concurrency, limits, timeouts, retries and logs.
    pub builds: BuildConfig,
    /// Notifications: webhook address policy, retry schedule, disabling, Slack rate, email rules.
    pub notify: NotifyConfig,
}

/// How notifications are delivered.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NotifyConfig {
    /// Which private or special addresses webhook and Slack URLs may reach (default: none, public only).
    pub address_policy: crate::notify::AddressPolicy,
    /// Waits between delivery attempts; a notification gets one attempt plus one per wait (default, like
    /// Svix: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h). A longer `Retry-After` from the receiver wins, up to
    /// [`NotifyConfig::max_retry_after`].
    pub retry_schedule: Vec<Duration>,
    /// The longest `Retry-After` honoured (default 1 h): a receiver asking for more waits this long, so one
    /// answer cannot park a delivery for days.
    pub max_retry_after: Duration,
    /// An endpoint whose deliveries all failed for this long is disabled (default 5 days).
    pub disable_after: Duration,
    /// How long a rotated-out signing secret keeps signing beside the new one (default 24 h).
    pub secret_overlap: Duration,
    /// Messages per second to one Slack URL (default 1).
    pub slack_per_second: u32,
    /// Timeouts and response bound of webhook and Slack requests.
    pub http: crate::notify::HttpLimits,
    /// Addresses mailed on [`NotifyConfig::email_events`] (default none).
    pub email_recipients: Vec<crate::model::Email>,
    /// The event types mailed to [`NotifyConfig::email_recipients`] (default `build.failed`).
    pub email_events: Vec<String>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self {
            address_policy: crate::notify::AddressPolicy::public_only(),
            retry_schedule: vec![
                Duration::from_secs(5),
                minutes(5),
                minutes(30),
                minutes(120),
                minutes(300),
                minutes(600),
                minutes(600),
            ],
            max_retry_after: minutes(60),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            secret_overlap: Duration::from_secs(24 * 3600),
            slack_per_second: 1,
            http: crate::notify::HttpLimits::default(),
            email_recipients: Vec::new(),
            email_events: vec!["build.failed".to_owned()],
        }
    }
}

impl NotifyConfig {
    /// Sets [`NotifyConfig::address_policy`].
    #[must_use]
    pub fn address_policy(mut self, policy: crate::notify::AddressPolicy) -> Self {
        self.address_policy = policy;
        self
    }

    /// Sets [`NotifyConfig::retry_schedule`].
    #[must_use]
    pub fn retry_schedule(mut self, schedule: Vec<Duration>) -> Self {
        self.retry_schedule = schedule;
        self
    }

    /// Sets [`NotifyConfig::max_retry_after`].
    #[must_use]
    pub fn max_retry_after(mut self, cap: Duration) -> Self {
        self.max_retry_after = cap;
        self
    }

    /// Sets [`NotifyConfig::disable_after`].
    #[must_use]
    pub fn disable_after(mut self, window: Duration) -> Self {
        self.disable_after = window;
        self
    }

    /// Sets [`NotifyConfig::secret_overlap`].
    #[must_use]
    pub fn secret_overlap(mut self, overlap: Duration) -> Self {
        self.secret_overlap = overlap;
        self
    }

    /// Sets [`NotifyConfig::slack_per_second`].
    #[must_use]
    pub fn slack_per_second(mut self, per_second: u32) -> Self {
        self.slack_per_second = per_second;
        self
    }

    /// Sets [`NotifyConfig::http`].
    #[must_use]
    pub fn http(mut self, limits: crate::notify::HttpLimits) -> Self {
        self.http = limits;
        self
    }

    /// Sets [`NotifyConfig::email_recipients`].
    #[must_use]
    pub fn email_recipients(mut self, recipients: Vec<crate::model::Email>) -> Self {
        self.email_recipients = recipients;
        self
    }

    /// Sets [`NotifyConfig::email_events`].
    #[must_use]
    pub fn email_events(mut self, event_types: Vec<String>) -> Self {
        self.email_events = event_types;
        self
    }
}

/// How builds run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BuildConfig {
    /// Modules of one build that run at once (default 4).
    pub module_concurrency: usize,
    /// Queued builds allowed at once; more are refused as rate limited (default 100).
    pub max_queued: usize,
    /// A build's timeout when its creator names none (default 300 s).
    pub default_timeout: Duration,
    /// Automatic retries of a failed module when its build names none (default 0).
    pub default_retries: u32,
    /// The log kept per module, in bytes, beyond its first lines (default 10 MiB).
    pub log_max_bytes: u64,
    /// Lines of each module's log always kept, whatever the cap (default 1,000).
    pub log_head_lines: u64,
    /// Delays between automatic retries of a module (default 2 s doubling, capped at 60 s, with jitter).
    pub retry_backoff: crate::jobs::Backoff,
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            module_concurrency: 4,
            max_queued: 100,
            default_timeout: Duration::from_secs(300),
            default_retries: 0,
            log_max_bytes: 10 * 1024 * 1024,
            log_head_lines: 1_000,
            retry_backoff: crate::jobs::Backoff {
                base: Duration::from_secs(2),
                cap: Duration::from_secs(60),
                jitter: 0.5,
            },
        }
    }
}

impl BuildConfig {
    /// Sets [`BuildConfig::module_concurrency`].
    #[must_use]
    pub fn module_concurrency(mut self, modules: usize) -> Self {
        self.module_concurrency = modules;
        self
    }

    /// Sets [`BuildConfig::max_queued`].
    #[must_use]
    pub fn max_queued(mut self, builds: usize) -> Self {
        self.max_queued = builds;
        self
    }

    /// Sets [`BuildConfig::default_timeout`].
    #[must_use]
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Sets [`BuildConfig::default_retries`].
    #[must_use]
    pub fn default_retries(mut self, retries: u32) -> Self {
        self.default_retries = retries;
        self
    }

    /// Sets [`BuildConfig::log_max_bytes`].
    #[must_use]
    pub fn log_max_bytes(mut self, bytes: u64) -> Self {
        self.log_max_bytes = bytes;
        self
    }

    /// Sets [`BuildConfig::log_head_lines`].
    #[must_use]
    pub fn log_head_lines(mut self, lines: u64) -> Self {
        self.log_head_lines = lines;
        self
    }

    /// Sets [`BuildConfig::retry_backoff`].
    #[must_use]
    pub fn retry_backoff(mut self, backoff: crate::jobs::Backoff) -> Self {
        self.retry_backoff = backoff;
        self
    }
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Argon2Params {
    /// OWASP's recommendation for argon2id: 19 MiB, 2 passes, 1 lane.
    pub const OWASP: Self = Self { memory_kib: 19_456, iterations: 2, parallelism: 1 };

    /// Whether every parameter is at most `ceiling`'s.
    pub fn within(&self, ceiling: &Self) -> bool {
        self.memory_kib <= ceiling.memory_kib
            && self.iterations <= ceiling.iterations
            && self.parallelism <= ceiling.parallelism
    }
}

/// Passwords, sessions and sign-in throttling.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthConfig {
    /// Parameters for new hashes (default [`Argon2Params::OWASP`]). Hashes with other parameters are upgraded
    /// at the next successful sign-in.
    pub argon2: Argon2Params,
    /// Stored hashes above these parameters are refused without being computed, so a planted hash cannot
    /// make sign-in burn minutes of CPU (default 256 MiB, 10 passes, 8 lanes).
    pub argon2_ceiling: Argon2Params,
    /// How many hashes run at once (default: one less than the CPUs, at least 1, so a sign-in storm leaves a
    /// core to the async runtime); bounds memory at `argon2.memory_kib` each.
    pub hashing_concurrency: usize,
    /// Access-token lifetime (default 15 min).
    pub access_ttl: Duration,
    /// A session ends after this long without a refresh (default 14 days).
    pub refresh_idle_ttl: Duration,
    /// A session ends this long after sign-in, refreshed or not (default 60 days).
    pub refresh_absolute_ttl: Duration,
    /// A refresh token presented again within this window after its rotation is a race between two tabs, not
    /// theft: it is refused without ending the session (default 10 s).
    pub refresh_reuse_grace: Duration,
    /// Access tokens' `iss` (default "techhub").
    pub issuer: String,
    /// Access tokens' `aud` (default "techhub").
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf` (default 5 s).
    pub leeway: Duration,
    /// Failures before an account locks (default 5).
    pub lockout_threshold: u32,
    /// The first lockout; each further failure doubles it (default 30 s).
    pub lockout_base: Duration,
    /// The longest lockout (default 15 min).
    pub lockout_cap: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            argon2: Argon2Params::OWASP,
            argon2_ceiling: Argon2Params { memory_kib: 262_144, iterations: 10, parallelism: 8 },
            hashing_concurrency: std::thread::available_parallelism()
                .map_or(1, |cpus| usize::from(cpus).saturating_sub(1).max(1)),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_idle_ttl: Duration::from_secs(14 * 24 * 3600),
            refresh_absolute_ttl: Duration::from_secs(60 * 24 * 3600),
            refresh_reuse_grace: Duration::from_secs(10),
            issuer: "techhub".to_owned(),
            audience: "techhub".to_owned(),
            leeway: Duration::from_secs(5),
            lockout_threshold: 5,
            lockout_base: Duration::from_secs(30),
            lockout_cap: Duration::from_secs(15 * 60),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            event_capacity: 1024,
            app_name: "TechHub".to_owned(),
            public_url: "http://127.0.0.1:8080".to_owned(),
            email_from: "TechHub <no-reply@localhost>".to_owned(),
            password_reset_ttl: Duration::from_secs(30 * 60),
            email_verify_ttl: Duration::from_secs(24 * 3600),
            auth: AuthConfig::default(),
            audit_retention: Duration::from_secs(90 * 24 * 3600),
            builds: BuildConfig::default(),
            notify: NotifyConfig::default(),
        }
    }
}

impl Config {
    /// Sets [`Config::event_capacity`].
    #[must_use]
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Sets [`Config::app_name`].
    #[must_use]
    pub fn app_name(mut self, name: impl Into<String>) -> Self {
        self.app_name = name.into();
        self
    }

    /// Sets [`Config::public_url`] (a trailing `/` is dropped).
    #[must_use]
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = url.into().trim_end_matches('/').to_owned();
        self
    }

    /// Sets [`Config::email_from`].
    #[must_use]
    pub fn email_from(mut self, from: impl Into<String>) -> Self {
        self.email_from = from.into();
        self
    }

    /// Sets [`Config::password_reset_ttl`].
    #[must_use]
    pub fn password_reset_ttl(mut self, ttl: Duration) -> Self {
        self.password_reset_ttl = ttl;
        self
    }

    /// Sets [`Config::auth`].
    #[must_use]
    pub fn auth(mut self, auth: AuthConfig) -> Self {
        self.auth = auth;
        self
    }

    /// Sets [`Config::audit_retention`].
    #[must_use]
    pub fn audit_retention(mut self, retention: Duration) -> Self {
        self.audit_retention = retention;
        self
    }

    /// Sets [`Config::builds`].
    #[must_use]
    pub fn builds(mut self, builds: BuildConfig) -> Self {
        self.builds = builds;
        self
    }

    /// Sets [`Config::notify`].
    #[must_use]
    pub fn notify(mut self, notify: NotifyConfig) -> Self {
        self.notify = notify;
        self
    }

    /// Sets [`Config::email_verify_ttl`].
    #[must_use]
    pub fn email_verify_ttl(mut self, ttl: Duration) -> Self {
        self.email_verify_ttl = ttl;
        self
    }

    pub(crate) fn check(&self) -> Result<(), crate::Error> {
        if self.event_capacity == 0 {
            return Err(crate::Error::invalid_field("event_capacity", "the event capacity must be at least 1"));
        }
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            return Err(crate::Error::invalid_field(
                "public_url",
                "the public URL must start with http:// or https://",
            ));
        }
        let auth = &self.auth;
        let lifetimes = [
            self.password_reset_ttl,
            self.email_verify_ttl,
            auth.access_ttl,
            auth.refresh_idle_ttl,
            self.audit_retention,
        ];
        if lifetimes.iter().any(Duration::is_zero) || auth.refresh_absolute_ttl < auth.refresh_idle_ttl {
            return Err(crate::Error::invalid_field(
                "ttl",
                "token lifetimes must be longer than zero, and the absolute session lifetime at least the idle one",
            ));
        }
        if !auth.argon2.within(&auth.argon2_ceiling) || auth.hashing_concurrency == 0 || auth.lockout_threshold == 0 {
            return Err(crate::Error::invalid_field(
                "auth",
                "argon2 parameters must be within the ceiling, and concurrency and lockout threshold at least 1",
            ));
        }
        let builds = &self.builds;
        if builds.module_concurrency == 0 || builds.default_timeout.is_zero() || builds.log_max_bytes == 0 {
            return Err(crate::Error::invalid_field(
                "builds",
                "module concurrency, the default build timeout and the log cap must be above zero",
            ));
        }
        Ok(())
    }
}
