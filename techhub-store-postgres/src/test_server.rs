//! A real PostgreSQL server for tests (feature `test-server`; dev code, not for production).
//!
//! [`TestServer::shared`] is the server of the test process: the one `TECHHUB_TEST_POSTGRES_URL` names (a
//! URL whose user may create databases), or else one this module starts: Debian's `initdb` and `pg_ctl`
//! (package `postgresql`, found in `/usr/lib/postgresql/<version>/bin`, or through `TECHHUB_PG_BIN`) in a
//! temporary directory, on a free port on 127.0.0.1, with trust authentication. `initdb` refuses to run as
//! root, so as root the server runs as the `postgres` system user the package creates, in a directory it
//! owns. A small watchdog process stops the server and removes its directory once the test process ends,
//! however it ends.
//!
//! Each test takes a fresh database ([`TestServer::database`]), cloned from a migrated template (fast), and
//! dropped when the returned [`TestDatabase`] is.
//!
//! The server runs with `fsync = off`: tests kill app processes, never the machine, and a commit is still
//! acknowledged only once the server has it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::{PostgresOptions, PostgresStore};

/// The variable that points the tests at an existing server.
pub const URL_ENV: &str = "TECHHUB_TEST_POSTGRES_URL";
/// The variable that names the directory holding `initdb` and `pg_ctl`, when not the Debian default.
pub const BIN_ENV: &str = "TECHHUB_PG_BIN";

/// A PostgreSQL server for tests.
#[derive(Debug)]
pub struct TestServer {
    /// `postgres://user@host:port/` without a database.
    base: String,
    /// Set when this process started the server (it can then stop and start it).
    owned: Option<OwnedServer>,
    template: tokio::sync::OnceCell<String>,
}

#[derive(Debug)]
struct OwnedServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    run_as_postgres: bool,
}

static SHARED: OnceLock<TestServer> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

impl TestServer {
    /// The server shared by every test of this process (started on first use).
    ///
    /// # Panics
    ///
    /// When no server can be had: the tests cannot run (the message says what to install or set).
    pub fn shared() -> &'static TestServer {
        SHARED.get_or_init(|| match std::env::var(URL_ENV) {
            Ok(url) if !url.trim().is_empty() => Self {
                base: url.trim().trim_end_matches('/').to_owned() + "/",
                owned: None,
                template: Default::default(),
            },
            _ => Self::start_private(),
        })
    }

    /// A server of its own, started now (for tests that stop and restart it). Stopped when this process ends.
    ///
    /// # Panics
    ///
    /// When PostgreSQL is not installed or does not start.
    pub fn start_private() -> TestServer {
        let bin = find_bin().unwrap_or_else(|| {
            panic!(
                "PostgreSQL's initdb was not found under /usr/lib/postgresql/*/bin (install the `postgresql` \
                 package, set {BIN_ENV}, or set {URL_ENV} to a server's URL)"
            )
        });
        let run_as_postgres = is_root();
        let dir = tempfile::Builder::new().prefix("techhub-pg-").tempdir().expect("a temporary directory").keep();
        if run_as_postgres {
            let status = Command::new("chown").arg("-R").arg("postgres:postgres").arg(&dir).status();
            assert!(
                status.is_ok_and(|status| status.success()),
                "could not give {} to the postgres user",
                dir.display()
            );
        }
        let port = free_port();
        let server = OwnedServer { bin, dir, port, run_as_postgres };
        server.init();
        server.watch_this_process();
        server.start();
        TestServer {
            base: format!("postgres://techhub@127.0.0.1:{port}/"),
            owned: Some(server),
            template: Default::default(),
        }
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }

    /// Whether this process started the server (and so may stop and start it).
    pub fn is_owned(&self) -> bool {
        self.owned.is_some()
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: connections are cut, as in a crash).
    ///
    /// # Panics
    ///
    /// When the server was not started by this process, or does not stop.
    pub fn stop(&self) {
        self.owned.as_ref().expect("only a server this process started can be stopped").pg_ctl(&[
            "stop",
            "-m",
            "immediate",
            "-w",
        ]);
    }

    /// Starts the server again after [`TestServer::stop`], on the same port, and waits until it accepts
    /// connections.
    ///
    /// # Panics
    ///
    /// When the server was not started by this process, or does not start.
    pub fn start(&self) {
        self.owned.as_ref().expect("only a server this process started can be started").start();
    }

    /// A new, empty, migrated database; dropped (with every connection to it) when the guard is.
    pub async fn database(&self) -> TestDatabase {
        let template = self.template.get_or_init(|| self.make_template()).await;
        let name = format!("techhub_{}_{}", std::process::id(), DATABASES.fetch_add(1, Ordering::Relaxed));
        let admin = self.admin().await;
        let started = Instant::now();
        loop {
            // A template being read by a connection that is still closing refuses for a moment.
            match admin.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}")).await {
                Ok(()) => break,
                Err(error)
                    if error.code() == Some(&SqlState::OBJECT_IN_USE)
                        && started.elapsed() < Duration::from_secs(30) =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("CREATE DATABASE {name} failed: {error}"),
            }
        }
        TestDatabase { url: self.url(&name), name, admin_url: self.url("postgres") }
    }

    /// A new database with no schema at all (for tests of the migrations); dropped when the guard is.
    pub async fn empty_database(&self) -> TestDatabase {
        let name = format!("techhub_{}_{}", std::process::id(), DATABASES.fetch_add(1, Ordering::Relaxed));
        self.admin().await.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("an empty database");
        TestDatabase { url: self.url(&name), name, admin_url: self.url("postgres") }
    }

    async fn make_template(&self) -> String {
        let name = format!("techhub_template_{}", std::process::id());
        self.admin().await.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("the template database");
        let store = PostgresStore::connect(&self.url(&name), PostgresOptions::default().share_between_instances(false))
            .await
            .expect("the template database migrates");
        drop(store);
        name
    }

    async fn admin(&self) -> tokio_postgres::Client {
        let url = self.url("postgres");
        let started = Instant::now();
        loop {
            match tokio_postgres::connect(&url, NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    return client;
                }
                Err(error) if started.elapsed() < Duration::from_secs(30) => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("cannot connect to the test server at {url}: {error}"),
            }
        }
    }
}

/// The database of a check that runs the store in several processes (the shared crash rounds and two-claimer
/// check of `techhub_core::storage::conformance`), which names a store by a file path: the file at `path`
/// holds the database's URL. The first call (the parent's) creates a database on [`TestServer::shared`] and
/// writes its URL there; every later call, in any process, reads it.
///
/// The database lives as long as the process that created it (the test server removes it with itself).
///
/// # Errors
///
/// When the URL cannot be written.
pub async fn database_url_at(path: &Path) -> std::io::Result<String> {
    /// The parent's database, kept for the rest of the process.
    static DATABASE: OnceLock<TestDatabase> = OnceLock::new();
    if let Ok(url) = std::fs::read_to_string(path) {
        return Ok(url);
    }
    let database = TestServer::shared().database().await;
    let url = database.url().to_owned();
    std::fs::write(path, &url)?;
    let _ = DATABASE.set(database);
    Ok(url)
}

/// A database of the test server, dropped with this guard.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    name: String,
    admin_url: String,
}

impl TestDatabase {
    /// Its connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // On a thread of its own with its own runtime: this may run inside (or outside) any runtime.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&admin_url, NoTls).await.ok()?;
                tokio::spawn(connection);
                client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.ok()
            })
        });
        let _ = dropped.join();
    }
}

impl OwnedServer {
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command.arg("-u").arg("postgres").arg("--").arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn init(&self) {
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args(["-U", "techhub", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"])
            .output()
            .expect("initdb runs");
        assert!(output.status.success(), "initdb failed: {}", String::from_utf8_lossy(&output.stderr));
    }

    fn start(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c full_page_writes=off -c max_connections=400 \
             -c shared_buffers=64MB",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        self.pg_ctl(&["start", "-w", "-t", "60", "-o", &options, "-l", &log.display().to_string()]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let output = self.command("pg_ctl").arg("-D").arg(self.data()).args(args).output().expect("pg_ctl runs");
        assert!(
            output.status.success(),
            "pg_ctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts a watchdog that stops the server and removes its directory once this process has ended.
    fn watch_this_process(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.run_as_postgres {
            format!("runuser -u postgres -- {} -D {} stop -m immediate", pg_ctl.display(), self.data().display())
        } else {
            format!("{} -D {} stop -m immediate", pg_ctl.display(), self.data().display())
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.2; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        let mut command = Command::new("setsid");
        command.arg("sh").arg("-c").arg(script);
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut watchdog = command.spawn().expect("the server's watchdog starts");
        // It ends only after this process: a thread reaps it should it end earlier (it never leaves a zombie).
        std::thread::spawn(move || watchdog.wait());
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb`, or [`BIN_ENV`].
fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// Whether `path` is a PostgreSQL binary directory (for tests that need their own server).
pub fn can_start_private() -> bool {
    find_bin().is_some_and(|bin| Path::new(&bin).join("pg_ctl").exists())
}
