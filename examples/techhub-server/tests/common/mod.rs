//! Starting the example server as a user runs it, shared by the process tests: the binary in a directory of
//! the test's, with nothing from the test's environment but what the test sets, on a free port on
//! 127.0.0.1.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The server binary Cargo built for these tests.
pub(crate) const SERVER: &str = env!("CARGO_BIN_EXE_techhub-server");

/// The server command in `dir` (its working directory: where the default store and secret go), on a free port,
/// logging warnings, with its standard output and error captured; the test adds its settings.
pub(crate) fn server(dir: &Path) -> Command {
    let mut command = Command::new(SERVER);
    command
        .current_dir(dir)
        .env_clear()
        .env("TECHHUB_ADDR", "127.0.0.1:0")
        .env("TECHHUB_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Starts `command` and waits for the line saying where it listens; answers the process and its address
/// (`127.0.0.1:<port>`).
///
/// # Panics
///
/// When the server does not start or says no address (it stopped at start).
pub(crate) fn spawn_listening(command: &mut Command) -> (Child, String) {
    let mut child = command.spawn().expect("the server starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("the listening line");
    let address = line.trim().rsplit("http://").next().expect("an address").to_owned();
    assert!(!address.is_empty(), "the server did not start");
    (child, address)
}
