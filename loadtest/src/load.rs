//! The closed-loop load generator and the echo server.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters::{Dialect, DialectName, FrameHeader, Message, Mti};
use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{parse_dialect, parse_duration};

/// Largest frame either side sends here; the switch's own default maximum.
const MAX_FRAME_BYTES: usize = 8192;
/// A connection with requests outstanding and no answer for this long gives up.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Runs are bounded whatever the arguments.
const DURATION_MAX: Duration = Duration::from_secs(3600);
const CONNECTIONS_MAX: usize = 4096;
const IN_FLIGHT_MAX: usize = 4096;

#[derive(Clone, Debug, clap::Args)]
pub struct RunOptions {
    /// The switch's acquirer listener (loopback only).
    #[arg(long)]
    target: SocketAddr,
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Requests kept outstanding per connection.
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Measured from the start but left out of the figures.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Demo accounts to spread requests over (indexes 1000 and up of BIN 400000).
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    #[arg(long, default_value = "default", value_parser = parse_dialect)]
    dialect: DialectName,
    #[arg(long, default_value = "binary2")]
    framing: FrameHeader,
    /// Stop after this many requests in all (0 = only the duration bounds the run).
    #[arg(long, default_value_t = 0)]
    requests: u64,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What one connection measured.
#[derive(Debug)]
struct Tally {
    latency_us: Histogram<u64>,
    codes: BTreeMap<String, u64>,
    unmatched: u64,
    timeouts: u64,
    errors: u64,
}

impl Tally {
    fn new() -> anyhow::Result<Tally> {
        Ok(Tally {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).context("histogram bounds")?,
            codes: BTreeMap::new(),
            unmatched: 0,
            timeouts: 0,
            errors: 0,
        })
    }

    fn merge(&mut self, other: &Tally) -> anyhow::Result<()> {
        self.latency_us
            .add(&other.latency_us)
            .context("merging histograms")?;
        for (code, count) in &other.codes {
            *self.codes.entry(code.clone()).or_default() += count;
        }
        self.unmatched += other.unmatched;
        self.timeouts += other.timeouts;
        self.errors += other.errors;
        Ok(())
    }
}

/// Luhn check digit of ASCII digits.
fn luhn(payload: &[u8]) -> u8 {
    let sum: u32 = payload
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 0 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    b"0123456789"[((10 - sum % 10) % 10) as usize]
}

/// The demo PAN of `index`: 400000 + 9-digit index + Luhn digit.
pub fn demo_pan(index: u64) -> Vec<u8> {
    let mut pan = format!("400000{index:09}").into_bytes();
    pan.push(luhn(&pan));
    pan
}

struct Generator {
    dialect: &'static Dialect,
    framing: FrameHeader,
    connection: usize,
    transmission: Vec<u8>,
    sequence: u64,
    accounts: u64,
}

impl Generator {
    /// Appends the next 0100 frame to `out`; returns its STAN.
    fn next(&mut self, out: &mut Vec<u8>) -> anyhow::Result<[u8; 6]> {
        self.sequence += 1;
        let stan_value = self.sequence % 1_000_000;
        // A fresh terminal id for every million requests keeps identities unique in the run.
        let terminal = format!(
            "L{:03}{:04}",
            self.connection % 1000,
            (self.sequence / 1_000_000) % 10_000
        );
        let mut stan = [b'0'; 6];
        stan.copy_from_slice(format!("{stan_value:06}").as_bytes());
        let index = 1_000
            + (self.sequence * 7_919 + self.connection as u64 * 104_729) % self.accounts.max(1);
        let mut m = Message::new(Mti(*b"0100"));
        m.set(2, demo_pan(index));
        m.set(3, &b"000000"[..]);
        m.set(4, &b"000000000001"[..]);
        m.set(7, self.transmission.clone());
        m.set(11, stan.to_vec());
        m.set(14, &b"3012"[..]);
        m.set(32, &b"123456"[..]);
        m.set(41, terminal.into_bytes());
        m.set(49, &b"840"[..]);
        let start = out.len();
        out.extend_from_slice(&[0u8; 4][..self.framing.header_len()]);
        self.dialect.encode(&m, out).context("encoding a request")?;
        let mut header = Vec::with_capacity(4);
        self.framing
            .write(out.len() - start - self.framing.header_len(), &mut header)?;
        out[start..start + header.len()].copy_from_slice(&header);
        Ok(stan)
    }
}

fn transmission_now() -> Vec<u8> {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Civil date from days since 1970 (Howard Hinnant's algorithm).
    let z = (seconds / 86_400) as i64 + 719_468;
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let t = seconds % 86_400;
    format!(
        "{month:02}{day:02}{:02}{:02}{:02}",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
    .into_bytes()
}

struct Shared {
    start: Instant,
    measure_from: Instant,
    stop_at: Instant,
    sent: std::sync::atomic::AtomicU64,
    request_limit: u64,
    live: Mutex<Tally>,
}

async fn connection(
    options: RunOptions,
    index: usize,
    shared: Arc<Shared>,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let mut stream = TcpStream::connect(options.target)
        .await
        .with_context(|| format!("connecting to {}", options.target))?;
    stream.set_nodelay(true)?;
    let dialect = options.dialect.dialect();
    let mut generator = Generator {
        dialect,
        framing: options.framing,
        connection: index,
        transmission: transmission_now(),
        sequence: 0,
        accounts: options.accounts,
    };
    let mut outstanding: HashMap<[u8; 6], Instant> = HashMap::with_capacity(options.in_flight * 2);
    let mut out = Vec::with_capacity(4096);
    let mut buffer = Vec::with_capacity(65_536);
    let mut chunk = vec![0u8; 65_536];
    let may_send = |shared: &Shared| {
        Instant::now() < shared.stop_at
            && (shared.request_limit == 0
                || shared
                    .sent
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    < shared.request_limit)
    };
    for _ in 0..options.in_flight {
        if !may_send(&shared) {
            break;
        }
        let stan = generator.next(&mut out)?;
        outstanding.insert(stan, Instant::now());
    }
    stream.write_all(&out).await?;
    out.clear();
    while !outstanding.is_empty() {
        let read = match tokio::time::timeout(RESPONSE_TIMEOUT, stream.read(&mut chunk)).await {
            Err(_) => {
                tally.timeouts += outstanding.len() as u64;
                break;
            }
            Ok(Err(_)) | Ok(Ok(0)) => {
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
            let Some(sent_at) = stan.and_then(|s| outstanding.remove(&s)) else {
                tally.unmatched += 1;
                continue;
            };
            let now = Instant::now();
            let micros = u64::try_from(now.duration_since(sent_at).as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            let code = String::from_utf8_lossy(message.get(39).unwrap_or(b"--")).into_owned();
            if sent_at >= shared.measure_from {
                tally.latency_us.saturating_record(micros);
                *tally.codes.entry(code).or_default() += 1;
            }
            live.push(micros);
            if may_send(&shared) {
                let stan = generator.next(&mut out)?;
                outstanding.insert(stan, Instant::now());
            }
        }
        buffer.drain(..consumed);
        if !live.is_empty()
            && let Ok(mut progress) = shared.live.lock()
        {
            for micros in live {
                progress.latency_us.saturating_record(micros);
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
    Ok(tally)
}

pub async fn run(options: RunOptions) -> anyhow::Result<()> {
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
    let start = Instant::now();
    let shared = Arc::new(Shared {
        start,
        measure_from: start + options.warmup.min(options.duration / 2),
        stop_at: start + options.duration,
        sent: std::sync::atomic::AtomicU64::new(0),
        request_limit: options.requests,
        live: Mutex::new(Tally::new()?),
    });
    eprintln!(
        "loadtest: {} connections x {} in flight against {} for {:?} (warm-up {:?})",
        options.connections, options.in_flight, options.target, options.duration, options.warmup
    );
    let mut tasks = Vec::with_capacity(options.connections);
    for index in 0..options.connections {
        tasks.push(tokio::spawn(connection(
            options.clone(),
            index,
            shared.clone(),
        )));
    }
    let progress = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Ok(mut live) = shared.live.lock() else {
                    break;
                };
                let h = &live.latency_us;
                eprintln!(
                    "{:>4.0}s  {:>9} req/s  p50 {:>6} us  p99 {:>6} us",
                    shared.start.elapsed().as_secs_f64(),
                    h.len(),
                    h.value_at_quantile(0.5),
                    h.value_at_quantile(0.99)
                );
                live.latency_us.reset();
            }
        })
    };
    let mut total = Tally::new()?;
    let mut connection_errors = 0u64;
    for task in tasks {
        match task.await {
            Ok(Ok(tally)) => total.merge(&tally)?,
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
    let measured = options
        .duration
        .saturating_sub(shared.measure_from - start)
        .as_secs_f64();
    report(&options, &total, connection_errors, measured)
}

fn report(
    options: &RunOptions,
    total: &Tally,
    connection_errors: u64,
    measured_seconds: f64,
) -> anyhow::Result<()> {
    let h = &total.latency_us;
    let answered = h.len();
    let throughput = if measured_seconds > 0.0 {
        answered as f64 / measured_seconds
    } else {
        0.0
    };
    let quantiles = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];
    println!(
        "throughput       {throughput:.0} responses/s ({answered} in {measured_seconds:.1}s after warm-up)"
    );
    for (name, q) in quantiles {
        println!("latency {name:<8} {} us", h.value_at_quantile(q));
    }
    println!("latency max      {} us", h.max());
    for (code, count) in &total.codes {
        println!("response {code}      {count}");
    }
    println!("unmatched        {}", total.unmatched);
    println!("timeouts         {}", total.timeouts);
    println!("errors           {}", total.errors + connection_errors);
    if let Some(path) = &options.json {
        let mut latency = serde_json::Map::new();
        for (name, q) in quantiles {
            latency.insert(name.to_owned(), h.value_at_quantile(q).into());
        }
        latency.insert("max".to_owned(), h.max().into());
        let json = serde_json::json!({
            "target": options.target.to_string(),
            "connections": options.connections,
            "in_flight": options.in_flight,
            "duration_seconds": options.duration.as_secs_f64(),
            "measured_seconds": measured_seconds,
            "responses": answered,
            "throughput_per_second": throughput,
            "latency_us": latency,
            "response_codes": total.codes,
            "unmatched": total.unmatched,
            "timeouts": total.timeouts,
            "errors": total.errors + connection_errors,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The reference echo server: every frame goes back as it came, on the same framing.
pub async fn echo(
    listen: SocketAddr,
    framing: FrameHeader,
    duration: Duration,
) -> anyhow::Result<()> {
    if !listen.ip().is_loopback() {
        bail!("--listen {listen} is not a loopback address");
    }
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!("loadtest: echo listening on {}", listener.local_addr()?);
    let serve = async {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let mut buffer = Vec::with_capacity(65_536);
                let mut chunk = vec![0u8; 65_536];
                loop {
                    let n = match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buffer.extend_from_slice(&chunk[..n]);
                    let mut end = 0;
                    loop {
                        match framing.parse(&buffer[end..], MAX_FRAME_BYTES) {
                            Ok(Some(bounds)) => end += bounds.total_len(),
                            Ok(None) => break,
                            Err(_) => return,
                        }
                    }
                    if end > 0 {
                        if stream.write_all(&buffer[..end]).await.is_err() {
                            return;
                        }
                        buffer.drain(..end);
                    }
                }
            });
        }
    };
    tokio::select! {
        () = serve => Ok(()),
        () = tokio::time::sleep(duration) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_pans_follow_the_switch_scheme() {
        assert_eq!(demo_pan(0), b"4000000000000002");
        assert_eq!(demo_pan(4), b"4000000000000044");
    }

    #[test]
    fn generated_requests_decode_with_unique_identities() {
        let mut generator = Generator {
            dialect: DialectName::Default.dialect(),
            framing: FrameHeader::Binary2,
            connection: 3,
            transmission: b"1126143015".to_vec(),
            sequence: 999_998,
            accounts: 100,
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..4 {
            let mut out = Vec::new();
            let stan = generator.next(&mut out).unwrap();
            let bounds = FrameHeader::Binary2
                .parse(&out, MAX_FRAME_BYTES)
                .unwrap()
                .unwrap();
            let message = DialectName::Default
                .dialect()
                .decode(&out[bounds.header_len..])
                .unwrap();
            assert_eq!(message.get(11).unwrap(), stan);
            assert!(
                seen.insert((message.get(41).unwrap().to_vec(), stan)),
                "identity repeated"
            );
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
