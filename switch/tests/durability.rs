//! Durability on the real binary: restarts, SIGKILL at random moments under load, corruption.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters::Message;
use common::*;

/// What these tests change in the default configuration: a small demo ledger, so that each
/// restart is quick, and the risk rules off, since the load below sends each of a few cards far
/// more than the demo velocity rule allows (20 approvals a minute), and these tests are about
/// the log, not risk.
const SMALL: [(&str, &str); 2] = [
    ("accounts = 1000000 ", "accounts = 2000 "),
    ("\nenabled = true\n", "\nenabled = false\n"),
];

fn small_config() -> std::path::PathBuf {
    config_file("durability", &default_config_with(&SMALL))
}

/// `switch run` with `config` on the log in `wal`, for runs expected to exit by themselves.
fn run_switch_to_exit(config: &str, wal: &str) -> (i32, String, String) {
    run_switch(&[
        "run",
        "--config",
        config,
        "--wal-dir",
        wal,
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
    ])
}

/// The `total_minor` of the "ledger recovered" line.
fn recovered_total(switch: &Switch) -> i128 {
    let line = switch.wait_for_output("ledger recovered");
    let value = line
        .split("total_minor=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    value.parse().unwrap()
}

#[test]
fn a_restart_restores_balances_holds_and_answers_to_retransmissions() {
    let wal = fresh_wal_dir();
    let config = small_config();
    let args = ["--config", config.to_str().unwrap()];
    let switch = Switch::start_with_wal(&wal, &args);
    let mut link = switch.connect();
    let hold = request("0100", &demo_pan(0), "000000", 3_000);
    let approved = link.call(&hold);
    assert_eq!(code(&approved), "00");
    assert_eq!(
        code(&link.call(&request("0200", &demo_pan(10), "000000", 2_500))),
        "00"
    );
    let declined = link.call(&request("0100", &demo_pan(1), "000000", 100));
    assert_eq!(code(&declined), "51");
    let (status, _) = switch.terminate();
    assert!(status.success());

    let switch = Switch::start_with_wal(&wal, &args);
    let mut link = switch.connect();
    assert_eq!(
        available(&mut link, &demo_pan(0)),
        7_000,
        "the hold survived the restart"
    );
    assert_eq!(
        available(&mut link, &demo_pan(10)),
        1_000_000 - 2_500,
        "the purchase survived"
    );
    assert_eq!(
        link.call(&hold),
        approved,
        "a retransmission gets the original answer, 38 included"
    );
    assert_eq!(
        available(&mut link, &demo_pan(0)),
        7_000,
        "and places no second hold"
    );
    assert_eq!(
        code(&link.call(&referring("0400", &hold, 3_000))),
        "00",
        "the original is found for reversal"
    );
    assert_eq!(available(&mut link, &demo_pan(0)), 10_000);
    let line = switch.wait_for_output("ledger recovered");
    assert!(line.contains("records=3"), "{line}");
}

/// What the clients saw, per card: approved amounts, and amounts sent but never answered.
#[derive(Default)]
struct Seen {
    approved: HashMap<u64, i64>,
    unanswered: HashMap<u64, i64>,
    answers: Vec<(Message<'static>, Message<'static>)>,
}

/// Pipelined purchases from `clients` connections until the connection dies.
fn load_until_killed(
    switch: &Switch,
    clients: usize,
    seen: &Arc<Mutex<Seen>>,
    cycle: u64,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..clients)
        .map(|client| {
            let mut link = switch.connect();
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut outstanding: HashMap<Vec<u8>, (u64, i64, Message<'static>)> =
                    HashMap::new();
                let mut n = 0u64;
                loop {
                    while outstanding.len() < 16 {
                        n += 1;
                        let card = 100 + (cycle * 7 + client as u64 * 13 + n) % 40;
                        let amount = 1 + (n % 9) as i64;
                        let mut message = request("0200", &demo_pan(card), "000000", amount as u64);
                        message.set(41, format!("K{client:02}{cycle:05}").into_bytes());
                        let frame = link.frame(&message);
                        if std::io::Write::write_all(&mut link.stream, &frame).is_err() {
                            break;
                        }
                        outstanding
                            .insert(message.get(11).unwrap().to_vec(), (card, amount, message));
                    }
                    match link.try_receive_or_error() {
                        Some(response) => {
                            let (card, amount, message) =
                                outstanding.remove(response.get(11).unwrap()).unwrap();
                            let mut seen = seen.lock().unwrap();
                            if code(&response) == "00" {
                                *seen.approved.entry(card).or_default() += amount;
                                if seen.answers.len() < 200 {
                                    seen.answers.push((message, response));
                                }
                            } else {
                                // Anything else must not have moved money; 96 would mean an
                                // answer that was not durable, which must not happen here.
                                assert_eq!(code(&response), "00", "unexpected answer under load");
                            }
                        }
                        None => break,
                    }
                }
                let mut seen = seen.lock().unwrap();
                for (_, (card, amount, _)) in outstanding {
                    *seen.unanswered.entry(card).or_default() += amount;
                }
            })
        })
        .collect()
}

#[test]
fn twenty_sigkills_under_load_lose_no_acknowledged_approval() {
    const CYCLES: u64 = 20;
    let wal = fresh_wal_dir();
    let config = small_config();
    let args = ["--config", config.to_str().unwrap()];
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut genesis_total = None;
    // A fixed seed per run would hide timing bugs; the kill points come from the clock.
    let mut random = Instant::now().elapsed().subsec_nanos() as u64 | 1;
    for cycle in 0..CYCLES {
        let switch = Switch::start_with_wal(&wal, &args);
        let total = recovered_total(&switch);
        assert_eq!(
            *genesis_total.get_or_insert(total),
            total,
            "cycle {cycle}: money not conserved across recovery"
        );
        let clients = load_until_killed(&switch, 3, &seen, cycle);
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        std::thread::sleep(Duration::from_millis(50 + random % 400));
        switch.kill();
        for client in clients {
            client.join().unwrap();
        }
    }
    let switch = Switch::start_with_wal(&wal, &args);
    assert_eq!(Some(recovered_total(&switch)), genesis_total);
    let mut link = switch.connect();
    let seen = seen.lock().unwrap();
    let approved_total: i64 = seen.approved.values().sum();
    assert!(approved_total > 0, "the load produced approvals");
    for card in 100..140u64 {
        let moved = 1_000_000 - available(&mut link, &demo_pan(card));
        let approved = seen.approved.get(&card).copied().unwrap_or(0);
        let unanswered = seen.unanswered.get(&card).copied().unwrap_or(0);
        assert!(
            approved <= moved && moved <= approved + unanswered,
            "card {card}: {moved} moved, {approved} approved and seen, {unanswered} sent without an answer"
        );
    }
    for (request, response) in seen.answers.iter().take(50) {
        assert_eq!(
            &link.call(request),
            response,
            "a pre-crash request retransmitted gets its original answer"
        );
    }
}

#[test]
fn a_flipped_byte_is_found_by_verify_and_refused_at_start() {
    let wal = fresh_wal_dir();
    let config = small_config();
    let args = ["--config", config.to_str().unwrap()];
    let switch = Switch::start_with_wal(&wal, &args);
    let mut link = switch.connect();
    for i in 0..20 {
        assert_eq!(
            code(&link.call(&request("0200", &demo_pan(200 + i), "000000", 100))),
            "00"
        );
    }
    switch.terminate();
    let wal_str = wal.to_str().unwrap();
    let (code_ok, stdout, _) = run_switch(&["wal", "verify", "--dir", wal_str]);
    assert_eq!(code_ok, 0, "{stdout}");
    assert!(
        stdout.contains("20 records") && stdout.contains("no torn tail"),
        "{stdout}"
    );

    let segment = wal.join("00000000000000000000.wal");
    let mut bytes = std::fs::read(&segment).unwrap();
    // In the middle of the records: the segment was written ahead, zeros follow them.
    let records_end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    let middle = records_end / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&segment, bytes).unwrap();
    let (verify, _, stderr) = run_switch(&["wal", "verify", "--dir", wal_str]);
    assert_eq!(verify, 1);
    assert!(
        stderr.contains("00000000000000000000.wal: corrupt at offset"),
        "{stderr}"
    );

    let (start, _, stderr) = run_switch_to_exit(config.to_str().unwrap(), wal_str);
    assert_eq!(start, 1, "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("switch: error: cannot recover from the WAL in"),
        "{stderr}"
    );
    assert!(
        last.contains("00000000000000000000.wal: corrupt at offset"),
        "{stderr}"
    );
}

#[test]
fn wal_dump_prints_records_without_pans() {
    let wal = fresh_wal_dir();
    let config = small_config();
    let switch = Switch::start_with_wal(&wal, &["--config", config.to_str().unwrap()]);
    let mut link = switch.connect();
    assert_eq!(
        code(&link.call(&request("0100", &demo_pan(4), "000000", 100))),
        "00"
    );
    assert_eq!(
        code(&link.call(&request("0100", &demo_pan(4), "000000", 9_000))),
        "61"
    );
    switch.terminate();
    let (status, stdout, stderr) = run_switch(&["wal", "dump", "--dir", wal.to_str().unwrap()]);
    assert_eq!(status, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("0 at=")
            && lines[0].contains("Authorization card …0044")
            && lines[0].ends_with("-> 00 ledger=1000000 available=999900"),
        "{stdout}"
    );
    assert!(lines[1].contains("-> 61"), "{stdout}");
    assert!(!stdout.contains("4000000000000044"));
    assert!(!stdout.lines().any(has_pan_like_run), "{stdout}");
}

#[test]
fn a_second_switch_cannot_take_the_same_wal() {
    let wal = fresh_wal_dir();
    let config = small_config();
    let _first = Switch::start_with_wal(&wal, &["--config", config.to_str().unwrap()]);
    let (status, _, stderr) = run_switch_to_exit(config.to_str().unwrap(), wal.to_str().unwrap());
    assert_eq!(status, 1);
    assert!(
        stderr.contains("is in use by another switch process"),
        "{stderr}"
    );
}

#[test]
fn sync_none_warns_at_start() {
    let config = config_file(
        "sync-none",
        &default_config_with(&[
            ("sync = \"group\"", "sync = \"none\""),
            ("accounts = 1000000 ", "accounts = 10 "),
        ]),
    );
    let switch = Switch::start(&["--config", config.to_str().unwrap()]);
    switch.wait_for_output("wal.sync = \"none\": answers are sent before the log reaches the disk");
}

/// `wal.snapshot_records`: under load a snapshot comes long before the interval, so that a
/// restart replays a bounded part of the log, whatever the rate.
#[test]
fn snapshots_come_by_record_count_and_bound_what_a_restart_replays() {
    let config = config_file(
        "snapshot-records",
        &default_config_with(&[
            SMALL[0],
            SMALL[1],
            (
                "snapshot_interval_seconds = 300",
                "snapshot_interval_seconds = 3600",
            ),
            ("snapshot_records = 2000000", "snapshot_records = 300"),
        ]),
    );
    let args = ["--config", config.to_str().unwrap()];
    let wal = fresh_wal_dir();
    let switch = Switch::start_with_wal(&wal, &args);
    let mut link = switch.connect();
    let snapshots = |switch: &Switch| {
        switch
            .output()
            .iter()
            .filter(|l| l.contains("snapshot written"))
            .count()
    };
    // Fewer records than the bound: no snapshot (the interval is an hour).
    let mut approved: HashMap<u64, i64> = HashMap::new();
    let mut n = 0u64;
    let mut send = |link: &mut Link, count: u64, approved: &mut HashMap<u64, i64>| {
        for _ in 0..count {
            n += 1;
            let card = 300 + n % 25;
            let response = link.call(&request("0200", &demo_pan(card), "000000", 1 + n % 7));
            assert_eq!(code(&response), "00");
            *approved.entry(card).or_default() += (1 + n % 7) as i64;
        }
    };
    send(&mut link, 200, &mut approved);
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(snapshots(&switch), 0, "{}", switch.output().join("\n"));
    // Past it: one comes within the timer's second; and again, the second copied into the
    // first one's image, handed back.
    for (more, count) in [(150, 1), (350, 2)] {
        send(&mut link, more, &mut approved);
        let deadline = Instant::now() + Duration::from_secs(10);
        while snapshots(&switch) < count {
            assert!(
                Instant::now() < deadline,
                "no snapshot {count} with snapshot_records = 300:\n{}",
                switch.output().join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(
        switch
            .output()
            .iter()
            .any(|l| l.contains("shard state copied") && l.contains("reused=true")),
        "{}",
        switch.output().join("\n")
    );
    // A few more after it, then SIGKILL: the restart replays only what came after it.
    send(&mut link, 20, &mut approved);
    switch.kill();
    let switch = Switch::start_with_wal(&wal, &args);
    let line = switch.wait_for_output("ledger recovered");
    assert!(
        line.contains(".snap"),
        "recovery started from a snapshot: {line}"
    );
    let replayed: u64 = line
        .split("replayed=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (20..300).contains(&replayed),
        "replayed {replayed} of 720 records: {line}"
    );
    let mut link = switch.connect();
    for (card, amount) in approved {
        assert_eq!(
            1_000_000 - available(&mut link, &demo_pan(card)),
            amount,
            "card {card}"
        );
    }
}

#[test]
fn snapshots_prune_the_log_and_a_restart_after_sigkill_starts_from_one() {
    let config = config_file(
        "snapshots",
        &default_config_with(&[
            SMALL[0],
            SMALL[1],
            (
                "snapshot_interval_seconds = 300",
                "snapshot_interval_seconds = 1",
            ),
            ("segment_bytes = 67108864", "segment_bytes = 4096"),
            (
                "idempotency_retention_seconds = 300",
                "idempotency_retention_seconds = 1",
            ),
        ]),
    );
    let args = ["--config", config.to_str().unwrap()];
    let wal = fresh_wal_dir();
    let switch = Switch::start_with_wal(&wal, &args);
    let mut link = switch.connect();
    let mut approved: HashMap<u64, i64> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0u64;
    // Load until a snapshot has deleted segments behind it.
    while !switch
        .output()
        .iter()
        .any(|l| l.contains("snapshot written") && !l.contains("segments_deleted=0"))
    {
        assert!(
            Instant::now() < deadline,
            "no snapshot pruned the log:\n{}",
            switch.output().join("\n")
        );
        for _ in 0..50 {
            n += 1;
            let card = 300 + n % 25;
            let response = link.call(&request("0200", &demo_pan(card), "000000", 1 + n % 7));
            assert_eq!(code(&response), "00");
            *approved.entry(card).or_default() += (1 + n % 7) as i64;
        }
    }
    let segment_names: Vec<String> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !segment_names
            .iter()
            .any(|name| name == "00000000000000000000.wal"),
        "the first segment was pruned: {segment_names:?}"
    );
    switch.kill();

    let switch = Switch::start_with_wal(&wal, &args);
    let line = switch.wait_for_output("ledger recovered");
    assert!(
        line.contains(".snap"),
        "recovery started from a snapshot: {line}"
    );
    let mut link = switch.connect();
    for (card, amount) in approved {
        assert_eq!(
            1_000_000 - available(&mut link, &demo_pan(card)),
            amount,
            "card {card}"
        );
    }
    drop(link);
    let (status, _) = switch.terminate();
    assert!(status.success());
    let (status, stdout, stderr) = run_switch(&["wal", "verify", "--dir", wal.to_str().unwrap()]);
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stdout.contains(".snap: ok (2 shards, 2000 accounts"),
        "{stdout}"
    );
    // A damaged snapshot fails verification, though recovery could still use an older one.
    let (_, newest) = switch::wal::snapshot::list(&wal).unwrap()[0].clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let damaged = wal.join("09999999999999999999.snap");
    std::fs::write(&damaged, bytes).unwrap();
    let (status, _, stderr) = run_switch(&["wal", "verify", "--dir", wal.to_str().unwrap()]);
    assert_eq!(status, 1);
    assert!(
        stderr.contains("09999999999999999999.snap: corrupt"),
        "{stderr}"
    );
    std::fs::remove_file(damaged).unwrap();
}

/// A tmpfs of a fixed size, unmounted on drop.
struct TinyFilesystem(common::WalDir);

impl TinyFilesystem {
    /// `None` when mounting is not permitted (not root): the caller says it skipped.
    fn mount(size: &str) -> Option<TinyFilesystem> {
        let dir = fresh_wal_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status();
        mounted
            .is_ok_and(|s| s.success())
            .then_some(TinyFilesystem(dir))
    }

    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for TinyFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_answers_96_exits_1_and_a_restart_keeps_exactly_the_approvals_seen() {
    let Some(disk) = TinyFilesystem::mount("128k") else {
        eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs as root and runs this test)");
        return;
    };
    // The log alone on the small disk: the store of transactions on disk needs more room
    // than 128 KiB to start.
    let mut changes = SMALL.to_vec();
    changes.push((
        "hot_transactions_per_shard_max = 4000000",
        "hot_transactions_per_shard_max = 0",
    ));
    let config = config_file("durability-full", &default_config_with(&changes));
    let args = ["--config", config.to_str().unwrap()];
    let switch = Switch::start_with_wal(&disk.0, &args);
    let mut link = switch.connect();
    let mut approved: HashMap<u64, i64> = HashMap::new();
    let mut last = String::new();
    for n in 0..20_000u64 {
        let card = 400 + n % 30;
        link.send(&request("0200", &demo_pan(card), "000000", 1 + n % 5));
        let Some(response) = link.try_receive_or_error() else {
            break;
        };
        last = code(&response);
        match last.as_str() {
            "00" => *approved.entry(card).or_default() += (1 + n % 5) as i64,
            "96" => break,
            other => panic!("unexpected answer {other}"),
        }
    }
    assert_eq!(last, "96", "the disk filled and the switch answered 96");
    let (status, output) = switch.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "exit status");
    let text = output.join("\n");
    assert!(
        text.contains("No space left on device") && text.contains("cut off the log"),
        "{text}"
    );

    disk.grow("4m");
    let switch = Switch::start_with_wal(&disk.0, &args);
    let mut link = switch.connect();
    assert!(!approved.is_empty());
    for (card, amount) in &approved {
        assert_eq!(
            1_000_000 - available(&mut link, &demo_pan(*card)),
            *amount,
            "card {card}: exactly the approvals seen"
        );
    }
    drop(link);
    let (status, _) = switch.terminate();
    assert!(status.success());
}

#[test]
fn a_log_written_on_other_demo_data_is_refused_not_replayed_onto_it() {
    let wal = fresh_wal_dir();
    let config = small_config();
    let switch = Switch::start_with_wal(&wal, &["--config", config.to_str().unwrap()]);
    let mut link = switch.connect();
    assert_eq!(
        code(&link.call(&request("0200", &demo_pan(30), "000000", 100))),
        "00"
    );
    drop(link);
    switch.terminate();
    let richer = config_file(
        "richer",
        &default_config_with(&[
            ("accounts = 1000000 ", "accounts = 2000 "),
            ("balance = \"10000.00\"", "balance = \"20000.00\""),
        ]),
    );
    let (status, _, stderr) = run_switch_to_exit(richer.to_str().unwrap(), wal.to_str().unwrap());
    assert_eq!(status, 1, "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.contains("another genesis") && last.contains("discards every balance"),
        "{stderr}"
    );
}

#[test]
fn an_expired_hold_is_released_and_stays_released_after_a_restart() {
    let wal = fresh_wal_dir();
    let config = config_file(
        "expiry",
        &default_config_with(&[
            ("accounts = 1000000 ", "accounts = 2000 "),
            ("hold_expiry_seconds = 604800", "hold_expiry_seconds = 1"),
        ]),
    );
    let args = ["--config", config.to_str().unwrap()];
    let switch = Switch::start_with_wal(&wal, &args);
    let mut link = switch.connect();
    assert_eq!(
        code(&link.call(&request("0100", &demo_pan(77), "000000", 4_000))),
        "00"
    );
    assert_eq!(available(&mut link, &demo_pan(77)), 1_000_000 - 4_000);
    switch.wait_for_output("released expired holds");
    assert_eq!(
        available(&mut link, &demo_pan(77)),
        1_000_000,
        "the hold expired"
    );
    drop(link);
    switch.kill();
    let (status, dump, _) = run_switch(&["wal", "dump", "--dir", wal.to_str().unwrap()]);
    assert_eq!(status, 0);
    assert!(
        dump.lines()
            .any(|l| l.contains("expiry of shard") && l.contains("(1 released)")),
        "the release is in the log:\n{dump}"
    );
    let switch = Switch::start_with_wal(&wal, &args);
    let mut link = switch.connect();
    assert_eq!(
        available(&mut link, &demo_pan(77)),
        1_000_000,
        "the release was replayed"
    );
}

/// Under a load the idempotency table was not sized for (here 2,000 identities, rotated every
/// 750 requests), the answers it lets go of before the retention are kept on disk: a
/// retransmission of the first request, thousands of requests later, still gets its original
/// answer and moves nothing, and a conflicting one still gets 94; after a `kill -9` too, where
/// recovery writes what the table cannot hold back to disk.
#[test]
fn a_retransmission_within_the_retention_gets_its_answer_beyond_the_tables_room() {
    let wal = fresh_wal_dir();
    let mut edits = SMALL.to_vec();
    edits.push((
        "idempotency_entries_max = 16000000",
        "idempotency_entries_max = 2000",
    ));
    let config = config_file("archive", &default_config_with(&edits));
    let args = ["--config", config.to_str().unwrap()];
    let switch = Switch::start_with_wal(&wal, &args);
    let mut link = switch.connect();
    let pan = demo_pan(7);
    let first = request("0100", &pan, "000000", 2_500);
    let approved = link.call(&first);
    assert_eq!(code(&approved), "00");
    let mut conflicting = first.clone();
    conflicting.set(4, b"000000009999".to_vec());
    // Generations of 1,000, swept each second: the older one's write to disk starts at 500,
    // the early rotation waits for it from 750 to 940. At most 100 new identities a second:
    // several seconds for each write, and none refused for a full table.
    for round in 0..18u64 {
        for i in 0..100 {
            link.send(&request(
                "0100",
                &demo_pan(100 + (round * 100 + i) % 1_000),
                "000000",
                1,
            ));
        }
        for _ in 0..100 {
            let answer = link.receive();
            assert_eq!(code(&answer), "00", "{}", switch.output().join("\n"));
        }
        std::thread::sleep(Duration::from_millis(1_100));
    }
    let moved = switch.wait_for_output("older answers moved to disk");
    assert!(
        !switch.output().iter().any(|l| l.contains("recognised for")),
        "{moved}"
    );
    let (_, metrics) = switch.http_get("/metrics");
    let archived: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switch_idempotency_archived_entries "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(archived >= 700, "{archived} answers on disk");
    println!("{moved}");
    assert_eq!(
        link.call(&first),
        approved,
        "the original answer, from disk"
    );
    assert_eq!(code(&link.call(&conflicting)), "94");
    assert_eq!(available(&mut link, &pan), 1_000_000 - 2_500);
    drop(link);
    switch.kill();

    let switch = Switch::start_with_wal(&wal, &args);
    switch.wait_for_output("answers put back beyond the table's room written to disk");
    let mut link = switch.connect();
    assert_eq!(link.call(&first), approved, "after a restart");
    assert_eq!(code(&link.call(&conflicting)), "94");
    assert_eq!(available(&mut link, &pan), 1_000_000 - 2_500);
}
