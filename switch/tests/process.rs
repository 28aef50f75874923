//! The process interface: start-up errors, graceful shutdown, exit codes (DESIGN §2.5).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;

#[test]
fn sigterm_answers_every_request_read_and_exits_zero() {
    const BURST: usize = 40;
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    // About 5 KB in one write: the switch reads it in one go, so all of it is in flight.
    let mut burst = Vec::new();
    for i in 0..BURST {
        burst.extend_from_slice(&link.frame(&request(
            "0100",
            &demo_pan(60 + i as u64 % 7),
            "000000",
            1,
        )));
    }
    link.send_raw(&burst);
    let first = link.receive();
    assert_eq!(code(&first), "00");
    let (status, output) = switch.terminate();
    let mut answered = 1;
    while let Some(response) = link.try_receive() {
        assert_eq!(code(&response), "00");
        answered += 1;
    }
    assert_eq!(
        answered, BURST,
        "every request read before SIGTERM is answered, then the connection closes"
    );
    assert!(status.success(), "exit status {status:?}");
    let text = output.join("\n");
    assert!(text.contains("SIGTERM received"), "{text}");
    assert!(text.contains("drained=true"), "{text}");
    assert!(
        text.contains("shutdown complete") && text.contains("conserved=true"),
        "{text}"
    );
}

#[test]
fn bad_config_exits_nonzero_with_one_line_naming_file_and_key() {
    let path = config_file(
        "bad",
        &default_config_with(&[("shards = 0 ", "shards = 999 ")]),
    );
    let (code, _, stderr) = run_switch(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("switch: error: "), "{stderr}");
    assert!(
        lines[0].contains(&format!(
            "{}: ledger.shards: 999 is above the maximum 256",
            path.display()
        )),
        "{stderr}"
    );
}

#[test]
fn unparsable_config_names_the_line() {
    let path = config_file("unparsable", "[listeners]\nacquirer = \n");
    let (code, _, stderr) = run_switch(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains("line 2"),
        "{stderr}"
    );
}

#[test]
fn missing_config_file_is_named() {
    let (code, _, stderr) = run_switch(&["run", "--config", "/nonexistent/switch.toml"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("/nonexistent/switch.toml: cannot read"),
        "{stderr}"
    );
}

#[test]
fn port_in_use_exits_nonzero_naming_the_address() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let (code, _, stderr) = run_switch(&["run", "--listen", &addr]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "cannot listen for acquirers on {addr} (listeners.acquirer)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("address already in use"),
        "{stderr}"
    );
}

#[test]
fn check_config_accepts_the_committed_default() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/switch.toml");
    let (code, stdout, stderr) = run_switch(&["check-config", "--config", path]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("valid"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(path).unwrap(),
        switch::config::EMBEDDED,
        "embedded default is the committed file"
    );
}

#[test]
fn health_endpoints_answer_on_the_http_listener() {
    let switch = Switch::start(&[]);
    assert_eq!(
        switch.http_get("/healthz"),
        ("HTTP/1.1 200 OK".to_owned(), "ok\n".to_owned())
    );
    assert_eq!(
        switch.http_get("/readyz"),
        ("HTTP/1.1 200 OK".to_owned(), "ready\n".to_owned())
    );
    assert!(switch.http_get("/nothing").0.contains("404"));
}

#[test]
fn http_port_in_use_exits_nonzero_naming_the_address() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let (code, _, stderr) = run_switch(&["run", "--listen", "127.0.0.1:0", "--http", &addr]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "cannot listen for HTTP on {addr} (listeners.http)"
        )),
        "{stderr}"
    );
}

#[test]
fn the_pan_detector_of_the_harness_finds_pans_and_only_pans() {
    assert!(has_pan_like_run("card 4000000000000002 approved"));
    assert!(!has_pan_like_run("card 4000000000000003 (not Luhn)"));
    assert!(!has_pan_like_run(
        "file=/var/wal/00000000000000000000.wal offset=32"
    ));
    assert!(!has_pan_like_run("card …0002 #1a2b3c4d at=1795000000"));
}

/// Acquirers are not accepted before the switch can answer: during recovery the port is
/// bound (a second switch would fail at once) but refuses connections, so clients fail over
/// instead of hanging; `/readyz` says 503 meanwhile.
#[test]
fn no_acquirer_connection_is_accepted_before_recovery_is_done() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    // Two million demo accounts take a while to build in a debug build.
    let config = config_file(
        "slow-recovery",
        &default_config_with(&[("accounts = 1000000 ", "accounts = 2000000 ")]),
    );
    let wal = fresh_wal_dir();
    let (mut child, lines) = spawn_switch(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        &addr,
        "--http",
        "127.0.0.1:0",
        "--wal-dir",
        wal.to_str().unwrap(),
    ]);
    let find = |needle: &str| {
        lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    };
    let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
    let http = loop {
        if let Some(line) = find("HTTP (healthz, readyz) on ") {
            let rest = &line[line.find(" on ").unwrap() + 4..];
            break rest.split_whitespace().next().unwrap().to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no HTTP listener");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let readyz = || {
        let mut stream = std::net::TcpStream::connect(&http).unwrap();
        std::io::Write::write_all(
            &mut stream,
            b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut response = String::new();
        std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
        response.lines().next().unwrap_or_default().to_owned()
    };
    let mut refused_while_recovering = 0;
    while find("listening for acquirers on").is_none() {
        assert!(std::time::Instant::now() < deadline, "never listened");
        if readyz().contains("503") {
            let connected = std::net::TcpStream::connect(&addr).is_ok();
            if readyz().contains("503") {
                assert!(!connected, "an acquirer was accepted during recovery");
                refused_while_recovering += 1;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        refused_while_recovering > 0,
        "recovery was too quick to check"
    );
    assert!(
        std::net::TcpStream::connect(&addr).is_ok(),
        "accepted once ready"
    );
    assert!(readyz().contains("200"));
    let _ = child.kill();
    let _ = child.wait();
}

/// `logging.format = "json"`: every line one JSON object; a decline is one line at info naming
/// the check that decided it, and no line holds the PAN.
#[test]
fn json_logs_and_one_line_per_decline_naming_its_check() {
    let config = config_file(
        "json-logs",
        "[logging]\nformat = \"json\"\n\n[demo]\naccounts = 2000\n",
    );
    let wal = fresh_wal_dir();
    let (mut child, lines) = spawn_switch(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--wal-dir",
        wal.to_str().unwrap(),
    ]);
    let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
    let addr = loop {
        let found = lines.lock().unwrap().iter().find_map(|l| {
            let value: serde_json::Value = serde_json::from_str(l).ok()?;
            let message = value["fields"]["message"].as_str()?;
            message
                .strip_prefix("listening for acquirers on ")
                .map(|a| a.parse::<std::net::SocketAddr>().unwrap())
        });
        if let Some(addr) = found {
            break addr;
        }
        assert!(std::time::Instant::now() < deadline, "never listened");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut link = Link::connect(
        addr,
        adapters::DialectName::Default,
        adapters::FrameHeader::Binary2,
    );
    let declined = link.call(&request("0100", &demo_pan(1), "000000", 100));
    assert_eq!(code(&declined), "51");
    let stan = String::from_utf8(declined.get(11).unwrap().to_vec()).unwrap();
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    let decline = loop {
        let found = lines.lock().unwrap().iter().find_map(|l| {
            let value: serde_json::Value = serde_json::from_str(l).ok()?;
            (value["fields"]["message"] == "declined").then_some(value)
        });
        if let Some(found) = found {
            break found;
        }
        assert!(std::time::Instant::now() < deadline, "no decline line");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(decline["level"], "INFO");
    assert_eq!(decline["fields"]["response_code"], "51");
    assert_eq!(decline["fields"]["check"], "funds");
    assert_eq!(
        decline["fields"]["stan"].as_u64(),
        Some(stan.parse().unwrap())
    );
    let _ = child.kill();
    let _ = child.wait();
    for line in lines.lock().unwrap().iter() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not a JSON line: {line}"
        );
        assert!(!has_pan_like_run(line), "a PAN-like run: {line}");
    }
}

/// The switch with `args`, its stderr lines gathered as they come (for tests that must see
/// the process before it listens, or read its lines as JSON).
fn spawn_switch(
    args: &[&str],
) -> (
    std::process::Child,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let gathered = lines.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            gathered.lock().unwrap().push(line);
        }
    });
    (child, lines)
}
