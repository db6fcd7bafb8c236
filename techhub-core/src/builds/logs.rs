//! Build logs: one writer task per build batches lines into the store (one write per batch, never per line),
//! keeps each module's log under its cap (the first lines, a rolling tail, one marker line between), and
//! publishes the stored lines as `build.log` events at most every 100 ms per build. Lines are written when
//! their batch's 100 ms are up, when the buffer is large, or when someone waits for them (a flush).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use super::{mutate, telemetry};
use crate::model::{BuildId, LogLine, LogStream, NewLogLine, UserId};
use crate::{Error, ErrorKind, Result, TechHub};

/// Events of one build come at most this often (the first after a quiet spell at once).
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// A buffer this long is written at once, without waiting for the interval (bounds memory under a flood).
const MAX_BUFFERED_LINES: usize = 20_000;

/// The live log writers, one per build being written.
#[derive(Debug, Default)]
pub(crate) struct BuildLogs {
    writers: Mutex<HashMap<BuildId, LogWriter>>,
}

impl BuildLogs {
    /// The writer of build `id` (owned by `owner`, for event routing), started on first use.
    pub(crate) fn writer(&self, hub: &TechHub, id: BuildId, owner: Option<UserId>) -> LogWriter {
        let mut writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        writers
            .entry(id)
            .or_insert_with(|| {
                let (sender, receiver) = mpsc::channel(256);
                let task = WriterTask {
                    hub: hub.clone(),
                    id,
                    owner,
                    receiver,
                    buffer: Vec::new(),
                    waiters: Vec::new(),
                    unpublished: Vec::new(),
                    caps: HashMap::new(),
                };
                tokio::spawn(task.run());
                LogWriter { sender }
            })
            .clone()
    }

    /// Forgets the writer of a finished build: its task writes what it holds and ends.
    pub(crate) fn close(&self, id: BuildId) {
        self.writers.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }
}

enum Command {
    Lines(Vec<NewLogLine>),
    Flush(oneshot::Sender<Result<()>>),
}

/// Sends lines to a build's writer task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LogWriter {
    sender: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Lines(lines) => write!(f, "Lines({})", lines.len()),
            Self::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl LogWriter {
    /// Queues lines; they are stored with the next batch. Waits only when the writer is far behind.
    pub async fn write(&self, lines: Vec<NewLogLine>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        self.sender
            .send(Command::Lines(lines))
            .await
            .map_err(|_| Error::new(ErrorKind::Unavailable, "the build log writer stopped"))
    }

    /// Waits until every line queued before is stored (and published).
    pub async fn flush(&self) -> Result<()> {
        let (done, stored) = oneshot::channel();
        self.sender
            .send(Command::Flush(done))
            .await
            .map_err(|_| Error::new(ErrorKind::Unavailable, "the build log writer stopped"))?;
        stored.await.map_err(|_| Error::new(ErrorKind::Unavailable, "the build log writer stopped"))?
    }
}

/// What the cap needs to know of one module's log in this process.
#[derive(Debug, Default)]
struct ModuleCap {
    /// Lines seen so far.
    lines: u64,
    /// Bytes of the lines kept (head and tail).
    bytes: u64,
    /// The tail's lines, oldest first: `(seq, bytes)`.
    tail: VecDeque<(u64, u64)>,
    /// The marker's `seq`, once lines were dropped.
    marker: Option<u64>,
    /// Lines dropped so far (the one the marker replaced included).
    dropped: u64,
    /// The module's `log_truncated` flag was set.
    flagged: bool,
}

struct WriterTask {
    hub: TechHub,
    id: BuildId,
    owner: Option<UserId>,
    receiver: mpsc::Receiver<Command>,
    buffer: Vec<NewLogLine>,
    waiters: Vec<oneshot::Sender<Result<()>>>,
    unpublished: Vec<LogLine>,
    caps: HashMap<String, ModuleCap>,
}

impl WriterTask {
    async fn run(mut self) {
        let mut last_publish = Instant::now() - FLUSH_INTERVAL;
        loop {
            let busy = !self.buffer.is_empty() || !self.unpublished.is_empty();
            let due = last_publish + FLUSH_INTERVAL;
            tokio::select! {
                command = self.receiver.recv() => match command {
                    Some(Command::Lines(lines)) => {
                        self.buffer.extend(lines);
                        if self.buffer.len() >= MAX_BUFFERED_LINES {
                            self.store().await;
                        }
                    }
                    // A flush stores at once (one write for everything buffered); events keep their pace.
                    Some(Command::Flush(done)) => {
                        self.waiters.push(done);
                        self.store().await;
                    }
                    None => {
                        self.store().await;
                        self.publish();
                        return;
                    }
                },
                () = sleep_until(due), if busy => {
                    self.store().await;
                    self.publish();
                    last_publish = Instant::now();
                }
            }
        }
    }

    /// Writes the buffer in one store call and applies the cap; answers the waiters.
    async fn store(&mut self) {
        let lines = std::mem::take(&mut self.buffer);
        let outcome = self.append(lines).await;
        if let Err(error) = &outcome {
            tracing::warn!(build_id = %self.id, error = %error, "writing build log lines failed; they are lost");
        }
        for waiter in self.waiters.drain(..) {
            let _ =
                waiter.send(outcome.as_ref().map(|_| ()).map_err(|error| Error::new(error.kind(), error.to_string())));
        }
    }

    async fn append(&mut self, lines: Vec<NewLogLine>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let count = lines.len() as u64;
        let length = self.hub.storage().append_log(self.id, lines.clone()).await?;
        metrics::counter!(telemetry::names::LOG_LINES).increment(count);
        let first = length - count;
        let stored: Vec<LogLine> =
            lines.into_iter().enumerate().map(|(n, line)| line.numbered(first + n as u64)).collect();
        self.cap(&stored).await?;
        self.unpublished.extend(stored);
        Ok(())
    }

    /// Drops the oldest tail lines of every module over the cap, keeping its first lines and newest line.
    async fn cap(&mut self, stored: &[LogLine]) -> Result<()> {
        let config = &self.hub.config().builds;
        let (head_lines, max_bytes) = (config.log_head_lines, config.log_max_bytes);
        let mut touched: Vec<String> = Vec::new();
        let mut drops: HashMap<String, Vec<u64>> = HashMap::new();
        for line in stored {
            let Some(module) = &line.module else { continue };
            if !self.caps.contains_key(module) {
                self.caps.insert(module.clone(), ModuleCap::default());
            }
            let Some(cap) = self.caps.get_mut(module) else { continue };
            let size = line.text.len() as u64 + 1;
            cap.lines += 1;
            cap.bytes += size;
            if cap.lines > head_lines {
                cap.tail.push_back((line.seq, size));
            }
            while cap.bytes > max_bytes && cap.tail.len() > 1 {
                let Some((seq, size)) = cap.tail.pop_front() else { break };
                cap.bytes -= size;
                cap.dropped += 1;
                if cap.marker.is_none() {
                    cap.marker = Some(seq);
                } else {
                    drops.entry(module.clone()).or_default().push(seq);
                }
                if !touched.contains(module) {
                    touched.push(module.clone());
                }
            }
        }
        // Lines dropped from this very batch are not published either.
        let dropped: Vec<u64> = drops.values().flatten().copied().collect();
        self.unpublished.retain(|line| !dropped.contains(&line.seq));
        for module in touched {
            let Some(cap) = self.caps.get_mut(&module) else { continue };
            let Some(seq) = cap.marker else { continue };
            let marker = LogLine {
                seq,
                at: self.hub.now(),
                module: Some(module.clone()),
                stream: LogStream::System,
                text: format!(
                    "[{} lines dropped: the log of module {module} is over its cap of {max_bytes} bytes]",
                    cap.dropped
                ),
            };
            let first_drop = !std::mem::replace(&mut cap.flagged, true);
            self.hub.storage().truncate_log(self.id, marker, drops.remove(&module).unwrap_or_default()).await?;
            if first_drop {
                mutate(&self.hub, self.id, |build| {
                    if let Some(index) = build.module_index(&module) {
                        build.modules[index].log_truncated = true;
                    }
                    Ok(())
                })
                .await?;
            }
        }
        Ok(())
    }

    fn publish(&mut self) {
        let lines = std::mem::take(&mut self.unpublished);
        telemetry::log_event(&self.hub, self.id, self.owner, &lines);
    }
}
