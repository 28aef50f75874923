//! Configuration: TOML on disk (or the embedded default), checked into typed [`Settings`].
//!
//! Every error names the file, the key and what is wrong, e.g.
//! `config/switch.toml: ledger.shards: 300 is above the maximum 256`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub(crate) mod risk;

use adapters::{DialectName, FrameHeader};
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::acquirer::Acquirer;
use crate::domain::{Minor, Pan};
use crate::ledger::ShardLimits;
use crate::limits::{DEMO_ACCOUNTS_MAX, Limits, SHARDS_MAX, WORKERS_MAX};
use crate::risk::RiskRules;
use crate::routing::{Destination, RoutingTable};
use crate::wal::writer::{SyncMode, WriterConfig};

/// The default configuration, compiled in: the same file as `config/switch.toml`.
pub const EMBEDDED: &str = include_str!("../../../config/switch.toml");
pub const EMBEDDED_NAME: &str = "<embedded config/switch.toml>";
/// The fewest records `wal.snapshot_records` may name (but 0): a snapshot per second at most
/// anyway, but each copies every shard's state.
const SNAPSHOT_RECORDS_MIN: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: {key}: {problem}")]
    Invalid {
        file: String,
        key: String,
        problem: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listeners: Listeners,
    #[serde(default)]
    acquirer_link: AcquirerLink,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    ledger: LedgerFile,
    #[serde(default)]
    wal: WalFile,
    #[serde(default)]
    risk: risk::RiskFile,
    #[serde(default)]
    acquirers: Vec<AcquirerFile>,
    #[serde(default)]
    routes: Vec<RouteFile>,
    #[serde(default)]
    issuers: Vec<IssuerFile>,
    demo: Option<DemoFile>,
    #[serde(default)]
    admin: AdminFile,
    #[serde(default)]
    logging: LoggingFile,
    tls: Option<TlsFile>,
}

/// `[tls]` (DESIGN 2.6): the acquirer listener is TLS-only when it is present.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: String,
    key: String,
    client_ca: Option<String>,
    #[serde(default = "handshake_timeout_default")]
    handshake_timeout_seconds: u64,
    #[serde(default = "handshakes_max_default")]
    handshakes_max: usize,
}

fn handshakes_max_default() -> usize {
    64
}

fn handshake_timeout_default() -> u64 {
    10
}

/// The acquirer listener's TLS: PEM files, read at start (see `acquirer::tls`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM chain of the switch's certificate.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// With it, mutual TLS: client certificates must chain to this CA.
    pub client_ca: Option<PathBuf>,
    pub handshake_timeout: std::time::Duration,
    /// TLS handshakes under way at once; a connection beyond them is closed at once.
    pub handshakes_max: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LoggingFile {
    format: String,
}

/// How log lines are written (`logging.format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text each, for a person.
    #[default]
    Human,
    /// One JSON object per line, for a log pipeline.
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AdminFile {
    token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Listeners {
    acquirer: String,
    http: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AcquirerLink {
    dialect: String,
    framing: String,
    max_frame_bytes: usize,
    workers: usize,
}

impl Default for AcquirerLink {
    fn default() -> Self {
        AcquirerLink {
            dialect: "default".into(),
            framing: "binary2".into(),
            max_frame_bytes: 8192,
            workers: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
struct LimitsFile {
    connections_max: usize,
    inflight_per_connection: usize,
    idle_timeout_seconds: u64,
    mailbox_capacity: usize,
    idempotency_entries_max: usize,
    idempotency_retention_seconds: u64,
    idempotency_archive_entries_max: u64,
    shutdown_drain_seconds: u64,
    write_timeout_seconds: u64,
    retransmission_wait_seconds: u64,
    retransmission_waiters_max: usize,
    decisions_kept: usize,
}

impl Default for LimitsFile {
    fn default() -> Self {
        LimitsFile {
            connections_max: 1024,
            inflight_per_connection: 512,
            idle_timeout_seconds: 300,
            mailbox_capacity: 4096,
            idempotency_entries_max: 16_000_000,
            idempotency_retention_seconds: 300,
            idempotency_archive_entries_max: 64_000_000,
            shutdown_drain_seconds: 10,
            write_timeout_seconds: 10,
            retransmission_wait_seconds: 30,
            retransmission_waiters_max: 8,
            decisions_kept: 100_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LedgerFile {
    shards: usize,
    token_key: String,
    transactions_per_shard_max: usize,
    hot_transactions_per_shard_max: usize,
    hold_expiry_seconds: u64,
    reversal_window_seconds: u64,
}

impl Default for LedgerFile {
    fn default() -> Self {
        LedgerFile {
            shards: 0,
            token_key: String::new(),
            transactions_per_shard_max: 100_000_000,
            hot_transactions_per_shard_max: 4_000_000,
            hold_expiry_seconds: 7 * 24 * 3600,
            reversal_window_seconds: 24 * 3600,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct WalFile {
    dir: String,
    sync: String,
    group_records_max: usize,
    group_bytes_max: usize,
    group_wait_micros: u64,
    segment_bytes: u64,
    queue_records_max: usize,
    snapshot_interval_seconds: u64,
    snapshot_records: u64,
}

impl Default for WalFile {
    fn default() -> Self {
        WalFile {
            dir: "var/wal".into(),
            sync: "group".into(),
            group_records_max: 4096,
            group_bytes_max: 1 << 20,
            group_wait_micros: 0,
            segment_bytes: 64 << 20,
            queue_records_max: 65_536,
            snapshot_interval_seconds: 300,
            snapshot_records: 2_000_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcquirerFile {
    id: String,
    name: String,
    connections_max: Option<usize>,
    mac: Option<String>,
    mac_key: Option<String>,
    sources: Option<Vec<String>>,
    client_cert_cn: Option<String>,
    inflight_max: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    prefix: String,
    to: String,
    /// Issuers (`issuer:NAME`) tried in order when `to` is down.
    #[serde(default)]
    fallbacks: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerFile {
    name: String,
    address: Option<String>,
    dialect: Option<String>,
    framing: Option<String>,
    connections: Option<usize>,
    timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    inflight_max: Option<usize>,
    echo_idle_seconds: Option<u64>,
    backoff_min_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    breaker_failures: Option<u32>,
    breaker_open_seconds: Option<u64>,
    queue_max: Option<usize>,
    retry_min_ms: Option<u64>,
    retry_max_ms: Option<u64>,
    attempts_max: Option<u32>,
    advice_expiry_seconds: Option<u64>,
    stand_in: Option<StandInFile>,
    tls: Option<IssuerTlsFile>,
    originals_max: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerTlsFile {
    /// DESIGN 2.6 names the keys of issuer links as those of `[tls]`; for a link the switch
    /// opens, `client_ca` can only mean the CA the peer's certificate must chain to, so it is
    /// taken as `ca`.
    #[serde(alias = "client_ca")]
    ca: String,
    cert: Option<String>,
    key: Option<String>,
    server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StandInFile {
    amount_max: String,
    currency: u16,
    #[serde(default)]
    merchant_categories: Vec<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoFile {
    bin: String,
    accounts: u64,
    balance: String,
    currency: u16,
    #[serde(default)]
    overrides: Vec<DemoOverride>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoOverride {
    index: u64,
    balance: Option<String>,
    #[serde(default)]
    blocked: bool,
    limit_per_transaction: Option<String>,
}

/// Demo accounts: `bin` + 9-digit index + Luhn digit, each with `balance`, but the overrides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoAccounts {
    pub bin: String,
    pub count: u64,
    pub balance: Minor,
    pub currency: u16,
    pub overrides: Vec<AccountOverride>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountOverride {
    pub index: u64,
    pub balance: Option<Minor>,
    pub blocked: bool,
    pub limit_per_transaction: Option<Minor>,
}

impl DemoAccounts {
    pub const INDEX_DIGITS: usize = 9;

    pub fn pan(&self, index: u64) -> Option<Pan> {
        Pan::from_scheme(&self.bin, index, Self::INDEX_DIGITS).ok()
    }
}

/// The checked configuration the switch runs with. Its `Debug` leaves out the secrets
/// (`ledger.token_key`, `admin.token`).
#[derive(Clone)]
pub struct Settings {
    /// Where it came from, for messages.
    pub source: String,
    pub acquirer_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub dialect: DialectName,
    pub framing: FrameHeader,
    pub max_frame_bytes: usize,
    /// Threads serving acquirer connections (`acquirer_link.workers`; 0: half the cores).
    pub workers: usize,
    pub limits: Limits,
    pub shards: usize,
    pub shard_limits: ShardLimits,
    /// Key of the keyed hash that stands for PANs in the ledger, the WAL and snapshots.
    pub token_key: [u8; 16],
    pub wal: WriterConfig,
    /// How often every shard is snapshotted; `None`: never.
    pub snapshot_interval: Option<std::time::Duration>,
    /// A snapshot also once this many records were logged since the last one (`None`: by
    /// time only): what a restart replays stays bounded at any rate.
    pub snapshot_records: Option<u64>,
    pub risk: RiskRules,
    pub acquirers: HashMap<u64, Acquirer>,
    pub routes: RoutingTable,
    pub demo: Option<DemoAccounts>,
    /// The bearer token of the admin API (`admin.token`); `None`: the admin API is off.
    pub admin_token: Option<String>,
    pub log_format: LogFormat,
    /// `[tls]`: `None`, plain TCP.
    pub tls: Option<TlsSettings>,
    /// `[[issuers]]`: one channel each.
    pub issuers: Vec<crate::issuer::IssuerSettings>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("source", &self.source)
            .field("acquirer_listen", &self.acquirer_listen)
            .field("http_listen", &self.http_listen)
            .field("dialect", &self.dialect)
            .field("framing", &self.framing)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("workers", &self.workers)
            .field("limits", &self.limits)
            .field("shards", &self.shards)
            .field("shard_limits", &self.shard_limits)
            .field("wal", &self.wal)
            .field("snapshot_interval", &self.snapshot_interval)
            .field("snapshot_records", &self.snapshot_records)
            .field("risk", &self.risk)
            .field("acquirers", &self.acquirers)
            .field("routes", &self.routes)
            .field("demo", &self.demo)
            .field("log_format", &self.log_format)
            .field("tls", &self.tls)
            .field("issuers", &self.issuers)
            .finish_non_exhaustive()
    }
}

impl Settings {
    pub fn embedded() -> Result<Settings, ConfigError> {
        Settings::parse(EMBEDDED, EMBEDDED_NAME)
    }

    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Settings::parse(&text, &file)
    }

    /// Reads `text` as a configuration that names only what it changes: every key it leaves
    /// out takes its value from the embedded default ([`EMBEDDED`], documented key by key in
    /// `config/switch.toml`). Tables merge key by key; an array (`[[acquirers]]`, `[[routes]]`,
    /// `[[issuers]]`, `demo.overrides`) given in `text` replaces the default's whole.
    pub fn parse(text: &str, file: &str) -> Result<Settings, ConfigError> {
        // The parser's message, with the line and column, but not the quoted source line: a
        // slip on the line of a key or token must not print the secret.
        let parse_error = |source: &str, e: toml::de::Error| {
            let at = e.span().map(|span| {
                let before = &source[..span.start.min(source.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            });
            let message = match at {
                Some(at) => format!("{at}{}", e.message().trim_end()),
                // No position, no quoted source: the whole message names the key.
                None => e.to_string().trim_end().replace('\n', " "),
            };
            ConfigError::Parse {
                file: file.to_owned(),
                message,
            }
        };
        let given: toml::Table = toml::from_str(text).map_err(|e| parse_error(text, e))?;
        let mut merged: toml::Table =
            toml::from_str(EMBEDDED).map_err(|e| parse_error(EMBEDDED, e))?;
        merge(&mut merged, given);
        let raw: File = toml::Value::Table(merged)
            .try_into()
            .map_err(|e| parse_error("", e))?;
        Checker { file }.settings(raw)
    }
}

/// Lays `given` over `base`: tables key by key, anything else replaced whole.
fn merge(base: &mut toml::Table, given: toml::Table) {
    for (key, value) in given {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(below)), toml::Value::Table(above)) => merge(below, above),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

struct Checker<'a> {
    file: &'a str,
}

impl Checker<'_> {
    fn invalid(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            key: key.into(),
            problem: problem.into(),
        }
    }

    fn range<T: PartialOrd + std::fmt::Display>(
        &self,
        key: &str,
        value: T,
        min: T,
        max: T,
    ) -> Result<T, ConfigError> {
        if value < min {
            return Err(self.invalid(key, format!("{value} is below the minimum {min}")));
        }
        if value > max {
            return Err(self.invalid(key, format!("{value} is above the maximum {max}")));
        }
        Ok(value)
    }

    fn address(&self, key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
        SocketAddr::from_str(text).map_err(|_| {
            self.invalid(
                key,
                format!("{text:?} is not an address such as \"127.0.0.1:8583\""),
            )
        })
    }

    fn digits(&self, key: &str, text: &str, max_len: usize) -> Result<u64, ConfigError> {
        if text.is_empty() || text.len() > max_len || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.invalid(key, format!("{text:?} is not 1 to {max_len} digits")));
        }
        text.parse()
            .map_err(|_| self.invalid(key, format!("{text:?} is not a number")))
    }

    /// A decimal amount in the currency's major unit, as integer minor units.
    fn amount(&self, key: &str, text: &str, currency: u16) -> Result<Minor, ConfigError> {
        let exponent = currency_exponent(currency).ok_or_else(|| {
            self.invalid(
                key,
                format!("currency {currency} is not a known ISO 4217 numeric code"),
            )
        })?;
        let value = Decimal::from_str_exact(text).map_err(|_| {
            self.invalid(
                key,
                format!("{text:?} is not a decimal amount such as \"10000.00\""),
            )
        })?;
        if value.is_sign_negative() {
            return Err(self.invalid(key, format!("{text:?} is negative")));
        }
        if value.scale() > exponent {
            return Err(self.invalid(
                key,
                format!("{text:?} has more than {exponent} decimals for currency {currency}"),
            ));
        }
        // Checked: rust_decimal's `*` panics on overflow.
        let minor = value
            .checked_mul(Decimal::from(10u64.pow(exponent)))
            .ok_or_else(|| self.invalid(key, format!("{text:?} is out of range")))?;
        // Amounts travel in 12-digit field 4; anything larger can never be used.
        let max = Decimal::from(999_999_999_999u64);
        if minor > max {
            return Err(self.invalid(
                key,
                format!("{text:?} exceeds the largest amount field 4 can carry"),
            ));
        }
        minor
            .trunc()
            .mantissa()
            .try_into()
            .map_err(|_| self.invalid(key, format!("{text:?} is out of range")))
    }

    /// 16 bytes from 32 hex digits; the error says `what` it is and never repeats the text.
    fn hex16(&self, key: &str, text: &str, what: &str) -> Result<[u8; 16], ConfigError> {
        let problem = || self.invalid(key, what);
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(problem());
        }
        let mut out = [0u8; 16];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| problem())?;
        }
        Ok(out)
    }

    fn token_key(&self, key: &str, text: &str) -> Result<[u8; 16], ConfigError> {
        let problem = || {
            self.invalid(
                key,
                "must be 32 hex digits: the 128-bit secret that turns PANs into tokens at rest",
            )
        };
        if text.len() != 32 {
            return Err(problem());
        }
        let mut out = [0u8; 16];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| problem())?;
        }
        Ok(out)
    }

    fn settings(&self, raw: File) -> Result<Settings, ConfigError> {
        let dialect = DialectName::from_str(&raw.acquirer_link.dialect)
            .map_err(|problem| self.invalid("acquirer_link.dialect", problem))?;
        let framing = FrameHeader::from_str(&raw.acquirer_link.framing)
            .map_err(|problem| self.invalid("acquirer_link.framing", problem))?;
        let max_frame_bytes = self.range(
            "acquirer_link.max_frame_bytes",
            raw.acquirer_link.max_frame_bytes,
            64,
            framing.body_len_limit(),
        )?;
        // Half the cores by default: the other half runs the ledger shards, the WAL writer and
        // the kernel's share of the network (bench/RESULTS.md: on 2 cores one worker answered
        // 46-50 k/s at 64 x 1 where two answered 42 k/s).
        let workers = match raw.acquirer_link.workers {
            0 => (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1),
            n => self.range("acquirer_link.workers", n, 1, WORKERS_MAX)?,
        };
        let l = raw.limits;
        let limits = Limits {
            connections_max: self.range("limits.connections_max", l.connections_max, 1, 100_000)?,
            inflight_per_connection: self.range(
                "limits.inflight_per_connection",
                l.inflight_per_connection,
                1,
                65_536,
            )?,
            idle_timeout_seconds: self.range(
                "limits.idle_timeout_seconds",
                l.idle_timeout_seconds,
                1,
                86_400,
            )?,
            mailbox_capacity: self.range(
                "limits.mailbox_capacity",
                l.mailbox_capacity,
                16,
                1_000_000,
            )?,
            idempotency_entries_max: self.range(
                "limits.idempotency_entries_max",
                l.idempotency_entries_max,
                1_000,
                100_000_000,
            )?,
            idempotency_retention_seconds: self.range(
                "limits.idempotency_retention_seconds",
                l.idempotency_retention_seconds,
                1,
                30 * 86_400,
            )?,
            idempotency_archive_entries_max: self.range(
                "limits.idempotency_archive_entries_max",
                l.idempotency_archive_entries_max,
                0,
                1_000_000_000,
            )?,
            shutdown_drain_seconds: self.range(
                "limits.shutdown_drain_seconds",
                l.shutdown_drain_seconds,
                0,
                600,
            )?,
            write_timeout_seconds: self.range(
                "limits.write_timeout_seconds",
                l.write_timeout_seconds,
                1,
                3_600,
            )?,
            retransmission_wait_seconds: self.range(
                "limits.retransmission_wait_seconds",
                l.retransmission_wait_seconds,
                1,
                3_600,
            )?,
            retransmission_waiters_max: self.range(
                "limits.retransmission_waiters_max",
                l.retransmission_waiters_max,
                1,
                1_024,
            )?,
            decisions_kept: self.range("limits.decisions_kept", l.decisions_kept, 1, 10_000_000)?,
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = match raw.ledger.shards {
            0 => cores,
            n => self.range("ledger.shards", n, 1, SHARDS_MAX)?,
        };
        let shard_limits = ShardLimits {
            transactions_max: self.range(
                "ledger.transactions_per_shard_max",
                raw.ledger.transactions_per_shard_max,
                1,
                4_000_000_000,
            )?,
            hot_max: self.range(
                "ledger.hot_transactions_per_shard_max",
                raw.ledger.hot_transactions_per_shard_max,
                0,
                1_000_000_000,
            )?,
            hold_expiry_seconds: self.range(
                "ledger.hold_expiry_seconds",
                raw.ledger.hold_expiry_seconds,
                1,
                366 * 86_400,
            )?,
            reversal_window_seconds: self.range(
                "ledger.reversal_window_seconds",
                raw.ledger.reversal_window_seconds,
                1,
                366 * 86_400,
            )?,
        };
        let token_key = self.token_key("ledger.token_key", &raw.ledger.token_key)?;
        let w = raw.wal;
        if w.dir.is_empty() {
            return Err(self.invalid("wal.dir", "must name a directory"));
        }
        let wal = WriterConfig {
            dir: PathBuf::from(&w.dir),
            sync: match w.sync.as_str() {
                "group" => SyncMode::Group,
                "none" => SyncMode::None,
                other => {
                    return Err(self.invalid(
                        "wal.sync",
                        format!("{other:?} is neither \"group\" nor \"none\""),
                    ));
                }
            },
            group_records_max: self.range(
                "wal.group_records_max",
                w.group_records_max,
                1,
                1_000_000,
            )?,
            group_bytes_max: self.range(
                "wal.group_bytes_max",
                w.group_bytes_max,
                4096,
                256 << 20,
            )?,
            group_wait: std::time::Duration::from_micros(self.range(
                "wal.group_wait_micros",
                w.group_wait_micros,
                0,
                100_000,
            )?),
            segment_bytes: self.range("wal.segment_bytes", w.segment_bytes, 4096, 16 << 30)?,
            queue_records_max: self.range(
                "wal.queue_records_max",
                w.queue_records_max,
                1,
                10_000_000,
            )?,
        };
        let snapshot_interval = match self.range(
            "wal.snapshot_interval_seconds",
            w.snapshot_interval_seconds,
            0,
            7 * 86_400,
        )? {
            0 => None,
            seconds => Some(std::time::Duration::from_secs(seconds)),
        };
        let snapshot_records = match self.range(
            "wal.snapshot_records",
            w.snapshot_records,
            0,
            1 << 40,
        )? {
            0 => None,
            records if records < SNAPSHOT_RECORDS_MIN => {
                return Err(self.invalid(
                        "wal.snapshot_records",
                        format!(
                            "{records} is below the minimum {SNAPSHOT_RECORDS_MIN} (0: snapshots by time only): \
                             each snapshot copies every shard's state"
                        ),
                    ));
            }
            records => Some(records),
        };
        let risk = self.risk(raw.risk)?;
        let mut acquirers: HashMap<u64, Acquirer> = HashMap::new();
        for (i, a) in raw.acquirers.into_iter().enumerate() {
            let id = self.digits(&format!("acquirers[{i}].id"), &a.id, 11)?;
            if id == crate::ops::admin::ADMIN_ACQUIRER {
                return Err(self.invalid(
                    format!("acquirers[{i}].id"),
                    "0 is the admin API's own acquirer (its top-ups and withdrawals settle under it)",
                ));
            }
            let connections_max = match a.connections_max {
                None => limits.connections_max,
                Some(n) => self.range(
                    &format!("acquirers[{i}].connections_max"),
                    n,
                    1,
                    limits.connections_max,
                )?,
            };
            let inflight_max = a
                .inflight_max
                .map(|n| self.range(&format!("acquirers[{i}].inflight_max"), n, 1, 10_000_000))
                .transpose()?;
            let mac_key = match (a.mac.as_deref(), a.mac_key.as_deref()) {
                (None, None) => None,
                (Some("aes-cmac"), Some(key)) => Some(crate::acquirer::mac::MacKey(self.hex16(
                    &format!("acquirers[{i}].mac_key"),
                    key,
                    "must be 32 hex digits: the AES-128 key of the acquirer's MACs",
                )?)),
                (Some("aes-cmac"), None) => {
                    return Err(self.invalid(
                        format!("acquirers[{i}].mac_key"),
                        "is needed with mac = \"aes-cmac\"",
                    ));
                }
                (Some(other), _) => {
                    return Err(self.invalid(
                        format!("acquirers[{i}].mac"),
                        format!("{other:?} is not \"aes-cmac\""),
                    ));
                }
                (None, Some(_)) => {
                    return Err(self.invalid(
                        format!("acquirers[{i}].mac"),
                        "is needed with a mac_key: mac = \"aes-cmac\"",
                    ));
                }
            };
            let mut sources = Vec::new();
            if a.sources.as_ref().is_some_and(Vec::is_empty) {
                return Err(self.invalid(
                    format!("acquirers[{i}].sources"),
                    "is empty: leave it out to admit any address (there is no \"nobody\")",
                ));
            }
            for (j, text) in a.sources.unwrap_or_default().iter().enumerate() {
                let key = format!("acquirers[{i}].sources[{j}]");
                let net = text
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        self.invalid(
                            &key,
                            format!("{text:?} is not an address or a CIDR range (\"10.1.0.0/16\", \"::1\")"),
                        )
                    })?;
                if net != net.trunc() {
                    return Err(self.invalid(
                        &key,
                        format!("{text:?} has host bits set: did you mean {}?", net.trunc()),
                    ));
                }
                if let ipnet::IpNet::V6(v6) = net
                    && v6.addr().to_ipv4_mapped().is_some()
                {
                    return Err(self.invalid(
                        &key,
                        format!("{text:?} is IPv4-mapped: write the IPv4 range (peers are compared as IPv4)"),
                    ));
                }
                let claimed = if sources.contains(&net) {
                    Some(id)
                } else {
                    acquirers
                        .values()
                        .find(|other| other.sources.contains(&net))
                        .map(|other| other.id)
                };
                if let Some(other) = claimed {
                    return Err(self.invalid(
                        &key,
                        format!("{net} is already a source of acquirer {other}: a range belongs to one acquirer (a narrower one inside it takes precedence)"),
                    ));
                }
                sources.push(net);
            }
            let client_cert_cn = match a.client_cert_cn {
                None => None,
                Some(cn) => {
                    let key = format!("acquirers[{i}].client_cert_cn");
                    if raw.tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
                        return Err(
                            self.invalid(key, "needs mutual TLS: a [tls] section with client_ca")
                        );
                    }
                    if cn.is_empty() || cn.len() > 64 || cn.chars().any(char::is_control) {
                        return Err(self.invalid(
                            key,
                            format!("{cn:?} is not a common name of 1 to 64 bytes"),
                        ));
                    }
                    if let Some(other) = acquirers
                        .values()
                        .find(|o| o.client_cert_cn.as_deref() == Some(cn.as_str()))
                    {
                        return Err(self.invalid(
                            key,
                            format!("{cn:?} is already the certificate of acquirer {}: a certificate speaks for one acquirer", other.id),
                        ));
                    }
                    Some(cn)
                }
            };
            let acquirer = Acquirer {
                id,
                name: a.name,
                connections_max,
                mac_key,
                sources,
                client_cert_cn,
                inflight_max,
            };
            if acquirers.insert(id, acquirer).is_some() {
                return Err(self.invalid(
                    format!("acquirers[{i}].id"),
                    format!("{:?} is configured twice", a.id),
                ));
            }
        }
        if acquirers.is_empty() {
            return Err(self.invalid(
                "acquirers",
                "at least one acquirer is needed; no request would be accepted",
            ));
        }
        let issuer_settings = raw
            .issuers
            .into_iter()
            .enumerate()
            .map(|(i, file)| self.issuer(i, file))
            .collect::<Result<Vec<_>, _>>()?;
        let issuers: Vec<String> = issuer_settings.iter().map(|i| i.name.clone()).collect();
        for (i, name) in issuers.iter().enumerate() {
            if issuers[..i].contains(name) {
                return Err(self.invalid(
                    format!("issuers[{i}].name"),
                    format!("{name:?} is configured twice"),
                ));
            }
        }
        let mut routes = RoutingTable::default();
        for (i, r) in raw.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            self.digits(&format!("{key}.prefix"), &r.prefix, 11)?;
            let destination = match r.to.as_str() {
                "on-us" => Destination::OnUs,
                other => match other.strip_prefix("issuer:") {
                    Some(name) if issuers.iter().any(|n| n == name) => {
                        Destination::Issuer(name.to_owned())
                    }
                    Some(name) => {
                        return Err(self.invalid(
                            format!("{key}.to"),
                            format!("issuer {name:?} is not in [[issuers]]"),
                        ));
                    }
                    None => {
                        return Err(self.invalid(
                            format!("{key}.to"),
                            format!("{other:?} is neither \"on-us\" nor \"issuer:NAME\""),
                        ));
                    }
                },
            };
            let mut fallbacks = Vec::with_capacity(r.fallbacks.len());
            for (j, fallback) in r.fallbacks.iter().enumerate() {
                let fkey = format!("{key}.fallbacks[{j}]");
                let Some(name) = fallback.strip_prefix("issuer:") else {
                    return Err(self.invalid(fkey, format!("{fallback:?} is not \"issuer:NAME\"")));
                };
                if !issuers.iter().any(|n| n == name) {
                    return Err(
                        self.invalid(fkey, format!("issuer {name:?} is not in [[issuers]]"))
                    );
                }
                if destination == Destination::OnUs {
                    return Err(self.invalid(fkey, "an on-us route has no fallbacks"));
                }
                if destination == Destination::Issuer(name.to_owned())
                    || fallbacks.iter().any(|f| f == name)
                {
                    return Err(self.invalid(fkey, format!("issuer {name:?} is named twice")));
                }
                fallbacks.push(name.to_owned());
            }
            if !routes.insert_with_fallbacks(r.prefix.as_bytes(), destination, fallbacks) {
                return Err(self.invalid(
                    format!("{key}.prefix"),
                    format!("{:?} is routed twice", r.prefix),
                ));
            }
        }
        let demo = raw.demo.map(|d| self.demo(d)).transpose()?;
        Ok(Settings {
            source: self.file.to_owned(),
            acquirer_listen: self.address("listeners.acquirer", &raw.listeners.acquirer)?,
            http_listen: self.address("listeners.http", &raw.listeners.http)?,
            dialect,
            framing,
            max_frame_bytes,
            workers,
            limits,
            shards,
            shard_limits,
            token_key,
            wal,
            snapshot_interval,
            snapshot_records,
            risk,
            acquirers,
            routes,
            demo,
            admin_token: self.admin_token(raw.admin.token)?,
            issuers: issuer_settings,
            tls: match raw.tls {
                None => None,
                Some(t) => Some(TlsSettings {
                    cert: self.path("tls.cert", &t.cert)?,
                    key: self.path("tls.key", &t.key)?,
                    client_ca: t
                        .client_ca
                        .as_deref()
                        .map(|c| self.path("tls.client_ca", c))
                        .transpose()?,
                    handshake_timeout: std::time::Duration::from_secs(self.range(
                        "tls.handshake_timeout_seconds",
                        t.handshake_timeout_seconds,
                        1,
                        300,
                    )?),
                    handshakes_max: self.range(
                        "tls.handshakes_max",
                        t.handshakes_max,
                        1,
                        100_000,
                    )?,
                }),
            },
            log_format: match raw.logging.format.as_str() {
                "" | "human" => LogFormat::Human,
                "json" => LogFormat::Json,
                other => {
                    return Err(self.invalid(
                        "logging.format",
                        format!("{other:?} is neither \"human\" nor \"json\""),
                    ));
                }
            },
        })
    }

    /// A file's path as given (relative ones from the working directory, like `wal.dir`).
    /// One `[[issuers]]` entry; every key but `name` has a default.
    fn issuer(
        &self,
        i: usize,
        file: IssuerFile,
    ) -> Result<crate::issuer::IssuerSettings, ConfigError> {
        use std::time::Duration;
        let key = |k: &str| format!("issuers[{i}].{k}");
        if file.name.is_empty()
            || file.name.len() > 32
            || !file
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(self.invalid(
                key("name"),
                format!("{:?} is not 1 to 32 letters, digits, '-' or '_'", file.name),
            ));
        }
        let ms = |k: &str, value: Option<u64>, default: u64, min: u64, max: u64| {
            self.range(&key(k), value.unwrap_or(default), min, max)
                .map(Duration::from_millis)
        };
        let dialect = DialectName::from_str(file.dialect.as_deref().unwrap_or("default"))
            .map_err(|problem| self.invalid(key("dialect"), problem))?;
        let framing = FrameHeader::from_str(file.framing.as_deref().unwrap_or("binary2"))
            .map_err(|problem| self.invalid(key("framing"), problem))?;
        let backoff_min = ms("backoff_min_ms", file.backoff_min_ms, 100, 1, 60_000)?;
        let backoff_max = ms("backoff_max_ms", file.backoff_max_ms, 10_000, 1, 600_000)?;
        if backoff_max < backoff_min {
            return Err(self.invalid(key("backoff_max_ms"), "is below backoff_min_ms"));
        }
        let retry_min = ms("retry_min_ms", file.retry_min_ms, 1_000, 10, 3_600_000)?;
        let retry_max = ms("retry_max_ms", file.retry_max_ms, 60_000, 10, 86_400_000)?;
        if retry_max < retry_min {
            return Err(self.invalid(key("retry_max_ms"), "is below retry_min_ms"));
        }
        let stand_in = match file.stand_in {
            None => None,
            Some(s) => Some(crate::issuer::StandIn {
                amount_max: self.amount(&key("stand_in.amount_max"), &s.amount_max, s.currency)?,
                currency: s.currency,
                merchant_categories: s.merchant_categories,
            }),
        };
        Ok(crate::issuer::IssuerSettings {
            address: self.address(
                &key("address"),
                file.address.as_deref().unwrap_or("127.0.0.1:9584"),
            )?,
            dialect,
            framing,
            connections: self.range(&key("connections"), file.connections.unwrap_or(2), 1, 64)?,
            timeout: ms("timeout_ms", file.timeout_ms, 2_000, 10, 60_000)?,
            connect_timeout: ms(
                "connect_timeout_ms",
                file.connect_timeout_ms,
                2_000,
                10,
                60_000,
            )?,
            inflight_max: self.range(
                &key("inflight_max"),
                file.inflight_max.unwrap_or(8_192),
                1,
                100_000,
            )?,
            echo_idle: Duration::from_secs(self.range(
                &key("echo_idle_seconds"),
                file.echo_idle_seconds.unwrap_or(30),
                1,
                3_600,
            )?),
            backoff_min,
            backoff_max,
            breaker_failures: self.range(
                &key("breaker_failures"),
                file.breaker_failures.unwrap_or(20),
                1,
                1_000_000,
            )?,
            breaker_open: Duration::from_secs(self.range(
                &key("breaker_open_seconds"),
                file.breaker_open_seconds.unwrap_or(5),
                1,
                3_600,
            )?),
            queue_max: self.range(
                &key("queue_max"),
                file.queue_max.unwrap_or(100_000),
                1,
                10_000_000,
            )?,
            retry_min,
            retry_max,
            attempts_max: self.range(
                &key("attempts_max"),
                file.attempts_max.unwrap_or(100),
                1,
                1_000_000,
            )?,
            advice_expiry: Duration::from_secs(self.range(
                &key("advice_expiry_seconds"),
                file.advice_expiry_seconds.unwrap_or(86_400),
                1,
                30 * 86_400,
            )?),
            stand_in,
            originals_max: self.range(
                &key("originals_max"),
                file.originals_max.unwrap_or(4_194_304),
                1,
                crate::limits::REMOTE_ORIGINALS_MAX,
            )?,
            tls: match file.tls {
                None => None,
                Some(t) => Some(crate::issuer::tls::IssuerTls {
                    ca: self.path(&key("tls.ca"), &t.ca)?,
                    cert: t
                        .cert
                        .as_deref()
                        .map(|c| self.path(&key("tls.cert"), c))
                        .transpose()?,
                    key: t
                        .key
                        .as_deref()
                        .map(|k| self.path(&key("tls.key"), k))
                        .transpose()?,
                    server_name: t.server_name,
                }),
            },
            name: file.name,
        })
    }

    fn path(&self, key: &str, text: &str) -> Result<PathBuf, ConfigError> {
        if text.trim().is_empty() {
            return Err(self.invalid(key, "an empty path"));
        }
        Ok(PathBuf::from(text))
    }

    fn admin_token(&self, token: String) -> Result<Option<String>, ConfigError> {
        if token.is_empty() {
            return Ok(None);
        }
        if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.invalid(
                "admin.token",
                "must be at least 16 printable characters without spaces (or empty: no admin API)",
            ));
        }
        Ok(Some(token))
    }

    fn demo(&self, d: DemoFile) -> Result<DemoAccounts, ConfigError> {
        self.digits("demo.bin", &d.bin, 8)?;
        if d.bin.len() + DemoAccounts::INDEX_DIGITS + 1 > crate::domain::pan::PAN_LEN_MAX {
            return Err(self.invalid(
                "demo.bin",
                "too long: bin + 9-digit index + check digit exceeds 19 digits",
            ));
        }
        let count = self.range("demo.accounts", d.accounts, 0, DEMO_ACCOUNTS_MAX)?;
        let balance = self.amount("demo.balance", &d.balance, d.currency)?;
        let mut overrides = Vec::with_capacity(d.overrides.len());
        // No demo accounts (`accounts = 0`): the default's overrides have nothing to change.
        let given = if count == 0 { Vec::new() } else { d.overrides };
        for (i, o) in given.into_iter().enumerate() {
            let key = format!("demo.overrides[{i}]");
            if o.index >= count {
                return Err(self.invalid(
                    format!("{key}.index"),
                    format!("{} is not below demo.accounts = {count}", o.index),
                ));
            }
            overrides.push(AccountOverride {
                index: o.index,
                balance: o
                    .balance
                    .map(|b| self.amount(&format!("{key}.balance"), &b, d.currency))
                    .transpose()?,
                blocked: o.blocked,
                limit_per_transaction: o
                    .limit_per_transaction
                    .map(|b| self.amount(&format!("{key}.limit_per_transaction"), &b, d.currency))
                    .transpose()?,
            });
        }
        Ok(DemoAccounts {
            bin: d.bin,
            count,
            balance,
            currency: d.currency,
            overrides,
        })
    }
}

/// ISO 4217 minor-unit exponent of the currencies the switch knows.
pub fn currency_exponent(code: u16) -> Option<u32> {
    match code {
        // JPY, KRW, CLP, ISK, VND, XAF, XOF
        392 | 410 | 152 | 352 | 704 | 950 | 952 => Some(0),
        // BHD, JOD, KWD, OMR, TND, IQD, LYD
        48 | 400 | 414 | 512 | 788 | 368 | 434 => Some(3),
        // USD, EUR, GBP, CHF, CAD, AUD, NZD, SEK, NOK, DKK, PLN, CZK, HUF, INR, IDR, CNY, HKD,
        // SGD, MXN, BRL, ZAR, TRY, AED, SAR, ILS, THB, MYR, PHP
        840 | 978 | 826 | 756 | 124 | 36 | 554 | 752 | 578 | 208 | 985 | 203 | 348 | 356 | 360
        | 156 | 344 | 702 | 484 | 986 | 710 | 949 | 784 | 682 | 376 | 764 | 458 | 608 => Some(2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid_and_matches_the_demo_contract() {
        let s = Settings::embedded().unwrap();
        assert_eq!(s.acquirer_listen.to_string(), "127.0.0.1:8583");
        assert_eq!(s.http_listen.to_string(), "127.0.0.1:9583");
        assert_eq!(s.dialect, DialectName::Default);
        assert_eq!(s.framing, FrameHeader::Binary2);
        assert_eq!(s.max_frame_bytes, 8192);
        assert!(s.acquirers.contains_key(&123_456));
        let demo = s.demo.unwrap();
        assert_eq!(
            (demo.count, demo.balance, demo.currency),
            (1_000_000, 1_000_000, 840)
        );
        let by_index: HashMap<u64, AccountOverride> =
            demo.overrides.iter().map(|o| (o.index, *o)).collect();
        assert_eq!(by_index[&0].balance, Some(10_000));
        assert_eq!(by_index[&1].balance, Some(0));
        assert!(by_index[&2].blocked);
        assert_eq!(by_index[&4].limit_per_transaction, Some(5_000));
    }

    #[test]
    fn snapshots_by_time_and_by_record_count() {
        let s = Settings::embedded().unwrap();
        assert_eq!(
            (s.snapshot_interval, s.snapshot_records),
            (Some(std::time::Duration::from_secs(300)), Some(2_000_000))
        );
        // A file naming neither takes the same defaults.
        let s = Settings::parse("[ledger]\nshards = 2\n", "test.toml").unwrap();
        assert_eq!(s.snapshot_records, Some(2_000_000));
        let s = Settings::parse(
            &EMBEDDED.replacen("snapshot_records = 2000000", "snapshot_records = 0", 1),
            "test.toml",
        )
        .unwrap();
        assert_eq!(
            (s.snapshot_records, s.snapshot_interval.is_some()),
            (None, true)
        );
        let error = error_after("snapshot_records = 2000000", "snapshot_records = -1");
        assert!(error.contains("snapshot_records"), "{error}");
        assert_eq!(
            error_after("snapshot_records = 2000000", "snapshot_records = 99"),
            "test.toml: wal.snapshot_records: 99 is below the minimum 100 (0: snapshots by time only): \
             each snapshot copies every shard's state"
        );
    }

    /// Replaces `from` with `to` in the embedded config and returns the error text.
    fn error_after(from: &str, to: &str) -> String {
        assert!(
            EMBEDDED.contains(from),
            "fixture {from:?} missing from the embedded config"
        );
        let text = EMBEDDED.replacen(from, to, 1);
        Settings::parse(&text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        let cases = [
            (
                "shards = 0 ",
                "shards = 300 ",
                "test.toml: ledger.shards: 300 is above the maximum 256",
            ),
            (
                "dialect = \"default\"",
                "dialect = \"ebcdic\"",
                "test.toml: acquirer_link.dialect: unknown dialect \"ebcdic\"",
            ),
            (
                "framing = \"binary2\"",
                "framing = \"ascii\"",
                "test.toml: acquirer_link.framing: unknown framing \"ascii\"",
            ),
            (
                "max_frame_bytes = 8192",
                "max_frame_bytes = 70000",
                "test.toml: acquirer_link.max_frame_bytes: 70000 is above the maximum 65535",
            ),
            (
                "acquirer = \"127.0.0.1:8583\"",
                "acquirer = \"localhost\"",
                "test.toml: listeners.acquirer: \"localhost\" is not an address",
            ),
            (
                "to = \"issuer:sim\"",
                "to = \"issuer:nobody\"",
                "test.toml: routes[1].to: issuer \"nobody\" is not in [[issuers]]",
            ),
            (
                "to = \"issuer:sim\"",
                "to = \"issuer:sim\"\nfallbacks = [\"issuer:sim\"]",
                "test.toml: routes[1].fallbacks[0]: issuer \"sim\" is named twice",
            ),
            (
                "to = \"issuer:sim\"",
                "to = \"issuer:sim\"\nfallbacks = [\"on-us\"]",
                "test.toml: routes[1].fallbacks[0]: \"on-us\" is not \"issuer:NAME\"",
            ),
            (
                "timeout_ms = 2000",
                "timeout_ms = 0",
                "test.toml: issuers[0].timeout_ms: 0 is below the minimum 10",
            ),
            (
                "backoff_max_ms = 10000",
                "backoff_max_ms = 10",
                "test.toml: issuers[0].backoff_max_ms: is below backoff_min_ms",
            ),
            (
                "balance = \"10000.00\"",
                "balance = \"10000.005\"",
                "test.toml: demo.balance: \"10000.005\" has more than 2 decimals for currency 840",
            ),
            (
                "balance = \"10000.00\"",
                "balance = \"ten\"",
                "test.toml: demo.balance: \"ten\" is not a decimal amount",
            ),
            (
                "index = 4 ",
                "index = 1000000 ",
                "test.toml: demo.overrides[3].index: 1000000 is not below demo.accounts = 1000000",
            ),
            (
                "id = \"123456\"",
                "id = \"12A456\"",
                "test.toml: acquirers[0].id: \"12A456\" is not 1 to 11 digits",
            ),
            (
                "inflight_per_connection = 512",
                "inflight_per_connection = 0",
                "test.toml: limits.inflight_per_connection: 0 is below the minimum 1",
            ),
            (
                "token_key = \"",
                "token_key = \"zz",
                "test.toml: ledger.token_key: must be 32 hex digits",
            ),
            (
                "token_key = \"5ee0d1e2c3b4a5968778695a4b3c2d1e\"",
                "token_key = \"5ee0d1e2c3b4a5968778695a4b3c2dxx\"",
                "test.toml: ledger.token_key: must be 32 hex digits",
            ),
        ];
        for (from, to, expected) in cases {
            let error = error_after(from, to);
            assert!(
                error.starts_with(expected),
                "{from} -> {to}:\n got {error}\nwant {expected}"
            );
        }
    }

    #[test]
    fn toml_errors_name_the_file_and_the_unknown_key() {
        let error = error_after("[ledger]\n", "[ledger]\nshard = 3\n");
        assert!(error.starts_with("test.toml: "), "{error}");
        assert!(error.contains("unknown field `shard`"), "{error}");
        let error = error_after("shards = 0 ", "shards = \"two\" ");
        assert!(
            error.contains("shards") && error.contains("invalid type"),
            "{error}"
        );
    }

    #[test]
    fn debug_output_leaves_out_the_secrets() {
        let settings = Settings::embedded().unwrap();
        let shown = format!("{settings:?}");
        let token = settings.admin_token.clone().unwrap();
        assert!(!shown.contains(&token), "{shown}");
        assert!(!shown.contains("token_key"), "{shown}");
        assert!(
            !shown.contains(&format!("{:?}", settings.token_key)),
            "{shown}"
        );
        assert!(shown.contains("acquirer_listen"));
    }

    #[test]
    fn a_file_names_only_what_it_changes() {
        let settings = Settings::parse("[ledger]\nshards = 3\n", "small.toml").unwrap();
        let default = Settings::embedded().unwrap();
        assert_eq!(settings.shards, 3);
        assert_eq!(
            (
                settings.acquirer_listen,
                settings.limits,
                settings.acquirers.len()
            ),
            (
                default.acquirer_listen,
                default.limits,
                default.acquirers.len()
            )
        );
        let error = Settings::parse("[ledger]\nshards = 999\n", "small.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "small.toml: ledger.shards: 999 is above the maximum 256"
        );
        // An array replaces the default's whole; a table merges key by key.
        let settings = Settings::parse(
            "[[acquirers]]\nid = \"777\"\nname = \"Other\"\n\n[demo]\naccounts = 0\n",
            "other.toml",
        )
        .unwrap();
        assert_eq!(
            settings.acquirers.keys().copied().collect::<Vec<_>>(),
            [777]
        );
        let demo = settings.demo.unwrap();
        assert_eq!(
            (demo.count, demo.bin.as_str(), demo.overrides.len()),
            (0, "400000", 0)
        );
        let error = Settings::parse("[limits]\nidle_timeout = 3\n", "typo.toml")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("typo.toml: ") && error.contains("unknown field `idle_timeout`"),
            "{error}"
        );
    }

    #[test]
    fn missing_file_is_named() {
        let error = Settings::load(Path::new("/nonexistent/switch.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("/nonexistent/switch.toml: cannot read"),
            "{error}"
        );
    }

    #[test]
    fn currency_exponents_drive_amount_conversion() {
        let checker = Checker { file: "t" };
        assert_eq!(checker.amount("k", "1.5", 840).unwrap(), 150);
        assert_eq!(checker.amount("k", "150", 392).unwrap(), 150);
        assert_eq!(checker.amount("k", "1.005", 48).unwrap(), 1005);
        assert!(
            checker
                .amount("k", "1.5", 392)
                .unwrap_err()
                .to_string()
                .contains("more than 0 decimals")
        );
        assert!(
            checker
                .amount("k", "1", 999)
                .unwrap_err()
                .to_string()
                .contains("not a known ISO 4217")
        );
        assert!(
            checker
                .amount("k", "-1", 840)
                .unwrap_err()
                .to_string()
                .contains("negative")
        );
    }
}
