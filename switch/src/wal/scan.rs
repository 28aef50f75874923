//! Reading a log back, for recovery and for `switch wal verify`.
//!
//! The decision at the first record that does not read whole and intact, at offset X of a
//! segment (each case is a test below):
//!
//! | where | a later acknowledged record exists | verdict |
//! |---|---|---|
//! | X is the end of the file | — | clean end |
//! | last segment, and every byte from X on is zero | — | clean end (the segment's unused part, written ahead) |
//! | last segment | no | torn tail: truncate at X (recovery) and log it |
//! | last segment | yes | corruption: refuse, naming file and offset X |
//! | earlier segment | either | corruption |
//!
//! "A later acknowledged record" is one anywhere after X in the segment whose checksum holds,
//! whose LSN is not below the expected one, and which starts a later group (format 3: the
//! writer writes a group only once the one before is on disk, so such a record proves that the
//! damaged one had been acknowledged). In format 1 and 2 segments, which carry no marks, any
//! intact later record counts. So a last group torn by a crash (a hole, then surviving records
//! of the same unacknowledged group) is a torn tail, while a damaged length field in the middle
//! of the log cannot pass for one and drop acknowledged records. The search costs nothing on a
//! clean log. A last segment whose header is incomplete or does not read, and which holds
//! nothing else but zeros, was cut while being created: it is removed. Records must carry consecutive LSNs throughout.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::format::{self, RecordRead, SEGMENT_HEADER_LEN, SegmentHeader};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Truncate a torn tail (and remove a segment cut while being created).
    Recover,
    /// Change nothing; report.
    Verify,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub file: PathBuf,
    pub offset: u64,
    pub bytes: u64,
}

/// Where appending resumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tail {
    pub sequence: u64,
    pub path: PathBuf,
    pub valid_len: u64,
    /// The segment's format version: the writer appends only to one of its own.
    pub version: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub segments: usize,
    pub records: u64,
    pub first_lsn: Option<u64>,
    /// The LSN the next record gets.
    pub next_lsn: u64,
    pub torn_tail: Option<TornTail>,
    /// The last segment, if any, to append to.
    pub tail: Option<Tail>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{}: {source}", file.display())]
    Io { file: PathBuf, source: io::Error },
    #[error("{}: corrupt at offset {offset}: {problem}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        problem: String,
    },
    #[error("{}: entry at LSN {lsn}: {problem}", file.display())]
    Entry {
        file: PathBuf,
        lsn: u64,
        problem: String,
    },
}

fn io_error(file: &Path) -> impl FnOnce(io::Error) -> ScanError + '_ {
    move |source| ScanError::Io {
        file: file.to_owned(),
        source,
    }
}

/// The segment files of `dir`, by sequence; an error if the sequence has a gap.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, ScanError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if let Some(sequence) = entry
            .file_name()
            .to_str()
            .and_then(format::segment_sequence)
        {
            found.push((sequence, entry.path()));
        }
    }
    found.sort();
    for pair in found.windows(2) {
        if pair[1].0 != pair[0].0 + 1 {
            return Err(ScanError::Corrupt {
                file: pair[1].1.clone(),
                offset: 0,
                problem: format!("segment {} is missing before it", pair[0].0 + 1),
            });
        }
    }
    Ok(found)
}

/// The first LSN of a segment, from its header; `None` if the header does not read.
pub fn first_lsn_of(segment: &Path) -> Option<u64> {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    io::Read::read_exact(&mut fs::File::open(segment).ok()?, &mut header).ok()?;
    SegmentHeader::decode(&header).ok().map(|h| h.first_lsn)
}

/// Whether an intact record with LSN at least `min_lsn` starts anywhere in `bytes[from..]`
/// that proves the records before it were acknowledged: from format 3, the first record of a
/// later group; in formats 1 and 2 (no group marks), any record.
fn acknowledged_after(bytes: &[u8], from: usize, min_lsn: u64, version: u32) -> bool {
    // A record starts with its length, never 0: none starts past the last byte that is not
    // zero (a segment written ahead can end in a gigabyte of them).
    let starts_end = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    (from..starts_end).any(|at| {
        matches!(
            format::read_record(&bytes[at..]),
            RecordRead::Record { lsn, group_start, .. }
                if lsn >= min_lsn && (group_start || version < format::MARKED_GROUPS_VERSION)
        )
    })
}

fn sync_dir(dir: &Path) -> Result<(), ScanError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Reads every record of the log in `dir` in LSN order, calling `visit(lsn, payload)`.
pub fn scan(
    dir: &Path,
    mode: Mode,
    visit: impl FnMut(u64, &[u8]) -> Result<(), String>,
) -> Result<ScanReport, ScanError> {
    scan_from(dir, mode, 0, visit)
}

/// [`scan`], without reading the segments wholly before `from_lsn` (the next one starts at or
/// before it, by its header): for a caller that has read them already, in this process, with
/// the log locked. `records` then counts only the records read.
pub fn scan_from(
    dir: &Path,
    mode: Mode,
    from_lsn: u64,
    mut visit: impl FnMut(u64, &[u8]) -> Result<(), String>,
) -> Result<ScanReport, ScanError> {
    let segments = segments(dir)?;
    let mut report = ScanReport {
        segments: segments.len(),
        ..ScanReport::default()
    };
    let mut expected: Option<u64> = None;
    let mut skip = 0;
    if from_lsn > 0 {
        while let Some((_, next)) = segments.get(skip + 1)
            && let Some(next_first) = first_lsn_of(next)
            && next_first <= from_lsn
        {
            if skip == 0 {
                report.first_lsn = first_lsn_of(&segments[0].1);
            }
            expected = Some(next_first);
            skip += 1;
        }
    }
    for (index, (sequence, path)) in segments.iter().enumerate().skip(skip) {
        let last = index + 1 == segments.len();
        let bytes = fs::read(path).map_err(io_error(path))?;
        let header = match SegmentHeader::decode(&bytes) {
            Ok(header) => header,
            Err(_)
                if last
                    && (bytes.len() <= SEGMENT_HEADER_LEN
                        || all_zero(&bytes[SEGMENT_HEADER_LEN..])) =>
            {
                // Cut while being created (before its header was written whole, over nothing
                // or over the zeros written ahead): no record in it, none acknowledged.
                report.torn_tail = Some(TornTail {
                    file: path.clone(),
                    offset: 0,
                    bytes: bytes.len() as u64,
                });
                report.segments -= 1;
                if mode == Mode::Recover {
                    fs::remove_file(path).map_err(io_error(path))?;
                    sync_dir(dir)?;
                }
                break;
            }
            Err(problem) => {
                return Err(ScanError::Corrupt {
                    file: path.clone(),
                    offset: 0,
                    problem: problem.to_string(),
                });
            }
        };
        if header.sequence != *sequence {
            return Err(ScanError::Corrupt {
                file: path.clone(),
                offset: 12,
                problem: format!(
                    "header says segment {}, the name says {sequence}",
                    header.sequence
                ),
            });
        }
        let mut next = *expected.get_or_insert(header.first_lsn);
        if header.first_lsn != next {
            return Err(ScanError::Corrupt {
                file: path.clone(),
                offset: 20,
                problem: format!(
                    "segment starts at LSN {}, expected {next}",
                    header.first_lsn
                ),
            });
        }
        report.first_lsn.get_or_insert(header.first_lsn);
        let mut offset = SEGMENT_HEADER_LEN;
        while offset < bytes.len() {
            match format::read_record(&bytes[offset..]) {
                RecordRead::Record {
                    lsn, payload, len, ..
                } if lsn == next => {
                    visit(lsn, payload).map_err(|problem| ScanError::Entry {
                        file: path.clone(),
                        lsn,
                        problem,
                    })?;
                    report.records += 1;
                    next += 1;
                    offset += len;
                }
                RecordRead::Record { lsn, .. } => {
                    return Err(ScanError::Corrupt {
                        file: path.clone(),
                        offset: offset as u64,
                        problem: format!("record has LSN {lsn}, expected {next}"),
                    });
                }
                _ if last && all_zero(&bytes[offset..]) => {
                    // The end of the log: the rest of the segment was written ahead, with
                    // zeros (writer::ZeroFilled), and is not used yet. (An earlier segment
                    // never ends so: the writer rotates only once a segment is as long as it
                    // was written ahead, and cuts the last one to its records before it starts
                    // another at a restart.)
                    break;
                }
                bad => {
                    let problem = match bad {
                        RecordRead::Damaged(problem) => problem,
                        _ => "record cut short",
                    };
                    let version = SegmentHeader::version_of(&bytes);
                    if !last || acknowledged_after(&bytes, offset + 1, next, version) {
                        return Err(ScanError::Corrupt {
                            file: path.clone(),
                            offset: offset as u64,
                            problem: format!(
                                "{problem}, and intact records of a later, acknowledged group follow"
                            ),
                        });
                    }
                    report.torn_tail = Some(TornTail {
                        file: path.clone(),
                        offset: offset as u64,
                        bytes: (bytes.len() - offset) as u64,
                    });
                    if mode == Mode::Recover {
                        let file = fs::OpenOptions::new()
                            .write(true)
                            .open(path)
                            .map_err(io_error(path))?;
                        file.set_len(offset as u64)
                            .and_then(|()| file.sync_all())
                            .map_err(io_error(path))?;
                    }
                    break;
                }
            }
        }
        expected = Some(next);
        report.tail = Some(Tail {
            sequence: *sequence,
            path: path.clone(),
            valid_len: offset as u64,
            version: SegmentHeader::version_of(&bytes),
        });
    }
    report.next_lsn = expected.unwrap_or(0);
    Ok(report)
}

/// Whether `bytes` are all zero: a segment's part written ahead and not used yet.
fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::format::{SegmentHeader, segment_file_name, try_append_record};

    /// Writes segments of `records` records each; returns the directory.
    fn log(name: &str, segments: &[u64]) -> crate::testing::TempDir {
        let dir = crate::testing::TempDir::new(&format!("scan-{name}"));
        let mut lsn = 0;
        for (sequence, &records) in segments.iter().enumerate() {
            let mut bytes = SegmentHeader {
                sequence: sequence as u64,
                first_lsn: lsn,
            }
            .encode()
            .to_vec();
            for _ in 0..records {
                // One record per group, unless a test says otherwise.
                try_append_record(&mut bytes, lsn, format!("payload {lsn}").as_bytes(), true)
                    .unwrap();
                lsn += 1;
            }
            fs::write(dir.join(segment_file_name(sequence as u64)), bytes).unwrap();
        }
        dir
    }

    fn segment(dir: &Path, sequence: u64) -> PathBuf {
        dir.join(segment_file_name(sequence))
    }

    fn edit(path: &Path, change: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = fs::read(path).unwrap();
        change(&mut bytes);
        fs::write(path, bytes).unwrap();
    }

    fn run(dir: &Path, mode: Mode) -> Result<(ScanReport, Vec<u64>), ScanError> {
        let mut seen = Vec::new();
        let report = scan(dir, mode, |lsn, payload| {
            assert_eq!(payload, format!("payload {lsn}").as_bytes());
            seen.push(lsn);
            Ok(())
        })?;
        Ok((report, seen))
    }

    /// Offset of record `index` (0-based) within a segment written by `log`.
    fn record_offset(path: &Path, index: usize) -> usize {
        let bytes = fs::read(path).unwrap();
        let mut offset = SEGMENT_HEADER_LEN;
        for _ in 0..index {
            let RecordRead::Record { len, .. } = format::read_record(&bytes[offset..]) else {
                panic!()
            };
            offset += len;
        }
        offset
    }

    /// Reading from an LSN skips only the segments wholly before it, and ends where a whole
    /// scan ends.
    #[test]
    fn a_scan_from_an_lsn_skips_only_segments_wholly_before_it() {
        let dir = log("from", &[3, 2, 4, 1]);
        let whole = run(&dir, Mode::Verify).unwrap().0;
        for (from, first_read) in [
            (0, 0),
            (2, 0),
            (3, 3),
            (4, 3),
            (5, 5),
            (8, 5),
            (9, 9),
            (20, 9),
        ] {
            let mut seen = Vec::new();
            let report = scan_from(&dir, Mode::Verify, from, |lsn, _| {
                seen.push(lsn);
                Ok(())
            })
            .unwrap();
            assert_eq!(seen, (first_read..10).collect::<Vec<_>>(), "from {from}");
            assert_eq!(
                (report.next_lsn, report.first_lsn, report.segments),
                (whole.next_lsn, whole.first_lsn, whole.segments),
                "from {from}"
            );
            assert_eq!(report.tail, whole.tail, "from {from}");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn clean_log_reads_every_record_in_order() {
        let dir = log("clean", &[3, 2, 0]);
        let (report, seen) = run(&dir, Mode::Verify).unwrap();
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        assert_eq!(
            (
                report.segments,
                report.records,
                report.next_lsn,
                report.torn_tail
            ),
            (3, 5, 5, None)
        );
        assert_eq!(report.tail.unwrap().valid_len, SEGMENT_HEADER_LEN as u64);
    }

    #[test]
    fn empty_directory_starts_at_lsn_zero() {
        let dir = log("empty", &[]);
        let (report, seen) = run(&dir, Mode::Recover).unwrap();
        assert!(seen.is_empty());
        assert_eq!(
            (report.segments, report.next_lsn, report.tail),
            (0, 0, None)
        );
    }

    #[test]
    fn a_record_cut_short_at_the_end_is_a_torn_tail() {
        let dir = log("torn", &[2, 3]);
        let path = segment(&dir, 1);
        let len = fs::metadata(&path).unwrap().len();
        edit(&path, |b| b.truncate(b.len() - 5));
        let (report, seen) = run(&dir, Mode::Verify).unwrap();
        assert_eq!(seen, [0, 1, 2, 3]);
        let torn = report.torn_tail.clone().unwrap();
        assert_eq!(torn.offset, record_offset(&path, 2) as u64);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            len - 5,
            "verify changes nothing"
        );
        let (report, _) = run(&dir, Mode::Recover).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            torn.offset,
            "recover truncates"
        );
        assert_eq!(report.next_lsn, 4);
        let (again, _) = run(&dir, Mode::Verify).unwrap();
        assert_eq!(again.torn_tail, None, "clean after truncation");
    }

    #[test]
    fn garbage_after_the_last_record_is_a_torn_tail() {
        let dir = log("garbage", &[2]);
        edit(&segment(&dir, 0), |b| b.extend_from_slice(&[0xAB; 40]));
        let (report, seen) = run(&dir, Mode::Recover).unwrap();
        assert_eq!(seen, [0, 1]);
        assert_eq!(report.torn_tail.unwrap().bytes, 40);
    }

    #[test]
    fn a_flipped_byte_before_the_tail_is_corruption() {
        let dir = log("flip", &[5]);
        let path = segment(&dir, 0);
        let at = record_offset(&path, 2) + 12;
        edit(&path, |b| b[at] ^= 0x01);
        match run(&dir, Mode::Verify) {
            Err(ScanError::Corrupt { file, offset, .. }) => {
                assert_eq!(
                    (file, offset),
                    (path.clone(), record_offset(&path, 2) as u64)
                );
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        let message = run(&dir, Mode::Recover).unwrap_err().to_string();
        assert!(
            message.contains("00000000000000000000.wal: corrupt at offset")
                && message.contains("acknowledged group follow"),
            "{message}"
        );
    }

    /// Segment 0 holding `groups` (records per group), format 2.
    fn grouped_log(name: &str, groups: &[u64]) -> crate::testing::TempDir {
        let dir = log(name, &[0]);
        let mut bytes = fs::read(segment(&dir, 0)).unwrap();
        let mut lsn = 0;
        for &records in groups {
            for i in 0..records {
                let payload = format!("payload {lsn}");
                try_append_record(&mut bytes, lsn, payload.as_bytes(), i == 0).unwrap();
                lsn += 1;
            }
        }
        fs::write(segment(&dir, 0), bytes).unwrap();
        dir
    }

    #[test]
    fn a_last_group_torn_with_a_hole_is_a_torn_tail_not_corruption() {
        // Groups of 2, 2 and 3 records; a power cut lost the first record of the last group
        // while its other two reached the disk.
        let dir = grouped_log("torn-group", &[2, 2, 3]);
        let path = segment(&dir, 0);
        let at = record_offset(&path, 4) + 12;
        edit(&path, |b| b[at] ^= 0x01);
        let (report, seen) = run(&dir, Mode::Recover).unwrap();
        assert_eq!(seen, [0, 1, 2, 3]);
        assert_eq!(
            report.torn_tail.unwrap().offset,
            record_offset(&path, 4) as u64
        );
        assert_eq!(run(&dir, Mode::Verify).unwrap().0.next_lsn, 4, "truncated");
        // Damage in an acknowledged group (a later group's first record follows): corruption.
        let dir = grouped_log("acked-group", &[2, 2, 3]);
        let path = segment(&dir, 0);
        let at = record_offset(&path, 3) + 12;
        edit(&path, |b| b[at] ^= 0x01);
        assert!(matches!(
            run(&dir, Mode::Recover),
            Err(ScanError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_format_1_segment_keeps_the_rule_without_group_marks() {
        let dir = grouped_log("format-1", &[2, 3]);
        let path = segment(&dir, 0);
        edit(&path, |b| {
            let header = SegmentHeader {
                sequence: 0,
                first_lsn: 0,
            }
            .encode();
            b[..SEGMENT_HEADER_LEN].copy_from_slice(&header);
            b[8..12].copy_from_slice(&1u32.to_le_bytes());
            let crc = crc32c::crc32c(&b[0..28]);
            b[28..32].copy_from_slice(&crc.to_le_bytes());
        });
        let at = record_offset(&path, 3) + 12;
        edit(&path, |b| b[at] ^= 0x01);
        assert!(
            matches!(run(&dir, Mode::Verify), Err(ScanError::Corrupt { .. })),
            "any intact record after the damage counts in format 1"
        );
    }

    #[test]
    fn a_damaged_length_before_the_tail_is_corruption_not_a_torn_tail() {
        let dir = log("length", &[5]);
        let path = segment(&dir, 0);
        let at = record_offset(&path, 1);
        edit(&path, |b| b[at + 2] = 0x7F);
        assert!(matches!(
            run(&dir, Mode::Recover),
            Err(ScanError::Corrupt { .. })
        ));
    }

    #[test]
    fn damage_in_an_earlier_segment_is_corruption_even_at_its_end() {
        let dir = log("earlier", &[3, 1]);
        edit(&segment(&dir, 0), |b| b.truncate(b.len() - 1));
        assert!(matches!(
            run(&dir, Mode::Recover),
            Err(ScanError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_segment_cut_while_being_created_is_removed() {
        let dir = log("boundary", &[3]);
        let header = SegmentHeader {
            sequence: 1,
            first_lsn: 3,
        }
        .encode();
        fs::write(segment(&dir, 1), &header[..10]).unwrap();
        let (report, seen) = run(&dir, Mode::Recover).unwrap();
        assert_eq!((seen.len(), report.segments, report.next_lsn), (3, 1, 3));
        assert!(!segment(&dir, 1).exists());
        assert_eq!(report.tail.unwrap().sequence, 0);
    }

    /// The unused end of a segment written ahead (writer::ZeroFilled) is the end of the log,
    /// not a torn tail: nothing to report or truncate.
    #[test]
    fn zeros_after_the_last_record_are_the_end_of_the_log() {
        let dir = log("zeros", &[2, 3]);
        let path = segment(&dir, 1);
        let len = fs::metadata(&path).unwrap().len();
        edit(&path, |b| b.resize(64 * 1024, 0));
        for mode in [Mode::Verify, Mode::Recover] {
            let (report, seen) = run(&dir, mode).unwrap();
            assert_eq!(seen, [0, 1, 2, 3, 4]);
            assert_eq!((report.torn_tail, report.next_lsn), (None, 5));
            assert_eq!(report.tail.unwrap().valid_len, len);
            assert_eq!(fs::metadata(&path).unwrap().len(), 64 * 1024);
        }
        // A record cut short before the zeros is still a torn tail.
        let end = usize::try_from(len).unwrap();
        edit(&path, |b| b[end - 3..end].fill(0));
        let (report, seen) = run(&dir, Mode::Verify).unwrap();
        assert_eq!(seen, [0, 1, 2, 3]);
        assert_eq!(
            report.torn_tail.unwrap().offset,
            record_offset(&path, 2) as u64
        );
    }

    /// A segment written ahead and named before its header was written over the zeros.
    #[test]
    fn a_last_segment_of_only_zeros_was_cut_while_being_created() {
        let dir = log("only-zeros", &[3]);
        fs::write(segment(&dir, 1), vec![0u8; 64 * 1024]).unwrap();
        let (report, seen) = run(&dir, Mode::Verify).unwrap();
        assert_eq!((seen.len(), report.segments, report.next_lsn), (3, 1, 3));
        assert!(segment(&dir, 1).exists(), "verify changes nothing");
        let (report, _) = run(&dir, Mode::Recover).unwrap();
        assert_eq!(report.tail.unwrap().sequence, 0);
        assert!(!segment(&dir, 1).exists());
        // Zeros in an earlier segment's place are corruption.
        let dir = log("zeros-before", &[3, 1]);
        fs::write(segment(&dir, 0), vec![0u8; 4096]).unwrap();
        assert!(matches!(
            run(&dir, Mode::Recover),
            Err(ScanError::Corrupt { offset: 0, .. })
        ));
    }

    /// Zeros at the end of an earlier segment are corruption, as any damage there is: the
    /// writer never leaves them.
    #[test]
    fn zeros_ending_an_earlier_segment_are_corruption() {
        let dir = log("zeros-earlier", &[3, 2]);
        edit(&segment(&dir, 0), |b| b.resize(b.len() + 4096, 0));
        assert!(matches!(
            run(&dir, Mode::Recover),
            Err(ScanError::Corrupt { .. })
        ));
    }

    /// A header torn over the zeros written ahead (a sector half written) is a segment cut
    /// while being created, not corruption; with a record after it, corruption.
    #[test]
    fn a_torn_header_over_zeros_was_cut_while_being_created() {
        let dir = log("torn-header", &[3]);
        let mut bytes = vec![0u8; 64 * 1024];
        bytes[..10].copy_from_slice(&[0xAB; 10]);
        fs::write(segment(&dir, 1), &bytes).unwrap();
        let (report, seen) = run(&dir, Mode::Recover).unwrap();
        assert_eq!((seen.len(), report.next_lsn), (3, 3));
        assert!(!segment(&dir, 1).exists());
        bytes[SEGMENT_HEADER_LEN + 5] = 1;
        fs::write(segment(&dir, 1), &bytes).unwrap();
        assert!(matches!(
            run(&dir, Mode::Recover),
            Err(ScanError::Corrupt { offset: 0, .. })
        ));
    }

    #[test]
    fn missing_segments_and_lsn_gaps_are_corruption() {
        let dir = log("gap", &[1, 1, 1]);
        fs::remove_file(segment(&dir, 1)).unwrap();
        assert!(
            run(&dir, Mode::Verify)
                .unwrap_err()
                .to_string()
                .contains("segment 1 is missing")
        );
        let dir = log("lsn", &[2, 2]);
        edit(&segment(&dir, 1), |b| {
            let header = SegmentHeader {
                sequence: 1,
                first_lsn: 9,
            }
            .encode();
            b[..SEGMENT_HEADER_LEN].copy_from_slice(&header);
        });
        assert!(
            run(&dir, Mode::Verify)
                .unwrap_err()
                .to_string()
                .contains("expected 2")
        );
    }
}
