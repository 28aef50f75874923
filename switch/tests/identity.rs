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
    // Two acquirers both claim 127.0.0.0/8: nothing is bound by source, but the demo acquirer,
    // limited to 10.0.0.0/8, is refused from 127.0.0.1.
    let config = with_second_acquirer(Some("[\"10.0.0.0/8\"]"), "[\"127.0.0.1\", \"::1\"]");
    let path = config_file("identity-elsewhere", &config);
    let switch = Switch::start(&["--config", path.to_str().unwrap()]);
    let pan = demo_pan(402);
    let mut link = switch.connect();
    assert_eq!(code(&link.call(&naming(ACQUIRER, &pan))), "58");
    assert_eq!(code(&link.call(&naming(SECOND, &pan))), "00");

    let config = with_second_acquirer(Some("[\"127.0.0.0/8\"]"), "[\"127.0.0.1\"]");
    let path = config_file("identity-ambiguous", &config);
    let switch = Switch::start(&["--config", path.to_str().unwrap()]);
    let mut link = switch.connect();
    // Both admit 127.0.0.1, so the connection binds by its first request, as without sources.
    assert_eq!(code(&link.call(&naming(ACQUIRER, &pan))), "00");
    assert_eq!(code(&link.call(&naming(SECOND, &pan))), "58");
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
}
