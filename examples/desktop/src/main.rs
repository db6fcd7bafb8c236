//! `techhub-desktop`: see the crate docs of `techhub_desktop` and the README's "Desktop app" section.

fn main() -> std::process::ExitCode {
    match techhub_desktop::app::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("techhub-desktop: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
