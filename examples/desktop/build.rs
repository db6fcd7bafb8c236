//! Compiles the Tauri context: the config, the window's files under `ui/`, and the access-control lists.
//!
//! The TechHub commands form an inlined plugin (`techhub`): Tauri generates an `allow-` and a `deny-`
//! permission for each command listed here, `permissions/techhub/default.toml` bundles them, and
//! `capabilities/main.json` grants that bundle to the main window. A command missing here cannot be invoked.

fn main() {
    let techhub = tauri_build::InlinedPlugin::new().commands(&[
        "register",
        "sign_in",
        "sign_out",
        "current_user",
        "list_users",
        "update_user",
        "delete_user",
        "list_jobs",
        "cancel_job",
        "start_export",
        "save_export",
        "list_builds",
        "create_build",
        "cancel_build",
        "read_build_log",
        "watch",
    ]);
    let attributes = tauri_build::Attributes::new().plugin("techhub", techhub);
    if let Err(error) = tauri_build::try_build(attributes) {
        // A build script reports failure by panicking; the message names the bad file or permission.
        panic!("tauri-build failed: {error:#}");
    }
}
