//! TechHub as a Tauri plugin (`techhub`): a small glue another Tauri 2 app can copy or depend on.
//!
//! - [`init`] opens the hub in the plugin's setup (where the app's paths are known), starts its workers in
//!   the process, manages a [`HubState`], and starts forwarding the bus to the window ([`live`]).
//! - The commands (`plugin:techhub|sign_in`, `...|list_jobs`, ...) only authenticate the signed-in session
//!   and pass its `Actor` to the core; every rule stays in the core. They fail with a [`CommandError`]
//!   carrying the core's `ErrorKind` and code.
//! - The app's `build.rs` declares the commands (Tauri generates an `allow-`/`deny-` permission for each),
//!   `permissions/techhub/default.toml` bundles them and a capability grants the bundle to a window.
//! - On exit (the last window closed, or `AppHandle::exit`) the workers stop: running jobs get their grace
//!   period, the rest are released back to `queued`; and the session is revoked.

pub mod commands;
pub mod error;
pub mod live;
pub mod state;

use std::path::PathBuf;

use tauri::plugin::{Builder, TauriPlugin};
use tauri::{AppHandle, Manager, RunEvent, Runtime};
use techhub_core::TechHub;
use techhub_core::jobs::WorkerConfig;

pub use self::error::CommandError;
pub use self::live::EventView;
pub use self::state::HubState;

/// The plugin's name: commands are invoked as `plugin:techhub|<command>`, permissions are `techhub:...`.
pub const NAME: &str = "techhub";

/// What the app opens for the plugin in its setup.
pub struct OpenedHub {
    /// The hub, on the app's store.
    pub hub: TechHub,
    /// The workers to run in this process (`None`: jobs run elsewhere).
    pub workers: Option<WorkerConfig>,
    /// Where `save_export` writes files.
    pub exports_dir: PathBuf,
}

/// The error an app's `open` function may fail with (it stops the app's start).
pub type OpenError = Box<dyn std::error::Error + Send + Sync>;

/// The plugin. `open` runs once, in the plugin's setup, with the app (for its paths and config).
pub fn init<R, F>(open: F) -> TauriPlugin<R>
where
    R: Runtime,
    F: FnOnce(&AppHandle<R>) -> Result<OpenedHub, OpenError> + Send + 'static,
{
    Builder::new(NAME)
        .invoke_handler(tauri::generate_handler![
            commands::auth::register,
            commands::auth::sign_in,
            commands::auth::sign_out,
            commands::auth::current_user,
            commands::auth::watch,
            commands::users::list_users,
            commands::users::update_user,
            commands::users::delete_user,
            commands::jobs::list_jobs,
            commands::jobs::cancel_job,
            commands::jobs::start_export,
            commands::jobs::save_export,
            commands::builds::list_builds,
            commands::builds::create_build,
            commands::builds::cancel_build,
            commands::builds::read_build_log,
        ])
        .setup(move |app, _api| {
            let opened = open(app).map_err(|error| -> Box<dyn std::error::Error> { error })?;
            // The workers and the forwarder are tokio tasks: start them inside Tauri's runtime.
            let (workers, bus) = tauri::async_runtime::block_on(async {
                let workers = opened.workers.map(|config| opened.hub.start_workers(config)).transpose();
                (workers, opened.hub.subscribe())
            });
            let state = HubState::new(opened.hub, workers?, opened.exports_dir);
            app.manage(state);
            let forwarder = tauri::async_runtime::spawn(live::forward(app.clone(), bus));
            app.state::<HubState>().set_forwarder(forwarder);
            Ok(())
        })
        .on_event(|app, event| {
            if let RunEvent::Exit = event {
                // The event loop has ended: nothing else runs on this thread, so waiting here is fine.
                tauri::async_runtime::block_on(app.state::<HubState>().shutdown());
            }
        })
        .build()
}
