//! Card data never at rest or in any output (issue 13, item 4): a full run of the real binary
//! (approvals, declines, completions, reversals, remote and unknown BINs, a bad PAN, track data
//! and a PIN block, the admin API, metrics, snapshots, a clean shutdown, `wal dump` and
//! `wal verify`), then every artifact it left is searched for every test PAN, in every form it
//! could take in a file: ASCII digits, packed BCD (either padding), the 64-bit integer the
//! switch keeps a PAN in (both byte orders); and for the track data and the PIN block.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// Every form of `pan` that a file could hold it in.
fn forms(pan: &str) -> Vec<(String, Vec<u8>)> {
    let digits: Vec<u8> = pan.bytes().map(|b| b - b'0').collect();
    let packed = |digits: &[u8]| -> Vec<u8> {
        digits
            .chunks(2)
            .map(|pair| (pair[0] << 4) | pair.get(1).copied().unwrap_or(0x0F))
            .collect()
    };
    let mut left_padded = digits.clone();
    if left_padded.len() % 2 == 1 {
        left_padded.insert(0, 0);
    }
    let value: u64 = pan.parse().unwrap();
    vec![
        ("ASCII".into(), pan.as_bytes().to_vec()),
        ("BCD, F-padded".into(), packed(&digits)),
        ("BCD, 0-padded".into(), packed(&left_padded)),
        ("u64 little-endian".into(), value.to_le_bytes().to_vec()),
        ("u64 big-endian".into(), value.to_be_bytes().to_vec()),
    ]
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn no_pan_track_data_or_pin_block_in_any_artifact_of_a_full_run() {
    let wal = fresh_wal_dir();
    // The remote issuer: the simulator in this process.
    let issuer = Issuer::start("127.0.0.1:0");
    let sim = &issuer.sim;
    let issuer_address = format!("address = \"{}\"", sim.addr);
    let config = config_file(
        "card-data",
        &default_config_with(&[
            ("accounts = 1000000 ", "accounts = 2000 "),
            (
                "snapshot_interval_seconds = 300",
                "snapshot_interval_seconds = 1",
            ),
            ("address = \"127.0.0.1:9584\"", issuer_address.as_str()),
            ("timeout_ms = 2000", "timeout_ms = 300"),
            // Transactions move to the store on disk, which is searched too.
            (
                "hot_transactions_per_shard_max = 4000000",
                "hot_transactions_per_shard_max = 1",
            ),
        ]),
    );
    // Trace logging, the most any operator could turn on (but mio's, whose trace lines print
    // pointer values that the harness's check for PAN-like digit runs would take for cards).
    let switch = Switch::start_logging(
        &wal,
        &["--config", config.to_str().unwrap()],
        "trace,mio=info",
    );
    switch.wait_for_output("issuer link signed on");
    let mut link = switch.connect();
    let mut pans: Vec<String> = Vec::new();

    // Remote cards: an approval and its reversal, and a timeout whose reversal is queued (the
    // queued messages hold the card number, sealed in the log).
    let remote = "4111111111111111";
    let mut remote_pans = vec![remote.to_owned()];
    let approved = request("0100", remote.as_bytes(), "000000", 400);
    assert_eq!(code(&link.call(&approved)), "00");
    assert_eq!(code(&link.call(&referring("0400", &approved, 400))), "00");
    let silent_pan = {
        let pan = switch::domain::Pan::from_scheme("411111", 7, 9).unwrap();
        let (digits, len) = pan.digits();
        String::from_utf8(digits[..len].to_vec()).unwrap()
    };
    remote_pans.push(silent_pan.clone());
    sim.control.set_silent(true);
    let timed_out = request("0100", silent_pan.as_bytes(), "000000", 500);
    assert_eq!(code(&link.call(&timed_out)), "91");
    sim.control.set_silent(false);

    // On-us traffic of every kind, on cards of their own.
    for index in [600u64, 601, 602, 603] {
        let pan = demo_pan(index);
        pans.push(String::from_utf8(pan.clone()).unwrap());
        let hold = request("0100", &pan, "000000", 2_000);
        assert_eq!(code(&link.call(&hold)), "00");
        assert_eq!(code(&link.call(&referring("0220", &hold, 1_500))), "00");
        let purchase = request("0200", &pan, "000000", 700);
        assert_eq!(code(&link.call(&purchase)), "00");
        assert_eq!(code(&link.call(&referring("0400", &purchase, 700))), "00");
        assert_eq!(available(&mut link, &pan), 1_000_000 - 1_500);
    }
    // Declines: no funds (51), blocked (62), over the per-transaction limit (61), velocity (65).
    for (index, amount, expected) in [(1u64, 100, "51"), (2, 100, "62"), (4, 6_000, "61")] {
        let pan = demo_pan(index);
        pans.push(String::from_utf8(pan.clone()).unwrap());
        assert_eq!(
            code(&link.call(&request("0100", &pan, "000000", amount))),
            expected
        );
    }
    let busy = demo_pan(604);
    pans.push(String::from_utf8(busy.clone()).unwrap());
    let codes: Vec<String> = (0..21)
        .map(|_| code(&link.call(&request("0100", &busy, "000000", 1))))
        .collect();
    assert_eq!(codes.last().map(String::as_str), Some("65"));
    pans.extend(remote_pans);
    // An unknown BIN (15), a PAN that fails the Luhn check (14).
    for (pan, expected) in [("5500000000000004", "15"), ("4000000000000003", "14")] {
        pans.push(pan.to_owned());
        assert_eq!(
            code(&link.call(&request("0100", pan.as_bytes(), "000000", 100))),
            expected
        );
    }
    // Track 2, track 1 and a PIN block on an approved purchase.
    let track_pan = demo_pan(606);
    pans.push(String::from_utf8(track_pan.clone()).unwrap());
    let track2 = format!(
        "{}=30121010000000000000",
        String::from_utf8(track_pan.clone()).unwrap()
    );
    let track1 = format!(
        "B{}^CARDHOLDER/TEST^3012101000000000000",
        String::from_utf8(track_pan.clone()).unwrap()
    );
    let pin_block = [0x9Fu8, 0x3C, 0x51, 0xE2, 0x07, 0xB4, 0x6D, 0xA8];
    let mut swiped = request("0200", &track_pan, "000000", 300);
    swiped.set(35, track2.as_bytes().to_vec());
    swiped.set(45, track1.as_bytes().to_vec());
    swiped.set(52, pin_block.to_vec());
    assert_eq!(code(&link.call(&swiped)), "00");

    // The operators' side: every admin call about these cards, metrics, decisions.
    let mut texts: Vec<(String, String)> = Vec::new();
    for pan in &pans[..4] {
        for path in [
            format!("/v1/accounts/{pan}"),
            format!("/v1/accounts/{pan}/transactions"),
        ] {
            let (status, body) = http(&switch, "GET", &path, Some(TOKEN), &[], "");
            assert_eq!(status, 200, "{path}: {body}");
            texts.push((path, body));
        }
    }
    let (status, body) = http(
        &switch,
        "POST",
        &format!("/v1/accounts/{}/top-ups", pans[0]),
        Some(TOKEN),
        &[("Idempotency-Key", "card-data-1")],
        "{\"amount\": \"5.00\"}",
    );
    assert_eq!(status, 200, "{body}");
    texts.push(("top-up".into(), body));
    let (status, body) = http(
        &switch,
        "GET",
        &format!("/v1/accounts/{}", "4000000000000003"),
        Some(TOKEN),
        &[],
        "",
    );
    assert_eq!(status, 400, "{body}");
    texts.push(("a bad PAN in the path".into(), body));
    for path in ["/v1/ledger/totals", "/v1/config/risk"] {
        let (_, body) = http(&switch, "GET", path, Some(TOKEN), &[], "");
        texts.push((path.into(), body));
    }
    let swiped_rrn = String::from_utf8(swiped.get(37).unwrap().to_vec()).unwrap();
    let (_, body) = http(
        &switch,
        "GET",
        &format!("/v1/decisions?rrn={swiped_rrn}"),
        Some(TOKEN),
        &[],
        "",
    );
    assert!(body.contains("\"response_code\":\"00\""), "{body}");
    texts.push(("decision by RRN".into(), body));
    let (_, metrics) = switch.http_get("/metrics");
    texts.push(("/metrics".into(), metrics));

    // A snapshot of the state above, then a clean shutdown.
    let deadline = Instant::now() + Duration::from_secs(30);
    while switch
        .output()
        .iter()
        .filter(|l| l.contains("snapshot written"))
        .nth(1)
        .is_none()
    {
        assert!(Instant::now() < deadline, "no snapshot after the traffic");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(link);
    let (status, output) = switch.terminate();
    assert!(status.success());
    texts.push(("the switch's output".into(), output.join("\n")));
    for command in ["dump", "verify"] {
        let (code, stdout, stderr) = run_switch(&["wal", command, "--dir", wal.to_str().unwrap()]);
        assert_eq!(code, 0, "wal {command}: {stderr}");
        texts.push((format!("wal {command}"), format!("{stdout}\n{stderr}")));
    }

    // Every artifact: the texts above, every file the run left in its log directory.
    let mut files = Vec::new();
    files_under(&wal, &mut files);
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "snap")),
        "a snapshot file among {files:?}"
    );
    let mut artifacts: Vec<(String, Vec<u8>)> = texts
        .into_iter()
        .map(|(name, text)| (name, text.into_bytes()))
        .collect();
    for file in files {
        let mut bytes = std::fs::read(&file).unwrap();
        // The store's journal is a file of 64 MiB made at once: its unwritten end (zeros)
        // holds nothing, and searching it byte by byte takes minutes in a debug build.
        let written = bytes.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1);
        bytes.truncate(written);
        artifacts.push((file.display().to_string(), bytes));
    }
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    for pan in &pans {
        for (form, bytes) in forms(pan) {
            secrets.push((
                format!("PAN {}…{} as {form}", &pan[..6], &pan[pan.len() - 4..]),
                bytes,
            ));
        }
    }
    secrets.push(("track 2".into(), track2.into_bytes()));
    secrets.push(("track 1".into(), track1.into_bytes()));
    secrets.push(("the PIN block".into(), pin_block.to_vec()));
    secrets.push((
        "track 2 discretionary data".into(),
        b"=30121010000000000000".to_vec(),
    ));
    // Positive controls: the log holds queued messages for the issuer (sealed), and the
    // cards are in the artifacts, masked.
    assert!(
        artifacts
            .iter()
            .any(|(name, bytes)| name == "wal dump"
                && bytes.windows(13).any(|w| w == b"queued advice")),
        "no queued advice in the log: the remote path was not exercised"
    );
    let masked = format!("{}******{}", &pans[0][..6], &pans[0][pans[0].len() - 4..]);
    assert!(
        artifacts
            .iter()
            .any(|(_, bytes)| bytes.windows(masked.len()).any(|w| w == masked.as_bytes())),
        "the masked card {masked} is in no artifact: the search looked at the wrong things"
    );
    let mut searched = 0;
    for (name, bytes) in &artifacts {
        searched += bytes.len();
        for (secret, pattern) in &secrets {
            assert!(
                !bytes
                    .windows(pattern.len())
                    .any(|w| w == pattern.as_slice()),
                "{secret} found in {name}"
            );
        }
    }
    // The search looked at something: the log, snapshots and outputs of the whole run.
    assert!(searched > 10_000, "only {searched} bytes searched");
    assert!(artifacts.len() >= 20, "{} artifacts", artifacts.len());
}
