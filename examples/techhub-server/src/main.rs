//! `techhub-server`: TechHub's HTTP API over SQLite (default `./techhub.db`), sled, PostgreSQL (several servers
//! may share one database) or memory, with the workers in the same process. Configured by the environment (see `settings`); stops gracefully on SIGINT
//! and SIGTERM (in-flight requests finish, running jobs get their grace period).

mod build_settings;
mod notify_settings;
mod secret_file;
mod settings;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use techhub_core::auth::{JwtKeys, SigningKey};
use techhub_core::builds::{BUILD_QUEUE, ProcessExecutor};
use techhub_core::jobs::WorkerConfig;
use techhub_core::notify::SmtpNotifier;
use techhub_core::storage::DynStorage;
use techhub_core::{Config, TechHub};
use techhub_store_memory::MemoryStore;
use techhub_store_postgres::{PostgresOptions, PostgresStore};
use techhub_store_sled::SledStore;
use techhub_store_sqlite::SqliteStore;

use crate::build_settings::BuildSettings;
use crate::notify_settings::NotifySettings;
use crate::settings::{LogFormat, Settings, StoreSetting};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::from_lookup(|name| std::env::var(name).ok()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("techhub-server: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let builds = match BuildSettings::from_lookup(|name| std::env::var(name).ok()) {
        Ok(builds) => builds,
        Err(error) => {
            eprintln!("techhub-server: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let notify = match NotifySettings::from_lookup(|name| std::env::var(name).ok()) {
        Ok(notify) => notify,
        Err(error) => {
            eprintln!("techhub-server: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let log_ring = init_logging(&settings);
    match run(settings, builds, notify, log_ring).await {
        Ok(()) => ExitCode::SUCCESS,
        // A setting found unusable only at start (a store that cannot open, an admin address that belongs to
        // someone else, an unsafe secret file) is a configuration error like any other: exit 2.
        Err(error) if error.downcast_ref::<settings::SettingError>().is_some() => {
            tracing::error!("{error}");
            eprintln!("techhub-server: invalid configuration: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("techhub-server: {error}");
            ExitCode::FAILURE
        }
    }
}

/// How many recent log records `GET /api/v1/system/logs` can show.
const LOG_RING_CAPACITY: usize = 2000;

/// Logs to stderr (pretty or JSON) and into a ring of recent records for the system routes and the dashboard,
/// both through the `TECHHUB_LOG` filter; returns the ring.
fn init_logging(settings: &Settings) -> techhub_axum::LogRing {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let ring = techhub_axum::LogRing::new(LOG_RING_CAPACITY);
    let filter = || tracing_subscriber::EnvFilter::new(&settings.log_filter);
    let output = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let output = match settings.log_format {
        LogFormat::Pretty => output.with_filter(filter()).boxed(),
        LogFormat::Json => output.json().with_filter(filter()).boxed(),
    };
    tracing_subscriber::registry().with(output).with(ring.layer().with_filter(filter())).init();
    ring
}

async fn run(
    settings: Settings,
    builds: BuildSettings,
    notify: NotifySettings,
    log_ring: techhub_axum::LogRing,
) -> Result<(), Box<dyn std::error::Error>> {
    tracing::info!(?settings, ?builds, "starting");
    let (storage, data_dir) = open_store(&settings.store).await?;
    let secret = jwt_secret(&settings, data_dir.as_deref())?;

    let mut config = Config::default().builds(builds.config());
    config.notify = notify.config(config.notify.clone());
    if let Some(url) = &settings.public_url {
        config.public_url = url.trim_end_matches('/').to_owned();
    }
    if let Some(from) = &settings.smtp_from {
        config.email_from = from.clone();
    }
    let mut builder = TechHub::builder()
        .shared_storage(storage)
        .config(config.clone())
        .jwt_keys(JwtKeys::new(SigningKey::hs256("server", secret.as_bytes())?));
    if let Some(url) = &settings.smtp_url {
        // Both the URL and the sender were checked with the settings.
        builder = builder.notifier(SmtpNotifier::from_url(url, &config.email_from)?);
    }
    if builds.process_executor {
        builder = builder.build_executor(ProcessExecutor::new());
    }
    let hub = builder.build()?;

    if let Some((email, password)) = &settings.admin {
        // The address and the password were checked with the settings; what is left is the account itself.
        let admin = hub.users().ensure_admin(email, password).await.map_err(|error| settings::SettingError {
            variable: "TECHHUB_ADMIN_EMAIL",
            problem: match error.code() {
                Some("admin_email_taken") => format!(
                    "{email} belongs to an existing account that is not an admin, and TECHHUB_ADMIN_PASSWORD does \
                     not sign in to it; refusing to promote it (choose another address, or promote it by hand)"
                ),
                _ => format!("the admin account could not be set up: {}", error.message()),
            },
        })?;
        tracing::info!(admin = %admin.email, "admin account ready");
    }

    notify.ensure_slack_endpoint(&hub).await?;

    // No workers (`TECHHUB_WORKERS=0`): an API-only instance, for servers sharing a PostgreSQL database with
    // instances that run the jobs.
    let workers = if settings.workers == 0 {
        tracing::info!("TECHHUB_WORKERS=0: no job workers in this process");
        None
    } else {
        let mut worker_config =
            WorkerConfig::default().queue("default", settings.workers).queue("email", settings.workers.div_ceil(2));
        if builds.process_executor {
            worker_config = worker_config.queue(BUILD_QUEUE, builds.concurrency);
        }
        Some(hub.start_workers(worker_config)?)
    };

    let http = techhub_axum::HttpConfig {
        cors_origins: settings.cors_origins.clone(),
        auth_rate_limit_per_minute: settings.auth_rate_limit,
        trusted_proxies: settings.trusted_proxies.clone(),
        log_ring: Some(log_ring),
        ..techhub_axum::HttpConfig::default()
    };
    let app = techhub_axum::router(hub.clone(), http);
    let listener = tokio::net::TcpListener::bind(settings.addr).await.map_err(|error| settings::SettingError {
        variable: "TECHHUB_ADDR",
        problem: format!("cannot listen: {error}"),
    })?;
    tracing::info!(addr = %listener.local_addr()?, "serving");
    println!("techhub-server listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("HTTP stopped; stopping workers");
    if let Some(workers) = workers {
        workers.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Opens the configured store; returns it with the directory its data lives in (for the JWT secret file).
async fn open_store(setting: &StoreSetting) -> Result<(DynStorage, Option<PathBuf>), Box<dyn std::error::Error>> {
    let failed = |error: techhub_core::storage::StoreError| settings::SettingError {
        variable: "TECHHUB_STORE",
        problem: format!("the store cannot be opened: {error}"),
    };
    Ok(match setting {
        StoreSetting::Sqlite(path) => {
            let store = SqliteStore::open(path).map_err(failed)?;
            let dir = path.parent().map(|dir| if dir.as_os_str().is_empty() { Path::new(".") } else { dir });
            (Arc::new(store), dir.map(Path::to_owned))
        }
        StoreSetting::Sled(dir) => (Arc::new(SledStore::open(dir).map_err(failed)?), Some(dir.clone())),
        StoreSetting::Memory => (Arc::new(MemoryStore::new()), None),
        StoreSetting::Postgres(url) => {
            (Arc::new(PostgresStore::connect(url, PostgresOptions::default()).await.map_err(failed)?), None)
        }
    })
}

/// The HS256 secret: from `TECHHUB_JWT_SECRET`, else from (or newly into) `techhub-jwt-secret` beside the
/// data, readable by the owner only, so sessions survive restarts (an unsafe file stops the start, see
/// `secret_file`). A memory store gets a random one.
fn jwt_secret(settings: &Settings, data_dir: Option<&Path>) -> Result<String, settings::SettingError> {
    if let Some(secret) = &settings.jwt_secret {
        return Ok(secret.clone());
    }
    let fresh = || {
        use rand::Rng;
        let bytes: [u8; 32] = rand::rng().random();
        bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>()
    };
    let Some(dir) = data_dir else {
        tracing::warn!("TECHHUB_JWT_SECRET is not set: using a random secret; sessions end at restart");
        return Ok(fresh());
    };
    let (secret, created) = secret_file::load_or_create(dir, fresh).map_err(|error| settings::SettingError {
        variable: "TECHHUB_JWT_SECRET",
        problem: format!("not set, and the secret file is unusable: {error}"),
    })?;
    if created {
        tracing::warn!(path = %dir.join(secret_file::FILE_NAME).display(), "TECHHUB_JWT_SECRET is not set: generated a secret and saved it beside the data");
    }
    Ok(secret)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested");
}
