//! The server as a user runs it: a bad setting stops it at start naming the variable; a good configuration
//! serves, bootstraps the admin (who then signs in), and stops gracefully (exit 0) on SIGTERM and on SIGINT.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{server, spawn_listening};

#[test]
fn a_bad_setting_stops_the_server_naming_the_variable() {
    let dir = tempfile::tempdir().expect("a directory");
    for (variable, value) in [
        ("TECHHUB_STORE", "mysql://nope"),
        ("TECHHUB_JWT_SECRET", "short"),
        ("TECHHUB_ADDR", "nope"),
        ("TECHHUB_SMTP_FROM", "not a mailbox"),
        ("TECHHUB_ADMIN_PASSWORD", "short"),
    ] {
        let output = server(dir.path())
            .env("TECHHUB_ADMIN_EMAIL", "admin@example.com")
            .env("TECHHUB_ADMIN_PASSWORD", "a long admin passphrase")
            .env(variable, value)
            .output()
            .expect("the server runs");
        assert_eq!(output.status.code(), Some(2), "{variable}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(variable), "{variable}: {stderr}");
    }
}

/// Starts the server on the default SQLite store with an admin and returns it with its address.
fn start(dir: &std::path::Path) -> (Child, String) {
    spawn_listening(
        server(dir)
            .env("TECHHUB_ADMIN_EMAIL", "admin@example.com")
            .env("TECHHUB_ADMIN_PASSWORD", "a long admin passphrase"),
    )
}

fn wait(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 request (`"METHOD /path"`, a JSON body or none) and the whole response as text.
fn request(address: &str, line: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connects");
    write!(
        stream,
        "{line} HTTP/1.1\r\nHost: x\r\nConnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

#[cfg(unix)]
#[test]
fn the_server_serves_on_sqlite_and_stops_gracefully_on_signals() {
    let dir = tempfile::tempdir().expect("a directory");
    for signal in ["TERM", "INT"] {
        let (mut child, address) = start(dir.path());
        let health = request(&address, "GET /health", "");
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        // The bootstrapped admin can sign in, and is an admin.
        let login = r#"{"email":"admin@example.com","password":"a long admin passphrase"}"#;
        let signed_in = request(&address, "POST /api/v1/auth/login", login);
        assert!(signed_in.starts_with("HTTP/1.1 200"), "{signed_in}");
        assert!(signed_in.contains(r#""role":"admin""#) && signed_in.contains("access_token"), "{signed_in}");
        let killed = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status();
        assert!(killed.expect("kill runs").success());
        assert!(wait(&mut child).success(), "SIG{signal} ends the server cleanly");
    }
    assert!(dir.path().join("techhub.db").exists(), "the default store is ./techhub.db");
    assert!(dir.path().join("techhub-jwt-secret").exists(), "a generated secret is kept beside the data");
}

#[test]
fn the_admin_address_of_a_registered_account_stops_the_start_unless_its_password_verifies() {
    let dir = tempfile::tempdir().expect("a directory");
    // Someone registered the address the operator is about to configure.
    tokio::runtime::Runtime::new().expect("a runtime").block_on(async {
        let store = techhub_store_sqlite::SqliteStore::open(dir.path().join("techhub.db")).expect("opens");
        let hub = techhub_core::TechHub::builder().storage(store).build().expect("hub");
        let registration = techhub_core::users::Registration {
            email: "admin@example.com".into(),
            password: "the squatter's own passphrase".into(),
            name: None,
        };
        hub.users().register(registration).await.expect("registers");
    });
    let output = server(dir.path())
        .env("TECHHUB_ADMIN_EMAIL", "admin@example.com")
        .env("TECHHUB_ADMIN_PASSWORD", "a long admin passphrase")
        .output()
        .expect("the server runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TECHHUB_ADMIN_EMAIL"), "{stderr}");
}

#[cfg(unix)]
#[test]
fn a_secret_file_readable_by_others_stops_the_start_and_is_left_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join("techhub-jwt-secret");
    let secret = "0123456789abcdef0123456789abcdef-kept";
    std::fs::write(&path, secret).expect("written");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let output = server(dir.path()).output().expect("the server runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TECHHUB_JWT_SECRET") && stderr.contains("group or others"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).expect("kept"), secret);
}
