//! DESIGN §2.6, acquirer identity by source address, over TCP against the real binary: a
//! connection from an acquirer's `sources` speaks for that acquirer alone, an acquirer with
//! `sources` is spoken for from nowhere else, and either refusal is 58, counted.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;

const SECOND: &str = "654321";

fn with_second_acquirer(sources_of_demo: Option<&str>, sources_of_second: &str) -> String {
    let mut edits = vec![(
        "[[routes]]",
        format!(
            "[[acquirers]]\nid = \"{SECOND}\"\nname = \"Second acquirer\"\nsources = {sources_of_second}\n\n[[routes]]"
        ),
    )];
    if let Some(sources) = sources_of_demo {
        edits.push((
            "name = \"Demo acquirer\"",
            format!("name = \"Demo acquirer\"\nsources = {sources}"),
        ));
    }
    let edits: Vec<(&str, &str)> = edits.iter().map(|(a, b)| (*a, b.as_str())).collect();
    default_config_with(&edits)
}

fn naming(acquirer: &str, pan: &[u8]) -> adapters::Message<'static> {
    let mut m = request("0200", pan, "310000", 0);
    m.set(32, acquirer.as_bytes().to_vec());
    m
}

#[test]
fn a_connection_from_an_acquirers_sources_speaks_for_it_alone() {
    let config = with_second_acquirer(None, "[\"127.0.0.0/8\"]");
    let path = config_file("identity-source", &config);
    let switch = Switch::start(&["--config", path.to_str().unwrap()]);
    let pan = demo_pan(401);
    // 127.0.0.1 belongs to the second acquirer: it may not claim the demo acquirer, even first.
    let mut link = switch.connect();
    assert_eq!(code(&link.call(&naming(ACQUIRER, &pan))), "58");
    assert_eq!(code(&link.call(&naming(SECOND, &pan))), "00");
    assert_eq!(code(&link.call(&naming(ACQUIRER, &pan))), "58");
    // The same on a new connection.
    let mut other = switch.connect();
    assert_eq!(code(&other.call(&naming(ACQUIRER, &pan))), "58");
    assert_eq!(code(&other.call(&naming(SECOND, &pan))), "00");
    let (_, metrics) = switch.http_get("/metrics");
    assert!(
        metrics.contains(
            "switch_transactions_total{mti=\"0200\",response_code=\"58\",route=\"none\"} 3"
        ),
        "{metrics}"
    );
}

#[test]
fn an_acquirer_with_sources_is_spoken_for_from_nowhere_else() {
    // The demo acquirer is limited to 10.0.0.0/8; the second has no sources, so nothing binds
    // 127.0.0.1 by source and only the demo acquirer's own limit refuses it.
    let config = default_config_with(&[
        (
            "[[routes]]",
            &format!("[[acquirers]]\nid = \"{SECOND}\"\nname = \"Second acquirer\"\n\n[[routes]]"),
        ),
        (
            "name = \"Demo acquirer\"",
            "name = \"Demo acquirer\"\nsources = [\"10.0.0.0/8\"]",
        ),
    ]);
    let path = config_file("identity-elsewhere", &config);
    let switch = Switch::start(&["--config", path.to_str().unwrap()]);
    let pan = demo_pan(402);
    let mut link = switch.connect();
    assert_eq!(code(&link.call(&naming(ACQUIRER, &pan))), "58");
    assert_eq!(code(&link.call(&naming(SECOND, &pan))), "00");
    assert_eq!(code(&link.call(&naming(ACQUIRER, &pan))), "58");
}

#[test]
fn the_narrowest_range_binds() {
    // 127.0.0.1 lies in both; the second acquirer's single address is narrower than the /8.
    let config = with_second_acquirer(Some("[\"127.0.0.0/8\"]"), "[\"127.0.0.1\"]");
    let path = config_file("identity-narrowest", &config);
    let switch = Switch::start(&["--config", path.to_str().unwrap()]);
    let pan = demo_pan(403);
    let mut link = switch.connect();
    assert_eq!(code(&link.call(&naming(ACQUIRER, &pan))), "58");
    assert_eq!(code(&link.call(&naming(SECOND, &pan))), "00");
}

#[test]
fn a_source_that_is_not_an_address_or_range_stops_the_start() {
    let config = default_config_with(&[(
        "name = \"Demo acquirer\"",
        "name = \"Demo acquirer\"\nsources = [\"10.0.0.300/8\"]",
    )]);
    let path = config_file("identity-bad-source", &config);
    let (status, _, stderr) = run_switch(&["run", "--config", path.to_str().unwrap()]);
    assert_ne!(status, 0);
    assert!(stderr.contains("acquirers[0].sources[0]"), "{stderr}");
    for (sources, problem) in [
        ("[]", "is empty"),
        ("[\"10.1.2.3/8\"]", "host bits"),
        ("[\"::ffff:10.0.0.0/104\"]", "IPv4-mapped"),
        ("[\"10.0.0.0/8\", \"10.0.0.0/8\"]", "already a source"),
    ] {
        let config = default_config_with(&[(
            "name = \"Demo acquirer\"",
            &format!("name = \"Demo acquirer\"\nsources = {sources}"),
        )]);
        let path = config_file("identity-bad-sources", &config);
        let (status, _, stderr) = run_switch(&["run", "--config", path.to_str().unwrap()]);
        assert_ne!(status, 0, "{sources}");
        assert!(stderr.contains(problem), "{sources}: {stderr}");
    }
}

#[test]
fn an_acquirers_requests_in_flight_are_bounded_over_all_its_connections() {
    let config = config_file(
        "inflight-max",
        &default_config_with(&[
            ("accounts = 1000000 ", "accounts = 3000 "),
            (
                "name = \"Demo acquirer\"",
                "name = \"Demo acquirer\"\ninflight_max = 2",
            ),
        ]),
    );
    let switch = Switch::start(&["--config", config.to_str().unwrap()]);
    let mut links = [switch.connect(), switch.connect()];
    // 150 holds of 1.00 written back to back on each of two links, each on a card of its own:
    // at most 2 are being decided at once, the rest of a burst gets 91 at once.
    let mut sent = Vec::new();
    for (l, link) in links.iter_mut().enumerate() {
        for n in 0..150u64 {
            let pan = demo_pan(1_000 + (l as u64) * 150 + n);
            let hold = request("0100", &pan, "000000", 100);
            link.send(&hold);
            sent.push((pan, hold));
        }
    }
    let mut codes = std::collections::BTreeMap::new();
    let mut shed = None;
    for link in &mut links {
        for _ in 0..150 {
            let answer = link.receive();
            if code(&answer) == "91" {
                shed = answer.get(11).map(<[u8]>::to_vec);
            }
            *codes.entry(code(&answer)).or_insert(0u32) += 1;
        }
    }
    assert_eq!(
        codes.values().sum::<u32>(),
        300,
        "every request answered: {codes:?}"
    );
    assert_eq!(
        codes.keys().map(String::as_str).collect::<Vec<_>>(),
        ["00", "91"],
        "{codes:?}"
    );
    // Money moved for the approvals only.
    let mut check = switch.connect();
    let held: i64 = sent
        .iter()
        .map(|(pan, _)| 1_000_000 - available(&mut check, pan))
        .sum();
    assert_eq!(held, i64::from(codes["00"]) * 100);
    // A 91 is not remembered: the same request sent again, alone, is approved.
    let (_, again) = sent
        .iter()
        .find(|(_, hold)| hold.get(11).map(<[u8]>::to_vec) == shed)
        .unwrap();
    assert_eq!(code(&check.call(again)), "00");
}
