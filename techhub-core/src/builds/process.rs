//! [`ProcessExecutor`]: a module's command runs through `sh -c` in a process group of its own; a stop sends
//! SIGTERM to the whole group, then SIGKILL after a grace period; when the command ends, whatever it left
//! running in its group is killed, so no process outlives its module.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::time::{Instant, sleep};

use super::{BuildExecutor, ModuleExit, ModuleRun};
use crate::model::LogStream;

/// The longest log line kept, in bytes; longer lines are cut.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// Runs module commands as local processes. See the module docs.
#[derive(Debug, Clone)]
pub struct ProcessExecutor {
    working_dir: Option<PathBuf>,
    env: Vec<(String, String)>,
    grace: Duration,
}

impl Default for ProcessExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessExecutor {
    /// Commands run in the current directory, with this process's environment, and get 10 s between SIGTERM
    /// and SIGKILL.
    pub fn new() -> Self {
        Self { working_dir: None, env: Vec::new(), grace: Duration::from_secs(10) }
    }

    /// Commands run in `dir`.
    #[must_use]
    pub fn working_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Commands get `key=value` in their environment (beside `TECHHUB_BUILD_ID`, `TECHHUB_PROJECT`,
    /// `TECHHUB_REF`, `TECHHUB_MODULE` and `TECHHUB_ATTEMPT`).
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The time between SIGTERM and SIGKILL when a run is stopped.
    #[must_use]
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
}

/// Kills the process group when dropped: also when the runner itself is dropped mid-run (a crash of the
/// runtime), no process of the module is left behind.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn signal(&self, signal: Signal) -> bool {
        self.0.is_some_and(|group| signal_group(group, signal))
    }

    fn alive(&self) -> bool {
        self.0.is_some_and(group_alive)
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::Kill);
    }
}

#[derive(Debug, Clone, Copy)]
enum Signal {
    Term,
    Kill,
}

#[cfg(unix)]
fn signal_group(group: u32, signal: Signal) -> bool {
    use rustix::process::{Pid, Signal as Sig, kill_process_group};
    let Some(pid) = i32::try_from(group).ok().and_then(Pid::from_raw) else { return false };
    let signal = match signal {
        Signal::Term => Sig::TERM,
        Signal::Kill => Sig::KILL,
    };
    kill_process_group(pid, signal).is_ok()
}

#[cfg(unix)]
fn group_alive(group: u32) -> bool {
    use rustix::process::{Pid, test_kill_process_group};
    i32::try_from(group).ok().and_then(Pid::from_raw).is_some_and(|pid| test_kill_process_group(pid).is_ok())
}

#[cfg(not(unix))]
fn signal_group(_group: u32, _signal: Signal) -> bool {
    false
}

#[cfg(not(unix))]
fn group_alive(_group: u32) -> bool {
    false
}

/// Parses `::progress 40 compiling` into `(40, Some("compiling"))`.
fn progress_line(line: &str) -> Option<(u8, Option<String>)> {
    let rest = line.strip_prefix("::progress ")?.trim();
    let (percent, message) = rest.split_once(' ').unwrap_or((rest, ""));
    let percent: u8 = percent.parse().ok()?;
    let message = message.trim();
    Some((percent.min(100), (!message.is_empty()).then(|| message.to_owned())))
}

async fn forward(stream: impl AsyncRead + Unpin, kind: LogStream, run: ModuleRun) {
    let mut reader = BufReader::new(stream);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buffer.last() == Some(&b'\n') {
            buffer.pop();
        }
        if buffer.last() == Some(&b'\r') {
            buffer.pop();
        }
        buffer.truncate(MAX_LINE_BYTES);
        let text = String::from_utf8_lossy(&buffer).into_owned();
        if kind == LogStream::Stdout
            && let Some((percent, message)) = progress_line(&text)
        {
            run.progress.report(percent, message);
            continue;
        }
        run.log.line(kind, text).await;
    }
}

#[async_trait]
impl BuildExecutor for ProcessExecutor {
    async fn run(&self, run: ModuleRun) -> ModuleExit {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&run.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .envs(self.env.iter().map(|(key, value)| (key.as_str(), value.as_str())))
            .env("TECHHUB_BUILD_ID", run.build_id.to_string())
            .env("TECHHUB_PROJECT", &run.project)
            .env("TECHHUB_REF", &run.git_ref)
            .env("TECHHUB_MODULE", &run.module)
            .env("TECHHUB_ATTEMPT", run.attempt.to_string());
        #[cfg(unix)]
        command.process_group(0);
        if let Some(dir) = &self.working_dir {
            command.current_dir(dir);
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => return ModuleExit::failed(None, format!("the command could not start: {error}")),
        };
        // The group's id is the shell's pid (process_group(0) made it the leader).
        let group = GroupGuard(child.id());
        let readers = [
            child.stdout.take().map(|out| tokio::spawn(forward(out, LogStream::Stdout, run.clone()))),
            child.stderr.take().map(|err| tokio::spawn(forward(err, LogStream::Stderr, run.clone()))),
        ];
        let mut stopped = false;
        let status = tokio::select! {
            status = child.wait() => status,
            () = run.cancel.cancelled() => {
                stopped = true;
                group.signal(Signal::Term);
                let deadline = Instant::now() + self.grace;
                let status = tokio::select! {
                    status = child.wait() => status,
                    () = tokio::time::sleep_until(deadline) => {
                        group.signal(Signal::Kill);
                        child.wait().await
                    }
                };
                // The shell is gone; children that ignore SIGTERM get the rest of the grace period.
                while group.alive() && Instant::now() < deadline {
                    sleep(Duration::from_millis(20)).await;
                }
                status
            }
        };
        // Whatever the command left running in its group goes now, which also closes the pipes.
        group.signal(Signal::Kill);
        for reader in readers.into_iter().flatten() {
            let _ = reader.await;
        }
        drop(group);
        match status {
            Ok(status) if status.success() && !stopped => ModuleExit::succeeded(),
            Ok(status) => {
                let code = status.code();
                #[cfg(unix)]
                let signal = std::os::unix::process::ExitStatusExt::signal(&status);
                #[cfg(not(unix))]
                let signal: Option<i32> = None;
                let message = match (code, signal) {
                    (_, _) if stopped => "stopped".to_owned(),
                    (Some(code), _) => format!("exited with code {code}"),
                    (None, Some(signal)) => format!("killed by signal {signal}"),
                    (None, None) => "ended without an exit code".to_owned(),
                };
                ModuleExit::failed(code, message)
            }
            Err(error) => ModuleExit::failed(None, format!("waiting for the command failed: {error}")),
        }
    }

    fn name(&self) -> &'static str {
        "process"
    }
}

#[cfg(test)]
mod tests {
    use super::progress_line;

    #[test]
    fn progress_lines_parse() {
        assert_eq!(progress_line("::progress 40 compiling"), Some((40, Some("compiling".to_owned()))));
        assert_eq!(progress_line("::progress 250"), Some((100, None)));
        assert_eq!(progress_line("::progress x"), None);
        assert_eq!(progress_line("progress 4"), None);
    }
}
