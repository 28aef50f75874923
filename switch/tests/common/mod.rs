//! Test harness: the real `switch` binary on 127.0.0.1 port 0, and a blocking ISO 8583 client.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses part of the harness

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters::{Dialect, DialectName, FrameHeader, Message, Mti};

pub const ACQUIRER: &str = "123456";
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Switch {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    output: Arc<Mutex<Vec<String>>>,
    /// The log directory [`Switch::start`] made for this run alone, removed after the process
    /// ends (declared after `child`, so it drops after [`Drop for Switch`] killed the process).
    own_wal: Option<WalDir>,
}

/// Runs the switch binary to completion: (exit code, stdout, stderr).
pub fn run_switch(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_switch"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A config file under the target directory, unique per test.
pub fn config_file(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// The embedded default config with `from` replaced by `to` (which must be present).
pub fn default_config_with(edits: &[(&str, &str)]) -> String {
    let mut text = switch::config::EMBEDDED.to_owned();
    for (from, to) in edits {
        assert!(text.contains(from), "{from:?} not in the default config");
        text = text.replacen(from, to, 1);
    }
    text
}

static WAL_DIRS: AtomicU32 = AtomicU32::new(0);

/// A fresh, unique log directory under the target directory, removed when this guard drops.
///
/// Each switch writes its next segment ahead with zeros (`wal.segment_bytes`, 64 MiB by
/// default), so the directories of a whole test run left behind would take gigabytes. Keep the
/// guard alive as long as any switch runs on it: bind it with `let`, never pass
/// `&fresh_wal_dir()` straight into a call.
pub fn fresh_wal_dir() -> WalDir {
    let n = WAL_DIRS.fetch_add(1, Ordering::Relaxed);
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("wal-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    WalDir(dir)
}

/// See [`fresh_wal_dir`].
#[derive(Debug)]
pub struct WalDir(PathBuf);

impl std::ops::Deref for WalDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for WalDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for WalDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for WalDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Switch {
    /// Starts `switch run` with `args` plus listeners on port 0 and a fresh WAL directory, and
    /// waits until it listens.
    pub fn start(args: &[&str]) -> Switch {
        let wal = fresh_wal_dir();
        let mut switch = Switch::start_with_wal(&wal, args);
        switch.own_wal = Some(wal);
        switch
    }

    /// Like [`Switch::start`], on the log in `wal_dir` (kept as it is).
    pub fn start_with_wal(wal_dir: &std::path::Path, args: &[&str]) -> Switch {
        Switch::start_logging(wal_dir, args, "info")
    }

    /// Like [`Switch::start_with_wal`], with `RUST_LOG` set to `levels`.
    pub fn start_logging(wal_dir: &std::path::Path, args: &[&str], levels: &str) -> Switch {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switch"))
            .arg("run")
            .args(args)
            .arg("--wal-dir")
            .arg(wal_dir)
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .env("RUST_LOG", levels)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let (listening_tx, listening_rx) = mpsc::channel();
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let output = output.clone();
            let listening_tx = listening_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if let Some(at) = line.find("listening for acquirers on ") {
                        let rest = &line[at + "listening for acquirers on ".len()..];
                        let addr = rest
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                        let _ = listening_tx.send(addr);
                    }
                    output.lock().unwrap().push(line);
                }
            });
        }
        let addr = match listening_rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(addr) => addr.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "switch did not start listening; output:\n{}",
                    output.lock().unwrap().join("\n")
                );
            }
        };
        let http_addr = {
            let line = output
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("HTTP (healthz, readyz) on "))
                .cloned();
            let line = line.expect("the HTTP listener is logged before the acquirer listener");
            let rest = &line[line.find(" on ").unwrap() + 4..];
            rest.split_whitespace().next().unwrap().parse().unwrap()
        };
        Switch {
            child: Some(child),
            addr,
            http_addr,
            output,
            own_wal: None,
        }
    }

    /// `GET path` over HTTP/1.1; returns the status line and the body.
    pub fn http_get(&self, path: &str) -> (String, String) {
        let mut stream = TcpStream::connect(self.http_addr).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response.lines().next().unwrap_or_default().to_owned();
        let body = response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        (status, body)
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn output(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }

    pub fn connect(&self) -> Link {
        Link::connect(self.addr, DialectName::Default, FrameHeader::Binary2)
    }

    /// Waits until a line containing `needle` was printed.
    pub fn wait_for_output(&self, needle: &str) -> String {
        let deadline = Instant::now() + IO_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(line) = self.output().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no output line contains {needle:?}; output:\n{}",
            self.output().join("\n")
        );
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(mut self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return (status, self.output());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!(
                    "switch did not exit within {timeout:?}; output:\n{}",
                    self.output().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGKILL: the process dies at once, mid-write or not.
    pub fn kill(mut self) -> Vec<String> {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        self.output()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> (ExitStatus, Vec<String>) {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return (status, self.output());
            }
            assert!(
                Instant::now() < deadline,
                "switch did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever the test did, the switch must not have printed a full PAN.
        let output = self.output.lock().unwrap();
        if let Some(line) = output.iter().find(|l| has_pan_like_run(l))
            && !std::thread::panicking()
        {
            panic!("a PAN-like run of digits reached the output: {line}");
        }
    }
}

/// Whether `line` holds a run of 13 to 19 digits that passes the Luhn check: what a leaked
/// PAN looks like (zero-padded file names are 20 digits, timestamps are shorter).
pub fn has_pan_like_run(line: &str) -> bool {
    line.split(|c: char| !c.is_ascii_digit()).any(|run| {
        (13..=19).contains(&run.len()) && {
            let sum: u32 = run
                .bytes()
                .rev()
                .enumerate()
                .map(|(i, d)| {
                    let d = u32::from(d - b'0');
                    if i % 2 == 1 {
                        if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
                    } else {
                        d
                    }
                })
                .sum();
            sum.is_multiple_of(10)
        }
    })
}

/// A blocking acquirer connection.
pub struct Link {
    pub stream: TcpStream,
    dialect: &'static Dialect,
    framing: FrameHeader,
    buffer: Vec<u8>,
}

impl Link {
    pub fn connect(addr: SocketAddr, dialect: DialectName, framing: FrameHeader) -> Link {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Link {
            stream,
            dialect: dialect.dialect(),
            framing,
            buffer: Vec::new(),
        }
    }

    pub fn frame(&self, message: &Message<'_>) -> Vec<u8> {
        let mut body = Vec::new();
        self.dialect.encode(message, &mut body).unwrap();
        let mut frame = Vec::new();
        self.framing.write_frame(&body, &mut frame).unwrap();
        frame
    }

    pub fn send(&mut self, message: &Message<'_>) {
        let frame = self.frame(message);
        self.stream.write_all(&frame).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next response, or `None` when the switch closed the connection.
    pub fn try_receive(&mut self) -> Option<Message<'static>> {
        loop {
            if let Some(bounds) = self.framing.parse(&self.buffer, 65_535).unwrap() {
                let body = self.buffer[bounds.header_len..bounds.total_len()].to_vec();
                self.buffer.drain(..bounds.total_len());
                return Some(self.dialect.decode(&body).unwrap().into_owned());
            }
            let mut chunk = [0u8; 65_536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// Like [`Link::try_receive`], but any read error (a reset, a killed peer) is `None` too.
    pub fn try_receive_or_error(&mut self) -> Option<Message<'static>> {
        loop {
            if let Some(bounds) = self.framing.parse(&self.buffer, 65_535).ok()? {
                let body = self.buffer[bounds.header_len..bounds.total_len()].to_vec();
                self.buffer.drain(..bounds.total_len());
                return Some(self.dialect.decode(&body).ok()?.into_owned());
            }
            let mut chunk = [0u8; 65_536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub fn receive(&mut self) -> Message<'static> {
        self.try_receive().expect("switch closed the connection")
    }

    pub fn call(&mut self, message: &Message<'_>) -> Message<'static> {
        self.send(message);
        let response = self.receive();
        assert_eq!(
            response.get(11),
            message.get(11),
            "response matched by field 11"
        );
        response
    }
}

static STAN: AtomicU32 = AtomicU32::new(0);

pub fn next_stan() -> Vec<u8> {
    let base = std::process::id() % 1000 * 1000;
    format!(
        "{:06}",
        (base + STAN.fetch_add(1, Ordering::Relaxed)) % 1_000_000
    )
    .into_bytes()
}

/// Field 7 for now, in UTC (MMDDhhmmss).
pub fn transmission_now() -> Vec<u8> {
    transmission_ago(0)
}

/// Field 7 of `seconds_ago` seconds before now, in UTC (MMDDhhmmss).
pub fn transmission_ago(seconds_ago: u64) -> Vec<u8> {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - seconds_ago;
    let (_, month, day) = switch::acquirer::iso::civil_date(seconds / 86_400);
    let time = seconds % 86_400;
    format!(
        "{month:02}{day:02}{:02}{:02}{:02}",
        time / 3600,
        time / 60 % 60,
        time % 60
    )
    .into_bytes()
}

/// The demo PAN of `index`.
pub fn demo_pan(index: u64) -> Vec<u8> {
    let pan = switch::domain::Pan::from_scheme("400000", index, 9).unwrap();
    let (digits, len) = pan.digits();
    digits[..len].to_vec()
}

/// A request with the fields an acquirer sends: 2, 3, 4, 7, 11, 12, 13, 14, 32, 37, 41, 42, 49.
pub fn request(mti: &str, pan: &[u8], processing: &str, amount_minor: u64) -> Message<'static> {
    let mut m = Message::new(Mti::from_ascii(mti.as_bytes()).unwrap());
    let f7 = transmission_now();
    let stan = next_stan();
    m.set(2, pan.to_vec());
    m.set(3, processing.as_bytes().to_vec());
    m.set(4, format!("{amount_minor:012}").into_bytes());
    m.set(7, f7.clone());
    m.set(11, stan.clone());
    m.set(12, f7[4..].to_vec());
    m.set(13, f7[..4].to_vec());
    m.set(14, b"3012".to_vec());
    m.set(32, ACQUIRER.as_bytes().to_vec());
    m.set(37, [b"000000".to_vec(), stan].concat());
    m.set(41, b"TERM0001".to_vec());
    m.set(42, b"MERCHANT0000001".to_vec());
    m.set(49, b"840".to_vec());
    m
}

/// Field 90 naming `original`.
pub fn original_data(original: &Message<'_>) -> Vec<u8> {
    let mut value = Vec::with_capacity(42);
    value.extend_from_slice(&original.mti.0);
    value.extend_from_slice(original.get(11).unwrap());
    value.extend_from_slice(original.get(7).unwrap());
    value.extend_from_slice(
        format!(
            "{:0>11}",
            std::str::from_utf8(original.get(32).unwrap()).unwrap()
        )
        .as_bytes(),
    );
    value.extend_from_slice(b"00000000000");
    value
}

/// A completion or reversal of `original`, from the original's terminal.
pub fn referring(mti: &str, original: &Message<'_>, amount_minor: u64) -> Message<'static> {
    let pan = original.get(2).unwrap();
    let mut m = request(
        mti,
        pan,
        std::str::from_utf8(original.get(3).unwrap()).unwrap(),
        amount_minor,
    );
    m.set(41, original.get(41).unwrap().to_vec());
    m.set(90, original_data(original));
    m
}

pub fn network(code: &str) -> Message<'static> {
    let mut m = Message::new(Mti(*b"0800"));
    m.set(7, transmission_now());
    m.set(11, next_stan());
    m.set(70, code.as_bytes().to_vec());
    m
}

pub fn code(response: &Message<'_>) -> String {
    String::from_utf8(response.get(39).unwrap_or(b"--").to_vec()).unwrap()
}

/// Available balance from field 54 of a balance inquiry.
pub fn available(link: &mut Link, pan: &[u8]) -> i64 {
    let response = link.call(&request("0200", pan, "310000", 0));
    assert_eq!(code(&response), "00");
    let f54 = response.get(54).expect("field 54");
    let block = f54
        .chunks(20)
        .find(|b| &b[2..4] == b"02")
        .expect("available balance block");
    let amount: i64 = std::str::from_utf8(&block[8..20]).unwrap().parse().unwrap();
    if block[7] == b'D' { -amount } else { amount }
}

/// The admin API's bearer token in the default configuration.
pub const TOKEN: &str = "demo-admin-token-change-me";

/// One HTTP/1.1 exchange: (status code, body).
pub fn http(
    switch: &Switch,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(switch.http_addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The issuer simulator (`loadtest issuer-sim`) in this process, on its own runtime thread.
pub struct Issuer {
    pub sim: loadtest::sim::Sim,
    pub runtime: tokio::runtime::Runtime,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Issuer {
    pub fn start(listen: &str) -> Issuer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (sim, serve) = runtime
            .block_on(loadtest::sim::bind(
                listen.parse().unwrap(),
                DialectName::Default,
                FrameHeader::Binary2,
                loadtest::sim::Behaviour::default(),
                7,
            ))
            .unwrap();
        let server = runtime.spawn(serve);
        Issuer {
            sim,
            runtime,
            server: Some(server),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.sim.addr
    }

    pub fn count(&self, name: &str) -> u64 {
        self.sim.counts.json()[name].as_u64().unwrap()
    }

    /// Waits until `name` reaches `at_least`, or fails with every count.
    pub fn wait_count(&self, name: &str, at_least: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.count(name) < at_least {
            assert!(
                Instant::now() < deadline,
                "{name} stayed below {at_least}: {}",
                self.sim.counts.json()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops listening and closes every connection (the runtime ends its tasks).
    pub fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}
