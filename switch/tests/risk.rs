//! The risk engine over TCP against the real binary: the demo rules firing with their codes and
//! named to an operator (log line and admin API), a reload that changes a limit under load with
//! nothing lost, and a bad reload refused with the running rules kept.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use adapters::Message;
use common::*;

fn text(message: &Message<'_>, field: u8) -> String {
    String::from_utf8(message.get(field).unwrap().to_vec()).unwrap()
}

/// The operator's view of one answered request, by acquirer, STAN and date.
fn decision(switch: &Switch, request: &Message<'_>) -> serde_json::Value {
    let path = format!(
        "/v1/decisions?acquirer={ACQUIRER}&stan={}&date={}",
        text(request, 11),
        &text(request, 7)[..4]
    );
    let (status, body) = http(switch, "GET", &path, Some(TOKEN), &[], "");
    assert_eq!(status, 200, "{body}");
    json(&body)["decisions"][0].clone()
}

/// The same, by retrieval reference number (field 37).
fn decision_by_rrn(switch: &Switch, request: &Message<'_>) -> serde_json::Value {
    let path = format!("/v1/decisions?rrn={}", text(request, 37));
    let (status, body) = http(switch, "GET", &path, Some(TOKEN), &[], "");
    assert_eq!(status, 200, "{body}");
    json(&body)["decisions"][0].clone()
}

#[test]
fn the_demo_rules_fire_over_tcp_with_their_codes_and_names() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();

    // 21 authorizations on one card, written back to back (all in flight at once): exactly 20
    // are approved, whatever order they are decided in.
    let pan = demo_pan(500);
    let holds: Vec<_> = (0..21)
        .map(|_| request("0100", &pan, "000000", 100))
        .collect();
    for hold in &holds {
        link.send(hold);
    }
    let answers: Vec<_> = (0..21).map(|_| link.receive()).collect();
    let velocity: Vec<_> = answers.iter().filter(|a| code(a) == "65").collect();
    assert_eq!(
        velocity.len(),
        1,
        "{:?}",
        answers.iter().map(code).collect::<Vec<_>>()
    );
    assert_eq!(answers.iter().filter(|a| code(a) == "00").count(), 20);
    assert!(!velocity[0].has(38), "no authorization code on a decline");
    let declined = holds
        .iter()
        .find(|h| h.get(11) == velocity[0].get(11))
        .unwrap();
    let seen = decision(&switch, declined);
    assert_eq!(seen["response_code"], "65", "{seen}");
    assert_eq!(seen["rule"], "card-velocity-60s", "{seen}");
    assert_eq!(seen["check"], "velocity", "{seen}");
    // Money: 20 holds of 1.00, not 21; and balance inquiries pass the velocity rule.
    assert_eq!(available(&mut link, &pan), 1_000_000 - 20 * 100);
    assert_eq!(available(&mut link, &pan), 1_000_000 - 20 * 100);

    // MCC 7995 → 57.
    let mut casino = request("0200", &demo_pan(501), "000000", 2_500);
    casino.set(18, b"7995".to_vec());
    assert_eq!(code(&link.call(&casino)), "57");
    let seen = decision_by_rrn(&switch, &casino);
    assert_eq!(
        (seen["response_code"].as_str(), seen["rule"].as_str()),
        (Some("57"), Some("gambling-mcc-7995")),
        "{seen}"
    );

    // Manual key entry (field 22 starting 01) above 5,000.00 → 59; at 5,000.00 approved.
    let keyed = |amount| {
        let mut m = request("0200", &demo_pan(502), "000000", amount);
        m.set(22, b"012".to_vec());
        m
    };
    let big = keyed(600_000);
    assert_eq!(code(&link.call(&big)), "59");
    assert_eq!(
        decision(&switch, &big)["rule"],
        "manual-key-entry-above-5000"
    );
    assert_eq!(code(&link.call(&keyed(500_000))), "00");
    let mut chip = request("0200", &demo_pan(503), "000000", 600_000);
    chip.set(22, b"051".to_vec());
    assert_eq!(code(&link.call(&chip)), "00", "chip, not keyed");
    assert_eq!(decision(&switch, &chip)["rule"], serde_json::Value::Null);

    // The log line of each decline names its rule, and no PAN.
    let output = switch.output();
    for rule in [
        "card-velocity-60s",
        "gambling-mcc-7995",
        "manual-key-entry-above-5000",
    ] {
        assert!(
            output
                .iter()
                .any(|l| l.contains("declined") && l.contains(rule)),
            "no log line names {rule}"
        );
    }
    assert!(!output.iter().any(|l| has_pan_like_run(l)));
    // Counted by rule.
    let (_, metrics) = switch.http_get("/metrics");
    for (rule, n) in [
        ("card-velocity-60s", 1),
        ("gambling-mcc-7995", 1),
        ("manual-key-entry-above-5000", 1),
    ] {
        let line =
            format!("switch_risk_decisions_total{{decision=\"declined\",rule=\"{rule}\"}} {n}");
        assert!(metrics.contains(&line), "no {line:?} in\n{metrics}");
    }
    // The rules in force, for the operator.
    let (_, body) = http(&switch, "GET", "/v1/config/risk", Some(TOKEN), &[], "");
    let rules = json(&body);
    let velocity = rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "card-velocity-60s")
        .unwrap()
        .clone();
    assert_eq!(
        (
            velocity["per"].as_str(),
            velocity["count_max"].as_u64(),
            velocity["code"].as_str()
        ),
        (Some("card"), Some(20), Some("65")),
        "{body}"
    );
}

/// A configuration with one velocity rule of `count_max` per card, on a small ledger.
fn with_count_max(count_max: u32) -> String {
    format!(
        "[demo]\naccounts = 30000\n\n[risk]\n[[risk.rules]]\nname = \"card-count\"\nper = \"card\"\nwindow_seconds = 600\ncount_max = {count_max}\ncode = \"65\"\n"
    )
}

/// Authorizes on `pan` until the first decline; the approvals before it.
fn approvals_until_declined(link: &mut Link, pan: &[u8]) -> usize {
    for n in 0..100 {
        let answer = link.call(&request("0100", pan, "000000", 1));
        match code(&answer).as_str() {
            "00" => {}
            "65" => return n,
            other => panic!("unexpected {other}"),
        }
    }
    panic!("never declined");
}

#[test]
fn a_reload_changes_a_limit_under_load_and_loses_no_request() {
    let path = config_file("risk-reload", &with_count_max(20));
    let switch = Switch::start(&["--config", path.to_str().unwrap()]);
    let addr = switch.addr;
    let reloaded = std::sync::atomic::AtomicBool::new(false);
    let reloaded = &reloaded;

    // Four acquirer links, each with up to 32 requests in flight, 2,500 authorizations each on
    // cards of their own (each card at most twice: no limit is reached), for at most 60 s.
    let load = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4u64)
            .map(|client| {
                scope.spawn(move || {
                    let mut link = Link::connect(
                        addr,
                        adapters::DialectName::Default,
                        adapters::FrameHeader::Binary2,
                    );
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let (mut sent, mut codes) = (0u64, std::collections::BTreeMap::new());
                    let mut after_reload = 0u64;
                    let mut in_flight = 0;
                    while (sent < 2_500 || in_flight > 0) && Instant::now() < deadline {
                        while sent < 2_500 && in_flight < 32 {
                            let card = 1_000 + client * 5_000 + sent % 1_250;
                            link.send(&request("0100", &demo_pan(card), "000000", 1));
                            sent += 1;
                            in_flight += 1;
                        }
                        let answer = link.receive();
                        *codes.entry(code(&answer)).or_insert(0u64) += 1;
                        in_flight -= 1;
                        if reloaded.load(std::sync::atomic::Ordering::Relaxed) {
                            after_reload += 1;
                        }
                    }
                    (sent, codes, after_reload)
                })
            })
            .collect();
        // While they run: the limit goes from 20 to 3 per card.
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(&path, with_count_max(3)).unwrap();
        let (status, body) = http(&switch, "POST", "/v1/config/reload", Some(TOKEN), &[], "");
        assert_eq!(status, 200, "{body}");
        reloaded.store(true, std::sync::atomic::Ordering::Relaxed);
        clients
            .into_iter()
            .map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    let after: u64 = load.iter().map(|(_, _, after)| after).sum();
    assert!(
        after > 0,
        "the reload came after the load ended: make the load longer"
    );
    for (sent, codes, _) in &load {
        assert_eq!(*sent, 2_500);
        assert_eq!(
            codes.values().sum::<u64>(),
            2_500,
            "every request answered: {codes:?}"
        );
        assert_eq!(codes.keys().collect::<Vec<_>>(), ["00"], "{codes:?}");
    }
    // The new limit is in force, and the counts were kept across the reload: each card of the
    // load had 2 approvals, so it has 1 left.
    let mut link = switch.connect();
    assert_eq!(approvals_until_declined(&mut link, &demo_pan(25_000)), 3);
    assert_eq!(approvals_until_declined(&mut link, &demo_pan(1_000)), 1);
    assert_eq!(approvals_until_declined(&mut link, &demo_pan(16_249)), 1);
    let (_, body) = http(&switch, "GET", "/v1/config/risk", Some(TOKEN), &[], "");
    assert!(body.contains("\"count_max\":3"), "{body}");
}

#[test]
fn a_bad_reload_is_refused_precisely_and_the_running_rules_stay() {
    let path = config_file("risk-bad-reload", &with_count_max(2));
    let switch = Switch::start(&["--config", path.to_str().unwrap()]);
    let mut link = switch.connect();

    std::fs::write(
        &path,
        with_count_max(5).replace("code = \"65\"", "code = \"00\""),
    )
    .unwrap();
    let (status, body) = http(&switch, "POST", "/v1/config/reload", Some(TOKEN), &[], "");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("risk.rules[0].code: \\\"00\\\" is not one of the risk codes"),
        "{body}"
    );
    assert_eq!(
        approvals_until_declined(&mut link, &demo_pan(7)),
        2,
        "still 2"
    );

    // The same by SIGHUP: an error line, the rules unchanged.
    std::fs::write(
        &path,
        with_count_max(5).replace("window_seconds = 600", "window_seconds = 1"),
    )
    .unwrap();
    let kill = std::process::Command::new("kill")
        .args(["-HUP", &switch.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let line = switch.wait_for_output("risk.rules[0].window_seconds: 1 is below the minimum 8");
    assert!(line.contains("SIGHUP") || line.contains("reload"), "{line}");
    assert_eq!(
        approvals_until_declined(&mut link, &demo_pan(8)),
        2,
        "still 2"
    );

    // A good file takes effect.
    std::fs::write(&path, with_count_max(5)).unwrap();
    let (status, body) = http(&switch, "POST", "/v1/config/reload", Some(TOKEN), &[], "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(approvals_until_declined(&mut link, &demo_pan(9)), 5);
}

#[test]
fn a_request_declined_after_risk_gives_its_count_back() {
    let path = config_file("risk-give-back", &with_count_max(2));
    let switch = Switch::start(&["--config", path.to_str().unwrap()]);
    let mut link = switch.connect();
    // Card 0 holds 100.00: three holds of 200.00 pass risk and are declined 51 by the ledger.
    let pan = demo_pan(0);
    for _ in 0..3 {
        assert_eq!(
            code(&link.call(&request("0100", &pan, "000000", 20_000))),
            "51"
        );
    }
    // None of them counted: two approvals, then the limit.
    assert_eq!(approvals_until_declined(&mut link, &pan), 2);
    // A retransmission of an approval is answered from the table and counts nothing more.
    let mut other = switch.connect();
    let hold = request("0100", &demo_pan(11), "000000", 1);
    assert_eq!(code(&other.call(&hold)), "00");
    for _ in 0..3 {
        assert_eq!(code(&other.call(&hold)), "00");
    }
    assert_eq!(approvals_until_declined(&mut other, &demo_pan(11)), 1);
}
