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

/// The snapshot that [`prune`] retired, kept for the next [`write_with_remote`] to write over.
///
/// Deleting a file of hundreds of MB frees its blocks in one journal commit (and, on a file
/// system mounted with `discard`, trims them there): the log's `fdatasync`s wait behind it, about
/// 40 ms for 64 MiB and 150–260 ms for 1 GiB on the disk of bench/RESULTS.md. Written over, the
/// same blocks serve the next snapshot, and only what it is shorter by is freed. Not a
/// snapshot's name: recovery never reads it. It costs one more snapshot's worth of disk.
pub const SPARE_NAME: &str = "snapshot.spare";

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
    // Written over the spare if there is one (see SPARE_NAME), cut to length at the end.
    let spare = dir.join(SPARE_NAME);
    match fs::rename(&spare, &temporary) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    if let Err(error) = write_over(&temporary, &bytes) {
        // The file goes back to being the spare (best effort: a prune retires it otherwise),
        // so that the next snapshot still writes over it.
        let _ = fs::rename(&temporary, &spare);
        return Err(error);
    }
    fs::rename(&temporary, &path)?;
    sync_dir(dir)?;
    Ok(path)
}

/// Writes `bytes` over the file at `path` (made if missing), cut to their length, and syncs it.
fn write_over(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    // Synced piece by piece: at a large hot window a snapshot is hundreds of MB, and one fsync
    // of all of it at the end kept the disk busy for most of a second, during which every group
    // commit of the log waited (answers 0.5–0.8 s late at the end of snapshots of 2–3 M
    // transactions per shard, bench/RESULTS.md). A piece at a time, a group commit waits for
    // one piece at most.
    for piece in bytes.chunks(SYNC_PIECE_BYTES) {
        file.write_all(piece)?;
        file.sync_data()?;
    }
    file.set_len(bytes.len() as u64)?;
    file.sync_all()
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

/// Retires snapshots older than `keep`, and deletes segments wholly before `first_needed_lsn`
/// (the next segment starts at or before it) that were last written more than `retention` ago:
/// segments are kept that long so that retransmissions after a restart still find their
/// answers. The last segment is never deleted. Also retires what a crash in the middle of
/// writing a snapshot left (`*.snap.tmp`, hundreds of MB each, never read): none is being
/// written while this runs, since the snapshotter writes one snapshot at a time and prunes
/// after it. The first snapshot retired becomes the spare ([`SPARE_NAME`]) if there is none;
/// the others are deleted.
pub fn prune(
    dir: &Path,
    keep: &Path,
    first_needed_lsn: u64,
    retention: Duration,
    now: SystemTime,
) -> io::Result<Pruned> {
    let mut pruned = Pruned::default();
    let mut retired = Vec::new();
    for (_, path) in list(dir)? {
        if path != keep {
            retired.push(path);
        }
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.ends_with(".snap.tmp"))
        {
            retired.push(entry.path());
        }
    }
    let spare = dir.join(SPARE_NAME);
    let mut spare_exists = spare.try_exists()?;
    for path in retired {
        if spare_exists {
            fs::remove_file(&path)?;
        } else {
            fs::rename(&path, &spare)?;
            spare_exists = true;
        }
        pruned.snapshots += 1;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ledger::ShardImage;
    use crate::testing::TempDir;
    use std::os::unix::fs::MetadataExt;

    /// Two shards' sections, `size` settlement entries each: a file whose length grows with it.
    fn sections(marker_lsn: u64, size: u64) -> Vec<SnapshotSection> {
        (0..2)
            .map(|shard| SnapshotSection {
                marker_lsn: marker_lsn + shard,
                image: ShardImage {
                    settlement: (0..size).map(|i| (i, i as i64 * 3 + 1)).collect(),
                    auth_counter: marker_lsn,
                    ..ShardImage::default()
                },
            })
            .collect()
    }

    fn inode(path: &Path) -> u64 {
        fs::metadata(path).unwrap().ino()
    }

    fn prune_keeping(dir: &Path, keep: &Path) -> Pruned {
        prune(dir, keep, 0, Duration::ZERO, SystemTime::now()).unwrap()
    }

    /// A retired snapshot becomes the spare, not a snapshot that recovery could read; the next
    /// snapshot is written over it, longer or shorter, and reads back exactly.
    #[test]
    fn a_retired_snapshot_is_written_over_by_the_next_one() {
        let dir = TempDir::new("snapshot-spare");
        let spare = dir.join(SPARE_NAME);
        let first = write(&dir, &sections(10, 5_000), 1).unwrap();
        let second = write(&dir, &sections(20, 100), 2).unwrap();
        let first_inode = inode(&first);
        assert_eq!(prune_keeping(&dir, &second).snapshots, 1);
        assert!(!first.exists());
        assert_eq!(
            inode(&spare),
            first_inode,
            "the first snapshot's file is the spare"
        );
        assert_eq!(list(&dir).unwrap(), vec![(20, second.clone())]);

        // Shorter than the spare: written over it and cut to its length.
        let third = write(&dir, &sections(30, 10), 3).unwrap();
        assert!(!spare.exists(), "the spare was taken");
        assert_eq!(inode(&third), first_inode);
        assert_eq!(
            fs::metadata(&third).unwrap().len(),
            format::encode_snapshot(&sections(30, 10), 3).len() as u64
        );
        let found = latest(&dir).unwrap();
        assert_eq!(found.snapshot, Some((third.clone(), sections(30, 10))));
        assert!(found.invalid.is_empty());

        // Longer than the spare (the second snapshot's file, 100 entries a shard).
        let second_inode = inode(&second);
        prune_keeping(&dir, &third);
        assert_eq!(inode(&spare), second_inode);
        let fourth = write(&dir, &sections(40, 20_000), 4).unwrap();
        assert_eq!(inode(&fourth), second_inode);
        assert_eq!(
            latest(&dir).unwrap().snapshot,
            Some((fourth.clone(), sections(40, 20_000)))
        );
    }

    /// What a crash in the middle of a snapshot's write leaves (part of a snapshot under a
    /// temporary name) is never read, and is retired by the next prune: deleted here, since
    /// the older snapshot became the spare first.
    #[test]
    fn a_snapshot_cut_short_is_never_read_and_is_retired() {
        let dir = TempDir::new("snapshot-cut");
        let spare = dir.join(SPARE_NAME);
        let first = write(&dir, &sections(10, 1_000), 1).unwrap();
        let cut = dir.join("00000000000000000050.snap.tmp");
        fs::write(
            &cut,
            &format::encode_snapshot(&sections(50, 1_000), 5)[..300],
        )
        .unwrap();
        assert_eq!(
            latest(&dir).unwrap().snapshot,
            Some((first.clone(), sections(10, 1_000)))
        );
        let second = write(&dir, &sections(60, 10), 6).unwrap();
        assert_eq!(prune_keeping(&dir, &second).snapshots, 2);
        assert!(spare.exists() && !first.exists() && !cut.exists());
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}: the snapshot and one spare");
        assert_eq!(
            latest(&dir).unwrap().snapshot,
            Some((second, sections(60, 10)))
        );
    }

    /// A temporary of the same name left by a crash, with or without a spare, and a snapshot
    /// of several synced pieces: each write leaves exactly its snapshot's bytes, and the
    /// directory ends with the snapshot kept and one spare.
    #[test]
    fn a_stale_temporary_of_the_same_name_is_written_over_or_replaced() {
        let dir = TempDir::new("snapshot-stale");
        let spare = dir.join(SPARE_NAME);
        let stale = dir.join("00000000000000000010.snap.tmp");
        // No spare: the stale temporary, longer than the snapshot, is written over and cut.
        fs::write(&stale, vec![0xA5u8; 3 << 20]).unwrap();
        let first = write(&dir, &sections(10, 100), 1).unwrap();
        assert!(!stale.exists());
        assert_eq!(
            latest(&dir).unwrap().snapshot,
            Some((first.clone(), sections(10, 100)))
        );
        // A spare and a stale temporary of the same name: the spare replaces it. This one is
        // over SYNC_PIECE_BYTES, written in several pieces.
        let big = sections(20, 700_000);
        assert!(format::encode_snapshot(&big, 2).len() > 2 * SYNC_PIECE_BYTES);
        fs::write(dir.join("00000000000000000020.snap.tmp"), b"stale").unwrap();
        let second = write(&dir, &big, 2).unwrap();
        prune_keeping(&dir, &second);
        let spare_inode = inode(&spare);
        fs::write(dir.join("00000000000000000030.snap.tmp"), b"stale").unwrap();
        let third = write(&dir, &sections(30, 5), 3).unwrap();
        assert_eq!(inode(&third), spare_inode);
        assert_eq!(
            latest(&dir).unwrap().snapshot,
            Some((third.clone(), sections(30, 5)))
        );
        prune_keeping(&dir, &third);
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                "00000000000000000030.snap".to_owned(),
                SPARE_NAME.to_owned()
            ]
        );
        // The second snapshot's file, written in pieces, became the spare.
        assert!(fs::metadata(&spare).unwrap().len() > 2 * SYNC_PIECE_BYTES as u64);
    }
}
