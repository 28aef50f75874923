//! The `switch` binary: `switch run [--config FILE] [--listen ADDR] [--http ADDR]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switch::config::{LogFormat, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "switch",
    version,
    about = "ISO 8583 payment transaction switch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the switch until SIGTERM or SIGINT.
    Run {
        /// Configuration file (TOML). Without it, the embedded default with demo data is used.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Acquirer ISO 8583 listener, overriding `listeners.acquirer` (port 0 picks one).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// HTTP listener, overriding `listeners.http` (port 0 picks one).
        #[arg(long)]
        http: Option<SocketAddr>,
        /// WAL directory, overriding `wal.dir`.
        #[arg(long)]
        wal_dir: Option<PathBuf>,
    },
    /// Inspect a write-ahead log (read only: nothing is changed).
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// Check a configuration file and exit: 0 when valid, 1 with the problem otherwise.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum WalCommand {
    /// Check every segment and record; exit 1 on corruption, naming file and offset.
    Verify {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print every record as text (cards as last four digits and a token prefix).
    Dump {
        #[arg(long)]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One clear line: the whole chain of causes.
            eprintln!("switch: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Info by default; the store on disk (fjall and its LSM tree) logs its routine at info too
/// (every flush and compaction), so only its warnings.
const LOG_FILTER: &str = "info,fjall=warn,lsm_tree=warn";

/// Log lines to stderr: human-readable, or one JSON object per line (`logging.format`).
/// `RUST_LOG` sets the levels (`LOG_FILTER` by default).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    if !matches!(command, Command::Run { .. }) {
        init_logging(LogFormat::Human);
    }
    match command {
        Command::CheckConfig { config } => {
            let settings = Settings::load(&config)?;
            println!(
                "{}: valid ({} shards, {} acquirers)",
                settings.source,
                settings.shards,
                settings.acquirers.len()
            );
            Ok(())
        }
        Command::Wal {
            command: WalCommand::Verify { dir },
        } => wal_verify(&dir),
        Command::Wal {
            command: WalCommand::Dump { dir },
        } => wal_dump(&dir),
        Command::Run {
            config,
            listen,
            http,
            wal_dir,
        } => {
            let mut settings = match &config {
                Some(path) => Settings::load(path)?,
                None => Settings::embedded()?,
            };
            if let Some(listen) = listen {
                settings.acquirer_listen = listen;
            }
            if let Some(http) = http {
                settings.http_listen = http;
            }
            if let Some(dir) = wal_dir {
                settings.wal.dir = dir;
            }
            init_logging(settings.log_format);
            actix::System::new().block_on(switch::server::serve(settings, shutdown_signal()))
        }
    }
}

fn wal_verify(dir: &std::path::Path) -> anyhow::Result<()> {
    use switch::wal::{format, scan};
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    let report = scan::scan(dir, scan::Mode::Verify, |_, payload| {
        format::decode_entry(payload)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })?;
    println!(
        "{}: {} segments, {} records",
        dir.display(),
        report.segments,
        report.records
    );
    // Every snapshot, not only the newest: a damaged one is corruption even if an older one
    // would do.
    let mut corrupt = Vec::new();
    for (_, path) in switch::wal::snapshot::list(dir)? {
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| format::decode_snapshot(&b).map_err(|e| e.to_string()))
        {
            Ok(sections) => {
                let accounts: usize = sections.iter().map(|s| s.image.accounts.len()).sum();
                let from = sections.iter().map(|s| s.marker_lsn).min().unwrap_or(0);
                println!(
                    "snapshot {}: ok ({} shards, {accounts} accounts, replay from LSN {from})",
                    path.display(),
                    sections.len()
                );
            }
            Err(problem) => {
                corrupt.push(format!("snapshot {}: corrupt: {problem}", path.display()))
            }
        }
    }
    if let Some(first) = report.first_lsn {
        println!("LSN {first} to {}", report.next_lsn.saturating_sub(1));
    }
    match &report.torn_tail {
        Some(torn) if torn.offset == 0 => println!(
            "a segment cut while being created: {} bytes, {} (no record in it; recovery removes it)",
            torn.bytes,
            torn.file.display()
        ),
        Some(torn) => println!(
            "torn tail: {} bytes at offset {} of {} (a crash mid-write; recovery truncates it)",
            torn.bytes,
            torn.offset,
            torn.file.display()
        ),
        None => println!("no torn tail"),
    }
    anyhow::ensure!(corrupt.is_empty(), "{}", corrupt.join("; "));
    println!("ok");
    Ok(())
}

fn wal_dump(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    use switch::wal::format::{self, Entry};
    use switch::wal::scan;
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let key = |k: &switch::domain::TxnKey| {
        format!(
            "{}/{}/{:06}/{:010}",
            k.acquirer,
            String::from_utf8_lossy(&k.terminal).trim_end(),
            k.stan,
            k.transmission
        )
    };
    scan::scan(dir, scan::Mode::Verify, |lsn, payload| {
        let line = match format::decode_entry(payload).map_err(|e| e.to_string())? {
            Entry::Applied {
                posting,
                at_seconds,
                outcome,
                ..
            } => format!(
                "{lsn} at={at_seconds} {:?} {} amount={} key={} original={} -> {}{}",
                posting.kind,
                posting.card,
                posting.amount,
                key(&posting.key),
                posting.original.as_ref().map_or("-".to_owned(), key),
                outcome.code.as_str(),
                outcome.balances.map_or(String::new(), |b| format!(
                    " ledger={} available={}",
                    b.ledger, b.available
                )),
            ),
            Entry::Expire {
                shard,
                shards,
                step,
                done,
            } => format!(
                "{lsn} at={} expiry of shard {shard}/{shards} (holds past {} s, at most {}; postings past {} s, at most {}): \
                 {} holds off ({} released), {} forgotten{}",
                step.at_seconds,
                step.hold_expiry_seconds,
                step.holds_max,
                step.reversal_window_seconds,
                step.postings_max,
                done.holds,
                done.released,
                done.forgotten,
                if done.more { ", more due" } else { "" }
            ),
            Entry::AccountOpened {
                at_seconds,
                card,
                account,
            } => format!(
                "{lsn} at={at_seconds} account opened: {card} ledger={} currency={}",
                account.ledger, account.currency
            ),
            Entry::AccountBlocked {
                at_seconds,
                card,
                blocked,
            } => format!(
                "{lsn} at={at_seconds} {card} {}",
                if blocked { "blocked" } else { "unblocked" }
            ),
            Entry::Remote {
                at_seconds,
                issuer,
                key: k,
                outcome,
                sent,
                advices,
                original,
                ..
            } => format!(
                "{lsn} at={at_seconds} remote issuer={issuer} key={} sent={} -> {}{}{}",
                key(&k),
                sent.map_or("-".to_owned(), |(mti, stan)| format!(
                    "{}/{stan:06}",
                    String::from_utf8_lossy(&mti)
                )),
                outcome.code.as_str(),
                advices
                    .iter()
                    .map(|a| format!(" queued advice {:032x}", a.id))
                    .collect::<String>(),
                original.map_or(String::new(), |(o, stan)| format!(
                    " reverses {} (sent as {stan:06})",
                    key(&o)
                )),
            ),
            Entry::RemoteSent {
                at_seconds,
                issuer,
                key: k,
                sent: (mti, stan),
                reversal,
                ..
            } => format!(
                "{lsn} at={at_seconds} sent to issuer={issuer} key={} as {}/{stan:06} (reversal {:032x} if undecided)",
                key(&k),
                String::from_utf8_lossy(&mti),
                reversal.id
            ),
            Entry::AdviceDone {
                at_seconds,
                id,
                delivered,
            } => format!(
                "{lsn} at={at_seconds} advice {id:032x} {}",
                if delivered {
                    "acknowledged"
                } else {
                    "given up"
                }
            ),
            Entry::Expired { at_seconds, holds } => {
                let holds: Vec<String> = holds
                    .iter()
                    .map(|(card, k)| format!("{card} {}", key(k)))
                    .collect();
                format!("{lsn} at={at_seconds} expired holds: {}", holds.join(", "))
            }
        };
        writeln!(out, "{line}").map_err(|e| e.to_string())
    })?;
    out.flush()?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
