//! The snapshotter thread: gathers one image per shard and one part per issuer channel for a
//! snapshot generation, writes the snapshot file and prunes the log behind it. Its work
//! (encoding, writing, fsync) never runs on an actor thread.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::Receiver;

use crate::clock::unix_seconds;
use crate::ledger::actor::{Taken, TakenPart};
use crate::ledger::shard::ShardImage;
use crate::wal::format::{RemotePart, SnapshotSection};
use crate::wal::snapshot;

/// How far the snapshotter has come, for the timer: the newest generation whose parts all
/// arrived (then it is being written), and the newest one done with (written or not).
#[derive(Debug, Default)]
pub struct Progress {
    pub gathered: AtomicU64,
    pub finished: AtomicU64,
}

/// Sets the generation being written as finished when dropped, whichever way its work ends.
struct Finished<'a>(&'a AtomicU64, u64);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_max(self.1, Ordering::Release);
    }
}

/// One generation's parts, as they arrive.
struct Gathering {
    shards: Vec<Option<SnapshotSection>>,
    remote: Vec<RemotePart>,
}

/// Starts the thread; it ends when every sender of `taken` is gone. A generation is written
/// once every one of `shards` shards and `channels` issuer channels has given its part;
/// `progress` says when that happened and when it was done with, so that the timer does not
/// ask for the next one before.
#[allow(clippy::too_many_arguments)]
pub fn start(
    dir: PathBuf,
    shards: usize,
    channels: usize,
    retention: Duration,
    taken: Receiver<Taken>,
    pins: std::sync::Arc<crate::issuer::pins::Pins>,
    cold: Option<std::sync::Arc<crate::ledger::cold::ColdStore>>,
    progress: std::sync::Arc<Progress>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("snapshotter".into()).spawn(move || {
        let mut pending: BTreeMap<u64, Gathering> = BTreeMap::new();
        // Per shard, the image of the last snapshot, emptied, for the next one to copy into:
        // memory already touched (fresh memory costs a page fault per 4 KiB).
        let mut spares: Vec<Option<ShardImage>> = (0..shards).map(|_| None).collect();
        for part in taken {
            let generation = part.generation;
            let gathering = pending.entry(generation).or_insert_with(|| Gathering {
                shards: (0..shards).map(|_| None).collect(),
                remote: Vec::new(),
            });
            match part.part {
                TakenPart::Shard { shard, view } => {
                    if let Some(slot) = gathering.shards.get_mut(shard) {
                        // Copied now and let go of: while the view holds a part of the shard's
                        // tables, the shard's writes to that part wait in an overlay.
                        let started = std::time::Instant::now();
                        let mut image = spares.get_mut(shard).and_then(Option::take).unwrap_or_default();
                        let reused = image.transactions.capacity() > 0 || image.accounts.capacity() > 0;
                        view.image_into(&mut image);
                        drop(view);
                        tracing::info!(
                            shard,
                            generation,
                            accounts = image.accounts.len(),
                            transactions = image.transactions.len(),
                            reused,
                            elapsed = ?started.elapsed(),
                            "shard state copied for a snapshot"
                        );
                        *slot = Some(SnapshotSection { marker_lsn: part.marker_lsn, image });
                    }
                }
                TakenPart::Remote { issuer, originals } => {
                    // Flattened here, off the channel's thread and the WAL writer's.
                    let originals = originals.iter().flat_map(|chunk| chunk.iter().copied()).collect();
                    gathering.remote.retain(|r| r.issuer != issuer);
                    gathering.remote.push(RemotePart { issuer, marker_lsn: part.marker_lsn, originals });
                }
            }
            if !gathering.shards.iter().all(Option::is_some) || gathering.remote.len() < channels {
                continue;
            }
            let Some(gathering) = pending.remove(&generation) else { continue };
            progress.gathered.fetch_max(generation, Ordering::Release);
            let _finished = Finished(&progress.finished, generation);
            // An older generation still incomplete can no longer complete usefully.
            pending.retain(|g, _| *g > generation);
            let sections: Vec<SnapshotSection> = gathering.shards.into_iter().flatten().collect();
            // Records that queued advices still open are kept too: the issuer channels'
            // queues are rebuilt from them.
            let first_needed = sections
                .iter()
                .map(|s| s.marker_lsn)
                .chain(gathering.remote.iter().map(|r| r.marker_lsn))
                .min()
                .unwrap_or(0);
            let first_needed = pins.oldest().map_or(first_needed, |pinned| pinned.min(first_needed));
            let started = std::time::Instant::now();
            'write: {
            // The images count on every change the store made before them being durable.
            if let Some(cold) = &cold
                && let Err(error) = cold.persist(&sections.iter().map(|s| &s.image).collect::<Vec<_>>())
            {
                tracing::error!("{error:#}; the snapshot is not written, and the log is kept whole");
                break 'write;
            }
            // Encoding and writing the file (seconds of a core) take what CPU the request path
            // leaves; the copy above (the view held meanwhile), the store's sync before and its
            // settling after (fjall's journal lock held, which the store threads take) run at
            // the request path's priority (crate::threads).
            let written = crate::threads::run_lowered("snapshot-write", crate::threads::MAINTENANCE_NICE, || {
                snapshot::write_with_remote(&dir, &sections, &gathering.remote, unix_seconds())
            });
            match written {
                Ok(path) => {
                    let pruned = snapshot::prune(&dir, &path, first_needed, retention, SystemTime::now());
                    // Only once no older snapshot is left to fall back to: the store's undo log
                    // is cut back to this one's versions.
                    if let (Some(cold), Ok(_)) = (&cold, &pruned) {
                        let images: Vec<_> = sections.iter().map(|s| &s.image).collect();
                        if let Err(error) = cold.settle(&images) {
                            tracing::warn!("{error:#}: the store's undo log is kept; it will be settled after the next snapshot");
                        }
                    }
                    tracing::info!(
                        file = %path.display(),
                        first_needed_lsn = first_needed,
                        elapsed = ?started.elapsed(),
                        segments_deleted = pruned.as_ref().map_or(0, |p| p.segments),
                        "snapshot written"
                    );
                    if let Err(error) = pruned {
                        tracing::warn!(%error, "pruning the log after a snapshot failed; it will be tried after the next one");
                    }
                }
                Err(error) => tracing::error!(%error, dir = %dir.display(), "writing a snapshot failed; the log is kept whole"),
            }
            }
            // Each image back to its shard, emptied, for the next snapshot to copy into.
            for (shard, mut section) in sections.into_iter().enumerate() {
                section.image.clear();
                if let Some(slot) = spares.get_mut(shard) {
                    *slot = Some(section.image);
                }
            }
        }
    })
}
