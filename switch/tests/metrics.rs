//! `GET /metrics` after a known burst of traffic: every counter and histogram count matches
//! exactly what was sent, in the Prometheus text format, without a PAN anywhere.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::HashMap;

use common::*;

/// The samples of a text-format scrape: `name{labels}` → value. Comments and blank lines are
/// skipped; a line that is not `series value` fails the test.
fn samples(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
        assert!(
            out.insert(series.to_owned(), value).is_none(),
            "series twice: {series}"
        );
    }
    out
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no series {series}"))
}

#[test]
fn a_burst_of_500_approvals_is_counted_exactly() {
    let switch = Switch::start(&[]);
    let (status, before) = switch.http_get("/metrics");
    assert!(status.contains("200"), "{status}");
    let before = samples(&before);
    assert!(
        !before.contains_key(
            "switch_transactions_total{mti=\"0100\",response_code=\"00\",route=\"on-us\"}"
        ),
        "nothing counted before any traffic"
    );

    let mut link = switch.connect();
    let requests: Vec<_> = (0..500)
        .map(|i| request("0100", &demo_pan(300 + i % 50), "000000", 1))
        .collect();
    for r in &requests {
        link.send(r);
    }
    for _ in &requests {
        assert_eq!(code(&link.receive()), "00");
    }

    let (_, text) = switch.http_get("/metrics");
    assert!(text.len() < 1 << 20, "a scrape of {} bytes", text.len());
    // (Float sums can hold Luhn-valid runs of digits: look for the PANs themselves.)
    for i in 300..350 {
        let pan = String::from_utf8(demo_pan(i)).unwrap();
        assert!(!text.contains(&pan), "a PAN in the scrape");
    }
    let after = samples(&text);
    assert_eq!(
        value(
            &after,
            "switch_transactions_total{mti=\"0100\",response_code=\"00\",route=\"on-us\"}"
        ),
        500.0
    );
    let answered: f64 = after
        .iter()
        .filter(|(k, _)| k.starts_with("switch_transactions_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(answered, 500.0, "nothing else was answered");
    for stage in ["admission", "risk", "routing", "ledger", "wal", "total"] {
        assert_eq!(
            value(
                &after,
                &format!("switch_stage_duration_seconds_count{{stage=\"{stage}\"}}")
            ),
            500.0,
            "stage {stage}"
        );
        assert_eq!(
            value(
                &after,
                &format!("switch_stage_duration_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}}")
            ),
            500.0
        );
    }
    assert_eq!(value(&after, "switch_wal_batch_records_sum"), 500.0);
    let groups = value(&after, "switch_wal_batch_records_count");
    assert!((1.0..=500.0).contains(&groups), "{groups} groups");
    assert_eq!(
        value(&after, "switch_wal_fsync_duration_seconds_count"),
        groups,
        "one fdatasync per group"
    );
    assert_eq!(value(&after, "switch_inflight_requests"), 0.0);
    assert_eq!(
        value(&after, "switch_acquirer_connections{acquirer=\"123456\"}"),
        1.0
    );
    assert_eq!(value(&after, "switch_wal_failed"), 0.0);
    assert!(value(&after, "process_resident_memory_bytes") > 0.0);

    // A risk decline is counted under its rule (and the dashboard's panel has a series).
    let mut casino = request("0100", &demo_pan(400), "000000", 1);
    casino.set(18, b"7995".to_vec());
    assert_eq!(code(&link.call(&casino)), "57");
    let (_, text) = switch.http_get("/metrics");
    assert_eq!(
        value(
            &samples(&text),
            "switch_risk_decisions_total{decision=\"declined\",rule=\"gambling-mcc-7995\"}"
        ),
        1.0
    );

    // Every metric the committed Grafana dashboard queries is one the switch exports.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/grafana-dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut queried = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("switch_") || word.starts_with("process_") {
                    queried.push(word.to_owned());
                }
            }
        }
    }
    assert!(queried.len() >= 14, "{queried:?}");
    for metric in queried {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{metric}{{"))
                    || l.starts_with(&format!("{metric} "))),
            "the dashboard queries {metric}, which the switch does not export"
        );
    }

    // The connection's count goes when it does.
    drop(link);
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    loop {
        let (_, text) = switch.http_get("/metrics");
        if value(
            &samples(&text),
            "switch_acquirer_connections{acquirer=\"123456\"}",
        ) == 0.0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the connection stayed counted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
