//! This app around the plugin: where its data lives, its window, and how it stops.
//!
//! Environment (all optional):
//! - `TECHHUB_DESKTOP_DATA_DIR`: the folder of `techhub.db` (default: the app's data folder, for example
//!   `~/.local/share/com.example.techhub.desktop`).
//! - `TECHHUB_DESKTOP_EXPORTS_DIR`: where exports are saved (default: the Downloads folder, else `exports`
//!   in the data folder).
//! - `TECHHUB_ADMIN_EMAIL` and `TECHHUB_ADMIN_PASSWORD`: an admin account made sure of at start (as the
//!   HTTP server does), to manage users.
//! - `TECHHUB_LOG`: the log filter (default `info`); logs go to stderr.
//! - `TECHHUB_DESKTOP_AUTOFILL_EMAIL` and `TECHHUB_DESKTOP_AUTOFILL_PASSWORD`: the window fills the sign-in
//!   form with these and submits it, as a person would (for demos and the end-to-end check). Only the
//!   password typed travels this way; the session's tokens still never reach the window.
//!
//! SIGTERM and SIGINT close the app the way closing its window does (workers stop, leases are released).

use std::path::PathBuf;

use tauri::{AppHandle, Listener, Manager, RunEvent, Runtime, WebviewUrl, WebviewWindowBuilder};
use techhub_core::TechHub;
use techhub_core::auth::{JwtKeys, SigningKey};
use techhub_core::builds::{BUILD_QUEUE, ProcessExecutor};
use techhub_core::jobs::WorkerConfig;
use techhub_store_sqlite::SqliteStore;
use uuid::Uuid;

use crate::plugin::{self, OpenError, OpenedHub};

/// The Tauri event the window emits once it shows a signed-in user (the app reports it on stderr).
pub const SHOWN_EVENT: &str = "desktop:signed-in-view-shown";

/// Runs the app until its window closes or it is told to stop.
pub fn run() -> Result<(), tauri::Error> {
    // Logs go to stderr, filtered by `TECHHUB_LOG` (default: info).
    let filter = std::env::var("TECHHUB_LOG").unwrap_or_else(|_| "info".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let app = tauri::Builder::default()
        .plugin(plugin::init(open_hub))
        .setup(|app| {
            main_window(app.handle())?;
            stop_on_signals(app.handle().clone());
            app.listen_any(SHOWN_EVENT, |event| eprintln!("techhub-desktop: signed-in view shown {}", event.payload()));
            Ok(())
        })
        .build(crate::context())?;
    app.run(|_app, event| {
        if let RunEvent::Exit = event {
            // The plugin has stopped the workers by now (plugins see the event first).
            eprintln!("techhub-desktop: stopped; workers stopped and their jobs released");
        }
    });
    Ok(())
}

/// Opens the hub on SQLite in the data folder, with a process executor for builds and workers for every
/// queue the app uses.
pub fn open_hub<R: Runtime>(app: &AppHandle<R>) -> Result<OpenedHub, OpenError> {
    let data_dir = match std::env::var_os("TECHHUB_DESKTOP_DATA_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => app.path().app_data_dir()?,
    };
    std::fs::create_dir_all(&data_dir)?;
    let exports_dir = match std::env::var_os("TECHHUB_DESKTOP_EXPORTS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => app.path().download_dir().unwrap_or_else(|_| data_dir.join("exports")),
    };
    let store = SqliteStore::open(data_dir.join("techhub.db"))?;
    // The session lives in this process's memory only (never on disk), so a key made at each start is
    // exactly right: no secret to keep, and nothing signed outlives the process.
    let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let keys = JwtKeys::new(SigningKey::hs256("desktop", secret.as_bytes())?);
    let hub = TechHub::builder().storage(store).jwt_keys(keys).build_executor(ProcessExecutor::new()).build()?;
    if let (Ok(email), Ok(password)) = (std::env::var("TECHHUB_ADMIN_EMAIL"), std::env::var("TECHHUB_ADMIN_PASSWORD")) {
        tauri::async_runtime::block_on(hub.users().ensure_admin(&email, &password))?;
    }
    eprintln!("techhub-desktop: data in {}", data_dir.display());
    let mut workers = WorkerConfig::default().queue("default", 2).queue("email", 1).queue(BUILD_QUEUE, 1);
    // A closed window should not linger for long: running jobs get two seconds, then go back to the queue
    // (taken up again at the next start).
    workers.shutdown_grace = std::time::Duration::from_secs(2);
    Ok(OpenedHub { hub, workers: Some(workers), exports_dir })
}

fn main_window<R: Runtime>(app: &AppHandle<R>) -> tauri::Result<()> {
    let mut window = WebviewWindowBuilder::new(app, "main", WebviewUrl::App("index.html".into()))
        .title("TechHub")
        .inner_size(1100.0, 760.0);
    if let (Ok(email), Ok(password)) =
        (std::env::var("TECHHUB_DESKTOP_AUTOFILL_EMAIL"), std::env::var("TECHHUB_DESKTOP_AUTOFILL_PASSWORD"))
    {
        let autofill = serde_json::json!({ "email": email, "password": password });
        window = window.initialization_script(format!("window.__TECHHUB_AUTOFILL__ = {autofill};"));
    }
    window.build()?;
    Ok(())
}

/// Has SIGTERM or SIGINT exit the app through Tauri, so the plugin's exit path runs as on a window close.
fn stop_on_signals<R: Runtime>(app: AppHandle<R>) {
    tauri::async_runtime::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut terminate), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            eprintln!("techhub-desktop: cannot watch for signals; close the window to stop");
            return;
        };
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        app.exit(0);
    });
}
