//! Snapshot files: written atomically, read back newest-valid-first, and the log pruned behind
//! them.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::format::{self, RemotePart, SnapshotSection};
use super::scan;

/// How much of a snapshot is written before it is synced (see [`write_with_remote`]).
const SYNC_PIECE_BYTES: usize = 4 * 1024 * 1024;

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Writes a snapshot of `sections` as `<lowest marker>.snap`: temporary file, fsync, rename,
/// directory fsync, so a crash leaves either no snapshot or a whole one.
pub fn write(
    dir: &Path,
    sections: &[SnapshotSection],
    created_seconds: u64,
) -> io::Result<PathBuf> {
    write_with_remote(dir, sections, &[], created_seconds)
}

/// [`write`], with the issuer channels' parts. The file is named by the lowest marker of
/// either.
pub fn write_with_remote(
    dir: &Path,
    sections: &[SnapshotSection],
    remote: &[RemotePart],
    created_seconds: u64,
) -> io::Result<PathBuf> {
    let first_lsn = sections
        .iter()
        .map(|s| s.marker_lsn)
        .chain(remote.iter().map(|r| r.marker_lsn))
        .min()
        .unwrap_or(0);
    let path = dir.join(format::snapshot_file_name(first_lsn));
    let temporary = path.with_extension("snap.tmp");
    let bytes = format::encode_snapshot_with_remote(sections, remote, created_seconds);
    {
        let mut file = fs::File::create(&temporary)?;
        // Synced piece by piece: at a large hot window a snapshot is hundreds of MB, and one
        // fsync of all of it at the end kept the disk busy for most of a second, during which
        // every group commit of the log waited (answers 0.5–0.8 s late at the end of snapshots
        // of 2–3 M transactions per shard, bench/RESULTS.md). A piece at a time, a group commit
        // waits for one piece at most.
        for piece in bytes.chunks(SYNC_PIECE_BYTES) {
            file.write_all(piece)?;
            file.sync_data()?;
        }
        file.sync_all()?;
    }
    fs::rename(&temporary, &path)?;
    sync_dir(dir)?;
    Ok(path)
}

/// The snapshot files of `dir`, newest (highest LSN) first.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(lsn) = entry.file_name().to_str().and_then(format::snapshot_lsn) {
            found.push((lsn, entry.path()));
        }
    }
    found.sort_by(|a, b| b.cmp(a));
    Ok(found)
}

/// What [`latest`] found.
#[derive(Debug, Default)]
pub struct Found {
    pub snapshot: Option<(PathBuf, Vec<SnapshotSection>)>,
    /// The issuer channels' parts of that snapshot (none before format 3).
    pub remote: Vec<RemotePart>,
    /// Newer snapshot files that did not read back, with the reason.
    pub invalid: Vec<(PathBuf, String)>,
}

/// The newest snapshot that reads back whole.
pub fn latest(dir: &Path) -> io::Result<Found> {
    let mut found = Found::default();
    for (_, path) in list(dir)? {
        let bytes = fs::read(&path)?;
        match format::decode_snapshot_with_remote(&bytes) {
            Ok((sections, remote)) => {
                found.snapshot = Some((path, sections));
                found.remote = remote;
                break;
            }
            Err(error) => found.invalid.push((path, error.to_string())),
        }
    }
    Ok(found)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub segments: usize,
    pub snapshots: usize,
}

/// Deletes snapshots older than `keep`, and segments wholly before `first_needed_lsn` (the next
/// segment starts at or before it) that were last written more than `retention` ago: segments
/// are kept that long so that retransmissions after a restart still find their answers. The
/// last segment is never deleted. Also deletes what a crash in the middle of writing a snapshot
/// left (`*.snap.tmp`, hundreds of MB each, never read): none is being written while this runs,
/// since the snapshotter writes one snapshot at a time and prunes after it.
pub fn prune(
    dir: &Path,
    keep: &Path,
    first_needed_lsn: u64,
    retention: Duration,
    now: SystemTime,
) -> io::Result<Pruned> {
    let mut pruned = Pruned::default();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.ends_with(".snap.tmp"))
        {
            fs::remove_file(entry.path())?;
            pruned.snapshots += 1;
        }
    }
    for (_, path) in list(dir)? {
        if path != keep {
            fs::remove_file(&path)?;
            pruned.snapshots += 1;
        }
    }
    let segments = scan::segments(dir).map_err(|e| io::Error::other(e.to_string()))?;
    for pair in segments.windows(2) {
        let (_, path) = &pair[0];
        let (_, next) = &pair[1];
        let Some(next_first) = scan::first_lsn_of(next) else {
            break;
        };
        let old_enough = fs::metadata(path)?
            .modified()?
            .checked_add(retention)
            .is_some_and(|t| t <= now);
        if next_first > first_needed_lsn || !old_enough {
            // Segments are in order: the first one still needed ends the pruning.
            break;
        }
        fs::remove_file(path)?;
        pruned.segments += 1;
    }
    if pruned.segments + pruned.snapshots > 0 {
        sync_dir(dir)?;
    }
    Ok(pruned)
}
