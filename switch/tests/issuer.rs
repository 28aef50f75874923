//! Issuer channels against the issuer simulator (`loadtest issuer-sim`, run in this process):
//! remote approvals, a silent issuer (91 in time, then exactly one reversal once it answers),
//! a late approval reversed, the queue across a `kill -9`, stand-in with its advice, an
//! acquirer's reversal of a remote approval, and reconnection after the issuer restarts.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use adapters::{DialectName, FrameHeader};
use common::*;
use loadtest::sim::{Behaviour, Latency};

const REMOTE_PAN: &[u8] = b"4111111111111111";

/// The default configuration with the issuer at `addr`, short timeouts and retries.
fn config(addr: SocketAddr, extra: &[(&str, &str)]) -> std::path::PathBuf {
    let address = format!("address = \"{addr}\"");
    let mut edits = vec![
        ("address = \"127.0.0.1:9584\"", address.as_str()),
        ("timeout_ms = 2000", "timeout_ms = 300"),
        ("retry_min_ms = 1000", "retry_min_ms = 100"),
        ("retry_max_ms = 60000", "retry_max_ms = 400"),
        ("backoff_max_ms = 10000", "backoff_max_ms = 300"),
        ("connect_timeout_ms = 2000", "connect_timeout_ms = 300"),
    ];
    edits.extend_from_slice(extra);
    config_file(
        &format!("issuer-{}", addr.port()),
        &default_config_with(&edits),
    )
}

fn start_switch(config: &std::path::Path, wal: &std::path::Path) -> Switch {
    let switch = Switch::start_with_wal(wal, &["--config", config.to_str().unwrap()]);
    switch.wait_for_output("issuer link signed on");
    switch
}

fn authorization(amount_minor: u64) -> adapters::Message<'static> {
    request("0100", REMOTE_PAN, "000000", amount_minor)
}

#[test]
fn remote_approvals_a_silent_issuer_and_exactly_one_reversal() {
    let issuer = Issuer::start("127.0.0.1:0");
    let config = config(issuer.addr(), &[]);
    let wal = fresh_wal_dir();
    let switch = start_switch(&config, &wal);
    let mut link = switch.connect();

    // The issuer's decision and authorization code come back to the acquirer.
    let approved = link.call(&authorization(1_000));
    assert_eq!(code(&approved), "00");
    let auth = approved.get(38).expect("an approval carries field 38");
    assert_eq!(auth.len(), 6);
    assert!(auth.iter().all(u8::is_ascii_digit), "the simulator's code");
    assert_eq!(issuer.count("authorizations"), 1);
    issuer.sim.control.set_behaviour(Behaviour {
        approve_permille: 0,
        ..Behaviour::default()
    });
    assert_eq!(code(&link.call(&authorization(1_000))), "05");
    issuer.sim.control.set_behaviour(Behaviour::default());

    // Silent: 91 once the timeout passes, well before an acquirer's own (tens of seconds).
    issuer.sim.control.set_silent(true);
    let silent = authorization(2_000);
    let started = Instant::now();
    let answer = link.call(&silent);
    assert_eq!(code(&answer), "91");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "91 after {:?}",
        started.elapsed()
    );
    // The retransmission gets the same answer; nothing more reaches the issuer.
    let sent_before = issuer.count("authorizations");
    assert_eq!(code(&link.call(&silent)), "91");
    assert_eq!(issuer.count("authorizations"), sent_before);
    // While silent, the reversal is tried and repeated; once the issuer answers, it is
    // acknowledged, and no reversal of that request is ever sent as a new one twice.
    issuer.wait_count("reversal_repeats", 1, Duration::from_secs(10));
    issuer.sim.control.set_silent(false);
    switch.wait_for_output("issuer link signed on");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, metrics) = switch.http_get("/metrics");
        if metrics.lines().any(|l| {
            l.starts_with("switch_issuer_events_total{")
                && l.contains("\"advice_acknowledged\"")
                && l.ends_with(" 1")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reversal never acknowledged:\n{}",
            issuer.sim.counts.json()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        issuer.count("reversals_distinct"),
        1,
        "{}",
        issuer.sim.counts.json()
    );
    assert_eq!(issuer.count("reversal_duplicates"), 0);

    // A late approval (after the timeout) is answered 91 and reversed in the same way.
    issuer.sim.control.set_behaviour(Behaviour {
        latency: Latency::Fixed(700),
        ..Behaviour::default()
    });
    assert_eq!(code(&link.call(&authorization(3_000))), "91");
    issuer.wait_count("approved", 2, Duration::from_secs(5));
    issuer.sim.control.set_behaviour(Behaviour::default());
    issuer.wait_count("reversals_distinct", 2, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(issuer.count("reversals_distinct"), 2);
    assert_eq!(issuer.count("reversal_duplicates"), 0);

    // The acquirer's reversal of a remote approval reaches the issuer as 0420 naming the
    // switch's request; a second one is acknowledged without sending it again.
    let original = authorization(4_000);
    assert_eq!(code(&link.call(&original)), "00");
    assert_eq!(code(&link.call(&referring("0400", &original, 4_000))), "00");
    issuer.wait_count("reversals_distinct", 3, Duration::from_secs(10));
    assert_eq!(code(&link.call(&referring("0400", &original, 4_000))), "00");
    // A reversal of a remote transaction the switch never approved: 25.
    let unknown = authorization(5_000);
    assert_eq!(code(&link.call(&referring("0400", &unknown, 5_000))), "25");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(issuer.count("reversals_distinct"), 3);
    assert_eq!(issuer.count("reversal_duplicates"), 0);

    // No card number in what the switch logged.
    let output = switch.kill();
    assert!(
        output.iter().all(|l| !l.contains("4111111111111111")),
        "a PAN in the output"
    );
    issuer.stop();
}

#[test]
fn the_reversal_queue_survives_kill_9_and_the_issuer_restarting() {
    let issuer = Issuer::start("127.0.0.1:0");
    let addr = issuer.addr();
    let config = config(addr, &[]);
    let wal = fresh_wal_dir();
    let switch = start_switch(&config, &wal);
    let mut link = switch.connect();
    issuer.sim.control.set_silent(true);
    let timed_out = authorization(2_500);
    assert_eq!(code(&link.call(&timed_out)), "91");
    // Killed with the reversal queued (tried, never acknowledged).
    issuer.wait_count("reversals", 1, Duration::from_secs(10));
    drop(link);
    switch.kill();
    // The issuer restarts too: a new process on the same port, nothing remembered.
    issuer.stop();
    let issuer = Issuer::start(&addr.to_string());
    let switch = start_switch(&config, &wal);
    issuer.wait_count("reversals_distinct", 1, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(800));
    // After the restart it goes as a repeat (it may have reached the issuer before).
    assert_eq!(
        issuer.count("reversal_repeats"),
        1,
        "{}",
        issuer.sim.counts.json()
    );
    assert_eq!(issuer.count("reversal_duplicates"), 0);
    // The retransmission of the timed-out request still gets 91, from the log.
    let mut link = switch.connect();
    assert_eq!(code(&link.call(&timed_out)), "91");
    assert_eq!(issuer.count("authorizations"), 0);
    // Delivered once: a further restart sends nothing.
    drop(link);
    switch.kill();
    let switch = start_switch(&config, &wal);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(issuer.count("reversal_repeats"), 1);
    assert_eq!(issuer.count("reversals"), 0);
    drop(switch);
    issuer.stop();
}

#[test]
fn stand_in_while_the_issuer_is_down_then_advices_once_it_is_back() {
    // A port with nobody on it yet: the issuer is down from the start.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let config = config(
        addr,
        &[(
            "advice_expiry_seconds = 86400",
            "advice_expiry_seconds = 86400\nstand_in = { amount_max = \"50.00\", currency = 840 }",
        )],
    );
    let wal = fresh_wal_dir();
    let switch = Switch::start_with_wal(&wal, &["--config", config.to_str().unwrap()]);
    let mut link = switch.connect();
    let small_request = authorization(1_000);
    let small = link.call(&small_request);
    assert_eq!(code(&small), "00");
    assert_eq!(small.get(38).map(|a| a[0]), Some(b'S'), "a stand-in code");
    assert_eq!(
        code(&link.call(&authorization(6_000))),
        "91",
        "above amount_max"
    );
    let issuer = Issuer::start(&addr.to_string());
    switch.wait_for_output("issuer link signed on");
    issuer.wait_count("authorization_advices", 1, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(issuer.count("authorization_advices"), 1);
    assert_eq!(issuer.count("authorizations"), 0);
    // The stand-in approval can be reversed: a 0420 naming its 0120 reaches the issuer.
    assert_eq!(
        code(&link.call(&referring("0400", &small_request, 1_000))),
        "00"
    );
    issuer.wait_count("reversals_distinct", 1, Duration::from_secs(10));
    // Back up: decisions are the issuer's again.
    let now = link.call(&authorization(1_000));
    assert_eq!(code(&now), "00");
    assert!(now.get(38).is_some_and(|a| a[0] != b'S'));
    drop(switch);
    issuer.stop();
}

#[test]
fn a_request_outstanding_at_kill_9_is_reversed_after_the_restart() {
    let issuer = Issuer::start("127.0.0.1:0");
    // A timeout long enough that the request is still outstanding when the switch dies.
    let config = config(issuer.addr(), &[("timeout_ms = 300", "timeout_ms = 20000")]);
    let wal = fresh_wal_dir();
    let switch = start_switch(&config, &wal);
    let mut link = switch.connect();
    issuer.sim.control.set_silent(true);
    let outstanding = authorization(7_000);
    link.send(&outstanding);
    issuer.wait_count("authorizations", 1, Duration::from_secs(10));
    switch.kill();
    issuer.sim.control.set_silent(false);
    // The acquirer heard nothing; the issuer may have approved: recovery queues the reversal.
    let switch = start_switch(&config, &wal);
    assert!(
        switch
            .output()
            .iter()
            .any(|l| l.contains("requests were outstanding at remote issuers")),
        "recovery says what it queued"
    );
    issuer.wait_count("reversals_distinct", 1, Duration::from_secs(15));
    // The acquirer's own reversal of it (it timed out too) is acknowledged, not sent again.
    let mut link = switch.connect();
    assert_eq!(
        code(&link.call(&referring("0400", &outstanding, 7_000))),
        "00"
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        issuer.count("reversals_distinct"),
        1,
        "{}",
        issuer.sim.counts.json()
    );
    assert_eq!(issuer.count("reversal_duplicates"), 0);
    assert_eq!(issuer.count("authorizations"), 1);
    // Its retransmission gets 91 (the decision recovery logged), and is not sent again.
    assert_eq!(code(&link.call(&outstanding)), "91");
    assert_eq!(issuer.count("authorizations"), 1);
    // Settled once: a further restart sends nothing more.
    drop(link);
    switch.kill();
    let sent = issuer.count("reversals") + issuer.count("reversal_repeats");
    let switch = start_switch(&config, &wal);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        issuer.count("reversals") + issuer.count("reversal_repeats"),
        sent,
        "{}",
        issuer.sim.counts.json()
    );
    assert!(
        !switch
            .output()
            .iter()
            .any(|l| l.contains("requests were outstanding at remote issuers")),
        "settled twice"
    );
    drop(switch);
    issuer.stop();
}

#[test]
fn a_reversal_that_overtakes_its_originals_answer_is_queued_once() {
    let issuer = Issuer::start("127.0.0.1:0");
    let config = config(issuer.addr(), &[("timeout_ms = 300", "timeout_ms = 5000")]);
    let wal = fresh_wal_dir();
    let switch = start_switch(&config, &wal);
    issuer.sim.control.set_behaviour(Behaviour {
        latency: Latency::Fixed(1_500),
        ..Behaviour::default()
    });
    let mut first = switch.connect();
    let mut second = switch.connect();
    let original = authorization(3_300);
    first.send(&original);
    issuer.wait_count("authorizations", 1, Duration::from_secs(5));
    // The terminal gave up before the issuer answered: its reversal is acknowledged at once.
    issuer.sim.control.set_behaviour(Behaviour::default());
    let started = Instant::now();
    assert_eq!(
        code(&second.call(&referring("0400", &original, 3_300))),
        "00"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not held up by the original"
    );
    // The original's answer still comes (approved), and the issuer gets its reversal once.
    assert_eq!(code(&first.receive()), "00");
    issuer.wait_count("reversals_distinct", 1, Duration::from_secs(10));
    assert_eq!(
        code(&second.call(&referring("0400", &original, 3_300))),
        "00"
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        issuer.count("reversals_distinct"),
        1,
        "{}",
        issuer.sim.counts.json()
    );
    assert_eq!(issuer.count("reversal_duplicates"), 0);
    drop(first);
    drop(second);
    drop(switch);
    issuer.stop();
}

#[test]
fn the_circuit_breaker_opens_on_timeouts_and_a_probe_closes_it() {
    let issuer = Issuer::start("127.0.0.1:0");
    let config = config(
        issuer.addr(),
        &[
            ("breaker_failures = 20", "breaker_failures = 2"),
            ("breaker_open_seconds = 5", "breaker_open_seconds = 1"),
        ],
    );
    let wal = fresh_wal_dir();
    let switch = start_switch(&config, &wal);
    let mut link = switch.connect();
    issuer.sim.control.set_silent(true);
    assert_eq!(code(&link.call(&authorization(100))), "91");
    assert_eq!(code(&link.call(&authorization(100))), "91");
    switch.wait_for_output("circuit breaker open");
    let sent = issuer.count("authorizations");
    assert_eq!(sent, 2);
    // Open: answered 91 at once, nothing reaches the issuer; health is down.
    assert_eq!(code(&link.call(&authorization(100))), "91");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(issuer.count("authorizations"), sent);
    let (_, metrics) = switch.http_get("/metrics");
    assert!(
        metrics.contains("switch_issuer_health{issuer=\"sim\"} 0"),
        "health while open:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("issuer"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // After the open time one probe goes out; its answer closes the breaker.
    issuer.sim.control.set_silent(false);
    std::thread::sleep(Duration::from_millis(1_200));
    assert_eq!(code(&link.call(&authorization(100))), "00");
    assert_eq!(code(&link.call(&authorization(100))), "00");
    switch.wait_for_output("circuit breaker closed");
    drop(link);
    drop(switch);
    issuer.stop();
}

#[test]
fn a_fallback_issuer_takes_over_and_its_approvals_are_reversed_there() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = probe.local_addr().unwrap();
    drop(probe);
    let fallback = Issuer::start("127.0.0.1:0");
    let second = format!(
        "[[issuers]]\nname = \"sim2\"\naddress = \"{}\"\ntimeout_ms = 300\nretry_min_ms = 100\n\n[demo]\n",
        fallback.addr()
    );
    let config = config(
        dead,
        &[
            (
                "to = \"issuer:sim\"",
                "fallbacks = [\"issuer:sim2\"]\nto = \"issuer:sim\"",
            ),
            ("[demo]\n", second.as_str()),
        ],
    );
    let wal = fresh_wal_dir();
    let switch = start_switch(&config, &wal);
    let mut link = switch.connect();
    let request = authorization(1_500);
    assert_eq!(code(&link.call(&request)), "00");
    assert_eq!(fallback.count("authorizations"), 1);
    // Operators see where it went: the decision names the fallback; the channels' states.
    let rrn = String::from_utf8(request.get(37).unwrap().to_vec()).unwrap();
    let (status, body) = http(
        &switch,
        "GET",
        &format!("/v1/decisions?rrn={rrn}"),
        Some(TOKEN),
        &[],
        "",
    );
    assert_eq!(status, 200, "{body}");
    let decision = &json(&body)["decisions"][0];
    assert_eq!(decision["issuer"], "sim2", "{body}");
    assert_eq!(decision["issuer_route"], "fallback", "{body}");
    let (status, body) = http(&switch, "GET", "/v1/issuers", Some(TOKEN), &[], "");
    assert_eq!(status, 200, "{body}");
    let issuers = json(&body)["issuers"].clone();
    assert_eq!(issuers[0]["name"], "sim");
    assert_eq!(issuers[0]["health"], "down", "{body}");
    assert_eq!(issuers[1]["name"], "sim2");
    assert_eq!(issuers[1]["health"], "up", "{body}");
    // The reversal goes to the primary first, which does not know it, then to the fallback.
    assert_eq!(code(&link.call(&referring("0400", &request, 1_500))), "00");
    fallback.wait_count("reversals_distinct", 1, Duration::from_secs(10));
    let (_, metrics) = switch.http_get("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switch_issuer_events_total{")
                && l.contains("\"fallback\"")
                && l.contains("\"sim2\"")),
        "the fallback is counted"
    );
    drop(link);
    drop(switch);
    fallback.stop();
}

#[test]
fn links_reconnect_and_sign_on_again_after_the_issuer_restarts() {
    let issuer = Issuer::start("127.0.0.1:0");
    let addr = issuer.addr();
    let config = config(addr, &[]);
    let wal = fresh_wal_dir();
    let switch = start_switch(&config, &wal);
    let mut link = switch.connect();
    assert_eq!(code(&link.call(&authorization(100))), "00");
    // The issuer goes away: its links drop, nothing is signed on, requests get 91 at once.
    issuer.stop();
    switch.wait_for_output("issuer link down; reconnecting");
    let started = Instant::now();
    assert_eq!(code(&link.call(&authorization(100))), "91");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Back on the same port: the links reconnect (backoff at most 300 ms here) and sign on.
    let issuer = Issuer::start(&addr.to_string());
    issuer.wait_count("sign_ons", 2, Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http(&switch, "GET", "/v1/issuers", Some(TOKEN), &[], "");
        if json(&body)["issuers"][0]["health"] == "up" {
            break;
        }
        assert!(Instant::now() < deadline, "never up again: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(code(&link.call(&authorization(100))), "00");
    assert_eq!(issuer.count("authorizations"), 1);
    drop(link);
    drop(switch);
    issuer.stop();
}

#[test]
fn remote_approvals_outlive_the_log_behind_a_snapshot() {
    let issuer = Issuer::start("127.0.0.1:0");
    let config = config(
        issuer.addr(),
        &[
            ("segment_bytes = 67108864", "segment_bytes = 4096"),
            (
                "snapshot_interval_seconds = 300",
                "snapshot_interval_seconds = 1",
            ),
            (
                "idempotency_retention_seconds = 300",
                "idempotency_retention_seconds = 1",
            ),
        ],
    );
    let wal = fresh_wal_dir();
    let switch = start_switch(&config, &wal);
    let mut link = switch.connect();
    let original = authorization(2_200);
    assert_eq!(code(&link.call(&original)), "00");
    // Enough on-us traffic to fill segments, then snapshots and pruning take the first one,
    // which holds the remote approval's record.
    for i in 0..300 {
        let request = request("0100", &demo_pan(2_000 + i), "000000", 100);
        assert_eq!(code(&link.call(&request)), "00");
    }
    let first = wal.join("00000000000000000000.wal");
    let deadline = Instant::now() + Duration::from_secs(20);
    while first.exists() {
        assert!(
            Instant::now() < deadline,
            "the first segment was never pruned"
        );
        // A record now and then, so that newer segments age past the retention too.
        let request = request("0200", &demo_pan(1_500), "310000", 0);
        let _ = link.call(&request);
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(link);
    switch.kill();
    // After the restart the approval is known from the snapshot: its reversal reaches the
    // issuer, naming the switch's request (25 if it were forgotten).
    let switch = start_switch(&config, &wal);
    let mut link = switch.connect();
    assert_eq!(code(&link.call(&referring("0400", &original, 2_200))), "00");
    issuer.wait_count("reversals_distinct", 1, Duration::from_secs(10));
    drop(link);
    drop(switch);
    issuer.stop();
}

#[test]
fn stand_in_on_timeout_reverses_the_request_and_advises_the_approval() {
    let issuer = Issuer::start("127.0.0.1:0");
    let config = config(
        issuer.addr(),
        &[(
            "advice_expiry_seconds = 86400",
            "advice_expiry_seconds = 86400\nstand_in = { amount_max = \"50.00\", currency = 840 }",
        )],
    );
    let wal = fresh_wal_dir();
    let switch = start_switch(&config, &wal);
    let mut link = switch.connect();
    issuer.sim.control.set_silent(true);
    let answer = link.call(&authorization(1_200));
    assert_eq!(
        code(&answer),
        "00",
        "approved in stand-in after the timeout"
    );
    assert_eq!(answer.get(38).map(|a| a[0]), Some(b'S'));
    // Above the stand-in limit: 91.
    assert_eq!(code(&link.call(&authorization(9_000))), "91");
    issuer.sim.control.set_silent(false);
    // The issuer hears of both: the reversal of what it may have approved, and the switch's
    // approval; the second request's reversal too.
    issuer.wait_count("authorization_advices", 1, Duration::from_secs(15));
    issuer.wait_count("reversals_distinct", 2, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(800));
    // Sent once as 0120 (and repeated as 0121 while the issuer did not answer).
    assert_eq!(
        issuer.count("authorization_advices"),
        1,
        "{}",
        issuer.sim.counts.json()
    );
    assert_eq!(issuer.count("reversals_distinct"), 2);
    assert_eq!(issuer.count("reversal_duplicates"), 0);
    drop(link);
    drop(switch);
    issuer.stop();
}

/// A fake issuer that signs on properly, then answers each 0100 with garbage (20 frames of it
/// for an amount of 9.99; else one), an answer for
/// another terminal, a duplicate, and the right answer; and every new connection is counted.
fn garbage_issuer() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        let dialect = DialectName::Default.dialect();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut chunk) else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    while let Ok(Some(b)) = FrameHeader::Binary2.parse(&buffer, 8192) {
                        let body = buffer[b.header_len..b.total_len()].to_vec();
                        buffer.drain(..b.total_len());
                        let Ok(request) = dialect.decode(&body) else {
                            continue;
                        };
                        let mut out = Vec::new();
                        let mut answer = adapters::Message::new(request.mti.response().unwrap());
                        for field in [7, 11, 37, 41, 70] {
                            if let Some(v) = request.get(field) {
                                answer.set(field, v.to_vec());
                            }
                        }
                        answer.set(39, b"00".to_vec());
                        if request.mti.0 == *b"0100" {
                            answer.set(38, b"123456".to_vec());
                            // Garbage, an answer naming another terminal, then the answer
                            // twice: only the right one may answer the request.
                            let garbage = if request.get(4) == Some(b"000000000999") {
                                20
                            } else {
                                1
                            };
                            for _ in 0..garbage {
                                FrameHeader::Binary2
                                    .write_frame(b"\x00\x01garbage", &mut out)
                                    .unwrap();
                            }
                            let mut wrong = answer.clone();
                            wrong.set(41, b"OTHER001".to_vec());
                            wrong.set(38, b"999999".to_vec());
                            let mut bytes = Vec::new();
                            dialect.encode(&wrong, &mut bytes).unwrap();
                            FrameHeader::Binary2.write_frame(&bytes, &mut out).unwrap();
                        }
                        let mut bytes = Vec::new();
                        dialect.encode(&answer, &mut bytes).unwrap();
                        FrameHeader::Binary2.write_frame(&bytes, &mut out).unwrap();
                        if request.mti.0 == *b"0100" {
                            FrameHeader::Binary2.write_frame(&bytes, &mut out).unwrap();
                        }
                        if stream.write_all(&out).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, connections)
}

#[test]
fn garbage_from_an_issuer_answers_nothing_and_a_link_full_of_it_is_reopened() {
    let (addr, connections) = garbage_issuer();
    let config = config(addr, &[("connections = 2 ", "connections = 1 ")]);
    let wal = fresh_wal_dir();
    let switch = start_switch(&config, &wal);
    let mut link = switch.connect();
    // Each answer comes with garbage, a wrong terminal and a duplicate around it: the
    // acquirer still gets the one right answer, with the right code.
    for _ in 0..3 {
        let answer = link.call(&authorization(100));
        assert_eq!(code(&answer), "00");
        assert_eq!(answer.get(38), Some(&b"123456"[..]));
    }
    // (`call` checks field 11: an extra answer would have been taken for the next request.)
    let (_, metrics) = switch.http_get("/metrics");
    for event in ["malformed", "unmatched"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("switch_issuer_events_total{")
                    && l.contains(&format!("\"{event}\""))),
            "{event} not counted"
        );
    }
    // Enough garbage in a row (16 malformed frames: this issuer sends 20 before answering an
    // amount of 9.99) closes the link, and it is opened again. (The answer that came in the
    // same read as the garbage is still taken.)
    assert_eq!(code(&link.call(&authorization(999))), "00");
    let deadline = Instant::now() + Duration::from_secs(10);
    while connections.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the link was never reopened");
        std::thread::sleep(Duration::from_millis(50));
    }
    switch.wait_for_output("closing a link that keeps sending what matches nothing");
    drop(link);
    drop(switch);
}

#[test]
fn an_overtaking_reversal_then_kill_9_settles_the_original_as_91_and_reverses_it_once() {
    let issuer = Issuer::start("127.0.0.1:0");
    let config = config(issuer.addr(), &[("timeout_ms = 300", "timeout_ms = 20000")]);
    let wal = fresh_wal_dir();
    let switch = start_switch(&config, &wal);
    issuer.sim.control.set_silent(true);
    let mut first = switch.connect();
    let mut second = switch.connect();
    let original = authorization(4_400);
    first.send(&original);
    issuer.wait_count("authorizations", 1, Duration::from_secs(5));
    assert_eq!(
        code(&second.call(&referring("0400", &original, 4_400))),
        "00"
    );
    drop(first);
    drop(second);
    switch.kill();
    issuer.sim.control.set_silent(false);
    let switch = start_switch(&config, &wal);
    issuer.wait_count("reversals_distinct", 1, Duration::from_secs(15));
    let mut link = switch.connect();
    // The original, retransmitted: 91 (it was never answered), not sent again.
    assert_eq!(code(&link.call(&original)), "91");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(issuer.count("authorizations"), 1);
    assert_eq!(
        issuer.count("reversals_distinct"),
        1,
        "{}",
        issuer.sim.counts.json()
    );
    assert_eq!(issuer.count("reversal_duplicates"), 0);
    drop(link);
    drop(switch);
    issuer.stop();
}
