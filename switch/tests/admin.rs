//! The admin API over HTTP against the real binary: the bearer token, precise 400s, 404s,
//! top-ups and withdrawals reflected in ISO 8583 balance inquiries, idempotency keys, blocking,
//! a new account, the conservation total, and all of it after a restart.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;

fn pan_text(index: u64) -> String {
    String::from_utf8(demo_pan(index)).unwrap()
}

/// Ledger and available balance from field 54 of an ISO 8583 balance inquiry.
fn iso_balances(link: &mut Link, pan: &[u8]) -> (i64, i64) {
    let response = link.call(&request("0200", pan, "310000", 0));
    assert_eq!(code(&response), "00");
    let f54 = response.get(54).unwrap();
    let amount = |kind: &[u8]| {
        let block = f54.chunks(20).find(|b| &b[2..4] == kind).unwrap();
        let value: i64 = std::str::from_utf8(&block[8..20]).unwrap().parse().unwrap();
        if block[7] == b'D' { -value } else { value }
    };
    (amount(b"01"), amount(b"02"))
}

#[test]
fn tokens_bad_input_and_unknown_cards_get_clear_answers() {
    let switch = Switch::start(&[]);
    let pan = pan_text(401);
    let path = format!("/v1/accounts/{pan}");
    assert_eq!(http(&switch, "GET", &path, None, &[], "").0, 401);
    assert_eq!(
        http(
            &switch,
            "GET",
            &path,
            Some("wrong-token-wrong-token"),
            &[],
            ""
        )
        .0,
        401
    );
    let (status, body) = http(&switch, "GET", "/v1/openapi.json", None, &[], "");
    assert_eq!(status, 200, "the document needs no token");
    assert_eq!(
        json(&body)["openapi"].as_str().unwrap().chars().next(),
        Some('3')
    );

    let (status, body) = http(&switch, "GET", &path, Some(TOKEN), &[], "");
    assert_eq!(status, 200, "{body}");
    let account = json(&body);
    assert_eq!(account["ledger"], "10000.00");
    assert_eq!(
        account["card"],
        "400000******4011".replace("4011", &pan[12..])
    );
    assert!(!body.contains(&pan), "the PAN is given back masked only");

    let cases: [(&str, String, &str, &str, u16, &str); 6] = [
        (
            "GET",
            "/v1/accounts/4000000000000003".into(),
            "",
            "",
            400,
            "Luhn",
        ),
        (
            "GET",
            "/v1/accounts/4111111111111111".into(),
            "",
            "",
            404,
            "no account",
        ),
        (
            "POST",
            format!("{path}/top-ups"),
            "{\"amount\": \"1.00\"}",
            "",
            400,
            "Idempotency-Key",
        ),
        (
            "POST",
            format!("{path}/top-ups"),
            "{\"amount\": 1}",
            "k1",
            400,
            "malformed JSON",
        ),
        (
            "POST",
            format!("{path}/top-ups"),
            "{\"amount\": \"1.001\"}",
            "k2",
            400,
            "more than 2 decimals",
        ),
        (
            "POST",
            format!("{path}/withdrawals"),
            "{\"amount\": \"-5\"}",
            "k3",
            400,
            "not above zero",
        ),
    ];
    for (method, path, body, key, status, needle) in cases {
        let headers: Vec<(&str, &str)> = if key.is_empty() {
            vec![]
        } else {
            vec![("Idempotency-Key", key)]
        };
        let (got, answer) = http(&switch, method, &path, Some(TOKEN), &headers, body);
        assert_eq!(got, status, "{method} {path} {body}: {answer}");
        assert!(answer.contains(needle), "{method} {path} {body}: {answer}");
        assert!(!answer.contains("4000000000000003"), "{answer}");
    }
}

#[test]
fn top_ups_and_withdrawals_move_money_once_and_show_in_iso_8583() {
    let wal = fresh_wal_dir();
    let switch = Switch::start_with_wal(&wal, &[]);
    let mut link = switch.connect();
    let pan = pan_text(402);
    let (_, totals) = http(&switch, "GET", "/v1/ledger/totals", Some(TOKEN), &[], "");
    let total_before = json(&totals)["total_minor"].clone();
    assert_eq!(
        iso_balances(&mut link, pan.as_bytes()),
        (1_000_000, 1_000_000)
    );

    let top_up = |key: &str, amount: &str| {
        http(
            &switch,
            "POST",
            &format!("/v1/accounts/{pan}/top-ups"),
            Some(TOKEN),
            &[("Idempotency-Key", key)],
            &format!("{{\"amount\": \"{amount}\"}}"),
        )
    };
    let (status, body) = top_up("top-up-1", "25.50");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["balances"]["ledger"], "10025.50");
    assert_eq!(
        iso_balances(&mut link, pan.as_bytes()),
        (1_002_550, 1_002_550)
    );
    // The same key again: the same answer, no second top-up; another amount under it: 409.
    assert_eq!(top_up("top-up-1", "25.50"), (status, body));
    assert_eq!(top_up("top-up-1", "30.00").0, 409);
    assert_eq!(
        iso_balances(&mut link, pan.as_bytes()),
        (1_002_550, 1_002_550)
    );

    let withdraw = |key: &str, amount: &str| {
        http(
            &switch,
            "POST",
            &format!("/v1/accounts/{pan}/withdrawals"),
            Some(TOKEN),
            &[("Idempotency-Key", key)],
            &format!("{{\"amount\": \"{amount}\"}}"),
        )
    };
    let (status, body) = withdraw("withdrawal-1", "0.50");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        iso_balances(&mut link, pan.as_bytes()),
        (1_002_500, 1_002_500)
    );
    let (status, body) = withdraw("withdrawal-2", "100000.00");
    assert_eq!(status, 409, "{body}");
    assert_eq!(json(&body)["response_code"], "51");
    assert_eq!(
        iso_balances(&mut link, pan.as_bytes()),
        (1_002_500, 1_002_500)
    );

    // An authorization over ISO 8583 between them: the totals still add up.
    assert_eq!(
        code(&link.call(&request("0100", pan.as_bytes(), "000000", 1_000))),
        "00"
    );
    let (_, totals) = http(&switch, "GET", "/v1/ledger/totals", Some(TOKEN), &[], "");
    assert_eq!(json(&totals)["total_minor"], total_before, "conservation");

    // Block, and the card declines 62 over ISO 8583; unblock.
    let (status, body) = http(
        &switch,
        "POST",
        &format!("/v1/accounts/{pan}/block"),
        Some(TOKEN),
        &[],
        "",
    );
    assert_eq!(
        (status, json(&body)["blocked"].clone()),
        (200, serde_json::json!(true))
    );
    assert_eq!(
        code(&link.call(&request("0100", pan.as_bytes(), "000000", 100))),
        "62"
    );

    // A new account, opened at zero and topped up.
    let new = pan_text(5_000_000);
    let (status, body) = http(
        &switch,
        "POST",
        "/v1/accounts",
        Some(TOKEN),
        &[],
        &format!("{{\"pan\": \"{new}\"}}"),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        http(
            &switch,
            "POST",
            "/v1/accounts",
            Some(TOKEN),
            &[],
            &format!("{{\"pan\": \"{new}\"}}")
        )
        .0,
        409
    );
    let (status, _) = http(
        &switch,
        "POST",
        &format!("/v1/accounts/{new}/top-ups"),
        Some(TOKEN),
        &[("Idempotency-Key", "new-1")],
        "{\"amount\": \"12.00\"}",
    );
    assert_eq!(status, 200);
    assert_eq!(iso_balances(&mut link, new.as_bytes()), (1_200, 1_200));

    // All of it survives a restart: it went through the log.
    drop(link);
    let (exit, _) = switch.terminate();
    assert!(exit.success());
    let switch = Switch::start_with_wal(&wal, &[]);
    let mut link = switch.connect();
    assert_eq!(
        code(&link.call(&request("0100", pan.as_bytes(), "000000", 100))),
        "62",
        "still blocked"
    );
    assert_eq!(iso_balances(&mut link, new.as_bytes()), (1_200, 1_200));
    let (_, body) = http(
        &switch,
        "GET",
        &format!("/v1/accounts/{pan}"),
        Some(TOKEN),
        &[],
        "",
    );
    let account = json(&body);
    assert_eq!(
        (account["ledger"].clone(), account["held"].clone()),
        (serde_json::json!("10025.00"), serde_json::json!("10.00"))
    );
    let (status, _) = http(
        &switch,
        "POST",
        &format!("/v1/accounts/{pan}/unblock"),
        Some(TOKEN),
        &[],
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(
        code(&link.call(&request("0100", pan.as_bytes(), "000000", 100))),
        "00"
    );
    let (_, totals) = http(&switch, "GET", "/v1/ledger/totals", Some(TOKEN), &[], "");
    assert_eq!(
        json(&totals)["total_minor"],
        total_before,
        "conservation after recovery"
    );
}

#[test]
fn every_documented_route_is_served() {
    let switch = Switch::start(&[]);
    let pan = pan_text(403);
    for (method, path) in switch::ops::admin::ROUTES {
        let path = path.replace("{pan}", &pan);
        let (status, body) = http(
            &switch,
            method,
            &path,
            Some(TOKEN),
            &[("Idempotency-Key", "r")],
            "{}",
        );
        assert!(
            status != 404 && status != 405,
            "{method} {path}: {status} {body}"
        );
    }
}

#[test]
fn an_accounts_transactions_and_the_explanation_of_a_decision() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    let pan = pan_text(404);
    let hold = request("0100", pan.as_bytes(), "000000", 2_500);
    assert_eq!(code(&link.call(&hold)), "00");
    let big = request("0200", pan.as_bytes(), "000000", 5_000_000);
    assert_eq!(code(&link.call(&big)), "51");
    let (status, body) = http(
        &switch,
        "GET",
        &format!("/v1/accounts/{pan}/transactions"),
        Some(TOKEN),
        &[],
        "",
    );
    assert_eq!(status, 200, "{body}");
    let list = json(&body)["transactions"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0]["mti"].as_str(), list[0]["response_code"].as_str()),
        (Some("0200"), Some("51"))
    );
    assert_eq!(
        (list[1]["amount"].as_str(), list[1]["approved"].as_bool()),
        (Some("25.00"), Some(true))
    );
    assert!(!body.contains(&pan), "{body}");

    // Why was the 0200 declined? By acquirer, STAN and date, or by RRN.
    let stan = String::from_utf8(big.get(11).unwrap().to_vec()).unwrap();
    let date = String::from_utf8(big.get(7).unwrap()[..4].to_vec()).unwrap();
    let (status, body) = http(
        &switch,
        "GET",
        &format!("/v1/decisions?acquirer=123456&stan={stan}&date={date}"),
        Some(TOKEN),
        &[],
        "",
    );
    assert_eq!(status, 200, "{body}");
    let decision = json(&body)["decisions"][0].clone();
    assert_eq!(
        (
            decision["response_code"].as_str(),
            decision["check"].as_str()
        ),
        (Some("51"), Some("funds"))
    );
    let rrn = String::from_utf8(big.get(37).unwrap().to_vec()).unwrap();
    let (status, body) = http(
        &switch,
        "GET",
        &format!("/v1/decisions?rrn={rrn}"),
        Some(TOKEN),
        &[],
        "",
    );
    assert_eq!(
        (status, json(&body)["decisions"][0]["stan"].as_str()),
        (200, Some(stan.as_str()))
    );
    assert_eq!(
        http(&switch, "GET", "/v1/decisions?stan=1", Some(TOKEN), &[], "").0,
        400
    );
    assert_eq!(
        http(
            &switch,
            "GET",
            "/v1/decisions?rrn=nothing",
            Some(TOKEN),
            &[],
            ""
        )
        .0,
        404
    );
}

#[test]
fn risk_rules_and_routes_reload_from_the_file_by_the_api_and_by_sighup() {
    let path = config_file("reload", "[demo]\naccounts = 2000\n");
    let switch = Switch::start(&["--config", path.to_str().unwrap()]);
    let mut link = switch.connect();
    let pan = demo_pan(405);
    let mut casino = request("0100", &pan, "000000", 100);
    casino.set(18, b"5933".to_vec());
    assert_eq!(code(&link.call(&casino)), "00");

    // A file that does not parse is refused with its error; the running rules stay.
    std::fs::write(&path, "[demo]\naccounts = 2000\n[risk\n").unwrap();
    let (status, body) = http(&switch, "POST", "/v1/config/reload", Some(TOKEN), &[], "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(path.to_str().unwrap()), "{body}");
    let mut again = request("0100", &pan, "000000", 100);
    again.set(18, b"5933".to_vec());
    assert_eq!(code(&link.call(&again)), "00");

    // A valid one takes effect for the next request.
    std::fs::write(
        &path,
        "[demo]\naccounts = 2000\n\n[risk]\nblocked_merchant_categories = [5933]\n",
    )
    .unwrap();
    let (status, body) = http(&switch, "POST", "/v1/config/reload", Some(TOKEN), &[], "");
    assert_eq!(status, 200, "{body}");
    let mut blocked = request("0100", &pan, "000000", 100);
    blocked.set(18, b"5933".to_vec());
    assert_eq!(code(&link.call(&blocked)), "57");
    let (_, risk) = http(&switch, "GET", "/v1/config/risk", Some(TOKEN), &[], "");
    let rules = json(&risk)["rules"].clone();
    let blocked = rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "blocked_merchant_categories")
        .unwrap_or_else(|| panic!("{risk}"));
    assert_eq!(blocked["merchant_categories"], serde_json::json!([5933]));
    assert_eq!(blocked["code"], "57");

    // SIGHUP: the rule is gone again.
    std::fs::write(&path, "[demo]\naccounts = 2000\n").unwrap();
    let pid = switch.pid();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    switch.wait_for_output("configuration reloaded (routes, risk) on SIGHUP");
    let mut allowed = request("0100", &pan, "000000", 100);
    allowed.set(18, b"5933".to_vec());
    assert_eq!(code(&link.call(&allowed)), "00");
}

#[test]
fn a_key_past_the_idempotency_window_still_moves_money_once_and_input_never_panics_or_echoes_a_pan()
{
    let config = config_file(
        "short-retention",
        "[limits]\nidempotency_retention_seconds = 1\n\n[demo]\naccounts = 2000\n",
    );
    let switch = Switch::start(&["--config", config.to_str().unwrap()]);
    let mut link = switch.connect();
    let pan = pan_text(406);
    let top_up = |amount: &str| {
        http(
            &switch,
            "POST",
            &format!("/v1/accounts/{pan}/top-ups"),
            Some(TOKEN),
            &[("Idempotency-Key", "late-retry")],
            &format!("{{\"amount\": \"{amount}\"}}"),
        )
    };
    assert_eq!(top_up("5.00").0, 200);
    // Two retentions pass: the table has forgotten the key, the ledger has not.
    std::thread::sleep(std::time::Duration::from_millis(5_000));
    let (status, body) = top_up("5.00");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("applied once already"), "{body}");
    assert_eq!(
        iso_balances(&mut link, pan.as_bytes()),
        (1_000_500, 1_000_500)
    );
    assert_eq!(top_up("6.00").0, 409, "another request under the key");

    // Input that used to panic the handler, or to come back in the error.
    let (status, body) = top_up("79228162514264337593543950335");
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(
        &switch,
        "POST",
        "/v1/accounts",
        Some(TOKEN),
        &[],
        "{\"pan\": 4000000000000002}",
    );
    assert_eq!(status, 400, "{body}");
    assert!(!body.contains("4000000000000002"), "{body}");
}

#[test]
fn a_reload_that_would_strand_on_us_cards_or_change_the_token_key_is_refused() {
    let path = config_file("reload-refused", "[demo]\naccounts = 2000\n");
    let switch = Switch::start(&["--config", path.to_str().unwrap()]);
    std::fs::write(
        &path,
        "[demo]\naccounts = 2000\n\n[[routes]]\nprefix = \"411111\"\nto = \"issuer:sim\"\n",
    )
    .unwrap();
    let (status, body) = http(&switch, "POST", "/v1/config/reload", Some(TOKEN), &[], "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("on-us route of 400000"), "{body}");
    std::fs::write(
        &path,
        "[demo]\naccounts = 2000\n\n[ledger]\ntoken_key = \"00112233445566778899aabbccddeeff\"\n",
    )
    .unwrap();
    let (status, body) = http(&switch, "POST", "/v1/config/reload", Some(TOKEN), &[], "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("token_key"), "{body}");
    assert!(
        !body.contains("00112233445566778899aabbccddeeff"),
        "the key is never shown"
    );
    let mut link = switch.connect();
    assert_eq!(
        code(&link.call(&request("0100", &demo_pan(407), "000000", 100))),
        "00"
    );
}
