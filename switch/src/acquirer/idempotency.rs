//! Request identities seen recently, with the outcome each got (DESIGN §2.4).
//!
//! Shared by every session, because a retransmission may arrive on another connection and a
//! conflicting request under the same identity may name another card (so another shard): the
//! check has to happen before routing. A `DashMap` keeps the lock per map shard and short.
//!
//! Two generations bound it in time and count with O(1) eviction: new entries go into the
//! current generation, lookups check both, and [`IdempotencyStore::sweep`] drops the older
//! generation and starts a new one every `retention` seconds, so an entry lives between one and
//! two retentions. When the current generation fills to three quarters of its share before
//! that, the sweep rotates early and reports how short the window became: under a load the
//! limit was not sized for, the duplicate window shrinks instead of the switch refusing
//! traffic. Only if a generation fills completely between two sweeps do new requests get 96.
//!
//! An identical retransmission that arrives while its original is still being decided, on any
//! connection, waits for that decision: [`Begin::InFlight`] hands it a receiver that
//! [`IdempotencyStore::finish`] (or [`IdempotencyStore::abandon`]) fills with the original's
//! outcome. At most `waiters_max` wait per identity; the session bounds the wait in time.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;
use tokio::sync::oneshot;

use super::archive::{AnswerArchive, Answers, Pushed, Tier};
use crate::domain::hash::TableHasher;
use crate::domain::{Outcome, RequestIdentity};
use crate::limits::WAITERS_PER_IDENTITY_DEFAULT;

#[derive(Debug)]
struct Entry {
    fingerprint: u64,
    /// `None` while the request is still in the pipeline.
    outcome: Option<Outcome>,
    /// Identical retransmissions waiting for the outcome; `None` nearly always. Boxed so that
    /// every entry pays one pointer for it, not a vector's three (16 M entries by default).
    #[allow(clippy::box_collection)]
    waiters: Option<Box<Vec<oneshot::Sender<Outcome>>>>,
}

impl Entry {
    fn answered(fingerprint: u64, outcome: Outcome) -> Entry {
        Entry {
            fingerprint,
            outcome: Some(outcome),
            waiters: None,
        }
    }

    /// Hands the outcome to everything waiting for it.
    fn wake(&mut self, outcome: Outcome) {
        for waiter in self.waiters.take().into_iter().flat_map(|w| *w) {
            // A waiter that gave up (timed out, connection gone) has dropped its receiver.
            let _ = waiter.send(outcome);
        }
    }
}

#[derive(Debug)]
pub enum Begin {
    /// First sight: process it, then call [`IdempotencyStore::finish`] or
    /// [`IdempotencyStore::abandon`].
    New,
    /// An identical request was answered: send this outcome again, change nothing.
    Replay(Outcome),
    /// Another request under the same identity: answer 94.
    Conflict,
    /// An identical request is still being processed: its outcome arrives on this receiver
    /// (an error if the table forgot the identity before it was decided).
    InFlight(oneshot::Receiver<Outcome>),
    /// An identical request is still being processed and `waiters_max` retransmissions already
    /// wait for it: answer 91 (try again later).
    TooManyWaiting,
    /// The current generation is full: answer 96 and remember nothing.
    Full,
}

/// The maps' hasher: identities are the acquirers' choice (see [`TableHasher`]); SipHash, the
/// default, hashed each identity two or three times per request.
type IdentityHasher = TableHasher;

#[derive(Debug, Default)]
struct Generation {
    entries: DashMap<RequestIdentity, Entry, IdentityHasher>,
    count: AtomicUsize,
    /// The newest log time of an answer put back into it at start-up (0 live).
    newest_seconds: AtomicU64,
}

/// What a sweep did, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sweep {
    Nothing,
    /// The older generation was dropped on schedule.
    Rotated {
        dropped: usize,
    },
    /// Dropped early under load: retransmissions are now recognised for only `window_seconds`.
    RotatedEarly {
        dropped: usize,
        window_seconds: u64,
    },
    /// Rotated early under load (the generation had lived `window_seconds`), its `archived`
    /// answers moved to disk, where they stay for the rest of the retention; unless the
    /// archive's own bound `pushed` older ones out.
    Archived {
        archived: u64,
        window_seconds: u64,
        pushed: Pushed,
    },
}

/// A generation's answers on disk, and the identities it left undecided.
#[derive(Debug)]
struct Spilled {
    tier: Tier,
    undecided: std::collections::HashSet<RequestIdentity>,
}

/// A generation's answers being written to disk, before the early rotation that would drop
/// them.
#[derive(Debug)]
struct Spill {
    /// The rotation it was started after: it is for the generation older than that rotation's.
    rotation: u64,
    cancel: Arc<AtomicBool>,
    /// The tier, or why there is none; disconnected if the thread died.
    done: crossbeam_channel::Receiver<anyhow::Result<Spilled>>,
}

/// A queue of writes to disk, and the thread doing them.
type RestoreWriter = (
    crossbeam_channel::Sender<Box<dyn FnOnce() + Send>>,
    std::thread::JoinHandle<()>,
);

/// What the sweep does about a spill.
enum SpillState {
    /// None for this generation: none may be needed, or there is no archive.
    None,
    Running,
    Written(Spilled),
    Failed(String),
}

/// Locks of each generation's map. A sweep drops a whole generation one lock at a time, and
/// every lookup that meets the lock being swept waits for it: with dashmap's default (four per
/// core) a lock covered a million entries of a full 16 M table, and sweeping it held up the
/// acquirers for 0.2–1.3 s (the 10-minute soak, bench/RESULTS.md). With 1,024, a lock covers
/// thousands.
const MAP_SHARDS: usize = 1024;
const _: () = assert!(MAP_SHARDS.is_power_of_two() && MAP_SHARDS > 1);

#[derive(Debug)]
pub struct IdempotencyStore {
    generations: [Arc<Generation>; 2],
    /// Index of the generation new entries go into.
    current: AtomicUsize,
    /// When the current generation started.
    current_since_seconds: AtomicU64,
    generation_max: usize,
    retention_seconds: u64,
    waiters_max: usize,
    /// Where answers go that the table must let go of before their retention has passed.
    archive: Option<Arc<AnswerArchive>>,
    spill: Mutex<Option<Spill>>,
    /// The thread writing generations put back at start-up to the archive, and its queue.
    restore_writer: Mutex<Option<RestoreWriter>>,
    /// Why answers put back could not be written to disk, if they could not (the start fails).
    restore_failed: Arc<Mutex<Option<String>>>,
    /// Rotations so far.
    rotations: AtomicU64,
}

/// A generation this full (of its share) starts the spill of the older one to disk, when the
/// retention has not passed: so that it is written by the time this one is three quarters full.
const SPILL_AT_PERCENT: usize = 50;
/// A generation this full rotates early even if the older one's spill is still running
/// (which is then cancelled, and its answers forgotten early): past it, new requests would
/// soon get 96.
const SPILL_WAIT_UNTIL_PERCENT: usize = 94;
const _: () = assert!(SPILL_AT_PERCENT < 75 && 75 < SPILL_WAIT_UNTIL_PERCENT);

fn classify(entry: &mut Entry, fingerprint: u64, waiters_max: usize) -> Begin {
    match (entry.fingerprint == fingerprint, entry.outcome) {
        (false, _) => Begin::Conflict,
        (true, Some(outcome)) => Begin::Replay(outcome),
        (true, None)
            if entry
                .waiters
                .as_ref()
                .is_some_and(|w| w.len() >= waiters_max) =>
        {
            Begin::TooManyWaiting
        }
        (true, None) => {
            let (sender, receiver) = oneshot::channel();
            entry.waiters.get_or_insert_default().push(sender);
            Begin::InFlight(receiver)
        }
    }
}

impl IdempotencyStore {
    pub fn new(entries_max: usize, retention_seconds: u64) -> IdempotencyStore {
        IdempotencyStore::starting_at(entries_max, retention_seconds, 0)
    }

    pub fn starting_at(
        entries_max: usize,
        retention_seconds: u64,
        now_seconds: u64,
    ) -> IdempotencyStore {
        let generation_max = (entries_max / 2).max(1);
        // Sized once for what the configuration allows: a map of millions growing by doubling
        // holds its lock for tens of milliseconds, and every session waits. Only the control
        // bytes are written now; the slots take memory as they fill.
        let generation = || {
            Arc::new(Generation {
                entries: DashMap::with_capacity_and_hasher_and_shard_amount(
                    generation_max,
                    IdentityHasher::default(),
                    MAP_SHARDS,
                ),
                count: AtomicUsize::new(0),
                newest_seconds: AtomicU64::new(0),
            })
        };
        IdempotencyStore {
            generations: [generation(), generation()],
            current: AtomicUsize::new(0),
            current_since_seconds: AtomicU64::new(now_seconds),
            generation_max,
            retention_seconds,
            waiters_max: WAITERS_PER_IDENTITY_DEFAULT,
            archive: None,
            spill: Mutex::new(None),
            restore_writer: Mutex::new(None),
            restore_failed: Arc::default(),
            rotations: AtomicU64::new(0),
        }
    }

    /// Keeps answers the table must let go of early in `archive`, for the rest of the
    /// retention.
    pub fn with_archive(mut self, archive: Arc<AnswerArchive>) -> IdempotencyStore {
        self.archive = Some(archive);
        self
    }

    /// Answers on disk.
    pub fn archived(&self) -> u64 {
        self.archive.as_ref().map_or(0, |a| a.len())
    }

    /// Sets how many identical retransmissions may wait for one undecided request.
    pub fn with_waiters_max(mut self, waiters_max: usize) -> IdempotencyStore {
        self.waiters_max = waiters_max;
        self
    }

    fn current(&self) -> (&Generation, &Generation) {
        let current = self.current.load(Ordering::Acquire) & 1;
        (&self.generations[current], &self.generations[current ^ 1])
    }

    pub fn begin(&self, identity: RequestIdentity, fingerprint: u64) -> Begin {
        let (current, previous) = self.current();
        // Read first: a spill reads the older generation, and an answered entry needs no more.
        if let Some(entry) = previous.entries.get(&identity) {
            if entry.fingerprint != fingerprint {
                return Begin::Conflict;
            }
            if let Some(outcome) = entry.outcome {
                return Begin::Replay(outcome);
            }
            drop(entry);
            if let Some(mut entry) = previous.entries.get_mut(&identity) {
                return classify(&mut entry, fingerprint, self.waiters_max);
            }
        }
        // Answers on disk, only while there are any: after the table let go of answers early.
        // Checked before the entry is taken, so that a read from disk holds no lock of the
        // table; and after the current generation, whose answer is the newer.
        if let Some(archive) = self.archive.as_deref().filter(|a| !a.is_empty())
            && !current.entries.contains_key(&identity)
        {
            match archive.find(&identity) {
                Ok(Some((stored, _))) if stored != fingerprint => return Begin::Conflict,
                Ok(Some((_, outcome))) => return Begin::Replay(outcome),
                Ok(None) => {}
                Err(error) => {
                    // Once a second at most: a failed disk fails every such read.
                    static LOGGED: AtomicU64 = AtomicU64::new(0);
                    let now = crate::clock::unix_seconds();
                    if LOGGED.swap(now, Ordering::Relaxed) != now {
                        tracing::error!(%error, "cannot read the answers on disk: requests not found in memory are answered 96");
                    }
                    return Begin::Full;
                }
            }
        }
        match current.entries.entry(identity) {
            MapEntry::Occupied(mut entry) => {
                classify(entry.get_mut(), fingerprint, self.waiters_max)
            }
            MapEntry::Vacant(entry) => {
                if current.count.load(Ordering::Relaxed) >= self.generation_max {
                    return Begin::Full;
                }
                current.count.fetch_add(1, Ordering::Relaxed);
                entry.insert(Entry {
                    fingerprint,
                    outcome: None,
                    waiters: None,
                });
                Begin::New
            }
        }
    }

    /// Records the outcome that was sent, for retransmissions, and hands it to those waiting.
    pub fn finish(&self, identity: &RequestIdentity, outcome: Outcome) {
        let (current, previous) = self.current();
        // The current generation first: the older one may be being read by a spill.
        for generation in [current, previous] {
            if let Some(mut entry) = generation.entries.get_mut(identity) {
                entry.outcome = Some(outcome);
                entry.wake(outcome);
                return;
            }
        }
    }

    /// Forgets a request that was shed before any decision (`outcome`, a 91 or 96), so that a
    /// later retransmission is tried anew; those already waiting get the same `outcome`.
    pub fn abandon(&self, identity: &RequestIdentity, outcome: Outcome) {
        let (current, previous) = self.current();
        for generation in [current, previous] {
            if let Some((_, mut entry)) = generation.entries.remove(identity) {
                // Saturating: a sweep may have reset the count while this entry was removed.
                let _ = generation
                    .count
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        Some(n.saturating_sub(1))
                    });
                entry.wake(outcome);
                return;
            }
        }
    }

    /// Puts back an answered request found in the log at start-up (read oldest first), logged
    /// at `at_seconds`. When the current generation is as full as makes the live table rotate
    /// early (three quarters), the older one is written to the archive (when there is one) and
    /// dropped, and a new current one started, as the live table does: what stays in memory is
    /// the newest answers, the ones retransmissions ask for, and the first sweep after the
    /// start finds nothing to rotate. (Stopping at a full generation kept the oldest instead:
    /// after the 10-minute soak, nothing of the last 10 M requests before a restart.) An
    /// identity logged twice (retransmitted after its entry was dropped) keeps its newest
    /// answer only, as live.
    pub fn restore(
        &self,
        identity: RequestIdentity,
        fingerprint: u64,
        outcome: Outcome,
        at_seconds: u64,
    ) {
        let (mut current, mut previous) = self.current();
        // Rotated before it would reach three quarters, so that it ends below.
        let early = (self.generation_max / 4 * 3).max(1);
        if current.count.load(Ordering::Relaxed) + 1 >= early {
            let next = (self.current.load(Ordering::Acquire) & 1) ^ 1;
            self.archive_restored(previous);
            // Clearing keeps the table's memory, already touched: no page faults refilling it.
            previous.entries.clear();
            previous.count.store(0, Ordering::Relaxed);
            previous.newest_seconds.store(0, Ordering::Relaxed);
            self.current.store(next, Ordering::Release);
            self.rotations.fetch_add(1, Ordering::Relaxed);
            (current, previous) = (previous, current);
        }
        if previous.count.load(Ordering::Relaxed) > 0
            && previous.entries.remove(&identity).is_some()
        {
            previous.count.fetch_sub(1, Ordering::Relaxed);
        }
        if current
            .entries
            .insert(identity, Entry::answered(fingerprint, outcome))
            .is_none()
        {
            current.count.fetch_add(1, Ordering::Relaxed);
        }
        current
            .newest_seconds
            .fetch_max(at_seconds, Ordering::Relaxed);
    }

    /// Copies a generation of answers put back at start-up for the archive, and hands it to
    /// the thread that writes them there in order ([`IdempotencyStore::finish_restore`] waits
    /// for it): the copy is quick, the sorting and writing are not.
    fn archive_restored(&self, generation: &Generation) {
        let Some(archive) = &self.archive else {
            return;
        };
        let count = generation.count.load(Ordering::Relaxed) as u64;
        if count == 0 {
            return;
        }
        let newest = generation.newest_seconds.load(Ordering::Relaxed);
        let entries = generation
            .entries
            .iter()
            .filter_map(|e| e.outcome.map(|o| (*e.key(), e.fingerprint, o)));
        let failed = self.restore_failed.clone();
        let fail = move |why: String| {
            let mut failed = failed.lock().unwrap_or_else(|e| e.into_inner());
            failed.get_or_insert(why);
        };
        let answers = match Answers::copy(entries, count, &AtomicBool::new(false)) {
            Ok(answers) => answers,
            Err(error) => return fail(format!("{error:#}")),
        };
        // Whole seconds: one logged at `newest` + 0.9 is kept that much longer.
        let until = newest
            .saturating_add(self.retention_seconds)
            .saturating_add(1);
        let retention = self.retention_seconds;
        let write = {
            let fail = fail.clone();
            move |archive: &AnswerArchive, answers: Answers| {
                let started = std::time::Instant::now();
                match archive.write_answers(answers, until, &AtomicBool::new(false)) {
                    Ok(tier) => {
                        let archived = tier.entries();
                        let pushed = archive.add(tier, newest, retention);
                        tracing::info!(archived, elapsed = ?started.elapsed(), "answers put back beyond the table's room written to disk");
                        if pushed.entries > 0 {
                            tracing::warn!(
                                forgotten = pushed.entries,
                                window_seconds = pushed.window_seconds,
                                "answers on disk at limits.idempotency_archive_entries_max: the oldest put back are forgotten"
                            );
                        }
                    }
                    Err(error) => fail(format!("{error:#}")),
                }
            }
        };
        let mut writer = self
            .restore_writer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if writer.is_none() {
            // One generation queued while another is written, and a third copied by the
            // caller waiting to queue: three copies at most (about 64 bytes an answer).
            let (sender, receiver) = crossbeam_channel::bounded::<Box<dyn FnOnce() + Send>>(1);
            match std::thread::Builder::new()
                .name("answers-restore".to_owned())
                .spawn(move || {
                    for job in receiver {
                        job();
                    }
                }) {
                Ok(thread) => *writer = Some((sender, thread)),
                Err(error) => {
                    tracing::warn!(%error, "cannot start a thread to write answers put back: writing them on this one");
                }
            }
        }
        match writer.as_ref() {
            Some((sender, _)) => {
                let archive = archive.clone();
                let job: Box<dyn FnOnce() + Send> = Box::new(move || write(&archive, answers));
                if sender.send(job).is_err() {
                    fail("the thread writing them ended".to_owned());
                }
            }
            None => write(archive, answers),
        }
    }

    /// Waits until every generation put back at start-up and handed to the disk is written
    /// and findable there. Call before answering anything; harmless when nothing was handed.
    /// An error when some could not be written: answers within the retention would be
    /// missing, and a retransmission of one processed anew.
    pub fn finish_restore(&self) -> anyhow::Result<()> {
        let writer = self
            .restore_writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((sender, thread)) = writer {
            drop(sender);
            if thread.join().is_err() {
                anyhow::bail!("the thread writing them to disk panicked");
            }
        }
        match self
            .restore_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            Some(why) => Err(anyhow::anyhow!(why)),
            None => Ok(()),
        }
    }

    /// Starts writing the older generation's answers to disk, unless that is running or done
    /// for it. They stay findable until the current generation is a retention old.
    fn start_spill(&self, rotation: u64, archive: &Arc<AnswerArchive>) {
        let mut spill = self.spill.lock().unwrap_or_else(|e| e.into_inner());
        if spill.as_ref().is_some_and(|s| s.rotation == rotation) {
            return;
        }
        if let Some(stale) = spill.take() {
            stale.cancel.store(true, Ordering::Relaxed);
        }
        let older = self.generations[(self.current.load(Ordering::Acquire) & 1) ^ 1].clone();
        let count = older.count.load(Ordering::Relaxed) as u64;
        if count == 0 {
            return;
        }
        // Every answer in it came in by the second the current generation started (whole
        // seconds, so one more).
        let until = self
            .current_since_seconds
            .load(Ordering::Acquire)
            .saturating_add(self.retention_seconds)
            .saturating_add(1);
        let cancel = Arc::new(AtomicBool::new(false));
        let (sender, done) = crossbeam_channel::bounded(1);
        let (archive, stop) = (archive.clone(), cancel.clone());
        let spawned = std::thread::Builder::new()
            .name("answers-spill".to_owned())
            .spawn(move || {
                // Below the request path, but not so far that it misses its deadline at full
                // load (the rotation at SPILL_WAIT_UNTIL_PERCENT).
                crate::threads::lower_this_thread("answers-spill", crate::threads::DEFERRABLE_NICE);
                let started = std::time::Instant::now();
                // Entries still undecided are not written: they stay in memory one more round.
                // Those decided while this runs are seen by the rotation, which keeps them too.
                let mut undecided = std::collections::HashSet::new();
                let entries = older.entries.iter().filter_map(|e| match e.outcome {
                    Some(o) => Some((*e.key(), e.fingerprint, o)),
                    None => {
                        undecided.insert(*e.key());
                        None
                    }
                });
                let written = archive.write_tier(entries, count, until, &stop);
                if let Ok(tier) = &written {
                    tracing::info!(answers = tier.entries(), elapsed = ?started.elapsed(), "older answers written to disk before an early rotation");
                }
                // Nobody may wait for it any more (cancelled): then it is dropped, so deleted.
                let _ = sender.send(written.map(|tier| Spilled { tier, undecided }));
            });
        match spawned {
            Ok(_) => {
                *spill = Some(Spill {
                    rotation,
                    cancel,
                    done,
                })
            }
            Err(error) => {
                tracing::warn!(%error, "cannot start writing older answers to disk");
            }
        }
    }

    fn poll_spill(&self, rotation: u64) -> SpillState {
        let mut spill = self.spill.lock().unwrap_or_else(|e| e.into_inner());
        let Some(running) = spill.as_ref() else {
            return SpillState::None;
        };
        if running.rotation != rotation {
            running.cancel.store(true, Ordering::Relaxed);
            *spill = None;
            return SpillState::None;
        }
        let state = match running.done.try_recv() {
            Err(crossbeam_channel::TryRecvError::Empty) => return SpillState::Running,
            Ok(Ok(spilled)) => SpillState::Written(spilled),
            Ok(Err(error)) => SpillState::Failed(format!("{error:#}")),
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                SpillState::Failed("the thread writing them ended".to_owned())
            }
        };
        *spill = None;
        state
    }

    /// Whether the spill started has ended (tests wait for it).
    #[cfg(test)]
    fn spill_finished(&self) -> bool {
        let spill = self.spill.lock().unwrap_or_else(|e| e.into_inner());
        spill.as_ref().is_some_and(|s| !s.done.is_empty())
    }

    /// Stops the spill running, if any. What it wrote is deleted: a tier is deleted when
    /// dropped, here or by its thread when nobody receives it.
    fn cancel_spill(&self) {
        let mut spill = self.spill.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = spill.take() {
            running.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// Drops the older generation when the current one has lived `retention` seconds, or
    /// earlier when it is three quarters full. With an archive, an early rotation first writes
    /// the older generation's answers to disk (started at half full, so that it is usually
    /// done by three quarters; the rotation waits for it up to [`SPILL_WAIT_UNTIL_PERCENT`]).
    /// Also deletes the answers on disk past the retention. Call about once a second.
    pub fn sweep(&self, now_seconds: u64) -> Sweep {
        if let Some(archive) = &self.archive {
            archive.expire(now_seconds);
        }
        let (current, _) = self.current();
        let age = now_seconds.saturating_sub(self.current_since_seconds.load(Ordering::Acquire));
        let count = current.count.load(Ordering::Relaxed);
        let on_time = age >= self.retention_seconds;
        let pressed = count >= self.generation_max / 4 * 3;
        let rotation = self.rotations.load(Ordering::Acquire);
        if let Some(archive) = &self.archive
            && !on_time
            && count >= self.generation_max * SPILL_AT_PERCENT / 100
        {
            self.start_spill(rotation, archive);
        }
        if !on_time && !pressed {
            return Sweep::Nothing;
        }
        let mut spilled = None;
        let mut forgotten_why = None;
        if on_time {
            self.cancel_spill();
        } else {
            match self.poll_spill(rotation) {
                SpillState::Running
                    if count < self.generation_max * SPILL_WAIT_UNTIL_PERCENT / 100 =>
                {
                    return Sweep::Nothing;
                }
                SpillState::Running => {
                    self.cancel_spill();
                    forgotten_why = Some("writing them to disk took too long".to_owned());
                }
                SpillState::Written(s) => spilled = Some(s),
                SpillState::Failed(error) => forgotten_why = Some(error),
                // Nothing to write (the older generation is empty), or no archive.
                SpillState::None => {}
            }
        }
        if let Some(why) = &forgotten_why {
            tracing::warn!(
                why,
                "older answers not written to disk: they are forgotten before their retention"
            );
        }
        let mut archived = None;
        let mut undecided = std::collections::HashSet::new();
        let next = (self.current.load(Ordering::Acquire) & 1) ^ 1;
        let older = &self.generations[next];
        if forgotten_why.is_none()
            && !on_time
            && self.archive.is_some()
            && older.count.load(Ordering::Relaxed) == 0
        {
            archived = Some((0, Pushed::default()));
        }
        if let (Some(s), Some(archive)) = (spilled, &self.archive) {
            let entries = s.tier.entries();
            // Findable on disk before they leave memory.
            archived = Some((
                entries,
                archive.add(s.tier, now_seconds, self.retention_seconds),
            ));
            undecided = s.undecided;
        }
        // A request still undecided after a whole retention keeps its entry one more round, so
        // that its decision is recorded and its waiting retransmissions get it; so does one
        // decided after the spill passed it (not on disk).
        older
            .entries
            .retain(|key, entry| entry.outcome.is_none() || undecided.contains(key));
        let kept = older.entries.len();
        let dropped = older
            .count
            .swap(kept, Ordering::Relaxed)
            .saturating_sub(kept);
        older.newest_seconds.store(0, Ordering::Relaxed);
        self.current.store(next, Ordering::Release);
        self.current_since_seconds
            .store(now_seconds, Ordering::Release);
        self.rotations.fetch_add(1, Ordering::AcqRel);
        match archived {
            Some((archived, pushed)) => Sweep::Archived {
                archived,
                window_seconds: age,
                pushed,
            },
            None if !on_time => Sweep::RotatedEarly {
                dropped,
                window_seconds: age,
            },
            None => Sweep::Rotated { dropped },
        }
    }

    pub fn len(&self) -> usize {
        self.generations
            .iter()
            .map(|g| g.count.load(Ordering::Relaxed))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ResponseCode;

    fn id(stan: u32) -> RequestIdentity {
        RequestIdentity {
            acquirer: 123_456,
            terminal: *b"TERM0001",
            stan,
            transmission: 1_126_143_015,
        }
    }

    /// What [`IdempotencyStore::begin`] said, comparable.
    #[derive(Debug, PartialEq)]
    enum Seen {
        New,
        Replay(Outcome),
        Conflict,
        InFlight,
        TooManyWaiting,
        Full,
    }

    fn begin(store: &IdempotencyStore, identity: RequestIdentity, fingerprint: u64) -> Seen {
        match store.begin(identity, fingerprint) {
            Begin::New => Seen::New,
            Begin::Replay(outcome) => Seen::Replay(outcome),
            Begin::Conflict => Seen::Conflict,
            Begin::InFlight(_) => Seen::InFlight,
            Begin::TooManyWaiting => Seen::TooManyWaiting,
            Begin::Full => Seen::Full,
        }
    }

    const APPROVED: Outcome = Outcome {
        code: ResponseCode::Approved,
        auth_id: Some(*b"000001"),
        balances: None,
    };

    #[test]
    fn an_entry_stays_small() {
        // 16 M of them by default: the waiters must not widen the common entry.
        assert!(
            std::mem::size_of::<Entry>() <= 56,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn lifecycle() {
        let store = IdempotencyStore::new(4, 10);
        assert_eq!(begin(&store, id(1), 7), Seen::New);
        assert_eq!(begin(&store, id(1), 7), Seen::InFlight);
        assert_eq!(begin(&store, id(1), 8), Seen::Conflict);
        store.finish(&id(1), APPROVED);
        assert_eq!(begin(&store, id(1), 7), Seen::Replay(APPROVED));
        assert_eq!(begin(&store, id(1), 8), Seen::Conflict);
        assert_eq!(begin(&store, id(2), 7), Seen::New);
        assert_eq!(
            begin(&store, id(3), 7),
            Seen::Full,
            "a generation holds half the limit"
        );
        store.abandon(&id(2), Outcome::decline(ResponseCode::IssuerUnavailable));
        assert_eq!(store.len(), 1);
        assert_eq!(begin(&store, id(3), 7), Seen::New);
    }

    #[test]
    fn entries_live_one_to_two_retentions() {
        let store = IdempotencyStore::starting_at(1_000, 10, 0);
        assert_eq!(begin(&store, id(1), 7), Seen::New);
        store.finish(&id(1), APPROVED);
        assert_eq!(store.sweep(9), Sweep::Nothing);
        assert_eq!(store.sweep(10), Sweep::Rotated { dropped: 0 });
        assert_eq!(
            begin(&store, id(1), 7),
            Seen::Replay(APPROVED),
            "still found in the older generation"
        );
        store.finish(&id(1), APPROVED);
        assert_eq!(store.sweep(20), Sweep::Rotated { dropped: 1 });
        assert_eq!(
            begin(&store, id(1), 7),
            Seen::New,
            "gone after two retentions"
        );
    }

    #[test]
    fn pressure_rotates_early_instead_of_refusing() {
        let store = IdempotencyStore::starting_at(8, 100, 0);
        for stan in 0..3 {
            assert_eq!(begin(&store, id(stan), 1), Seen::New);
        }
        assert_eq!(
            store.sweep(5),
            Sweep::RotatedEarly {
                dropped: 0,
                window_seconds: 5
            }
        );
        for stan in 3..7 {
            assert_eq!(
                begin(&store, id(stan), 1),
                Seen::New,
                "room again after the early rotation"
            );
        }
        assert_eq!(
            begin(&store, id(0), 1),
            Seen::InFlight,
            "the older generation is still consulted"
        );
        assert_eq!(store.len(), 7);
    }

    #[test]
    fn retransmissions_in_flight_wait_for_the_original_outcome() {
        let store = IdempotencyStore::new(100, 10).with_waiters_max(2);
        assert_eq!(begin(&store, id(1), 7), Seen::New);
        let Begin::InFlight(mut first) = store.begin(id(1), 7) else {
            panic!("in flight")
        };
        let Begin::InFlight(mut second) = store.begin(id(1), 7) else {
            panic!("in flight")
        };
        assert_eq!(begin(&store, id(1), 7), Seen::TooManyWaiting);
        assert_eq!(begin(&store, id(1), 8), Seen::Conflict, "not a waiter");
        assert!(first.try_recv().is_err(), "nothing decided yet");
        store.finish(&id(1), APPROVED);
        assert_eq!(first.try_recv(), Ok(APPROVED));
        assert_eq!(second.try_recv(), Ok(APPROVED));
        assert_eq!(begin(&store, id(1), 7), Seen::Replay(APPROVED));

        // A request shed before its decision gives its waiters the same answer.
        let shed = Outcome::decline(ResponseCode::IssuerUnavailable);
        assert_eq!(begin(&store, id(2), 7), Seen::New);
        let Begin::InFlight(mut waiting) = store.begin(id(2), 7) else {
            panic!("in flight")
        };
        store.abandon(&id(2), shed);
        assert_eq!(waiting.try_recv(), Ok(shed));
        assert_eq!(begin(&store, id(2), 7), Seen::New, "tried anew");

        // Undecided through two rotations: still there to record its decision and wake its
        // waiter; decided entries go as before.
        let store = IdempotencyStore::starting_at(100, 10, 0);
        assert_eq!(begin(&store, id(3), 7), Seen::New);
        assert_eq!(begin(&store, id(4), 7), Seen::New);
        store.finish(&id(4), APPROVED);
        let Begin::InFlight(mut waiting) = store.begin(id(3), 7) else {
            panic!("in flight")
        };
        store.sweep(10);
        assert_eq!(store.sweep(20), Sweep::Rotated { dropped: 1 });
        store.finish(&id(3), APPROVED);
        assert_eq!(waiting.try_recv(), Ok(APPROVED));
        assert_eq!(begin(&store, id(3), 7), Seen::Replay(APPROVED));
        assert_eq!(
            begin(&store, id(4), 7),
            Seen::New,
            "decided and past two retentions"
        );
    }

    /// Restored oldest first, more than the table holds: the newest answers stay, and the
    /// oldest go; an identity logged twice keeps its newest answer.
    #[test]
    fn restore_keeps_the_newest_answers() {
        // Generations of eight, rotated at six: restore starts a new one at five.
        let store = IdempotencyStore::new(16, 10);
        for stan in 1..=13 {
            store.restore(id(stan), 3, APPROVED, 0);
        }
        // {1..5} was dropped; {6..10} then {11, 12, 13} stay.
        assert_eq!(store.len(), 8);
        // Retransmitted after an early rotation, answered 94 the second time: one entry.
        let conflict = Outcome::decline(ResponseCode::DuplicateTransmission);
        store.restore(id(7), 3, conflict, 0);
        assert_eq!(store.len(), 8);
        assert_eq!(begin(&store, id(7), 3), Seen::Replay(conflict));
        for stan in [6, 8, 9, 10, 11, 12, 13] {
            assert_eq!(begin(&store, id(stan), 3), Seen::Replay(APPROVED), "{stan}");
        }
        assert_eq!(begin(&store, id(13), 4), Seen::Conflict);
        // The first sweep finds the current generation below three quarters: nothing to do.
        assert_eq!(store.sweep(1), Sweep::Nothing);
        // The newest of those dropped is new again.
        assert_eq!(begin(&store, id(5), 3), Seen::New);
    }

    fn archived_store(
        dir: &crate::testing::TempDir,
        entries_max: usize,
        retention: u64,
        archive_max: u64,
    ) -> IdempotencyStore {
        let archive = AnswerArchive::create(dir.path(), archive_max).unwrap();
        IdempotencyStore::starting_at(entries_max, retention, 0).with_archive(archive)
    }

    /// Sweeps at `now` until the sweep does something (a spill runs on a thread of its own),
    /// for at most ten seconds.
    fn sweep_until_done(store: &IdempotencyStore, now: u64) -> Sweep {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let sweep = store.sweep(now);
            if sweep != Sweep::Nothing || std::time::Instant::now() > deadline {
                return sweep;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn answer(store: &IdempotencyStore, stans: std::ops::RangeInclusive<u32>) {
        for stan in stans {
            assert_eq!(begin(store, id(stan), 1), Seen::New, "{stan}");
            store.finish(&id(stan), APPROVED);
        }
    }

    /// Generations of eight (rotated early at six): a load that fills them long before the
    /// retention of 100 s. Without an archive, the answers of the oldest generation are
    /// forgotten at the second early rotation; with one, they are found on disk until the
    /// retention has passed, as a replay or a conflict, and only then forgotten.
    #[test]
    fn early_rotations_move_answers_to_disk_for_the_rest_of_the_retention() {
        let dir = crate::testing::TempDir::new("idempotency-archive");
        let store = archived_store(&dir, 16, 100, 1_000);
        answer(&store, 1..=6);
        assert_eq!(
            sweep_until_done(&store, 5),
            Sweep::Archived {
                archived: 0,
                window_seconds: 5,
                pushed: Pushed::default()
            },
            "nothing older to write"
        );
        answer(&store, 7..=12);
        assert_eq!(
            sweep_until_done(&store, 10),
            Sweep::Archived {
                archived: 6,
                window_seconds: 5,
                pushed: Pushed::default()
            }
        );
        assert_eq!((store.len(), store.archived()), (6, 6));
        for stan in 1..=12 {
            assert_eq!(begin(&store, id(stan), 1), Seen::Replay(APPROVED), "{stan}");
        }
        assert_eq!(
            begin(&store, id(3), 2),
            Seen::Conflict,
            "on disk, other content"
        );
        assert_eq!(store.archived(), 6);
        // 1..=6 came in by the second rotation (at 5): all past the retention at 106 (whole
        // seconds: one that came in at 5.9 is kept through 105.9).
        assert_eq!(store.sweep(105), Sweep::Nothing);
        assert_eq!(begin(&store, id(1), 1), Seen::Replay(APPROVED));
        store.sweep(106);
        assert_eq!(store.archived(), 0);
        assert_eq!(begin(&store, id(1), 1), Seen::New, "past the retention");

        // The same load without an archive forgets 1..=6 at the second early rotation.
        let store = IdempotencyStore::starting_at(16, 100, 0);
        answer(&store, 1..=6);
        store.sweep(5);
        answer(&store, 7..=12);
        assert_eq!(
            store.sweep(10),
            Sweep::RotatedEarly {
                dropped: 6,
                window_seconds: 5
            }
        );
        assert_eq!(begin(&store, id(1), 1), Seen::New);
    }

    /// A request undecided when the spill read its generation is not on disk: decided before
    /// the rotation, it stays in memory one more round instead of being dropped with the rest.
    #[test]
    fn a_request_decided_while_its_generation_is_written_stays_findable() {
        let dir = crate::testing::TempDir::new("idempotency-undecided");
        let store = archived_store(&dir, 16, 100, 1_000);
        assert_eq!(begin(&store, id(100), 1), Seen::New);
        answer(&store, 1..=5);
        sweep_until_done(&store, 5);
        // Half of the new generation: the spill of {100, 1..=5} starts, and ends.
        answer(&store, 7..=10);
        assert_eq!(store.sweep(6), Sweep::Nothing);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !store.spill_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the spill did not end"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        store.finish(&id(100), APPROVED);
        answer(&store, 11..=12);
        assert_eq!(
            store.sweep(7),
            Sweep::Archived {
                archived: 5,
                window_seconds: 2,
                pushed: Pushed::default()
            }
        );
        assert_eq!(begin(&store, id(100), 1), Seen::Replay(APPROVED));
        assert_eq!(begin(&store, id(1), 1), Seen::Replay(APPROVED));
    }

    /// The archive's own bound: a tier past it pushes the oldest out, and the sweep says so.
    #[test]
    fn past_the_archives_bound_the_oldest_answers_go() {
        let dir = crate::testing::TempDir::new("idempotency-bound");
        let store = archived_store(&dir, 16, 100, 8);
        answer(&store, 1..=6);
        sweep_until_done(&store, 1);
        answer(&store, 7..=12);
        sweep_until_done(&store, 2);
        answer(&store, 13..=18);
        assert_eq!(
            sweep_until_done(&store, 3),
            Sweep::Archived {
                archived: 6,
                window_seconds: 1,
                pushed: Pushed {
                    entries: 6,
                    window_seconds: 0
                }
            }
        );
        assert_eq!(store.archived(), 6);
        assert_eq!(begin(&store, id(1), 1), Seen::New);
        assert_eq!(begin(&store, id(7), 1), Seen::Replay(APPROVED));
    }

    /// Put back at start-up beyond the table's room: what the table cannot hold goes to disk,
    /// and every answer stays (compare `restore_keeps_the_newest_answers`), until the
    /// retention from its log time has passed.
    #[test]
    fn restore_beyond_the_tables_room_writes_the_rest_to_disk() {
        let dir = crate::testing::TempDir::new("idempotency-restore");
        let archive = AnswerArchive::create(dir.path(), 1_000).unwrap();
        let store = IdempotencyStore::starting_at(16, 100, 20).with_archive(archive);
        for stan in 1..=13 {
            store.restore(id(stan), 3, APPROVED, u64::from(stan));
        }
        store.finish_restore().unwrap();
        assert_eq!((store.len(), store.archived()), (8, 5));
        for stan in 1..=13 {
            assert_eq!(begin(&store, id(stan), 3), Seen::Replay(APPROVED), "{stan}");
        }
        // {1..5} were logged at 1..=5: on disk through 105.
        store.sweep(105);
        assert_eq!(begin(&store, id(5), 3), Seen::Replay(APPROVED));
        store.sweep(106);
        assert_eq!(begin(&store, id(5), 3), Seen::New);
    }

    /// A spill that has not finished when the generation is 94% full is cancelled: the table
    /// rotates anyway (refusing traffic would be worse), the older answers are forgotten early,
    /// as without an archive, and nothing half written stays on disk.
    #[test]
    fn a_spill_too_slow_is_cancelled_and_the_rotation_goes_on() {
        let dir = crate::testing::TempDir::new("idempotency-slow-spill");
        // Generations of 100: the spill starts at 50, the rotation waits for it up to 94.
        let store = archived_store(&dir, 200, 100, 10_000);
        answer(&store, 1..=75);
        assert!(matches!(
            sweep_until_done(&store, 5),
            Sweep::Archived { archived: 0, .. }
        ));
        // The older generation now holds 1..=75. One of its locks held by another thread
        // stalls the spill's copy, as a slow disk would stall its write, until the spill is
        // cancelled.
        let older = store.generations[(store.current.load(Ordering::Acquire) & 1) ^ 1].clone();
        let (locked, is_locked) = crossbeam_channel::bounded(1);
        let (cancel_of, spill_cancel) = crossbeam_channel::bounded::<Arc<AtomicBool>>(1);
        let holder = std::thread::spawn({
            let older = older.clone();
            move || {
                let guard = older.entries.get_mut(&id(1)).unwrap();
                locked.send(()).unwrap();
                let cancel = spill_cancel.recv().unwrap();
                while !cancel.load(Ordering::Acquire) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                drop(guard);
            }
        });
        is_locked.recv().unwrap();
        // New requests whose lookup in the older generation would wait for that lock are left
        // out (the map's seed is random).
        let mut free = (76..).filter(|&stan| !older.entries.try_get(&id(stan)).is_locked());
        let mut answer_next = |n: usize| -> Vec<u32> {
            let stans: Vec<u32> = free.by_ref().take(n).collect();
            for &stan in &stans {
                answer(&store, stan..=stan);
            }
            stans
        };
        answer_next(50);
        assert_eq!(store.sweep(6), Sweep::Nothing, "the spill starts at half");
        let cancel = store.spill.lock().unwrap().as_ref().unwrap().cancel.clone();
        cancel_of.send(cancel).unwrap();
        answer_next(43);
        assert_eq!(store.sweep(7), Sweep::Nothing, "93 of 100: it waits");
        let last = answer_next(1)[0];
        assert_eq!(
            store.sweep(8),
            Sweep::RotatedEarly {
                dropped: 75,
                window_seconds: 3
            },
            "94 of 100: rotated without the spill"
        );
        holder.join().unwrap();
        assert!(store.spill.lock().unwrap().is_none());
        assert_eq!(store.archived(), 0, "nothing half written kept");
        assert_eq!(begin(&store, id(2), 1), Seen::New, "forgotten early");
        store.finish(&id(2), APPROVED);
        assert_eq!(begin(&store, id(last), 1), Seen::Replay(APPROVED));
        // The next early rotation spills again, and that one finishes.
        answer(&store, 1_000..=1_073);
        assert!(matches!(
            sweep_until_done(&store, 9),
            Sweep::Archived { archived: 94, .. }
        ));
        assert_eq!(
            begin(&store, id(last), 1),
            Seen::Replay(APPROVED),
            "on disk"
        );
    }
}
