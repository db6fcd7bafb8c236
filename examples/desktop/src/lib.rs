//! TechHub in a Tauri 2 desktop app, with no server: the engine is linked in, on SQLite in the app's data
//! folder, with its workers in the process.
//!
//! - [`plugin`] is the reusable part: the `techhub` Tauri plugin (state, commands, errors, the live bridge).
//! - [`app`] is this app: where the data lives, the main window, signals, and the exit path.

pub mod app;
pub mod plugin;

/// The app's Tauri context (`tauri.conf.json`, the window's files under `ui/`, the permissions and
/// capabilities), for any runtime: the real one in `main`, the mock one in tests.
pub fn context<R: tauri::Runtime>() -> tauri::Context<R> {
    tauri::generate_context!()
}
