//! A queue's workers, and how they share claims: a worker that needs a job takes one already claimed for it,
//! or claims. One worker at a time claims, for itself and for every waiting worker not yet served (as many as
//! free places and the rate limit allow), in one [`JobStore::claim_many`] call, and wakes those it claimed for. So on a fast store (memory) a busy worker
//! claims its next job itself, with no hand-off between tasks, while on a slow store the workers that became
//! idle during one claim share the next. The claimer of an idle queue is the one worker that waits for a
//! wake-up (a local enqueue) or the poll interval; the others wait for it.
//!
//! Two bounds per queue: `workers` handlers run at once, and at most twice that many jobs are claimed but not
//! yet recorded (freed when the job's settlement is written, or found not writable), so that a slow store slows
//! claiming down instead of piling up leases. Jobs claimed while the runtime stops are given back at once
//! rather than started after the stop.
//!
//! [`JobStore::claim_many`]: crate::storage::JobStore::claim_many

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

use super::QueueConfig;
use super::attempt::Attempts;
use super::settler::Finished;
use crate::model::{Job, Settlement, WorkerId};

/// How many claimed jobs a queue may hold per worker: one running, one waiting for its batch.
const HELD_PER_WORKER: usize = 2;

/// A claimed job on its way to a worker, with its place among the claimed but unrecorded jobs.
pub(super) type Assignment = (Job, OwnedSemaphorePermit);

/// One queue's workers and what they share.
pub(super) struct QueueWorkers {
    /// Names this process's claims of the queue in leases.
    id: WorkerId,
    queue: QueueConfig,
    attempts: Arc<Attempts>,
    /// Woken by local enqueues and rescues; only the claimer waits on it.
    wake: Arc<Notify>,
    /// Claimed but unrecorded jobs: one permit each.
    held: Arc<Semaphore>,
    state: Mutex<Dispatch>,
    /// Wakes a waiting worker: a job was claimed for it, or it may claim.
    waiters: Notify,
}

/// Who claims, and what was claimed for whom.
struct Dispatch {
    /// Jobs claimed for waiting workers, not yet taken.
    claimed: VecDeque<Assignment>,
    /// A worker is claiming (or waiting, as the claimer, for work, its rate limit or a free place).
    claiming: bool,
    /// Workers waiting for a job or for the claimer's role (also those woken but not yet back at the lock).
    waiting: usize,
    /// How the next claimer begins: at once, or waiting as the last claim found.
    next: Next,
}

/// What a claimer does before (or after) a claim.
#[derive(Debug, Clone, Copy)]
enum Next {
    /// Claim now (more may be due).
    Claim,
    /// Wait for a wake-up (a local enqueue, a rescue) or the poll interval.
    Idle,
    /// Wait this long (the queue's rate limit, or a failed store call).
    Pause(Duration),
}

impl QueueWorkers {
    pub(super) fn new(id: WorkerId, queue: QueueConfig, attempts: Arc<Attempts>) -> Self {
        let wake = attempts.hub.signals().queue(&queue.name);
        let held = Arc::new(Semaphore::new(queue.workers * HELD_PER_WORKER));
        let state = Mutex::new(Dispatch { claimed: VecDeque::new(), claiming: false, waiting: 0, next: Next::Claim });
        Self { id, queue, attempts, wake, held, state, waiters: Notify::new() }
    }

    /// Runs the queue's workers until the runtime stops and each has finished its attempt (within its grace).
    pub(super) async fn run(self) {
        let this = Arc::new(self);
        let mut workers = JoinSet::new();
        for _ in 0..this.queue.workers {
            workers.spawn(this.clone().work());
        }
        while let Some(ended) = workers.join_next().await {
            if let Err(error) = ended
                && error.is_panic()
            {
                tracing::error!(queue = %this.queue.name, "a worker panicked; the queue runs with one worker less");
            }
        }
    }

    /// A worker: runs one job after another, claiming when nobody has claimed for it.
    async fn work(self: Arc<Self>) {
        while let Some((job, held)) = self.next_job().await {
            self.attempts.run(job, held).await;
        }
    }

    fn dispatch(&self) -> MutexGuard<'_, Dispatch> {
        // Nothing panics while holding the lock, and the dispatch state is valid at every instant.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The worker's next job: one claimed for it, or one it claims; `None` once the runtime stopped. A job
    /// claimed for it before the stop is taken even after it (its attempt then runs within the shutdown grace).
    async fn next_job(&self) -> Option<Assignment> {
        let stop = &self.attempts.stop;
        loop {
            let mut woken = pin!(self.waiters.notified());
            let claim_first = {
                let mut dispatch = self.dispatch();
                if let Some(assignment) = dispatch.claimed.pop_front() {
                    return Some(assignment);
                }
                if stop.is_cancelled() {
                    return None;
                }
                if dispatch.claiming {
                    dispatch.waiting += 1;
                    // Registered before the lock is released: a claimer's wake-up cannot fall between.
                    woken.as_mut().enable();
                    None
                } else {
                    dispatch.claiming = true;
                    Some(dispatch.next)
                }
            };
            if let Some(next) = claim_first {
                match self.claim_as_claimer(next).await {
                    Some(assignment) => return Some(assignment),
                    None => continue,
                }
            }
            tokio::select! {
                () = woken => {}
                () = stop.cancelled() => {}
            }
            self.dispatch().waiting -= 1;
        }
    }

    /// Claims, as the queue's claimer, until it has a job for itself; `None` if the runtime stopped first. It
    /// claims for the waiting workers too, and hands the claimer's role on when it returns (or panics).
    async fn claim_as_claimer(&self, mut next: Next) -> Option<Assignment> {
        let stop = &self.attempts.stop;
        let mut role = ClaimerRole { workers: self, claimed: Vec::new(), next: Next::Claim };
        loop {
            if !self.pause(next).await {
                return None;
            }
            let want = {
                // Jobs already claimed for waiting workers are theirs: claiming more for them would leave jobs
                // leased with nobody to run them.
                let dispatch = self.dispatch();
                1 + dispatch.waiting.saturating_sub(dispatch.claimed.len())
            };
            let places = self.places(want).await?;
            if stop.is_cancelled() {
                return None;
            }
            let jobs;
            (jobs, next) = match self.claim(places.len()).await {
                Ok(claimed) => claimed,
                Err(next) => (Vec::new(), next),
            };
            // At most one job per place; places not used are given back here.
            let mut assignments: Vec<Assignment> = jobs.into_iter().zip(places).collect();
            if assignments.is_empty() {
                continue;
            }
            if stop.is_cancelled() {
                // The waiting workers have left: one worker would start these one after another after the stop,
                // each with a fresh grace and no heartbeat until it starts, outliving their leases.
                self.give_back(assignments).await;
                return None;
            }
            let mine = assignments.remove(0);
            (role.claimed, role.next) = (assignments, next);
            return Some(mine);
        }
    }

    /// Gives back jobs claimed but not started (the runtime stopped), without charging an attempt, and their
    /// rate-limit starts.
    async fn give_back(&self, assignments: Vec<Assignment>) {
        let count = assignments.len();
        for (job, held) in assignments {
            let Some(lease) = job.lease() else { continue };
            let job_id = lease.job_id;
            let settlement = Settlement::Release { lease };
            self.attempts.settler.settle(Finished { settlement, job_id, started: Instant::now(), held }).await;
        }
        self.return_starts(count).await;
    }

    /// Leaves the claimer's role with the jobs claimed for others, and wakes one waiting worker per job, plus
    /// one to claim next if any is left waiting.
    fn hand_on(&self, claimed: Vec<Assignment>, next: Next) {
        let wake = {
            let mut dispatch = self.dispatch();
            let jobs = claimed.len();
            dispatch.claimed.extend(claimed);
            dispatch.claiming = false;
            dispatch.next = next;
            jobs + usize::from(dispatch.waiting > jobs)
        };
        for _ in 0..wake {
            self.waiters.notify_one();
        }
    }

    /// Places among the held jobs for up to `want` claims: waits for one, takes more if free. `None` if the
    /// runtime stopped while waiting.
    async fn places(&self, want: usize) -> Option<Vec<OwnedSemaphorePermit>> {
        let first = tokio::select! {
            biased;
            () = self.attempts.stop.cancelled() => return None,
            // The semaphore is never closed, so acquiring only waits.
            permit = self.held.clone().acquire_owned() => permit.ok()?,
        };
        let mut places = vec![first];
        while places.len() < want {
            let Ok(place) = self.held.clone().try_acquire_owned() else { break };
            places.push(place);
        }
        Some(places)
    }

    /// Claims up to `want` jobs (as many as the rate limit grants) and returns them with what to do next:
    /// claim again at once if every start granted found a job (more may be due), else wait to be woken. `Err`
    /// says how long to wait before trying again.
    async fn claim(&self, want: usize) -> Result<(Vec<Job>, Next), Next> {
        let hub = &self.attempts.hub;
        let granted = self.take_starts(want).await?;
        let settings = &self.attempts.settings;
        let claimed = hub
            .storage()
            .claim_many(std::slice::from_ref(&self.queue.name), &self.id, hub.now(), settings.lease, granted)
            .await;
        let jobs = match claimed {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(queue = %self.queue.name, %error, "claiming jobs failed; retrying after the poll interval");
                self.return_starts(granted).await;
                return Err(Next::Pause(settings.poll_interval));
            }
        };
        self.return_starts(granted - jobs.len()).await;
        let next = if jobs.len() < granted { Next::Idle } else { Next::Claim };
        Ok((jobs, next))
    }

    /// Takes up to `want` starts from the queue's rate limit (all of them if it has none); `Err` if none is
    /// granted now, with how long to wait.
    async fn take_starts(&self, want: usize) -> Result<usize, Next> {
        let Some(limit) = self.queue.rate_limit else { return Ok(want) };
        let hub = &self.attempts.hub;
        let want = u32::try_from(want).unwrap_or(u32::MAX);
        match hub.storage().take_queue_starts(&self.queue.name, limit, hub.now(), want).await {
            Ok(starts) if starts.granted > 0 => Ok(starts.granted as usize),
            // Never zero: a zero wait would spin while the store's clock stands still.
            Ok(starts) => Err(Next::Pause(starts.next_in.unwrap_or_default().max(Duration::from_millis(1)))),
            Err(error) => {
                tracing::warn!(queue = %self.queue.name, %error, "taking starts from the queue's rate limit failed");
                Err(Next::Pause(self.attempts.settings.poll_interval))
            }
        }
    }

    /// Gives back starts taken for claims that found no job.
    async fn return_starts(&self, unused: usize) {
        let Some(limit) = self.queue.rate_limit else { return };
        if unused == 0 {
            return;
        }
        let hub = &self.attempts.hub;
        let count = u32::try_from(unused).unwrap_or(u32::MAX);
        if let Err(error) = hub.storage().return_queue_starts(&self.queue.name, limit, hub.now(), count).await {
            tracing::warn!(queue = %self.queue.name, %error, "giving back unused starts failed");
        }
    }

    /// Waits as `next` says; `false` if the runtime stopped meanwhile.
    async fn pause(&self, next: Next) -> bool {
        let stop = &self.attempts.stop;
        let wait = match next {
            Next::Claim => return !stop.is_cancelled(),
            Next::Idle => self.attempts.settings.poll_interval,
            Next::Pause(wait) => wait,
        };
        tokio::select! {
            () = self.wake.notified(), if matches!(next, Next::Idle) => true,
            () = sleep(wait) => true,
            () = stop.cancelled() => false,
        }
    }
}

/// The claimer's role while a worker holds it, with what it claimed for the others: handed on when dropped,
/// so that a worker whose store call panicked does not leave its queue without a claimer.
struct ClaimerRole<'a> {
    workers: &'a QueueWorkers,
    claimed: Vec<Assignment>,
    next: Next,
}

impl Drop for ClaimerRole<'_> {
    fn drop(&mut self) {
        self.workers.hand_on(std::mem::take(&mut self.claimed), self.next);
    }
}
