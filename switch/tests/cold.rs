//! Transactions past the hot window, on the real binary over TCP: a hold and a purchase made
//! before a load that pushes them to disk are completed and reversed after it, exactly, and
//! again after a `kill -9` and a restart (which rolls the store back to the snapshot and
//! replays the log).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A hot window of 16 transactions on one shard, snapshots every second, risk off (the load
/// sends many approvals per card).
fn config() -> std::path::PathBuf {
    config_file(
        "cold",
        &default_config_with(&[
            ("accounts = 1000000 ", "accounts = 2000 "),
            ("\nenabled = true\n", "\nenabled = false\n"),
            ("shards = 0 ", "shards = 1 "),
            (
                "hot_transactions_per_shard_max = 4000000",
                "hot_transactions_per_shard_max = 16",
            ),
            (
                "snapshot_interval_seconds = 300",
                "snapshot_interval_seconds = 1",
            ),
        ]),
    )
}

/// `count` purchases of 1 on cards 100.., pipelined: enough to push everything older to disk.
fn load(link: &mut Link, count: u64) {
    for n in 0..count {
        link.send(&request("0200", &demo_pan(100 + n % 500), "000000", 1));
    }
    for _ in 0..count {
        assert_eq!(code(&link.receive()), "00");
    }
}

fn gauge(switch: &Switch, name: &str) -> i64 {
    let (_, body) = switch.http_get("/metrics");
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with(&format!("{name}_")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum()
}

/// The gauges are brought up to date every second.
fn wait_on_disk(switch: &Switch, at_least: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let on_disk = gauge(switch, "switch_ledger_transactions_on_disk");
        if on_disk >= at_least || Instant::now() > deadline {
            return on_disk;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn totals(switch: &Switch) -> serde_json::Value {
    let (status, body) = http(switch, "GET", "/v1/ledger/totals", Some(TOKEN), &[], "");
    assert_eq!(status, 200, "{body}");
    json(&body)
}

#[test]
fn holds_and_purchases_on_disk_are_completed_and_reversed_before_and_after_a_kill() {
    let wal = fresh_wal_dir();
    let config = config();
    let args = ["--config", config.to_str().unwrap()];
    let switch = Switch::start_with_wal(&wal, &args);
    let genesis = totals(&switch);
    let mut link = switch.connect();
    // Two holds and two purchases, then a load that moves them out of the hot window.
    let holds: Vec<_> = (0..2)
        .map(|i| request("0100", &demo_pan(10 + i), "000000", 3_000))
        .collect();
    let purchases: Vec<_> = (0..2)
        .map(|i| request("0200", &demo_pan(20 + i), "000000", 2_500))
        .collect();
    for message in holds.iter().chain(&purchases) {
        assert_eq!(code(&link.call(message)), "00");
    }
    load(&mut link, 400);
    let on_disk = wait_on_disk(&switch, 300);
    assert!(
        on_disk >= 300,
        "the load moved transactions to disk: {on_disk}"
    );
    let in_memory = gauge(&switch, "switch_ledger_transactions");
    assert!(in_memory <= 17, "the hot window holds: {in_memory}");

    // From disk: a partial completion of the first hold, a reversal of the first purchase.
    assert_eq!(code(&link.call(&referring("0220", &holds[0], 2_000))), "00");
    assert_eq!(available(&mut link, &demo_pan(10)), 1_000_000 - 2_000);
    assert_eq!(
        code(&link.call(&referring("0400", &purchases[0], 2_500))),
        "00"
    );
    assert_eq!(available(&mut link, &demo_pan(20)), 1_000_000);
    // Beyond what remains authorized: 13, and nothing moves.
    assert_eq!(code(&link.call(&referring("0220", &holds[0], 2_000))), "13");
    assert_eq!(available(&mut link, &demo_pan(10)), 1_000_000 - 2_000);

    // A snapshot with transactions on disk, more changes after it, then kill -9.
    switch.wait_for_output("snapshot written");
    load(&mut link, 200);
    assert_eq!(code(&link.call(&referring("0400", &holds[1], 3_000))), "00");
    let before_kill = totals(&switch);
    drop(link);
    switch.kill();

    let switch = Switch::start_with_wal(&wal, &args);
    assert_eq!(
        totals(&switch),
        before_kill,
        "the same money after the restart"
    );
    assert_eq!(
        totals(&switch)["total_minor"],
        genesis["total_minor"],
        "conservation"
    );
    let mut link = switch.connect();
    assert_eq!(available(&mut link, &demo_pan(10)), 1_000_000 - 2_000);
    assert_eq!(available(&mut link, &demo_pan(11)), 1_000_000, "released");
    assert_eq!(available(&mut link, &demo_pan(20)), 1_000_000);
    assert_eq!(available(&mut link, &demo_pan(21)), 1_000_000 - 2_500);
    // Still on disk after the restart: reversals and completions find them, exactly once.
    assert_eq!(
        code(&link.call(&referring("0400", &purchases[1], 2_500))),
        "00"
    );
    assert_eq!(available(&mut link, &demo_pan(21)), 1_000_000);
    assert_eq!(
        code(&link.call(&referring("0400", &purchases[0], 2_500))),
        "00"
    );
    assert_eq!(
        available(&mut link, &demo_pan(20)),
        1_000_000,
        "a second reversal returns nothing more"
    );
    assert_eq!(code(&link.call(&referring("0220", &holds[1], 1_000))), "12");
    assert_eq!(code(&link.call(&referring("0220", &holds[0], 1_000))), "00");
    assert_eq!(available(&mut link, &demo_pan(10)), 1_000_000 - 3_000);
    assert_eq!(
        totals(&switch)["total_minor"],
        genesis["total_minor"],
        "conservation"
    );
    let line = switch.wait_for_output("ledger recovered");
    assert!(
        !line.contains("snapshot=none"),
        "started from a snapshot: {line}"
    );
    drop(link);
    let (status, _) = switch.terminate();
    assert!(status.success());
}
