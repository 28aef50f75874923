//! `loadtest run`: drives a target, closed loop or open loop, and reports.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters::{DialectName, FrameHeader};
use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::echo::MAX_FRAME_BYTES;
use crate::workload::{self, Accounts, FIRST_ACCOUNT, Generator, Mix, Operation, Sent};
use crate::{parse_dialect, parse_duration};

/// A connection with requests outstanding and no answer for this long gives up on them.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Runs are bounded whatever the arguments.
const DURATION_MAX: Duration = Duration::from_secs(3600);
const CONNECTIONS_MAX: usize = 4096;
const IN_FLIGHT_MAX: usize = 65_536;
const RATE_MAX: u64 = 10_000_000;
/// The money check asks every account's balance twice; beyond this many it is skipped.
const MONEY_CHECK_ACCOUNTS_MAX: u64 = 1_000_000;

#[derive(Clone, Debug, clap::Args)]
pub struct RunOptions {
    /// The switch's acquirer listener (loopback only).
    #[arg(long)]
    pub(crate) target: SocketAddr,
    #[arg(long, default_value_t = 8)]
    pub(crate) connections: usize,
    /// Requests kept outstanding per connection (closed loop), or the most a connection may
    /// have outstanding (open loop).
    #[arg(long, default_value_t = 1)]
    pub(crate) in_flight: usize,
    /// Open loop: requests per second in all, due at fixed intervals; latency is measured from
    /// when each was due, so a stalled server shows as latency, not as fewer requests.
    #[arg(long)]
    pub(crate) rate: Option<u64>,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Sent and answered, but left out of the figures.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub(crate) warmup: Duration,
    /// Operations and weights.
    #[arg(long, default_value = "auth:100")]
    pub(crate) mix: Mix,
    /// Demo accounts to spread requests over (indexes 1000 and up of BIN 400000). The default
    /// spreads 250,000 requests/s to about 15 approvals per card per minute, below the demo
    /// velocity rule (more than 20 per card within 60 s answers 65).
    #[arg(long, default_value_t = 990_000)]
    pub(crate) accounts: u64,
    /// Choose accounts with a Zipf distribution of this exponent instead of uniformly.
    #[arg(long)]
    pub(crate) zipf: Option<f64>,
    #[arg(long, default_value = "default", value_parser = parse_dialect)]
    pub(crate) dialect: DialectName,
    #[arg(long, default_value = "binary2")]
    pub(crate) framing: FrameHeader,
    /// Stop after this many requests in all (0: only the duration bounds the run).
    #[arg(long, default_value_t = 0)]
    pub(crate) requests: u64,
    /// First run the same workload against an in-process echo server (the loopback ceiling)
    /// and report the target's throughput as a fraction of it.
    #[arg(long)]
    pub(crate) ceiling: bool,
    /// Skip the money check (balances before and after against the approvals seen).
    #[arg(long)]
    pub(crate) no_money_check: bool,
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Write the report as JSON here (with one sample per second: answers, latency, and with
    /// --watch-pid the resident memory of that process).
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// Sample this process's resident memory (VmRSS, from /proc) every second: the switch's,
    /// for soak runs.
    #[arg(long)]
    pub(crate) watch_pid: Option<u32>,
}

/// One second of a run, as the progress line shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sample {
    /// Seconds since the start, at the end of the second.
    pub t: u64,
    pub answers: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Answers other than 00 so far.
    pub unexpected: u64,
    /// The watched process's resident memory, if one is watched (and still there).
    pub rss_bytes: Option<u64>,
}

/// A process's resident set size from /proc/PID/status (Linux).
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What one connection (or a whole run) measured.
#[derive(Debug)]
pub struct Tally {
    pub latency_us: Histogram<u64>,
    pub codes: BTreeMap<String, u64>,
    pub operations: BTreeMap<&'static str, u64>,
    /// Latency per operation, so that routes can be compared within one run.
    pub latency_by_operation: BTreeMap<&'static str, Histogram<u64>>,
    /// Answers other than 00, by code.
    pub unexpected: BTreeMap<String, u64>,
    pub unmatched: u64,
    pub timeouts: u64,
    pub errors: u64,
    /// Per account, the available balance change the approvals seen imply.
    pub moves: HashMap<u64, i64>,
}

impl Tally {
    pub fn new() -> anyhow::Result<Tally> {
        Ok(Tally {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).context("histogram bounds")?,
            codes: BTreeMap::new(),
            operations: BTreeMap::new(),
            latency_by_operation: BTreeMap::new(),
            unexpected: BTreeMap::new(),
            unmatched: 0,
            timeouts: 0,
            errors: 0,
            moves: HashMap::new(),
        })
    }

    pub fn merge(&mut self, other: &Tally) -> anyhow::Result<()> {
        self.latency_us
            .add(&other.latency_us)
            .context("merging histograms")?;
        for (code, count) in &other.codes {
            *self.codes.entry(code.clone()).or_default() += count;
        }
        for (operation, count) in &other.operations {
            *self.operations.entry(operation).or_default() += count;
        }
        for (operation, histogram) in &other.latency_by_operation {
            match self.latency_by_operation.get_mut(operation) {
                Some(mine) => mine.add(histogram).context("merging histograms")?,
                None => {
                    self.latency_by_operation
                        .insert(operation, histogram.clone());
                }
            }
        }
        for (code, count) in &other.unexpected {
            *self.unexpected.entry(code.clone()).or_default() += count;
        }
        for (account, amount) in &other.moves {
            *self.moves.entry(*account).or_default() += amount;
        }
        self.unmatched += other.unmatched;
        self.timeouts += other.timeouts;
        self.errors += other.errors;
        Ok(())
    }

    /// Records the answer to `sent`, sent (or due) at `sent_at`.
    fn answer(&mut self, sent: &Sent, code: &str, latency_us: u64, measured: bool, echo: bool) {
        if measured {
            self.latency_us.saturating_record(latency_us.max(1));
            *self.codes.entry(code.to_owned()).or_default() += 1;
            *self.operations.entry(sent.operation.name()).or_default() += 1;
            let empty = &self.latency_us;
            self.latency_by_operation
                .entry(sent.operation.name())
                .or_insert_with(|| {
                    // Same bounds as the run's histogram.
                    let mut h = empty.clone();
                    h.reset();
                    h
                })
                .saturating_record(latency_us.max(1));
        }
        if code == "00" {
            let change = match sent.operation {
                Operation::Authorization | Operation::Purchase => -sent.amount,
                Operation::Reversal => sent.amount,
                Operation::Balance | Operation::Remote => 0,
            };
            *self.moves.entry(sent.account).or_default() += change;
        } else if !echo {
            *self.unexpected.entry(code.to_owned()).or_default() += 1;
        }
    }
}

/// The schedule of an open-loop connection: request `k` is due at `start + k * interval`.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    next_due: Instant,
    interval: Duration,
}

impl Schedule {
    /// `rate` requests per second over `connections`, this one offset by its `index` so the
    /// connections do not send in step.
    pub fn new(start: Instant, rate: u64, connections: usize, index: usize) -> Schedule {
        let interval = Duration::from_nanos(1_000_000_000 * connections as u64 / rate.max(1));
        let offset = interval * u32::try_from(index).unwrap_or(0)
            / u32::try_from(connections.max(1)).unwrap_or(1);
        Schedule {
            next_due: start + offset,
            interval,
        }
    }

    /// The due time of the next request if it is due by `now`.
    pub fn take_due(&mut self, now: Instant) -> Option<Instant> {
        (self.next_due <= now).then(|| {
            let due = self.next_due;
            self.next_due += self.interval;
            due
        })
    }

    pub fn next_due(&self) -> Instant {
        self.next_due
    }
}

struct Shared {
    start: Instant,
    measure_from: Instant,
    stop_at: Instant,
    sent: AtomicU64,
    request_limit: u64,
    live: Mutex<Histogram<u64>>,
    live_unexpected: AtomicU64,
    samples: Mutex<Vec<Sample>>,
}

impl Shared {
    /// Whether one more request may be sent; counts it if so.
    fn may_send(&self) -> bool {
        Instant::now() < self.stop_at
            && (self.request_limit == 0
                || self.sent.fetch_add(1, Ordering::Relaxed) < self.request_limit)
    }
}

async fn connection(
    options: RunOptions,
    index: usize,
    shared: Arc<Shared>,
    echo: bool,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let mut stream = TcpStream::connect(options.target)
        .await
        .with_context(|| format!("connecting to {}", options.target))?;
    stream.set_nodelay(true)?;
    let dialect = options.dialect.dialect();
    let accounts = Accounts::new(options.accounts, options.zipf).map_err(anyhow::Error::msg)?;
    let mut generator = Generator::new(
        dialect,
        options.framing,
        index,
        options.mix.clone(),
        accounts,
        options.seed,
    );
    let mut schedule = options
        .rate
        .map(|rate| Schedule::new(shared.start, rate, options.connections, index));
    let mut outstanding: HashMap<[u8; 6], (Instant, Sent)> =
        HashMap::with_capacity(options.in_flight * 2);
    let mut out = Vec::with_capacity(8192);
    let mut buffer = Vec::with_capacity(65_536);
    let mut chunk = vec![0u8; 65_536];
    let mut sending = true;
    loop {
        // Send what is allowed now.
        while sending && outstanding.len() < options.in_flight {
            let now = Instant::now();
            let sent_at = match &mut schedule {
                None => now,
                Some(schedule) => match schedule.take_due(now) {
                    Some(due) => due,
                    None => break,
                },
            };
            if !shared.may_send() {
                sending = false;
                break;
            }
            let (stan, sent) = generator.next(&mut out).map_err(anyhow::Error::msg)?;
            outstanding.insert(stan, (sent_at, sent));
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                tally.errors += 1;
                break;
            }
            out.clear();
        }
        if Instant::now() >= shared.stop_at {
            sending = false;
        }
        if outstanding.is_empty() && !sending {
            break;
        }
        // Wait for answers, or for the next request's due time.
        let wake = schedule
            .as_ref()
            .filter(|_| sending && outstanding.len() < options.in_flight)
            .map(Schedule::next_due);
        let read = tokio::select! {
            read = tokio::time::timeout(RESPONSE_TIMEOUT, stream.read(&mut chunk)), if !outstanding.is_empty() => read,
            () = tokio::time::sleep_until(wake.unwrap_or(shared.stop_at).into()), if wake.is_some() || outstanding.is_empty() => continue,
        };
        let read = match read {
            Err(_) => {
                tally.timeouts += outstanding.len() as u64;
                break;
            }
            Ok(Err(_) | Ok(0)) => {
                tally.errors += 1;
                break;
            }
            Ok(Ok(n)) => n,
        };
        buffer.extend_from_slice(&chunk[..read]);
        let mut consumed = 0;
        let mut live = Vec::new();
        while let Some(bounds) = options
            .framing
            .parse(&buffer[consumed..], MAX_FRAME_BYTES)?
        {
            let body = &buffer[consumed + bounds.header_len..consumed + bounds.total_len()];
            consumed += bounds.total_len();
            let Ok(message) = dialect.decode(body) else {
                tally.errors += 1;
                continue;
            };
            let stan: Option<[u8; 6]> = message.get(11).and_then(|s| s.try_into().ok());
            let Some((sent_at, sent)) = stan.and_then(|s| outstanding.remove(&s)) else {
                tally.unmatched += 1;
                continue;
            };
            let latency_us = u64::try_from(
                Instant::now()
                    .saturating_duration_since(sent_at)
                    .as_micros(),
            )
            .unwrap_or(u64::MAX);
            let code = String::from_utf8_lossy(message.get(39).unwrap_or(b"--")).into_owned();
            if code == "00" {
                generator.approved(&sent);
            } else if !echo {
                shared.live_unexpected.fetch_add(1, Ordering::Relaxed);
            }
            tally.answer(
                &sent,
                &code,
                latency_us,
                sent_at >= shared.measure_from,
                echo,
            );
            live.push(latency_us);
        }
        buffer.drain(..consumed);
        if let Ok(mut progress) = shared.live.lock() {
            for micros in live {
                progress.saturating_record(micros.max(1));
            }
        }
    }
    Ok(tally)
}

/// One run's figures.
#[derive(Debug)]
pub struct Outcome {
    pub tally: Tally,
    pub measured_seconds: f64,
    pub connection_errors: u64,
    /// One per second of the run.
    pub samples: Vec<Sample>,
}

impl Outcome {
    pub fn throughput(&self) -> f64 {
        if self.measured_seconds > 0.0 {
            self.tally.latency_us.len() as f64 / self.measured_seconds
        } else {
            0.0
        }
    }
}

async fn drive(options: &RunOptions, echo: bool) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let shared = Arc::new(Shared {
        start,
        measure_from: start + options.warmup.min(options.duration / 2),
        stop_at: start + options.duration,
        sent: AtomicU64::new(0),
        request_limit: options.requests,
        live: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).context("histogram bounds")?),
        live_unexpected: AtomicU64::new(0),
        samples: Mutex::new(Vec::new()),
    });
    let mut tasks = Vec::with_capacity(options.connections);
    for index in 0..options.connections {
        tasks.push(tokio::spawn(connection(
            options.clone(),
            index,
            shared.clone(),
            echo,
        )));
    }
    let progress = {
        let shared = shared.clone();
        let watch = options.watch_pid;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let rss_bytes = watch.and_then(resident_bytes);
                let sample = {
                    let Ok(mut live) = shared.live.lock() else {
                        break;
                    };
                    let sample = Sample {
                        t: (shared.start.elapsed() + Duration::from_millis(500)).as_secs(),
                        answers: live.len(),
                        p50_us: live.value_at_quantile(0.5),
                        p99_us: live.value_at_quantile(0.99),
                        max_us: live.max(),
                        unexpected: shared.live_unexpected.load(Ordering::Relaxed),
                        rss_bytes,
                    };
                    live.reset();
                    sample
                };
                eprintln!(
                    "{:>4}s  {:>9} answers/s  p50 {:>6} us  p99 {:>6} us  max {:>7} us  unexpected {}{}",
                    sample.t,
                    sample.answers,
                    sample.p50_us,
                    sample.p99_us,
                    sample.max_us,
                    sample.unexpected,
                    sample
                        .rss_bytes
                        .map_or_else(String::new, |b| format!("  rss {} MiB", b >> 20))
                );
                if let Ok(mut samples) = shared.samples.lock() {
                    samples.push(sample);
                }
            }
        })
    };
    let mut tally = Tally::new()?;
    let mut connection_errors = 0u64;
    for task in tasks {
        match task.await {
            Ok(Ok(part)) => tally.merge(&part)?,
            Ok(Err(error)) => {
                connection_errors += 1;
                eprintln!("loadtest: connection failed: {error:#}");
            }
            Err(error) => {
                connection_errors += 1;
                eprintln!("loadtest: connection task failed: {error}");
            }
        }
    }
    progress.abort();
    let samples = shared.samples.lock().map(|s| s.clone()).unwrap_or_default();
    let measured_seconds = options
        .duration
        .saturating_sub(shared.measure_from - start)
        .as_secs_f64();
    Ok(Outcome {
        tally,
        measured_seconds,
        connection_errors,
        samples,
    })
}

/// Every account's available balance, by balance inquiry over one pipelined connection.
async fn balances(options: &RunOptions, stan_base: u32) -> anyhow::Result<HashMap<u64, i64>> {
    let mut stream = TcpStream::connect(options.target).await?;
    stream.set_nodelay(true)?;
    let dialect = options.dialect.dialect();
    let mut result = HashMap::with_capacity(usize::try_from(options.accounts).unwrap_or(0));
    let mut pending: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut next = 0u64;
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 65_536];
    let mut stan = stan_base;
    while result.len() < usize::try_from(options.accounts).unwrap_or(usize::MAX) {
        let mut out = Vec::new();
        while pending.len() < 256 && next < options.accounts {
            stan = stan.wrapping_add(1);
            workload::balance_inquiry(
                dialect,
                options.framing,
                FIRST_ACCOUNT + next,
                stan,
                &mut out,
            )
            .map_err(anyhow::Error::msg)?;
            pending.insert(
                format!("{:06}", stan % 1_000_000).into_bytes(),
                FIRST_ACCOUNT + next,
            );
            next += 1;
        }
        stream.write_all(&out).await?;
        let n = tokio::time::timeout(RESPONSE_TIMEOUT, stream.read(&mut chunk))
            .await
            .context("balance inquiry timed out")??;
        if n == 0 {
            bail!("the target closed the connection during the money check");
        }
        buffer.extend_from_slice(&chunk[..n]);
        let mut consumed = 0;
        while let Some(bounds) = options
            .framing
            .parse(&buffer[consumed..], MAX_FRAME_BYTES)?
        {
            let message = dialect
                .decode(&buffer[consumed + bounds.header_len..consumed + bounds.total_len()])?;
            consumed += bounds.total_len();
            let account = message
                .get(11)
                .and_then(|s| pending.remove(s))
                .context("an unmatched balance answer")?;
            let field54 = message.get(54).with_context(|| {
                format!(
                    "no field 54 for account {account} (code {:?})",
                    message.get(39)
                )
            })?;
            let block = field54
                .chunks(20)
                .find(|b| b.len() == 20 && &b[2..4] == b"02")
                .context("no available-balance block")?;
            let amount: i64 = std::str::from_utf8(&block[8..20])?.parse()?;
            result.insert(account, if block[7] == b'D' { -amount } else { amount });
        }
        buffer.drain(..consumed);
    }
    Ok(result)
}

/// What the money check found.
#[derive(Debug)]
pub enum MoneyCheck {
    Skipped(&'static str),
    Inconclusive(&'static str),
    Checked {
        accounts: usize,
        mismatches: Vec<(u64, i64, i64)>,
    },
}

pub async fn run(options: RunOptions) -> anyhow::Result<bool> {
    if !options.target.ip().is_loopback() {
        bail!(
            "--target {} is not a loopback address; load is only ever sent to 127.0.0.0/8 or [::1]",
            options.target
        );
    }
    if options.duration > DURATION_MAX || options.duration.is_zero() {
        bail!("--duration must be between 1ms and {DURATION_MAX:?}");
    }
    if options.connections == 0 || options.connections > CONNECTIONS_MAX {
        bail!("--connections must be between 1 and {CONNECTIONS_MAX}");
    }
    if options.in_flight == 0 || options.in_flight > IN_FLIGHT_MAX {
        bail!("--in-flight must be between 1 and {IN_FLIGHT_MAX}");
    }
    if options.rate.is_some_and(|r| r == 0 || r > RATE_MAX) {
        bail!("--rate must be between 1 and {RATE_MAX}");
    }
    Accounts::new(options.accounts, options.zipf).map_err(anyhow::Error::msg)?;
    let mode = match options.rate {
        Some(rate) => format!(
            "open loop at {rate}/s, at most {} in flight per connection",
            options.in_flight
        ),
        None => format!(
            "closed loop, {} in flight per connection",
            options.in_flight
        ),
    };
    let ceiling = if options.ceiling {
        // The echo server gets a thread and runtime of its own, as the target has a process of
        // its own: sharing the client's would halve the ceiling.
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let framing = options.framing;
        let lifetime = options.duration + Duration::from_secs(30);
        std::thread::Builder::new()
            .name("echo".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let Ok(runtime) = runtime else { return };
                runtime.block_on(async move {
                    match crate::echo::bind(
                        "127.0.0.1:0".parse().expect("a loopback address"),
                        framing,
                        lifetime,
                    )
                    .await
                    {
                        Ok((addr, serve)) => {
                            let _ = ready_tx.send(Ok(addr));
                            serve.await;
                        }
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                        }
                    }
                });
            })?;
        let addr = ready_rx.await.context("the echo server thread ended")??;
        let echo_options = RunOptions {
            target: addr,
            ..options.clone()
        };
        eprintln!(
            "loadtest: ceiling: {} connections against the echo server at {addr}, {mode}, {:?}",
            options.connections, options.duration
        );
        Some(drive(&echo_options, true).await?)
    } else {
        None
    };
    let check = !options.no_money_check && options.accounts <= MONEY_CHECK_ACCOUNTS_MAX;
    let before = if check {
        Some(
            balances(&options, 500_000)
                .await
                .context("money check: balances before the run")?,
        )
    } else {
        None
    };
    eprintln!(
        "loadtest: {} connections against {}, {mode}, {:?} (warm-up {:?})",
        options.connections, options.target, options.duration, options.warmup
    );
    let outcome = drive(&options, false).await?;
    let money = match before {
        None if options.no_money_check => MoneyCheck::Skipped("--no-money-check"),
        None => MoneyCheck::Skipped("more accounts than the money check asks about"),
        Some(_)
            if outcome.tally.timeouts > 0
                || outcome.connection_errors > 0
                || outcome.tally.errors > 0 =>
        {
            MoneyCheck::Inconclusive("some requests got no answer")
        }
        Some(before) => {
            let after = balances(&options, 700_000)
                .await
                .context("money check: balances after the run")?;
            let mut mismatches = Vec::new();
            for (account, was) in &before {
                let expected = was + outcome.tally.moves.get(account).copied().unwrap_or(0);
                let now = after.get(account).copied().unwrap_or(i64::MIN);
                if now != expected {
                    mismatches.push((*account, expected, now));
                }
            }
            mismatches.sort_unstable();
            MoneyCheck::Checked {
                accounts: before.len(),
                mismatches,
            }
        }
    };
    crate::report::print(&options, &mode, ceiling.as_ref(), &outcome, &money)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Operation;

    #[test]
    fn the_open_loop_schedule_is_fixed_by_the_clock_not_by_answers() {
        let start = Instant::now();
        // 1,000/s over 4 connections: one request every 4 ms each, connection 2 offset by 2 ms.
        let mut schedule = Schedule::new(start, 1_000, 4, 2);
        assert_eq!(
            schedule.take_due(start),
            None,
            "nothing due before the offset"
        );
        let first = start + Duration::from_millis(2);
        assert_eq!(schedule.take_due(first), Some(first));
        // A stall of 20 ms: every request that fell due meanwhile is still owed, with its own
        // due time, so the latency of the stall is measured instead of hidden.
        let later = first + Duration::from_millis(20);
        let owed: Vec<Instant> = std::iter::from_fn(|| schedule.take_due(later)).collect();
        assert_eq!(owed.len(), 5);
        assert_eq!(owed[0], first + Duration::from_millis(4));
        assert_eq!(owed[4], first + Duration::from_millis(20));
    }

    fn sent(operation: Operation, account: u64, amount: i64) -> Sent {
        Sent {
            operation,
            account,
            amount,
            original: None,
        }
    }

    #[test]
    fn answers_are_tallied_by_code_and_move_the_expected_balances() {
        let mut tally = Tally::new().unwrap();
        tally.answer(
            &sent(Operation::Authorization, 1_001, 5),
            "00",
            700,
            true,
            false,
        );
        tally.answer(&sent(Operation::Purchase, 1_001, 3), "00", 900, true, false);
        tally.answer(&sent(Operation::Reversal, 1_001, 5), "00", 800, true, false);
        tally.answer(&sent(Operation::Purchase, 1_002, 4), "96", 100, true, false);
        tally.answer(&sent(Operation::Balance, 1_002, 0), "00", 50, false, false);
        assert_eq!(tally.moves[&1_001], -3, "the reversal gave back the hold");
        assert_eq!(
            tally.moves.get(&1_002).copied().unwrap_or(0),
            0,
            "a 96 moves nothing"
        );
        assert_eq!(tally.unexpected, BTreeMap::from([("96".to_owned(), 1)]));
        assert_eq!(
            tally.latency_us.len(),
            4,
            "the warm-up answer is not measured"
        );
        assert_eq!(
            tally.latency_us.max(),
            tally.latency_us.highest_equivalent(900)
        );
        let mut total = Tally::new().unwrap();
        total.merge(&tally).unwrap();
        total.merge(&tally).unwrap();
        assert_eq!(
            (
                total.latency_us.len(),
                total.moves[&1_001],
                total.codes["00"]
            ),
            (8, -6, 6)
        );
        // Per operation too, merged: purchases' latencies apart from the others'.
        let purchases = &total.latency_by_operation["purchase"];
        assert_eq!(purchases.len(), 4);
        assert_eq!(purchases.max(), purchases.highest_equivalent(900));
        assert_eq!(total.latency_by_operation["auth"].len(), 2);
        assert!(
            !total.latency_by_operation.contains_key("balance"),
            "not measured"
        );
    }

    #[test]
    fn echo_answers_are_never_unexpected() {
        let mut tally = Tally::new().unwrap();
        tally.answer(
            &sent(Operation::Authorization, 1_000, 1),
            "--",
            10,
            true,
            true,
        );
        assert!(tally.unexpected.is_empty());
    }
}
