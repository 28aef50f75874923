//! The WAL writer: one thread, group commit, answers released only once durable.
//!
//! Shards reserve a place, apply a request, and submit its entry with the reply that waits on
//! it. The writer takes whatever is queued (up to `group_records_max` records or
//! `group_bytes_max` bytes, waiting at most `group_wait` for more), appends the group to the
//! segment in one write, makes it durable with one `fdatasync`, and only then releases the
//! group's replies. While one group syncs the next one queues up, so the group grows with the
//! load and the fsync cost is shared.
//!
//! A failed write or sync is not retried: after a failed `fdatasync` the page cache no longer
//! says what is on disk. The writer cuts the segment back to the end of the last durable group
//! (so that whole records of the failed group cannot come back at recovery and move money whose
//! request was answered 96), releases every waiting and later reply as failed (the switch
//! answers 96), reports the failure once, and writes nothing more. If even the cut fails, the
//! report says so: some requests answered 96 may then be in the log, to be reconciled.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::format::{self, SegmentHeader};
use super::scan::Tail;
use crate::ops::metrics::metrics;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// `fdatasync` every group before releasing it.
    Group,
    /// Never sync: answers may be lost on a machine crash. For tests and benchmarks only.
    None,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterConfig {
    pub dir: PathBuf,
    pub sync: SyncMode,
    pub group_records_max: usize,
    pub group_bytes_max: usize,
    pub group_wait: Duration,
    pub segment_bytes: u64,
    /// Submissions queued or being written at most; beyond it `try_reserve` fails.
    pub queue_records_max: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Durable,
    /// Not written, or not known to be on disk: the answer must not report success.
    Failed,
}

/// One record to write (or none: a decision that changed nothing still waits its turn, so no
/// answer overtakes the records before it), and what to release once durable.
#[derive(Debug)]
pub struct Submission<C> {
    pub payload: Option<Vec<u8>>,
    pub completion: C,
}

/// The file layer, so tests can make writes and syncs fail.
pub trait SegmentFile: Send {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes and syncs that.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

pub trait Storage: Send {
    /// Creates a new segment file, fails if it exists.
    fn create(&mut self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// Opens a segment to append after its first `len` bytes.
    fn open_append(&mut self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>>;
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()>;
    /// Whether the writer, starting on an existing log, should go on in a new segment rather
    /// than append to the last one (whose blocks [`ZeroFilled`] did not write ahead).
    fn new_segment_at_start(&mut self) -> bool {
        false
    }
    /// After each group: the open segment's length, of `segment_bytes`.
    fn progress(&mut self, _segment_len: u64, _segment_bytes: u64) {}
}

/// The real file system.
#[derive(Debug, Default)]
pub struct Disk;

#[derive(Debug)]
struct DiskFile(fs::File);

impl SegmentFile for DiskFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)?;
        self.0.sync_data()
    }
}

impl Storage for Disk {
    fn create(&mut self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(DiskFile(
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)?,
        )))
    }
    fn open_append(&mut self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>> {
        let file = fs::OpenOptions::new().write(true).open(path)?;
        let shrinks = file.metadata()?.len() > len;
        file.set_len(len)?;
        if shrinks {
            // Zeros written ahead cut off: durable before anything after them is, so that no
            // earlier segment ends in zeros after a crash.
            file.sync_data()?;
        }
        let mut file = DiskFile(file);
        std::io::Seek::seek(&mut file.0, io::SeekFrom::Start(len))?;
        Ok(Box::new(file))
    }
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        fs::File::open(dir)?.sync_all()
    }
}

/// The real file system, with each new segment's blocks written (with zeros) before the log
/// needs them: what the production writer uses.
///
/// An `fdatasync` after an append that grows a file must also commit the file system's
/// journal (the file's size and its newly allocated blocks changed); on ext4 in its default
/// `data=ordered` mode, that commit first writes out every other file's newly allocated dirty
/// data, so the log's sync waited for a snapshot's or fjall's writes. Overwriting blocks the
/// file already has changes no metadata the sync must carry: it writes the log's own pages
/// and flushes the device's cache. A thread of its own (`wal-zeroing`, below the request
/// path's priority) writes the next segment's zeros under [`ZEROED_NAME`] and syncs them in
/// paced steps of [`ZEROING_STEP_BYTES`]; [`Storage::create`] takes that file for the new segment
/// (linked under the segment's name, so an existing segment is never replaced), and the next
/// is asked for once that segment is half full ([`Storage::progress`]). When none is ready
/// yet, the segment starts empty and grows as before.
///
/// A segment's unused end is zeros: [`super::scan`] reads zeros after the last record of the
/// last segment as its end, and a last segment holding only a torn header and zeros as one
/// cut while being created. A segment is rotated only once its length reaches
/// `segment_bytes`, the size written, so no earlier segment ends in zeros.
#[derive(Debug)]
pub struct ZeroFilled {
    dir: PathBuf,
    /// Asks the zeroing thread for the next file; dropped, it ends the thread.
    wanted: Option<Sender<()>>,
    ready: Receiver<io::Result<fs::File>>,
    /// A file was asked for and has not come back yet.
    asked: bool,
    /// A file come back and not taken yet.
    kept: Option<fs::File>,
    /// Stops a fill in progress: set when dropped, so that no two zeroing threads ever work in
    /// one directory (each would take the other's file from under its name).
    stop: Arc<AtomicBool>,
    /// Set once the writer has logged a group: fills are paced from then on.
    serving: Arc<AtomicBool>,
    /// Segments created from a file written ahead.
    taken: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// How long the writer waits at start for the first segment written ahead, before it starts
/// one that grows instead (64 MiB take well under a second on an ordinary disk).
const FIRST_ZEROED_WAIT: Duration = Duration::from_secs(10);

/// The file the next segment's zeros are written to, in the log's directory.
pub const ZEROED_NAME: &str = "next-segment.zeroed";

/// The zeroing thread writes and syncs this much at a time, then pauses for
/// [`ZEROING_PAUSE`]: a device flush (every group's `fdatasync` ends with one) waits for the
/// writes in flight, so the log's syncs never wait behind more than this much of zeros. With
/// 4 MiB at a time, the pipelined load's p99.9 went from 11–13 ms to 16–20 ms while a segment
/// was written ahead (bench/RESULTS.md, tenth session); 64 MiB take about a second this way.
const ZEROING_STEP_BYTES: usize = 256 << 10;
const ZEROING_PAUSE: Duration = Duration::from_millis(1);

/// Space a segment written ahead must leave free on the log's file system, beyond the two
/// segments' worth it needs (the one being written and the next): a nearly full disk gets no
/// file of zeros that would take its last room from the log itself, the snapshots and the
/// store; its segments start empty and grow, as they did before.
const ZEROING_FREE_MIN_BYTES: u64 = 256 << 20;

impl ZeroFilled {
    /// Starts the zeroing thread for segments of `segment_bytes` in `dir`, and asks it for the
    /// first file. Start it early (before recovery): the writer waits for that file at start.
    pub fn new(dir: &Path, segment_bytes: u64) -> io::Result<ZeroFilled> {
        let (wanted, asks) = crossbeam_channel::bounded::<()>(1);
        let (give, ready) = crossbeam_channel::bounded(1);
        let stop = Arc::new(AtomicBool::new(false));
        let serving = Arc::new(AtomicBool::new(false));
        let thread = {
            let (dir, stop, serving) = (dir.to_owned(), stop.clone(), serving.clone());
            std::thread::Builder::new()
                .name("wal-zeroing".into())
                .spawn(move || {
                    crate::threads::lower_this_thread(
                        "wal-zeroing",
                        crate::threads::MAINTENANCE_NICE,
                    );
                    while asks.recv().is_ok() {
                        if give
                            .send(zero_fill(&dir, segment_bytes, &serving, &stop))
                            .is_err()
                        {
                            break;
                        }
                    }
                })?
        };
        let mut storage = ZeroFilled {
            dir: dir.to_owned(),
            wanted: Some(wanted),
            ready,
            asked: false,
            kept: None,
            stop,
            serving,
            taken: Arc::new(AtomicU64::new(0)),
            thread: Some(thread),
        };
        storage.ask();
        Ok(storage)
    }

    /// Segments created so far from a file written ahead (a handle that outlives the storage).
    pub fn taken(&self) -> Arc<AtomicU64> {
        self.taken.clone()
    }

    /// Waits up to `wait` for the file asked for; whether one is ready.
    fn wait_ready(&mut self, wait: Duration) -> bool {
        if self.kept.is_none() && self.asked {
            match self.ready.recv_timeout(wait) {
                Ok(Ok(file)) => {
                    self.asked = false;
                    self.kept = Some(file);
                }
                Ok(Err(error)) => self.zeroing_failed(&error),
                Err(RecvTimeoutError::Disconnected) => self.zeroing_ended(),
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        self.kept.is_some()
    }

    /// The zeroing thread is gone (it panicked): said once, and no more is asked of it.
    fn zeroing_ended(&mut self) {
        if self.wanted.take().is_some() {
            tracing::warn!(
                "the thread writing WAL segments ahead ended: segments start empty from now on"
            );
        }
        self.asked = false;
    }

    /// Not asked again until the next segment is created: no fill after fill on a disk that
    /// is full.
    fn zeroing_failed(&mut self, error: &io::Error) {
        tracing::warn!(%error, "cannot write a WAL segment ahead: the next one starts empty");
        self.asked = false;
    }

    /// Asks for the next file, unless one is asked for or ready (asking then would have the
    /// thread replace the ready file under its name).
    fn ask(&mut self) {
        if !self.asked
            && self.kept.is_none()
            && let Some(wanted) = &self.wanted
        {
            self.asked = wanted.try_send(()).is_ok();
        }
    }

    /// The zeroed file, if it is ready.
    fn take_ready(&mut self) -> Option<fs::File> {
        self.wait_ready(Duration::ZERO);
        self.kept.take()
    }

    /// Writing ahead is over for this process: the file goes, no more are asked for.
    fn give_up(&mut self) {
        self.wanted = None;
        self.kept = None;
        let _ = fs::remove_file(self.dir.join(ZEROED_NAME));
    }
}

impl Drop for ZeroFilled {
    /// Stops the thread and waits for it (a step of 256 KiB at most), then removes the file it
    /// wrote, used or not: no segment's worth of zeros stays in the directory while the switch
    /// is stopped (a segment linked to it keeps its own name).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.wanted = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.kept = None;
        let _ = fs::remove_file(self.dir.join(ZEROED_NAME));
    }
}

/// Whether `path` names the file open as `file`.
fn same_file(file: &fs::File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (open, named) = (file.metadata()?, fs::metadata(path)?);
    Ok((open.dev(), open.ino()) == (named.dev(), named.ino()))
}

/// Writes `bytes` zeros to a new file [`ZEROED_NAME`] in `dir` (replacing one left by an
/// earlier run) and syncs them a step at a time, with a pause after each once the switch is
/// `serving`; the file is returned open for writing. On failure (too little free space, at the
/// start or on the way; a full disk; `stop`) the file is removed.
fn zero_fill(
    dir: &Path,
    bytes: u64,
    serving: &AtomicBool,
    stop: &AtomicBool,
) -> io::Result<fs::File> {
    let path = dir.join(ZEROED_NAME);
    let filled = enough_room(dir, bytes).and_then(|()| write_zeros(&path, bytes, serving, stop));
    if filled.is_err() {
        let _ = fs::remove_file(&path);
    }
    filled
}

/// Whether `dir`'s file system has room for `segment_bytes` more of zeros: two segments (the
/// one being written and the next) and [`ZEROING_FREE_MIN_BYTES`] free, for what an
/// unprivileged process may write.
fn enough_room(dir: &Path, segment_bytes: u64) -> io::Result<()> {
    let stat = rustix::fs::statvfs(dir)?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    let needed = segment_bytes
        .saturating_mul(2)
        .saturating_add(ZEROING_FREE_MIN_BYTES);
    if free < needed {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "{free} bytes free, under the {needed} that writing a segment ahead leaves room for"
            ),
        ));
    }
    Ok(())
}

/// How often a fill looks at the free space again: a snapshot or the store may take it
/// meanwhile.
const ZEROING_ROOM_CHECK_BYTES: u64 = 16 << 20;

fn write_zeros(
    path: &Path,
    bytes: u64,
    serving: &AtomicBool,
    stop: &AtomicBool,
) -> io::Result<fs::File> {
    // Removed, never truncated: the name may still be linked to a segment (if removing it
    // failed after the link), whose blocks must stay as they are.
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let zeros = vec![0u8; ZEROING_STEP_BYTES];
    let mut written = 0u64;
    while written < bytes {
        if stop.load(Ordering::Acquire) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
        }
        let n = usize::try_from((bytes - written).min(zeros.len() as u64)).unwrap_or(zeros.len());
        file.write_all(&zeros[..n])?;
        // Synced a step at a time even at start: another process's syncs on the same disk
        // (another switch, say) would wait behind a whole segment otherwise.
        file.sync_data()?;
        written += n as u64;
        if written.is_multiple_of(ZEROING_ROOM_CHECK_BYTES)
            && let Some(dir) = path.parent()
        {
            enough_room(dir, bytes - written)?;
        }
        if serving.load(Ordering::Relaxed) {
            std::thread::sleep(ZEROING_PAUSE);
        }
    }
    file.sync_all()?;
    Ok(file)
}

impl Storage for ZeroFilled {
    fn create(&mut self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let Some(mut file) = self.take_ready() else {
            self.ask();
            return Disk.create(path);
        };
        let zeroed = self.dir.join(ZEROED_NAME);
        // A link fails if the segment exists, as `create_new` does. Then the zeroed name goes
        // (a name only: no blocks are freed); the caller syncs the directory.
        match fs::hard_link(&zeroed, path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_file(&zeroed);
                self.ask();
                return Err(error);
            }
            Err(error) => {
                let errno = rustix::io::Errno::from_io_error(&error);
                if matches!(
                    errno,
                    Some(rustix::io::Errno::PERM | rustix::io::Errno::OPNOTSUPP)
                ) || error.kind() == io::ErrorKind::Unsupported
                {
                    // A file system without hard links.
                    tracing::warn!(%error, "cannot name a WAL segment written ahead: segments start empty from now on");
                    self.give_up();
                } else {
                    tracing::warn!(%error, "cannot name a WAL segment written ahead: this one starts empty");
                    let _ = fs::remove_file(&zeroed);
                    self.ask();
                }
                return Disk.create(path);
            }
        }
        if let Err(error) = fs::remove_file(&zeroed) {
            tracing::warn!(%error, "cannot remove the name of a WAL segment written ahead");
        }
        // The records go through `file`: the name must be that file's, or they would be
        // written where no name leads.
        if !same_file(&file, path)? {
            tracing::warn!(
                "a WAL segment written ahead was not the file named: this one starts empty"
            );
            fs::remove_file(path)?;
            self.ask();
            return Disk.create(path);
        }
        std::io::Seek::seek(&mut file, io::SeekFrom::Start(0))?;
        self.taken.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(DiskFile(file)))
    }
    /// Fills are paced from the first group on. The next file is asked for once the open
    /// segment is half full: a log that never gets that far (a short run, a test) writes no
    /// second segment ahead.
    fn progress(&mut self, segment_len: u64, segment_bytes: u64) {
        if !self.serving.load(Ordering::Relaxed) {
            self.serving.store(true, Ordering::Relaxed);
        }
        if segment_len >= segment_bytes / 2 {
            self.ask();
        }
    }
    fn open_append(&mut self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>> {
        Disk.open_append(path, len)
    }
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        Disk.sync_dir(dir)
    }
    /// Once the first segment written ahead is ready (waited for up to [`FIRST_ZEROED_WAIT`]).
    fn new_segment_at_start(&mut self) -> bool {
        self.wait_ready(FIRST_ZEROED_WAIT)
    }
}

/// The shards' handle on the log.
#[derive(Debug)]
pub struct Wal<C> {
    sender: Sender<Submission<C>>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    failed: Arc<AtomicBool>,
    /// Why a shard stopped the log ([`Wal::poison`]), until the writer reports it.
    poison: Arc<std::sync::Mutex<Option<String>>>,
    /// The LSN the next record gets, as of the last durable group.
    logged: Arc<AtomicU64>,
}

impl<C> Clone for Wal<C> {
    fn clone(&self) -> Self {
        Wal {
            sender: self.sender.clone(),
            queued: self.queued.clone(),
            capacity: self.capacity,
            failed: self.failed.clone(),
            poison: self.poison.clone(),
            logged: self.logged.clone(),
        }
    }
}

impl<C> Wal<C> {
    /// Reserves a place for one submission. Call before changing state: a shard that cannot
    /// log must not apply.
    pub fn try_reserve(&self) -> bool {
        if self.failed.load(Ordering::Acquire) {
            return false;
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Reserves a place even beyond the queue's bound (but not on a failed log): for decisions
    /// already taken elsewhere, which must be logged (an issuer's answer, a timeout whose
    /// reversal must be queued). Their number is bounded by the issuers' `inflight_max`.
    pub fn reserve_beyond_bound(&self) -> bool {
        if self.failed.load(Ordering::Acquire) {
            return false;
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Gives back a reservation that will not be used.
    pub fn unreserve(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    /// Submits after a successful [`Wal::try_reserve`]. Gives the submission back if the
    /// writer has stopped.
    pub fn submit(&self, submission: Submission<C>) -> Result<(), Submission<C>> {
        self.sender.send(submission).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            e.into_inner()
        })
    }

    /// Queues a submission without a record and without a reservation: a snapshot marker, at
    /// most one per shard per snapshot. Its completion is released with the LSN the next record
    /// gets, which splits the shard's records into those before it and those after.
    pub fn submit_marker(&self, completion: C) -> Result<(), C> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.submit(Submission {
            payload: None,
            completion,
        })
        .map_err(|s| s.completion)
    }

    /// The LSN the next record gets, as of the last durable group: how far the log has come
    /// (the snapshot timer counts records with it). A handle of its own, which does not keep
    /// the writer running as the `Wal` does.
    pub fn logged_lsn(&self) -> Arc<AtomicU64> {
        self.logged.clone()
    }

    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Fails the log for a reason outside it (a shard whose state can no longer be trusted):
    /// nothing more is made durable, what waits is answered as failed, and the writer reports
    /// `reason` through its failure hook at its next group. Submit a marker after this, so that
    /// there is a next group.
    pub fn poison(&self, reason: String) {
        let mut poison = self.poison.lock().unwrap_or_else(|e| e.into_inner());
        if !self.failed.swap(true, Ordering::AcqRel) {
            *poison = Some(reason);
            metrics().wal_failed.set(1);
        }
    }
}

struct Writer<C, R> {
    config: WriterConfig,
    storage: Box<dyn Storage>,
    file: Box<dyn SegmentFile>,
    segment_sequence: u64,
    segment_len: u64,
    next_lsn: u64,
    receiver: Receiver<Submission<C>>,
    queued: Arc<AtomicUsize>,
    failed: Arc<AtomicBool>,
    poison: Arc<std::sync::Mutex<Option<String>>>,
    logged: Arc<AtomicU64>,
    release: R,
    on_failure: Option<Box<dyn FnOnce(String) + Send>>,
    /// Segment and length at the end of the last durable group.
    released: (u64, u64),
    /// Completions of a durable group not yet released.
    releasing: std::collections::VecDeque<(C, u64)>,
}

/// What the writer does with each submission once its group is durable (or has failed), on
/// its thread, in log order; and, after the last of a group, with what that gathered (the
/// ledger hands each worker its answers in one message). A closure is a `Release` that
/// gathers nothing.
pub trait Release<C>: Send + 'static {
    fn release(&mut self, completion: C, durability: Durability, lsn: u64);
    /// After the last release of a group.
    fn end_of_group(&mut self) {}
}

impl<C, F: FnMut(C, Durability, u64) + Send + 'static> Release<C> for F {
    fn release(&mut self, completion: C, durability: Durability, lsn: u64) {
        self(completion, durability, lsn);
    }
}

/// Statistics of one writer's life, for the log line at exit and for benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub groups: u64,
    pub records: u64,
    pub next_lsn: u64,
}

/// Starts the writer thread, appending after `tail` (from a scan in recovery mode) or creating
/// the first segment. `release(completion, durability, lsn)` is called on the writer thread for
/// each submission, in order; `lsn` is the record's, or for a submission without a record the
/// LSN the next record gets.
pub fn start<C, R>(
    config: WriterConfig,
    mut storage: Box<dyn Storage>,
    tail: Option<Tail>,
    next_lsn: u64,
    release: R,
    on_failure: impl FnOnce(String) + Send + 'static,
) -> io::Result<(Wal<C>, JoinHandle<WriterStats>)>
where
    C: Send + 'static,
    R: Release<C>,
{
    let new_segment = storage.new_segment_at_start();
    let (file, segment_sequence, segment_len) = match tail {
        Some(tail) if tail.version == format::FORMAT_VERSION && !new_segment => (
            storage.open_append(&tail.path, tail.valid_len)?,
            tail.sequence,
            tail.valid_len,
        ),
        Some(tail) => {
            // A segment of another format version is never appended to (its readers would not
            // know the records' marks), nor one whose blocks were not written ahead when the
            // storage writes them ahead: the log goes on in a new segment. The last one ends
            // where its records do (its unused part, zeros written ahead, cut off).
            storage
                .open_append(&tail.path, tail.valid_len)
                .and_then(|mut last| last.sync())?;
            let sequence = tail.sequence + 1;
            let (file, len) = create_segment(storage.as_mut(), &config.dir, sequence, next_lsn)?;
            (file, sequence, len)
        }
        None => {
            let (file, len) = create_segment(storage.as_mut(), &config.dir, 0, next_lsn)?;
            (file, 0, len)
        }
    };
    let (sender, receiver) = crossbeam_channel::unbounded();
    let queued = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let poison = Arc::new(std::sync::Mutex::new(None));
    let logged = Arc::new(AtomicU64::new(next_lsn));
    let wal = Wal {
        sender,
        queued: queued.clone(),
        capacity: config.queue_records_max,
        failed: failed.clone(),
        poison: poison.clone(),
        logged: logged.clone(),
    };
    let writer = Writer {
        config,
        storage,
        file,
        segment_sequence,
        segment_len,
        next_lsn,
        receiver,
        queued,
        failed,
        poison,
        logged,
        release,
        on_failure: Some(Box::new(on_failure)),
        released: (segment_sequence, segment_len),
        releasing: std::collections::VecDeque::new(),
    };
    let handle = std::thread::Builder::new()
        .name("wal-writer".into())
        .spawn(move || writer.run())?;
    Ok((wal, handle))
}

fn create_segment(
    storage: &mut dyn Storage,
    dir: &Path,
    sequence: u64,
    first_lsn: u64,
) -> io::Result<(Box<dyn SegmentFile>, u64)> {
    let mut file = storage.create(&dir.join(format::segment_file_name(sequence)))?;
    let header = SegmentHeader {
        sequence,
        first_lsn,
    }
    .encode();
    file.append(&header)?;
    file.sync()?;
    storage.sync_dir(dir)?;
    Ok((file, header.len() as u64))
}

impl<C, R: Release<C>> Writer<C, R> {
    fn run(mut self) -> WriterStats {
        let mut stats = WriterStats::default();
        let mut buffer = Vec::with_capacity(self.config.group_bytes_max + format::RECORD_BODY_MAX);
        let mut completions = Vec::with_capacity(self.config.group_records_max);
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.run_groups(&mut stats, &mut buffer, &mut completions);
        }));
        if let Err(panic) = run {
            // A bug, not an operating error; still, nothing may be answered as durable that
            // is not known to be, and every waiting request gets its answer (96).
            let message = crate::panic_message(&*panic);
            self.failed.store(true, Ordering::Release);
            metrics().wal_failed.set(1);
            let cut = self.cut_to_released();
            // Durable records whose answers were being released when it happened: they are in
            // the log, so their answers are true (but the one whose release panicked).
            while let Some((completion, lsn)) = self.releasing.pop_front() {
                self.release.release(completion, Durability::Durable, lsn);
            }
            for (completion, lsn) in completions.drain(..) {
                self.release.release(completion, Durability::Failed, lsn);
            }
            while let Ok(submission) = self.receiver.try_recv() {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                self.release
                    .release(submission.completion, Durability::Failed, self.next_lsn);
            }
            self.release.end_of_group();
            if let Some(report) = self.on_failure.take() {
                report(format!(
                    "the WAL writer failed ({message}); {cut}; no further request can be made durable"
                ));
            }
        }
        stats.next_lsn = self.next_lsn;
        stats
    }

    fn run_groups(
        &mut self,
        stats: &mut WriterStats,
        buffer: &mut Vec<u8>,
        completions: &mut Vec<(C, u64)>,
    ) {
        while let Ok(first) = self.receiver.recv() {
            let mut problem = self.take(first, buffer, completions).err();
            let deadline = Instant::now() + self.config.group_wait;
            while problem.is_none()
                && completions.len() < self.config.group_records_max
                && buffer.len() < self.config.group_bytes_max
            {
                let next = match self.receiver.try_recv() {
                    Ok(next) => next,
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) if self.config.group_wait.is_zero() => break,
                    Err(TryRecvError::Empty) => match self.receiver.recv_deadline(deadline) {
                        Ok(next) => next,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    },
                };
                problem = self.take(next, buffer, completions).err();
            }
            let result = if self.failed.load(Ordering::Acquire) {
                // Failed before (reported then), or stopped by a shard (reported now).
                Err(self.poison.lock().unwrap_or_else(|e| e.into_inner()).take())
            } else if let Some(problem) = problem {
                // A record the format cannot hold: the shard already applied what it says, so
                // the log can no longer follow the state; stop like on a failed write.
                self.failed.store(true, Ordering::Release);
                metrics().wal_failed.set(1);
                Err(Some(format!(
                    "{problem}: the ledger applied what the log cannot record; no further request can be made durable"
                )))
            } else {
                self.commit(buffer).map_err(Some)
            };
            buffer.clear();
            stats.groups += 1;
            stats.records += completions.len() as u64;
            metrics()
                .wal_group_records
                .observe(completions.len() as f64);
            match result {
                Ok(()) => {
                    // Durable: from here on the group stays in the log, whatever happens, and
                    // what is not released yet is held where a panic can still release it.
                    self.released = (self.segment_sequence, self.segment_len);
                    self.logged.store(self.next_lsn, Ordering::Release);
                    self.releasing.extend(completions.drain(..));
                    while let Some((completion, lsn)) = self.releasing.pop_front() {
                        self.release.release(completion, Durability::Durable, lsn);
                    }
                    self.release.end_of_group();
                }
                Err(error) => {
                    for (completion, lsn) in completions.drain(..) {
                        self.release.release(completion, Durability::Failed, lsn);
                    }
                    self.release.end_of_group();
                    if let (Some(error), Some(report)) = (error, self.on_failure.take()) {
                        report(error);
                    }
                }
            }
        }
    }

    /// After a panic: cuts the log back to the end of the last durable group, so that nothing
    /// answered 96 can come back at recovery.
    fn cut_to_released(&mut self) -> String {
        let (sequence, len) = self.released;
        let len = if sequence == self.segment_sequence {
            len
        } else {
            // Rotated since: this segment holds nothing released yet.
            format::SEGMENT_HEADER_LEN as u64
        };
        match self.file.truncate(len) {
            Ok(()) => "the log was cut back to the last released group".to_owned(),
            Err(error) => format!(
                "cutting the log back to the last released group also failed ({error}): requests just answered 96 \
                 may be in the log and must be reconciled after recovery"
            ),
        }
    }

    fn take(
        &mut self,
        submission: Submission<C>,
        buffer: &mut Vec<u8>,
        completions: &mut Vec<(C, u64)>,
    ) -> Result<(), format::RecordTooLarge> {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        let lsn = self.next_lsn;
        let mut result = Ok(());
        if let Some(payload) = &submission.payload {
            // The first record of a group says that everything before it is on disk.
            let group_start = buffer.is_empty();
            result = format::try_append_record(buffer, lsn, payload, group_start);
            if result.is_ok() {
                self.next_lsn += 1;
            }
        }
        completions.push((submission.completion, lsn));
        result
    }

    /// Writes and syncs one group; on error marks the log failed for good.
    fn commit(&mut self, group: &[u8]) -> Result<(), String> {
        // What is durable of the segment this group goes to: set after a rotation, since a
        // failed group must be cut from the new segment, not to the old one's length.
        let mut durable_len = self.segment_len;
        let mut appended = false;
        let result = (|| -> io::Result<()> {
            if group.is_empty() {
                return Ok(());
            }
            if self.segment_len >= self.config.segment_bytes {
                let first_lsn = self.next_lsn_of_group(group);
                let (file, len) = create_segment(
                    self.storage.as_mut(),
                    &self.config.dir,
                    self.segment_sequence + 1,
                    first_lsn,
                )?;
                // Only now: a failed create leaves the open segment's number with its file.
                self.segment_sequence += 1;
                self.file = file;
                self.segment_len = len;
                durable_len = len;
            }
            appended = true;
            self.file.append(group)?;
            self.segment_len += group.len() as u64;
            self.storage
                .progress(self.segment_len, self.config.segment_bytes);
            if self.config.sync == SyncMode::Group {
                let started = Instant::now();
                self.file.sync()?;
                metrics()
                    .wal_fsync_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            Ok(())
        })();
        result.map_err(|error| {
            self.failed.store(true, Ordering::Release);
            metrics().wal_failed.set(1);
            let segment = self.config.dir.join(format::segment_file_name(self.segment_sequence));
            // A rotation that failed appended nothing to the new segment.
            let cut = if appended { self.file.truncate(durable_len) } else { Ok(()) };
            let cut = match cut {
                Ok(()) => "the failed group was cut off the log".to_owned(),
                Err(cut_error) => format!(
                    "cutting the failed group off the log also failed ({cut_error}): requests just answered 96 may be in \
                     the log and must be reconciled after recovery"
                ),
            };
            format!("WAL write or sync failed on {}: {error}; {cut}; no further request can be made durable", segment.display())
        })
    }

    /// The LSN of the first record of `group` (already counted in `next_lsn`).
    fn next_lsn_of_group(&self, group: &[u8]) -> u64 {
        match format::read_record(group) {
            format::RecordRead::Record { lsn, .. } => lsn,
            _ => self.next_lsn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::scan::{self, Mode};
    use std::sync::Mutex;

    fn dir(name: &str) -> crate::testing::TempDir {
        crate::testing::TempDir::new(&format!("writer-{name}"))
    }

    fn config(dir: &Path) -> WriterConfig {
        WriterConfig {
            dir: dir.to_owned(),
            sync: SyncMode::Group,
            group_records_max: 64,
            group_bytes_max: 1 << 20,
            group_wait: Duration::ZERO,
            segment_bytes: 1 << 20,
            queue_records_max: 1_000,
        }
    }

    type Released = Arc<Mutex<Vec<(u32, Durability)>>>;
    type Failure = Arc<Mutex<Option<String>>>;

    fn start_writer(
        config: WriterConfig,
        storage: Box<dyn Storage>,
    ) -> (Wal<u32>, JoinHandle<WriterStats>, Released, Failure) {
        let (report, tail) = {
            let report = scan::scan(&config.dir, Mode::Recover, |_, _| Ok(())).unwrap();
            let tail = report.tail.clone();
            (report, tail)
        };
        let released: Released = Arc::default();
        let failure: Failure = Arc::default();
        let (r, f) = (released.clone(), failure.clone());
        let (wal, handle) = start(
            config,
            storage,
            tail,
            report.next_lsn,
            move |id, durability, _| r.lock().unwrap().push((id, durability)),
            move |error| *f.lock().unwrap() = Some(error),
        )
        .unwrap();
        (wal, handle, released, failure)
    }

    fn submit(wal: &Wal<u32>, id: u32, payload: Option<&[u8]>) {
        assert!(wal.try_reserve());
        wal.submit(Submission {
            payload: payload.map(<[u8]>::to_vec),
            completion: id,
        })
        .unwrap();
    }

    fn read_back(dir: &Path) -> Vec<(u64, Vec<u8>)> {
        let mut records = Vec::new();
        scan::scan(dir, Mode::Verify, |lsn, payload| {
            records.push((lsn, payload.to_vec()));
            Ok(())
        })
        .unwrap();
        records
    }

    #[test]
    fn records_are_released_in_order_once_durable_and_read_back() {
        let dir = dir("order");
        let (wal, handle, released, failure) = start_writer(config(&dir), Box::new(Disk));
        let logged = wal.logged_lsn();
        assert_eq!(logged.load(Ordering::Acquire), 0);
        for id in 0..500u32 {
            let payload = id.to_le_bytes();
            submit(&wal, id, if id % 10 == 9 { None } else { Some(&payload) });
        }
        // How far the log has come, once the last group is durable: what the snapshot timer
        // counts records with.
        let deadline = Instant::now() + Duration::from_secs(10);
        while released.lock().unwrap().len() < 500 {
            assert!(Instant::now() < deadline, "not all released");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(logged.load(Ordering::Acquire), 450);
        drop(wal);
        let stats = handle.join().unwrap();
        let released = released.lock().unwrap();
        assert_eq!(
            released.iter().map(|r| r.0).collect::<Vec<_>>(),
            (0..500).collect::<Vec<_>>()
        );
        assert!(released.iter().all(|r| r.1 == Durability::Durable));
        assert!(failure.lock().unwrap().is_none());
        assert_eq!(stats.next_lsn, 450);
        let records = read_back(&dir);
        assert_eq!(records.len(), 450);
        assert!(
            records
                .iter()
                .enumerate()
                .all(|(i, (lsn, _))| *lsn == i as u64)
        );
    }

    #[test]
    fn appending_resumes_after_a_restart_and_segments_rotate() {
        let dir = dir("resume");
        let small = WriterConfig {
            segment_bytes: 200,
            group_records_max: 1,
            ..config(&dir)
        };
        for round in 0..3u32 {
            let (wal, handle, _, _) = start_writer(small.clone(), Box::new(Disk));
            for id in 0..20 {
                submit(&wal, id, Some(&(round * 100 + id).to_le_bytes()));
            }
            drop(wal);
            handle.join().unwrap();
        }
        let records = read_back(&dir);
        assert_eq!(records.len(), 60);
        assert_eq!(records[59].1, 219u32.to_le_bytes());
        assert!(scan::segments(&dir).unwrap().len() > 3, "rotated by size");
    }

    /// Where a segment's records end.
    fn records_end(path: &Path) -> usize {
        let bytes = fs::read(path).unwrap();
        let mut offset = format::SEGMENT_HEADER_LEN;
        while let format::RecordRead::Record { len, .. } = format::read_record(&bytes[offset..]) {
            offset += len;
        }
        offset
    }

    /// Segments written ahead: each start waits for one and goes on in it (the last segment
    /// cut to its records first), rotations take the next ones, every earlier segment ends
    /// where its records do, and the log reads back whole and clean.
    #[test]
    fn segments_written_ahead_are_used_from_the_start_and_the_log_reads_back() {
        let dir = dir("zeroed");
        let small = WriterConfig {
            segment_bytes: 4096,
            group_records_max: 8,
            ..config(&dir)
        };
        let mut expected = Vec::new();
        let mut taken = 0;
        for round in 0..3u32 {
            let storage = ZeroFilled::new(&dir, small.segment_bytes).unwrap();
            let taken_here = storage.taken();
            let (wal, handle, released, failure) = start_writer(small.clone(), Box::new(storage));
            let (_, first) = scan::segments(&dir).unwrap().pop().unwrap();
            assert_eq!(
                (fs::metadata(&first).unwrap().len(), records_end(&first)),
                (4096, format::SEGMENT_HEADER_LEN),
                "round {round}: a new segment, written ahead"
            );
            for id in 0..600u32 {
                let payload = (round * 1_000 + id).to_le_bytes();
                submit(&wal, id, Some(&payload));
                expected.push(payload.to_vec());
                if id % 50 == 49 {
                    // The zeroing thread's turn.
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            drop(wal);
            handle.join().unwrap();
            taken += taken_here.load(Ordering::Relaxed);
            assert!(
                !dir.join(ZEROED_NAME).exists(),
                "round {round}: the file written ahead and not used goes with the writer"
            );
            assert!(failure.lock().unwrap().is_none());
            let released = released.lock().unwrap();
            assert_eq!(released.len(), 600);
            assert!(released.iter().all(|r| r.1 == Durability::Durable));
        }
        let records = read_back(&dir);
        assert_eq!(
            records.into_iter().map(|r| r.1).collect::<Vec<_>>(),
            expected
        );
        let report = scan::scan(&dir, Mode::Verify, |_, _| Ok(())).unwrap();
        assert_eq!((report.torn_tail, report.next_lsn), (None, 1_800));
        let segments = scan::segments(&dir).unwrap();
        assert!(segments.len() >= 9, "{} segments", segments.len());
        // Each start's segment, and rotations' too.
        assert!(
            taken > 3,
            "{taken} of {} segments written ahead",
            segments.len()
        );
        for (_, path) in &segments[..segments.len() - 1] {
            let len = fs::metadata(path).unwrap().len();
            assert_eq!(records_end(path) as u64, len, "{}", path.display());
        }
    }

    #[test]
    fn a_segment_of_an_older_format_is_never_appended_to() {
        let dir = dir("older");
        let (wal, handle, _, _) = start_writer(config(&dir), Box::new(Disk));
        submit(&wal, 0, Some(b"old"));
        drop(wal);
        handle.join().unwrap();
        // Make it a version 1 segment, as an earlier build wrote it.
        let path = dir.join(format::segment_file_name(0));
        let mut bytes = fs::read(&path).unwrap();
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[0..28]);
        bytes[28..32].copy_from_slice(&crc.to_le_bytes());
        fs::write(&path, bytes).unwrap();
        let (wal, handle, _, _) = start_writer(config(&dir), Box::new(Disk));
        submit(&wal, 1, Some(b"new"));
        drop(wal);
        handle.join().unwrap();
        assert_eq!(scan::segments(&dir).unwrap().len(), 2, "a new segment");
        assert_eq!(
            read_back(&dir),
            [(0, b"old".to_vec()), (1, b"new".to_vec())]
        );
    }

    #[test]
    fn a_marker_is_released_with_the_lsn_of_the_next_record() {
        let dir = dir("marker");
        let released = Arc::new(Mutex::new(Vec::new()));
        let r = released.clone();
        let (wal, handle) = start(
            config(&dir),
            Box::new(Disk),
            None,
            0,
            move |id: u32, _, lsn| r.lock().unwrap().push((id, lsn)),
            |_| {},
        )
        .unwrap();
        for id in 0..3 {
            submit(&wal, id, Some(b"x"));
        }
        wal.submit_marker(100).unwrap();
        submit(&wal, 3, Some(b"y"));
        drop(wal);
        handle.join().unwrap();
        assert_eq!(
            *released.lock().unwrap(),
            [(0, 0), (1, 1), (2, 2), (100, 3), (3, 3)]
        );
    }

    #[test]
    fn the_reservation_bounds_the_queue() {
        let dir = dir("bound");
        let (wal, handle, _, _) = start_writer(
            WriterConfig {
                queue_records_max: 2,
                ..config(&dir)
            },
            Box::new(Disk),
        );
        // The writer may take one at once; without a consumer the third reservation must fail.
        let held: Vec<bool> = (0..50).map(|_| wal.try_reserve()).collect();
        assert!(held.iter().filter(|r| **r).count() < 50);
        drop(wal);
        // Reservations without submissions leave nothing to write.
        handle.join().unwrap();
    }

    /// A file layer that fails the `fail_at`-th sync, or tears the `tear_at`-th append after
    /// `tear_bytes` bytes with ENOSPC.
    #[derive(Clone)]
    struct Faulty {
        syncs: Arc<AtomicUsize>,
        appends: Arc<AtomicUsize>,
        fail_sync_at: usize,
        tear_append_at: usize,
        tear_bytes: usize,
    }

    struct FaultyFile {
        inner: DiskFile,
        faults: Faulty,
    }

    impl SegmentFile for FaultyFile {
        fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
            let n = self.faults.appends.fetch_add(1, Ordering::SeqCst) + 1;
            if n == self.faults.tear_append_at {
                self.inner
                    .append(&bytes[..self.faults.tear_bytes.min(bytes.len())])?;
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            self.inner.append(bytes)
        }
        fn sync(&mut self) -> io::Result<()> {
            let n = self.faults.syncs.fetch_add(1, Ordering::SeqCst) + 1;
            if n == self.faults.fail_sync_at {
                return Err(io::Error::other("injected fdatasync failure"));
            }
            self.inner.sync()
        }
        fn truncate(&mut self, len: u64) -> io::Result<()> {
            self.inner.truncate(len)
        }
    }

    impl Storage for Faulty {
        fn create(&mut self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
            let file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)?;
            Ok(Box::new(FaultyFile {
                inner: DiskFile(file),
                faults: self.clone(),
            }))
        }
        fn open_append(&mut self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>> {
            let mut disk = Disk;
            let file = disk.open_append(path, len)?;
            drop(file);
            let mut file = fs::OpenOptions::new().append(true).open(path)?;
            file.flush()?;
            Ok(Box::new(FaultyFile {
                inner: DiskFile(file),
                faults: self.clone(),
            }))
        }
        fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
            Disk.sync_dir(dir)
        }
    }

    fn faulty(fail_sync_at: usize, tear_append_at: usize, tear_bytes: usize) -> Faulty {
        Faulty {
            syncs: Arc::default(),
            appends: Arc::default(),
            fail_sync_at,
            tear_append_at,
            tear_bytes,
        }
    }

    /// Submits one record at a time, waiting for each release, until the writer fails.
    fn write_until_failure(
        dir: &Path,
        storage: Faulty,
    ) -> (Vec<(u32, Durability)>, Option<String>) {
        let (wal, handle, released, failure) = start_writer(config(dir), Box::new(storage));
        for id in 0..20u32 {
            if !wal.try_reserve() {
                break;
            }
            wal.submit(Submission {
                payload: Some(vec![7u8; 100 + id as usize]),
                completion: id,
            })
            .unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while released.lock().unwrap().len() <= id as usize && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        drop(wal);
        handle.join().unwrap();
        let released = released.lock().unwrap().clone();
        let failure = failure.lock().unwrap().clone();
        (released, failure)
    }

    #[test]
    fn a_failed_sync_fails_its_group_and_everything_after_and_is_not_retried() {
        // Sync 1 is the segment header; sync 5 is the group of record 3.
        let dir = dir("sync-fail");
        let (released, failure) = write_until_failure(&dir, faulty(5, 0, 0));
        let durable: Vec<u32> = released
            .iter()
            .filter(|r| r.1 == Durability::Durable)
            .map(|r| r.0)
            .collect();
        assert_eq!(durable, [0, 1, 2]);
        assert!(released.iter().skip(3).all(|r| r.1 == Durability::Failed));
        let failure = failure.unwrap();
        assert!(
            failure.contains("injected fdatasync failure") && failure.contains("cut off the log"),
            "{failure}"
        );
        // Every durable record is there, and the failed one is not: its answer was 96.
        assert_eq!(read_back(&dir).len(), 3);
    }

    #[test]
    fn a_group_that_fails_right_after_a_rotation_is_cut_from_the_new_segment() {
        let dir = dir("rotate-fail");
        // Segments of 200 bytes hold two records here, so the third rotates: syncs 1 and 4
        // are segment headers, 2 and 3 the first two groups, and 5 the third, which fails.
        let storage = faulty(5, 0, 0);
        let (wal, handle, released, failure) = start_writer(
            WriterConfig {
                segment_bytes: 200,
                ..config(&dir)
            },
            Box::new(storage),
        );
        for id in 0..3u32 {
            submit(&wal, id, Some(&[7u8; 100]));
            let deadline = Instant::now() + Duration::from_secs(5);
            while released.lock().unwrap().len() <= id as usize && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        drop(wal);
        handle.join().unwrap();
        assert!(failure.lock().unwrap().is_some());
        assert_eq!(
            released.lock().unwrap().last(),
            Some(&(2, Durability::Failed))
        );
        assert_eq!(scan::segments(&dir).unwrap().len(), 2, "rotated");
        assert_eq!(
            read_back(&dir).len(),
            2,
            "the failed group was cut from the new segment, not left in it"
        );
    }

    #[test]
    fn a_panic_on_the_writer_thread_fails_the_log_and_answers_everything_waiting() {
        let dir = dir("panic");
        let released: Released = Arc::default();
        let failure: Failure = Arc::default();
        let (r, f) = (released.clone(), failure.clone());
        let (wal, handle) = start(
            config(&dir),
            Box::new(Disk),
            None,
            0,
            move |id: u32, durability, _| {
                assert!(id != 1, "injected bug while releasing");
                r.lock().unwrap().push((id, durability));
            },
            move |error| *f.lock().unwrap() = Some(error),
        )
        .unwrap();
        submit(&wal, 0, Some(b"a"));
        while released.lock().unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        submit(&wal, 1, Some(b"b"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !wal.has_failed() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(wal.has_failed(), "no shard may change state any more");
        assert!(!wal.try_reserve());
        drop(wal);
        handle.join().unwrap();
        let failure = failure.lock().unwrap().clone().unwrap();
        assert!(
            failure.contains("injected bug while releasing"),
            "{failure}"
        );
        assert_eq!(*released.lock().unwrap(), [(0, Durability::Durable)]);
        // Both records were durable before the panic: they stay.
        assert_eq!(read_back(&dir).len(), 2);
    }

    #[test]
    fn disk_full_mid_write_cuts_the_partial_group_and_keeps_every_durable_record() {
        let dir = dir("enospc");
        // Append 1 is the header; append 4 is record 2's group, torn after 20 bytes.
        let (released, failure) = write_until_failure(&dir, faulty(0, 4, 20));
        let durable = released
            .iter()
            .filter(|r| r.1 == Durability::Durable)
            .count();
        assert_eq!(durable, 2);
        let failure = failure.unwrap();
        assert!(failure.contains("No space left on device"), "{failure}");
        let report = scan::scan(&dir, Mode::Verify, |_, _| Ok(())).unwrap();
        assert_eq!(
            (report.records, report.torn_tail),
            (2, None),
            "the 20 bytes written were cut off"
        );
        assert_eq!(
            report.next_lsn, 2,
            "the failed record's LSN is reused after recovery"
        );
    }
}
