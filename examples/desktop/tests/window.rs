//! End to end: the real app (the `techhub-desktop` binary, WebKitGTK and all) on a virtual X display.
//!
//! The data folder is seeded first (an admin, another user, an export, and a build whose module runs for
//! minutes); the app starts with the admin's credentials to autofill, so the window signs in through its
//! own form and IPC. Once it reports the signed-in view shown, the display is photographed and the picture
//! checked: not blank (many colours), the page's header blue where the header is, and the signed-in view's
//! first card where the sign-in form would leave the background. Then the window is closed (as a window
//! manager's close button does) and the store shows the running build's job released; a second start takes
//! it up again, and SIGTERM stops the app as cleanly.
//!
//! Needs `Xvfb`, ImageMagick (`import`, `convert`) and python3-xlib (to close the window);
//! `scripts/test-desktop.sh` installs them. The picture
//! is kept at `$TECHHUB_DESKTOP_SCREENSHOT` (default: `desktop-screenshot.png` in Cargo's test temp dir).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use techhub_core::builds::{NewBuild, NewModule, ProcessExecutor};
use techhub_core::model::{Job, JobId, JobState, Role};
use techhub_core::users::{Registration, TransferFormat};
use techhub_core::{Actor, TechHub};
use techhub_store_sqlite::SqliteStore;

const ADMIN_EMAIL: &str = "admin@example.com";
const PASSWORD: &str = "correct horse battery staple";
/// Only a hung app or display waits this long.
const PATIENCE: Duration = Duration::from_secs(120);

/// A child process killed when dropped (a failed assertion must not leave Xvfb or the app behind).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the seeding left in the store.
struct Seeded {
    build_job: techhub_core::model::JobId,
}

fn seed(data: &Path) -> Seeded {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let store = SqliteStore::open(data.join("techhub.db")).expect("the store");
        let hub = TechHub::builder().storage(store).build_executor(ProcessExecutor::new()).build().expect("a hub");
        let admin = hub.users().ensure_admin(ADMIN_EMAIL, PASSWORD).await.expect("the admin");
        hub.users()
            .register(Registration {
                email: "ada@example.com".to_owned(),
                password: PASSWORD.to_owned(),
                name: Some("Ada Lovelace".to_owned()),
            })
            .await
            .expect("registered");
        let actor = Actor::user(admin.id, Role::Admin);
        hub.users().export(&actor, TransferFormat::Csv).await.expect("an export");
        let module = NewModule {
            name: "long".to_owned(),
            command: Some("echo started; sleep 600".to_owned()),
            ..NewModule::default()
        };
        let build = hub.builds().create(&actor, NewBuild::new("desktop-e2e", vec![module])).await.expect("a build");
        Seeded { build_job: build.job_id.expect("a build runs as a job") }
    })
}

fn free_display() -> u32 {
    (90..200)
        .find(|n| {
            !Path::new(&format!("/tmp/.X{n}-lock")).exists() && !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
        })
        .expect("a free X display number")
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn magick(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap_or_else(|error| {
        panic!("{program} cannot run ({error}); install imagemagick (scripts/test-desktop.sh does)")
    });
    assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn is_white(pixel: &str) -> bool {
    pixel.contains("255,255,255") || pixel == "white"
}

/// The app running on a display, its stderr lines arriving on a channel.
struct AppRun {
    process: Running,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl AppRun {
    fn start(display: &str, home: &Path, data: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_techhub-desktop"))
            .env("DISPLAY", display)
            .env("HOME", home)
            .env("XDG_RUNTIME_DIR", home)
            .env("NO_AT_BRIDGE", "1")
            .env("TECHHUB_DESKTOP_DATA_DIR", data)
            .env("TECHHUB_DESKTOP_EXPORTS_DIR", home.join("exports"))
            .env("TECHHUB_DESKTOP_AUTOFILL_EMAIL", ADMIN_EMAIL)
            .env("TECHHUB_DESKTOP_AUTOFILL_PASSWORD", PASSWORD)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the app starts");
        let stderr = child.stderr.take().expect("piped");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("app: {line}");
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self { process: Running(child), lines, log: Vec::new() }
    }

    fn wait_for_line(&mut self, needle: &str) {
        loop {
            match self.lines.recv_timeout(PATIENCE) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.log.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!("the app never said {needle:?}; it said:\n{}", self.log.join("\n")),
            }
        }
    }

    /// Waits for the app to report its clean stop and exit with success.
    fn wait_for_clean_exit(mut self) {
        self.wait_for_line("workers stopped");
        let exit = self.process.0.wait().expect("the app exits");
        assert!(exit.success(), "the app exited with {exit}");
    }
}

/// Asks the window titled `TechHub` to close, as a window manager's close button does (a `WM_DELETE_WINDOW`
/// message), through python3-xlib: there is no window manager on the virtual display to do it.
fn close_window(display: &str) {
    const CLOSE: &str = r#"
import sys
from Xlib import X, display, protocol
d = display.Display(sys.argv[1])
protocols, delete = d.intern_atom("WM_PROTOCOLS"), d.intern_atom("WM_DELETE_WINDOW")
def find(window):
    for child in window.query_tree().children:
        if child.get_wm_name() == "TechHub":
            return child
        found = find(child)
        if found:
            return found
window = find(d.screen().root)
if window is None:
    sys.exit("no window titled TechHub")
message = protocol.event.ClientMessage(window=window, client_type=protocols, data=(32, [delete, X.CurrentTime, 0, 0, 0]))
window.send_event(message, event_mask=X.NoEventMask)
d.flush()
"#;
    let output = Command::new("/usr/bin/python3").args(["-c", CLOSE, display]).output().unwrap_or_else(|error| {
        panic!("python3 cannot run ({error}); install python3-xlib (scripts/test-desktop.sh does)")
    });
    assert!(output.status.success(), "closing the window: {}", String::from_utf8_lossy(&output.stderr));
}

fn build_job(data: &Path, id: JobId) -> Job {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let store = SqliteStore::open(data.join("techhub.db")).expect("the store");
        let hub = TechHub::builder().storage(store).build().expect("a hub");
        hub.jobs().get(&Actor::System, id).await.expect("the build's job")
    })
}

#[test]
fn the_real_app_signs_in_shows_its_window_and_releases_its_jobs_when_closed() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("the data folder");
    let seeded = seed(&data);

    let display = format!(":{}", free_display());
    let xvfb = Command::new("Xvfb")
        .args([display.as_str(), "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("Xvfb cannot start ({error}); install xvfb (scripts/test-desktop.sh does)"));
    let _xvfb = Running(xvfb);
    let socket = format!("/tmp/.X11-unix/X{}", &display[1..]);
    wait_until("the X display", || Path::new(&socket).exists());

    let mut app = AppRun::start(&display, dir.path(), &data);
    app.wait_for_line("signed-in view shown");

    // Painting follows the page's last change; photograph until the picture is a rendered window.
    let screenshot = std::env::var_os("TECHHUB_DESKTOP_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("desktop-screenshot.png"));
    let shot = screenshot.to_string_lossy().into_owned();
    let mut colours = 0;
    let (mut header, mut card) = (String::new(), String::new());
    let mut previous = String::new();
    let attempts = std::cell::Cell::new(0);
    wait_until("a settled picture of the signed-in window", || {
        attempts.set(attempts.get() + 1);
        magick("import", &["-display", &display, "-window", "root", &shot]);
        // The same pixels twice in a row: the page has finished painting what it was given.
        let signature = magick("convert", &[&shot, "-format", "%#", "info:"]);
        let settled = signature == previous;
        previous = signature;
        colours = magick("convert", &[&shot, "-format", "%k", "info:"]).parse().expect("a colour count");
        let pixel = |x: u32, y: u32| magick("convert", &[&shot, "-format", &format!("%[pixel:p{{{x},{y}}}]"), "info:"]);
        // The page's header blue; and just below it, at the left edge, the Jobs card's white: the signed-in
        // view starts there, while the sign-in form is a narrow card in the middle (background there).
        (header, card) = (pixel(600, 20), pixel(40, 75));
        settled && colours >= 64 && header.contains("37,99,235") && is_white(&card)
    });
    eprintln!(
        "screenshot {shot} (attempt {}): {colours} distinct colours, header {header}, card {card}",
        attempts.get()
    );

    // Closing the window ends the app: the plugin stops the workers, and the running build's job goes back
    // to the queue with its lease released.
    close_window(&display);
    app.wait_for_clean_exit();
    let job = build_job(&data, seeded.build_job);
    assert_eq!(job.state, JobState::Queued, "the running build's job is back in the queue: {job:?}");
    assert_eq!(job.lease_holder, None);

    // The next start takes the build up again (how it goes on is the build runner's business); SIGTERM stops
    // the app the same clean way, leaving no lease behind.
    let mut app = AppRun::start(&display, dir.path(), &data);
    app.wait_for_line("signed-in view shown");
    wait_until("the build's job taken up again", || build_job(&data, seeded.build_job).started_at != job.started_at);
    let pid = app.process.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
    app.wait_for_clean_exit();
    let job = build_job(&data, seeded.build_job);
    assert_ne!(job.state, JobState::Running, "{job:?}");
    assert_eq!(job.lease_holder, None, "{job:?}");
    eprintln!("after SIGTERM: the build's job is {:?}", job.state);
}
