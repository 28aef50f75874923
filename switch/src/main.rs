//! The `switch` binary: `switch run [--config FILE] [--listen ADDR] [--http ADDR]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switch::config::Settings;

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
    },
    /// Check a configuration file and exit: 0 when valid, 1 with the problem otherwise.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One clear line: the whole chain of causes.
            eprintln!("switch: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
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
        Command::Run {
            config,
            listen,
            http,
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
            actix::System::new().block_on(switch::server::serve(settings, shutdown_signal()))
        }
    }
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
