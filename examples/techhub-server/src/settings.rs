//! The server's configuration, read from the environment (docs/http-api.md, "The example server's environment"). Any bad
//! value stops the server at start with a message naming the variable.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use techhub_core::auth::check_new_password;
use techhub_core::model::Email;
use techhub_core::notify::SmtpNotifier;

/// Where the data lives.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum StoreSetting {
    /// `postgres://…` (or `postgresql://…`): a PostgreSQL database that several servers may share.
    Postgres(String),
    /// `sqlite:<file>`.
    Sqlite(PathBuf),
    /// `sled:<directory>`.
    Sled(PathBuf),
    /// `memory`: nothing survives a restart.
    Memory,
}

/// The URL's password never reaches a log: settings are logged at start.
impl fmt::Debug for StoreSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postgres(url) => f.debug_tuple("Postgres").field(&redact_password(url)).finish(),
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Sled(path) => f.debug_tuple("Sled").field(path).finish(),
            Self::Memory => f.write_str("Memory"),
        }
    }
}

/// `postgres://user:***@host/db` for `postgres://user:secret@host/db`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, tail) = rest.split_once('/').map_or((rest, None), |(authority, tail)| (authority, Some(tail)));
    let authority = match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{credentials}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = tail.map(|tail| if tail.contains("password=") { "***".to_owned() } else { tail.to_owned() });
    match tail {
        Some(tail) => format!("{scheme}://{authority}/{tail}"),
        None => format!("{scheme}://{authority}"),
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Everything the server reads from its environment. `Debug` hides the secrets.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) addr: SocketAddr,
    pub(crate) store: StoreSetting,
    pub(crate) jwt_secret: Option<String>,
    pub(crate) admin: Option<(String, String)>,
    pub(crate) smtp_url: Option<String>,
    pub(crate) smtp_from: Option<String>,
    pub(crate) workers: usize,
    pub(crate) cors_origins: Vec<String>,
    pub(crate) public_url: Option<String>,
    pub(crate) auth_rate_limit: u32,
    pub(crate) trusted_proxies: Vec<techhub_axum::Cidr>,
    pub(crate) log_filter: String,
    pub(crate) log_format: LogFormat,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("addr", &self.addr)
            .field("store", &self.store)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<redacted>"))
            .field("admin", &self.admin.as_ref().map(|(email, _)| email))
            .field("smtp", &self.smtp_url.as_ref().map(|_| "<configured>"))
            .field("workers", &self.workers)
            .field("cors_origins", &self.cors_origins)
            .field("public_url", &self.public_url)
            .field("auth_rate_limit", &self.auth_rate_limit)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

/// A configuration error: the variable and what is wrong with it.
#[derive(Debug)]
pub(crate) struct SettingError {
    pub(crate) variable: &'static str,
    pub(crate) problem: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.problem)
    }
}

impl std::error::Error for SettingError {}

fn invalid(variable: &'static str, problem: impl Into<String>) -> SettingError {
    SettingError { variable, problem: problem.into() }
}

impl Settings {
    /// Reads the settings through `lookup` (the process environment in `main`, a map in tests).
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        let get = |name: &str| lookup(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());

        let addr = get("TECHHUB_ADDR").unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let addr = addr
            .parse()
            .map_err(|_| invalid("TECHHUB_ADDR", format!("{addr:?} is not an address like 127.0.0.1:8080")))?;

        let store = match get("TECHHUB_STORE").as_deref().unwrap_or("sqlite:./techhub.db") {
            "memory" => StoreSetting::Memory,
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                StoreSetting::Postgres(url.to_owned())
            }
            other => match other.split_once(':') {
                Some(("sqlite", path)) if !path.is_empty() => StoreSetting::Sqlite(PathBuf::from(path)),
                Some(("sled", path)) if !path.is_empty() => StoreSetting::Sled(PathBuf::from(path)),
                _ => {
                    return Err(invalid(
                        "TECHHUB_STORE",
                        format!("{other:?}: expected sqlite:<file>, sled:<dir>, postgres://… or memory"),
                    ));
                }
            },
        };

        let jwt_secret = get("TECHHUB_JWT_SECRET");
        if let Some(secret) = &jwt_secret
            && secret.len() < techhub_core::auth::MIN_SECRET_BYTES
        {
            return Err(invalid(
                "TECHHUB_JWT_SECRET",
                format!("must be at least {} bytes (it is {})", techhub_core::auth::MIN_SECRET_BYTES, secret.len()),
            ));
        }
        // Servers sharing a database must sign sessions with one key, and there is no data directory to keep a
        // generated one in.
        if jwt_secret.is_none() && matches!(store, StoreSetting::Postgres(_)) {
            return Err(invalid(
                "TECHHUB_JWT_SECRET",
                "is required with a postgres:// store (every server sharing the database signs with it)",
            ));
        }

        let admin =
            match (get("TECHHUB_ADMIN_EMAIL"), lookup("TECHHUB_ADMIN_PASSWORD").filter(|value| !value.is_empty())) {
                (Some(email), Some(password)) => {
                    let parsed =
                        Email::parse(&email).map_err(|error| invalid("TECHHUB_ADMIN_EMAIL", error.message()))?;
                    check_new_password(&password, &parsed)
                        .map_err(|error| invalid("TECHHUB_ADMIN_PASSWORD", error.message()))?;
                    Some((email, password))
                }
                (None, None) => None,
                (Some(_), None) => {
                    return Err(invalid("TECHHUB_ADMIN_PASSWORD", "is required with TECHHUB_ADMIN_EMAIL"));
                }
                (None, Some(_)) => {
                    return Err(invalid("TECHHUB_ADMIN_EMAIL", "is required with TECHHUB_ADMIN_PASSWORD"));
                }
            };

        // The sender is checked whether or not mail goes out over SMTP: the outbox shows it too.
        let smtp_from = get("TECHHUB_SMTP_FROM");
        if let Some(from) = &smtp_from {
            SmtpNotifier::check_sender(from).map_err(|error| invalid("TECHHUB_SMTP_FROM", error.message()))?;
        }
        let smtp_url = get("TECHHUB_SMTP_URL");
        if let Some(url) = &smtp_url {
            SmtpNotifier::check_url(url).map_err(|error| invalid("TECHHUB_SMTP_URL", error.message()))?;
        }

        let workers = match get("TECHHUB_WORKERS") {
            None => 4,
            Some(text) => match text.parse::<usize>() {
                Ok(workers) if (0..=1024).contains(&workers) => workers,
                _ => return Err(invalid("TECHHUB_WORKERS", format!("{text:?}: expected a number from 0 to 1024"))),
            },
        };

        let cors_origins: Vec<String> = get("TECHHUB_CORS_ORIGINS")
            .map(|origins| {
                origins.split(',').map(|origin| origin.trim().to_owned()).filter(|o| !o.is_empty()).collect()
            })
            .unwrap_or_default();
        for origin in &cors_origins {
            let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.trim_end_matches('/').contains(['*', ' '])
                && http::HeaderValue::from_str(origin).is_ok();
            if !valid {
                return Err(invalid(
                    "TECHHUB_CORS_ORIGINS",
                    format!("{origin:?} is not an origin like https://app.example.com"),
                ));
            }
        }

        let public_url = get("TECHHUB_PUBLIC_URL");
        if let Some(url) = &public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid("TECHHUB_PUBLIC_URL", format!("{url:?} is not an http(s) URL")));
        }

        let auth_rate_limit = match get("TECHHUB_AUTH_RATE_LIMIT") {
            None => 60,
            Some(text) => text.parse().map_err(|_| {
                invalid("TECHHUB_AUTH_RATE_LIMIT", format!("{text:?}: expected requests per minute (0: off)"))
            })?,
        };

        let trusted_proxies = trusted_proxies(get("TECHHUB_TRUSTED_PROXIES").as_deref())?;

        let log_filter = get("TECHHUB_LOG").unwrap_or_else(|| "info".to_owned());
        tracing_subscriber::EnvFilter::try_new(&log_filter)
            .map_err(|error| invalid("TECHHUB_LOG", format!("{log_filter:?}: {error}")))?;
        let log_format = match get("TECHHUB_LOG_FORMAT").as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(invalid("TECHHUB_LOG_FORMAT", format!("{other:?}: expected pretty or json"))),
        };

        Ok(Self {
            addr,
            store,
            jwt_secret,
            admin,
            smtp_url,
            smtp_from,
            workers,
            cors_origins,
            public_url,
            auth_rate_limit,
            trusted_proxies,
            log_filter,
            log_format,
        })
    }
}

/// `TECHHUB_TRUSTED_PROXIES`: comma-separated CIDRs (or single addresses) whose `X-Forwarded-For` is believed.
fn trusted_proxies(value: Option<&str>) -> Result<Vec<techhub_axum::Cidr>, SettingError> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|cidr| !cidr.is_empty())
        .map(|cidr| {
            cidr.parse().map_err(|error: techhub_axum::CidrError| invalid("TECHHUB_TRUSTED_PROXIES", error.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_serve_sqlite_on_loopback() {
        let settings = settings(&[]).expect("defaults are valid");
        assert_eq!(settings.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.store, StoreSetting::Sqlite(PathBuf::from("./techhub.db")));
        assert_eq!(settings.auth_rate_limit, 60);
        assert!(settings.admin.is_none());
    }

    #[test]
    fn each_bad_value_names_its_variable_and_what_is_wrong() {
        let admin = |email: &'static str, password: &'static str| {
            vec![("TECHHUB_ADMIN_EMAIL", email), ("TECHHUB_ADMIN_PASSWORD", password)]
        };
        // (the environment, the variable named, what the message says)
        type Case = (Vec<(&'static str, &'static str)>, &'static str, &'static str);
        let cases: Vec<Case> = vec![
            (vec![("TECHHUB_ADDR", "localhost")], "TECHHUB_ADDR", "not an address"),
            (vec![("TECHHUB_STORE", "mysql://db")], "TECHHUB_STORE", "expected sqlite:<file>"),
            (vec![("TECHHUB_JWT_SECRET", "short")], "TECHHUB_JWT_SECRET", "at least 32 bytes"),
            (vec![("TECHHUB_WORKERS", "1025")], "TECHHUB_WORKERS", "from 0 to 1024"),
            (vec![("TECHHUB_CORS_ORIGINS", "*")], "TECHHUB_CORS_ORIGINS", "not an origin"),
            (vec![("TECHHUB_PUBLIC_URL", "example.com")], "TECHHUB_PUBLIC_URL", "not an http(s) URL"),
            (vec![("TECHHUB_AUTH_RATE_LIMIT", "-1")], "TECHHUB_AUTH_RATE_LIMIT", "requests per minute"),
            (vec![("TECHHUB_LOG", "info,[")], "TECHHUB_LOG", "info,["),
            (vec![("TECHHUB_LOG_FORMAT", "xml")], "TECHHUB_LOG_FORMAT", "pretty or json"),
            (
                vec![("TECHHUB_TRUSTED_PROXIES", "10.0.0.0/8, not-a-network")],
                "TECHHUB_TRUSTED_PROXIES",
                "not-a-network",
            ),
            (vec![("TECHHUB_ADMIN_EMAIL", "admin@example.com")], "TECHHUB_ADMIN_PASSWORD", "is required"),
            (vec![("TECHHUB_ADMIN_PASSWORD", "a long passphrase")], "TECHHUB_ADMIN_EMAIL", "is required"),
            (admin("not an address", "a long passphrase"), "TECHHUB_ADMIN_EMAIL", "email"),
            (admin("admin@example.com", "short"), "TECHHUB_ADMIN_PASSWORD", "at least"),
            (vec![("TECHHUB_SMTP_FROM", "not a mailbox")], "TECHHUB_SMTP_FROM", "sender address"),
            (
                vec![("TECHHUB_SMTP_URL", "smtp://localhost:2525"), ("TECHHUB_SMTP_FROM", "<broken")],
                "TECHHUB_SMTP_FROM",
                "sender address",
            ),
            (vec![("TECHHUB_SMTP_URL", "ftp://mail.example.com")], "TECHHUB_SMTP_URL", "not a valid SMTP URL"),
        ];
        for (pairs, variable, says) in cases {
            let error = settings(&pairs).expect_err(variable);
            assert_eq!(error.variable, variable, "{pairs:?} gave {error}");
            assert!(error.problem.contains(says), "{pairs:?}: {error:?} should say {says:?}");
        }
    }

    #[test]
    fn a_postgres_store_needs_the_jwt_secret_and_never_logs_its_password() {
        let url = "postgres://techhub:hunter2-secret@db.internal:5432/techhub";
        let error = settings(&[("TECHHUB_STORE", url)]).expect_err("no secret");
        assert_eq!(error.variable, "TECHHUB_JWT_SECRET");
        let good = settings(&[("TECHHUB_STORE", url), ("TECHHUB_JWT_SECRET", "0123456789abcdef0123456789abcdef")])
            .expect("valid");
        assert_eq!(good.store, StoreSetting::Postgres(url.to_owned()));
        let logged = format!("{good:?}");
        assert!(!logged.contains("hunter2"), "{logged}");
        assert!(logged.contains("techhub:***@db.internal:5432/techhub"), "{logged}");
    }

    #[test]
    fn good_mail_and_admin_settings_pass() {
        let good = settings(&[
            ("TECHHUB_SMTP_URL", "smtp://127.0.0.1:2525"),
            ("TECHHUB_SMTP_FROM", "TechHub <ops@example.com>"),
            ("TECHHUB_ADMIN_EMAIL", "admin@example.com"),
            ("TECHHUB_ADMIN_PASSWORD", "a long passphrase"),
        ])
        .expect("valid");
        assert_eq!(good.smtp_from.as_deref(), Some("TechHub <ops@example.com>"));
    }

    #[test]
    fn debug_hides_secrets() {
        let settings = settings(&[
            ("TECHHUB_JWT_SECRET", "0123456789abcdef0123456789abcdef-secret"),
            ("TECHHUB_ADMIN_EMAIL", "admin@example.com"),
            ("TECHHUB_ADMIN_PASSWORD", "hunter2hunter2"),
            ("TECHHUB_SMTP_URL", "smtp://user:pass@mail:587"),
        ])
        .expect("valid");
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("pass@") && !debug.contains("0123456789"));
    }
}
