//! Every byte the switch writes to its log is defined here, and nowhere else.
//!
//! # Segment files
//! A log is a directory of segment files named by a zero-padded sequence number,
//! `00000000000000000000.wal`, `00000000000000000001.wal`, …, each starting with a header:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `SWITCHWL` |
//! | 8 | 4 | format version, u32 little-endian (3; versions 1 and 2 are still read) |
//! | 12 | 8 | segment sequence, u64 LE (equals the file name's number) |
//! | 20 | 8 | LSN of the segment's first record, u64 LE |
//! | 28 | 4 | CRC-32C of bytes 0..28, u32 LE |
//!
//! # Records
//! After the header, records follow back to back:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | body length `n` (LSN + payload), u32 LE, 9..=[`RECORD_BODY_MAX`] |
//! | 4 | 4 | CRC-32C of the length bytes and the body, u32 LE |
//! | 8 | 8 | LSN, u64 LE: one more than the record before it, across segments; from format 3 its top bit (2^63) is set on the first record of each group |
//! | 16 | n − 8 | payload: an [`Entry`] in bincode 2 (standard configuration) |
//!
//! The checksum covers the length, so a damaged length is caught like damaged data.
//!
//! A segment may end in zeros after its last record: written ahead (`writer::ZeroFilled`), not
//! used yet. A record's length is never 0, so zeros read as no record: the end of the
//! segment's records (`scan`).
//!
//! The writer writes a group only after the group before it is on disk, so a record marked
//! as a group's first (format 3) proves that every record before it was acknowledged: recovery
//! uses it to tell damage to acknowledged records (corruption) from a last group torn by a
//! crash while being written (a torn tail), even when some of that group's records survived
//! and some did not.
//!
//! # Snapshot files
//! `NNNNNNNNNNNNNNNNNNNN.snap`, named by the lowest LSN a replay must start from, written as
//! `.snap.tmp`, fsynced, renamed and the directory fsynced. A header, then one section per shard:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `SWITCHSN` |
//! | 8 | 4 | format version, u32 LE (3; versions 1 and 2 are still read) |
//! | 12 | 4 | shard count, u32 LE |
//! | 16 | 8 | creation time, Unix seconds, u64 LE |
//! | 24 | 4 | CRC-32C of bytes 0..24, u32 LE |
//!
//! Each section: body length u64 LE, CRC-32C (u32 LE) of the length bytes and the body, then
//! the body: the shard's marker LSN (u64 LE; the shard's records from this LSN on are not in
//! the image) and its image in bincode 2. From version 3 one more section follows the shards',
//! framed the same way: the remote issuers' approvals that reversals and completions may still
//! name ([`RemotePart`], each channel's with its own marker LSN), in bincode 2 after 8 zero
//! bytes.
//!
//! # Entries
//! `Applied`: one request the ledger decided (posting with the card as a token, decision time,
//! request fingerprint, and the outcome that was sent). `Expired`: holds released by expiry.
//! Entries are a bincode enum: variant 0 is the first `Applied` shape (no field 95 amount),
//! variant 1 `Expired` (the holds released, listed), variants 4 and 5 an account opened or
//! blocked through the admin API, variant 2 `Applied` with the field 95
//! amount, variant 3 `Expire` (one bounded expiry step of one shard: its time, bounds and
//! result, which replay repeats; a few dozen bytes however much expires). Variants are only
//! ever added, so every log stays readable; this build writes variants 2 and 3.
//! Replay applies each entry again and checks it gives the recorded outcome.

use bincode::{Decode, Encode};

use crate::domain::{Balances, CardToken, Kind, Outcome, Posting, ResponseCode, TxnKey};
use crate::ledger::{
    Account, ColdState, Expiry, ExpiryStep, Part, Record, ShardImage, Span, State,
};

pub const SEGMENT_MAGIC: [u8; 8] = *b"SWITCHWL";
/// Segments: version 3 marks the first record of each group (version 2, written only by
/// development builds, holds entry variants 2 and 3 without marks); versions 1 and 2 are still
/// read, under the rule without marks. The writer never appends to an older segment: it
/// starts a new one.
pub const FORMAT_VERSION: u32 = 3;
/// The first segment version whose groups are marked.
pub const MARKED_GROUPS_VERSION: u32 = 3;
/// Snapshots: version 2 keeps each transaction's effective, held and captured amounts and the
/// hold a completion captured; version 1 files are still read.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 4;
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Length and checksum before each record body.
pub const RECORD_PREFIX_LEN: usize = 8;
/// The largest record body; anything longer is damage, not data.
pub const RECORD_BODY_MAX: usize = 64 * 1024;
const LSN_LEN: usize = 8;

const _: () = assert!(
    RECORD_BODY_MAX <= u32::MAX as usize,
    "record length must fit its u32 field"
);

pub fn segment_file_name(sequence: u64) -> String {
    format!("{sequence:020}.wal")
}

/// The sequence number of a segment file name, if it is one.
pub fn segment_sequence(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_suffix(".wal")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())?
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub sequence: u64,
    pub first_lsn: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header is {0} bytes, needs {SEGMENT_HEADER_LEN}")]
    Short(usize),
    #[error("bad magic (not a switch WAL segment)")]
    Magic,
    #[error("format version {0} is not supported (this build reads version {FORMAT_VERSION})")]
    Version(u32),
    #[error("header checksum mismatch")]
    Checksum,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[12..20].copy_from_slice(&self.sequence.to_le_bytes());
        out[20..28].copy_from_slice(&self.first_lsn.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..28]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// The format version of a segment whose header [`SegmentHeader::decode`] accepted.
    pub fn version_of(bytes: &[u8]) -> u32 {
        if bytes.len() < 12 {
            0
        } else {
            u32_at(bytes, 8)
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
        if bytes.len() < SEGMENT_HEADER_LEN {
            return Err(HeaderError::Short(bytes.len()));
        }
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::Magic);
        }
        if crc32c::crc32c(&bytes[0..28]) != u32_at(bytes, 28) {
            return Err(HeaderError::Checksum);
        }
        let version = u32_at(bytes, 8);
        if !(1..=FORMAT_VERSION).contains(&version) {
            return Err(HeaderError::Version(version));
        }
        Ok(SegmentHeader {
            sequence: u64_at(bytes, 12),
            first_lsn: u64_at(bytes, 20),
        })
    }
}

/// The LSN bit that marks the first record of a group (format 3).
const GROUP_START: u64 = 1 << 63;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a record of {0} bytes exceeds the largest the format can hold ({RECORD_BODY_MAX})")]
pub struct RecordTooLarge(pub usize);

/// Appends one framed record to `out`, for tests and benchmarks: panics if it is too large.
/// The writer uses [`try_append_record`].
pub fn append_record(out: &mut Vec<u8>, lsn: u64, payload: &[u8]) {
    if let Err(error) = try_append_record(out, lsn, payload, false) {
        panic!("{error}");
    }
}

/// Appends one framed record to `out`; `group_start` marks the first record of a group.
pub fn try_append_record(
    out: &mut Vec<u8>,
    lsn: u64,
    payload: &[u8],
    group_start: bool,
) -> Result<(), RecordTooLarge> {
    let body_len = LSN_LEN + payload.len();
    if body_len > RECORD_BODY_MAX || lsn >= GROUP_START {
        return Err(RecordTooLarge(body_len));
    }
    let length = u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes();
    let stored = if group_start { lsn | GROUP_START } else { lsn };
    let lsn_bytes = stored.to_le_bytes();
    let crc = crc32c::crc32c_append(
        crc32c::crc32c_append(crc32c::crc32c(&length), &lsn_bytes),
        payload,
    );
    out.extend_from_slice(&length);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&lsn_bytes);
    out.extend_from_slice(payload);
    Ok(())
}

/// What lies at the start of a byte slice.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordRead<'a> {
    /// A whole, intact record of `len` bytes in all.
    Record {
        lsn: u64,
        payload: &'a [u8],
        len: usize,
        /// The first record of a group: everything before it was on disk when it was written.
        group_start: bool,
    },
    /// Not enough bytes for the record its length announces (or for a length).
    Incomplete,
    /// The length is out of range or the checksum does not match.
    Damaged(&'static str),
}

pub fn read_record(bytes: &[u8]) -> RecordRead<'_> {
    if bytes.len() < RECORD_PREFIX_LEN {
        return RecordRead::Incomplete;
    }
    let body_len = u32_at(bytes, 0) as usize;
    if !(LSN_LEN + 1..=RECORD_BODY_MAX).contains(&body_len) {
        return RecordRead::Damaged("record length out of range");
    }
    let Some(body) = bytes.get(RECORD_PREFIX_LEN..RECORD_PREFIX_LEN + body_len) else {
        return RecordRead::Incomplete;
    };
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[0..4]), body);
    if crc != u32_at(bytes, 4) {
        return RecordRead::Damaged("record checksum mismatch");
    }
    let stored = u64_at(body, 0);
    RecordRead::Record {
        lsn: stored & !GROUP_START,
        payload: &body[LSN_LEN..],
        len: RECORD_PREFIX_LEN + body_len,
        group_start: stored & GROUP_START != 0,
    }
}

/// A log entry, as the rest of the switch sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Applied {
        posting: Posting,
        at_seconds: u64,
        fingerprint: u64,
        outcome: Outcome,
    },
    /// Holds released by expiry, listed (the first format; still read, no longer written).
    Expired {
        at_seconds: u64,
        holds: Vec<(CardToken, TxnKey)>,
    },
    /// One bounded expiry step of one shard: the call of
    /// [`crate::ledger::LedgerShard::expire_bounded`] with its arguments and result,
    /// which replay repeats and checks. `shards` is the shard count it was made under.
    Expire {
        shard: u32,
        shards: u32,
        step: ExpiryStep,
        done: Expiry,
    },
    /// An account opened through the admin API.
    AccountOpened {
        at_seconds: u64,
        card: CardToken,
        account: Account,
    },
    /// A card blocked or unblocked through the admin API.
    AccountBlocked {
        at_seconds: u64,
        card: CardToken,
        blocked: bool,
    },
    /// A decision about a card of a remote issuer (the issuer's answer, a timeout, a stand-in
    /// decision, or an advice accepted for forwarding): restored into the idempotency table on
    /// recovery, and, with `advice`, a message queued for the issuer until it acknowledges it.
    Remote {
        at_seconds: u64,
        issuer: String,
        key: TxnKey,
        fingerprint: u64,
        outcome: Outcome,
        /// The switch's own request to the issuer: its MTI and field 11 (for field 90 of a
        /// later reversal; for a stand-in approval, those of its 0120 advice); `None` when
        /// nothing was sent.
        sent: Option<([u8; 4], u32)>,
        /// Messages queued for the issuer with it: a reversal, an advice, or both (a stand-in
        /// approval of a timed-out request: the request's reversal and the 0120).
        advices: Vec<Advice>,
        /// For an acquirer's reversal of a remote transaction: the original it reverses, with
        /// the field 11 the switch sent it under (the same acquirer key may have been sent
        /// twice, after a restart).
        original: Option<(TxnKey, u32)>,
    },
    /// A request about to be sent to an issuer, logged (and durable) before it is sent, with
    /// the reversal to queue should no decision about it ever be logged (a crash while it was
    /// outstanding): the `Remote` record of its answer or timeout closes it.
    RemoteSent {
        at_seconds: u64,
        issuer: String,
        key: TxnKey,
        /// The request's fingerprint: recovery answers its retransmissions 91 if no decision
        /// was logged.
        fingerprint: u64,
        sent: ([u8; 4], u32),
        reversal: Advice,
    },
    /// A queued advice acknowledged by its issuer (`delivered`), or given up.
    AdviceDone {
        at_seconds: u64,
        id: u128,
        delivered: bool,
    },
}

/// A message queued for a remote issuer (store and forward): a reversal (0420) or an advice
/// (0120, 0220). `sealed` is the encoded message, sealed with AES-GCM-SIV under a key derived
/// from `ledger.token_key`: it holds the card number, which is never on disk in clear.
#[derive(Clone, PartialEq, Eq)]
pub struct Advice {
    /// Unique over the log's whole life: the process start in nanoseconds, then a counter.
    pub id: u128,
    pub issuer: String,
    pub created_seconds: u64,
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for Advice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Advice")
            .field("id", &self.id)
            .field("issuer", &self.issuer)
            .field("created_seconds", &self.created_seconds)
            .field("sealed", &format_args!("<{} bytes>", self.sealed.len()))
            .finish()
    }
}

#[derive(Clone, Debug, thiserror::Error)]
#[error("undecodable entry: {0}")]
pub struct EntryError(String);

// The stored shapes: plain fields, so that the domain types stay free of encoding concerns and
// a change to them cannot silently change the format.

#[derive(Encode, Decode)]
struct KeyRecord {
    acquirer: u64,
    terminal: [u8; 8],
    stan: u32,
    transmission: u64,
}

#[derive(Encode, Decode)]
struct CardRecord {
    hash: u128,
    last_four: u16,
}

#[derive(Encode, Decode)]
struct AppliedRecord {
    at_seconds: u64,
    fingerprint: u64,
    kind: u8,
    card: CardRecord,
    amount: u64,
    currency: Option<u16>,
    key: KeyRecord,
    original: Option<KeyRecord>,
    code: [u8; 2],
    auth_id: Option<[u8; 6]>,
    /// Ledger balance, available balance, currency.
    balances: Option<(i64, i64, u16)>,
}

/// [`AppliedRecord`] with the field 95 amount of a partial reversal.
#[derive(Encode, Decode)]
struct AppliedRecord2 {
    applied: AppliedRecord,
    replacement: Option<u64>,
}

#[derive(Encode, Decode)]
struct ExpiredRecord {
    at_seconds: u64,
    holds: Vec<(CardRecord, KeyRecord)>,
}

#[derive(Encode, Decode)]
struct ExpireRecord {
    shard: u32,
    shards: u32,
    at_seconds: u64,
    hold_expiry_seconds: u64,
    reversal_window_seconds: u64,
    holds_max: u32,
    postings_max: u32,
    holds: u32,
    released: u32,
    forgotten: u32,
    more: bool,
}

#[derive(Encode, Decode)]
enum EntryRecord {
    /// Written before field 95 was kept; read as a posting without one.
    Applied(AppliedRecord),
    Expired(ExpiredRecord),
    Applied2(AppliedRecord2),
    Expire(ExpireRecord),
    AccountOpened(AccountOpenedRecord),
    AccountBlocked(AccountBlockedRecord),
    Remote(RemoteRecord),
    AdviceDone(AdviceDoneRecord),
    RemoteSent(RemoteSentRecord),
}

#[derive(Encode, Decode)]
struct RemoteSentRecord {
    at_seconds: u64,
    issuer: String,
    key: KeyRecord,
    fingerprint: u64,
    sent: ([u8; 4], u32),
    reversal: AdviceRecord,
}

fn advice_record(a: &Advice) -> AdviceRecord {
    AdviceRecord {
        id: a.id,
        issuer: a.issuer.clone(),
        created_seconds: a.created_seconds,
        sealed: a.sealed.clone(),
    }
}

fn advice_from(a: AdviceRecord) -> Advice {
    Advice {
        id: a.id,
        issuer: a.issuer,
        created_seconds: a.created_seconds,
        sealed: a.sealed,
    }
}

#[derive(Encode, Decode)]
struct AdviceRecord {
    id: u128,
    issuer: String,
    created_seconds: u64,
    sealed: Vec<u8>,
}

#[derive(Encode, Decode)]
struct RemoteRecord {
    at_seconds: u64,
    issuer: String,
    key: KeyRecord,
    fingerprint: u64,
    code: [u8; 2],
    auth_id: Option<[u8; 6]>,
    sent: Option<([u8; 4], u32)>,
    advices: Vec<AdviceRecord>,
    original: Option<(KeyRecord, u32)>,
}

#[derive(Encode, Decode)]
struct AdviceDoneRecord {
    at_seconds: u64,
    id: u128,
    delivered: bool,
}

#[derive(Encode, Decode)]
struct AccountOpenedRecord {
    at_seconds: u64,
    card: CardRecord,
    account: AccountRecord,
}

#[derive(Encode, Decode)]
struct AccountBlockedRecord {
    at_seconds: u64,
    card: CardRecord,
    blocked: bool,
}

const KINDS: [Kind; 10] = [
    Kind::Authorization,
    Kind::AuthorizationAdvice,
    Kind::Purchase,
    Kind::CashWithdrawal,
    Kind::Refund,
    Kind::Deposit,
    Kind::BalanceInquiry,
    Kind::Completion,
    Kind::Reversal,
    Kind::ReversalAdvice,
];

fn kind_code(kind: Kind) -> u8 {
    // The position in KINDS is the stored code; KINDS lists every kind.
    KINDS
        .iter()
        .position(|k| *k == kind)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(u8::MAX)
}

fn key_record(key: &TxnKey) -> KeyRecord {
    KeyRecord {
        acquirer: key.acquirer,
        terminal: key.terminal,
        stan: key.stan,
        transmission: key.transmission,
    }
}

fn key_from(record: KeyRecord) -> TxnKey {
    TxnKey {
        acquirer: record.acquirer,
        terminal: record.terminal,
        stan: record.stan,
        transmission: record.transmission,
    }
}

fn card_record(card: &CardToken) -> CardRecord {
    CardRecord {
        hash: card.hash,
        last_four: card.last_four,
    }
}

fn account_record(a: &Account) -> AccountRecord {
    AccountRecord {
        ledger: a.ledger,
        held: a.held,
        currency: a.currency,
        blocked: a.blocked,
        limit_per_transaction: a.limit_per_transaction,
    }
}

fn account_from(a: AccountRecord) -> Account {
    Account {
        ledger: a.ledger,
        held: a.held,
        currency: a.currency,
        blocked: a.blocked,
        limit_per_transaction: a.limit_per_transaction,
    }
}

fn card_from(record: CardRecord) -> CardToken {
    CardToken {
        hash: record.hash,
        last_four: record.last_four,
    }
}

const CONFIG: bincode::config::Configuration = bincode::config::standard();

/// Appends the bincode payload of `entry` to `out`.
pub fn encode_entry(entry: &Entry, out: &mut Vec<u8>) {
    let record = match entry {
        Entry::Applied {
            posting,
            at_seconds,
            fingerprint,
            outcome,
        } => EntryRecord::Applied2(AppliedRecord2 {
            replacement: posting.replacement,
            applied: applied_record(posting, *at_seconds, *fingerprint, outcome),
        }),
        Entry::Expire {
            shard,
            shards,
            step,
            done,
        } => EntryRecord::Expire(ExpireRecord {
            shard: *shard,
            shards: *shards,
            at_seconds: step.at_seconds,
            hold_expiry_seconds: step.hold_expiry_seconds,
            reversal_window_seconds: step.reversal_window_seconds,
            holds_max: step.holds_max,
            postings_max: step.postings_max,
            holds: done.holds,
            released: done.released,
            forgotten: done.forgotten,
            more: done.more,
        }),
        Entry::AccountOpened {
            at_seconds,
            card,
            account,
        } => EntryRecord::AccountOpened(AccountOpenedRecord {
            at_seconds: *at_seconds,
            card: card_record(card),
            account: account_record(account),
        }),
        Entry::AccountBlocked {
            at_seconds,
            card,
            blocked,
        } => EntryRecord::AccountBlocked(AccountBlockedRecord {
            at_seconds: *at_seconds,
            card: card_record(card),
            blocked: *blocked,
        }),
        Entry::Remote {
            at_seconds,
            issuer,
            key,
            fingerprint,
            outcome,
            sent,
            advices,
            original,
        } => EntryRecord::Remote(RemoteRecord {
            at_seconds: *at_seconds,
            issuer: issuer.clone(),
            key: key_record(key),
            fingerprint: *fingerprint,
            code: *outcome.code.as_bytes(),
            auth_id: outcome.auth_id,
            sent: *sent,
            advices: advices.iter().map(advice_record).collect(),
            original: original.as_ref().map(|(k, stan)| (key_record(k), *stan)),
        }),
        Entry::RemoteSent {
            at_seconds,
            issuer,
            key,
            fingerprint,
            sent,
            reversal,
        } => EntryRecord::RemoteSent(RemoteSentRecord {
            at_seconds: *at_seconds,
            issuer: issuer.clone(),
            key: key_record(key),
            fingerprint: *fingerprint,
            sent: *sent,
            reversal: advice_record(reversal),
        }),
        Entry::AdviceDone {
            at_seconds,
            id,
            delivered,
        } => EntryRecord::AdviceDone(AdviceDoneRecord {
            at_seconds: *at_seconds,
            id: *id,
            delivered: *delivered,
        }),
        Entry::Expired { at_seconds, holds } => EntryRecord::Expired(ExpiredRecord {
            at_seconds: *at_seconds,
            holds: holds
                .iter()
                .map(|(card, key)| (card_record(card), key_record(key)))
                .collect(),
        }),
    };
    // Writing into a Vec cannot fail.
    let _ = bincode::encode_into_std_write(record, out, CONFIG);
}

/// Variant indices of [`EntryRecord`] (its order of declaration): bincode's standard
/// configuration writes the index first, as a one-byte varint.
const APPLIED_FIRST: u8 = 0;
const APPLIED: u8 = 2;
const REMOTE: u8 = 6;
/// The variants before it concern the ledger alone (postings, expiry, accounts).
const FIRST_NOT_LEDGER_ONLY: u8 = 6;

/// Whether `payload` holds an answer sent to an acquirer ([`Entry::Applied`] or
/// [`Entry::Remote`]), told from its first byte without decoding it.
pub fn carries_answer(payload: &[u8]) -> bool {
    matches!(payload.first(), Some(&(APPLIED_FIRST | APPLIED | REMOTE)))
}

/// Whether `payload` is an entry about the ledger alone ([`Entry::Applied`],
/// [`Entry::Expired`], [`Entry::Expire`], [`Entry::AccountOpened`], [`Entry::AccountBlocked`]),
/// told from its first byte without decoding it. Not for an entry about an issuer's business,
/// nor for a variant this build does not know (which must be decoded, to refuse it).
pub fn ledger_only(payload: &[u8]) -> bool {
    payload.first().is_some_and(|&v| v < FIRST_NOT_LEDGER_ONLY)
}

/// Whether `payload` is an entry written under the money rules before completions, partial
/// reversals and early reversals (variant 0): replaying it under today's rules may decide
/// otherwise than the log says. Replay trusts an approval of every other variant not to
/// have met its own key anywhere (`LedgerShard::replay`): a change of the money rules that
/// keeps a key longer, or decides a duplicate otherwise, needs an Applied variant of its own,
/// named here.
pub fn written_under_earlier_rules(payload: &[u8]) -> bool {
    payload.first() == Some(&APPLIED_FIRST)
}

/// What every Applied variant records of a request and its answer.
fn applied_record(
    posting: &Posting,
    at_seconds: u64,
    fingerprint: u64,
    outcome: &Outcome,
) -> AppliedRecord {
    AppliedRecord {
        at_seconds,
        fingerprint,
        kind: kind_code(posting.kind),
        card: card_record(&posting.card),
        amount: posting.amount,
        currency: posting.currency,
        key: key_record(&posting.key),
        original: posting.original.as_ref().map(key_record),
        code: *outcome.code.as_bytes(),
        auth_id: outcome.auth_id,
        balances: outcome
            .balances
            .map(|b| (b.ledger, b.available, b.currency)),
    }
}

/// An Applied entry as releases before field 95 wrote it (variant 0): for tests of how replay
/// treats entries written under earlier rules.
#[cfg(test)]
pub(crate) fn encode_applied_v1(
    posting: &Posting,
    at_seconds: u64,
    outcome: &Outcome,
    out: &mut Vec<u8>,
) {
    let record = EntryRecord::Applied(applied_record(posting, at_seconds, 0, outcome));
    let _ = bincode::encode_into_std_write(record, out, CONFIG);
}

fn applied_entry(r: AppliedRecord, replacement: Option<u64>) -> Result<Entry, EntryError> {
    let kind = *KINDS
        .get(usize::from(r.kind))
        .ok_or_else(|| EntryError(format!("unknown kind {}", r.kind)))?;
    let code = ResponseCode::from_bytes(r.code)
        .ok_or_else(|| EntryError(format!("unknown response code {:?}", r.code)))?;
    Ok(Entry::Applied {
        posting: Posting {
            kind,
            card: card_from(r.card),
            amount: r.amount,
            currency: r.currency,
            key: key_from(r.key),
            original: r.original.map(key_from),
            replacement,
        },
        at_seconds: r.at_seconds,
        fingerprint: r.fingerprint,
        outcome: Outcome {
            code,
            auth_id: r.auth_id,
            balances: r.balances.map(|(ledger, available, currency)| Balances {
                ledger,
                available,
                currency,
            }),
        },
    })
}

pub fn decode_entry(payload: &[u8]) -> Result<Entry, EntryError> {
    let (record, read): (EntryRecord, usize) =
        bincode::decode_from_slice(payload, CONFIG).map_err(|e| EntryError(e.to_string()))?;
    if read != payload.len() {
        return Err(EntryError(format!(
            "{} bytes after the entry",
            payload.len() - read
        )));
    }
    Ok(match record {
        EntryRecord::Applied(r) => applied_entry(r, None)?,
        EntryRecord::Applied2(r) => applied_entry(r.applied, r.replacement)?,
        EntryRecord::AccountOpened(r) => Entry::AccountOpened {
            at_seconds: r.at_seconds,
            card: card_from(r.card),
            account: account_from(r.account),
        },
        EntryRecord::AccountBlocked(r) => Entry::AccountBlocked {
            at_seconds: r.at_seconds,
            card: card_from(r.card),
            blocked: r.blocked,
        },
        EntryRecord::Expire(r) => Entry::Expire {
            shard: r.shard,
            shards: r.shards,
            step: ExpiryStep {
                at_seconds: r.at_seconds,
                hold_expiry_seconds: r.hold_expiry_seconds,
                reversal_window_seconds: r.reversal_window_seconds,
                holds_max: r.holds_max,
                postings_max: r.postings_max,
            },
            done: Expiry {
                holds: r.holds,
                released: r.released,
                forgotten: r.forgotten,
                more: r.more,
            },
        },
        EntryRecord::Remote(r) => Entry::Remote {
            at_seconds: r.at_seconds,
            issuer: r.issuer,
            key: key_from(r.key),
            fingerprint: r.fingerprint,
            outcome: Outcome {
                code: ResponseCode::from_bytes(r.code)
                    .ok_or_else(|| EntryError(format!("unknown response code {:?}", r.code)))?,
                auth_id: r.auth_id,
                balances: None,
            },
            sent: r.sent,
            advices: r.advices.into_iter().map(advice_from).collect(),
            original: r.original.map(|(k, stan)| (key_from(k), stan)),
        },
        EntryRecord::RemoteSent(r) => Entry::RemoteSent {
            at_seconds: r.at_seconds,
            issuer: r.issuer,
            key: key_from(r.key),
            fingerprint: r.fingerprint,
            sent: r.sent,
            reversal: advice_from(r.reversal),
        },
        EntryRecord::AdviceDone(r) => Entry::AdviceDone {
            at_seconds: r.at_seconds,
            id: r.id,
            delivered: r.delivered,
        },
        EntryRecord::Expired(r) => Entry::Expired {
            at_seconds: r.at_seconds,
            holds: r
                .holds
                .into_iter()
                .map(|(card, key)| (card_from(card), key_from(key)))
                .collect(),
        },
    })
}

pub const SNAPSHOT_MAGIC: [u8; 8] = *b"SWITCHSN";
pub const SNAPSHOT_HEADER_LEN: usize = 28;

pub fn snapshot_file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.snap")
}

/// The LSN of a snapshot file name, if it is one.
pub fn snapshot_lsn(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_suffix(".snap")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())?
}

#[derive(Encode, Decode)]
struct AccountRecord {
    ledger: i64,
    held: i64,
    currency: u16,
    blocked: bool,
    limit_per_transaction: Option<u64>,
}

/// A kept transaction in a version 1 snapshot.
#[derive(Encode, Decode)]
struct TransactionRecordV1 {
    card: CardRecord,
    kind: u8,
    amount: u64,
    /// 0 open, 1 captured (with the amount), 2 closed.
    state: u8,
    captured: u64,
}

#[derive(Encode, Decode)]
struct ImageRecordV1 {
    accounts: Vec<(CardRecord, AccountRecord)>,
    transactions: Vec<(KeyRecord, TransactionRecordV1)>,
    holds_by_age: Vec<(u64, KeyRecord)>,
    postings_by_age: Vec<(u64, KeyRecord)>,
    settlement: Vec<(u64, i64)>,
    auth_counter: u32,
}

#[derive(Encode, Decode)]
struct TransactionRecord {
    card: CardRecord,
    kind: u8,
    amount: u64,
    effective: u64,
    /// A hold: held and captured amounts.
    hold: Option<(u64, u64)>,
    /// A completion: STAN and field 7 of the hold it captured from.
    capture_of: Option<(u32, u64)>,
    reversed_before_arrival: bool,
}

#[derive(Encode, Decode)]
struct ImageRecord {
    accounts: Vec<(CardRecord, AccountRecord)>,
    transactions: Vec<(KeyRecord, TransactionRecord)>,
    holds_by_age: Vec<(u64, KeyRecord)>,
    postings_by_age: Vec<(u64, KeyRecord)>,
    settlement: Vec<(u64, i64)>,
    auth_counter: u64,
}

/// Where a shard's transactions on disk stand (snapshot version 4).
#[derive(Encode, Decode)]
struct ColdRecord {
    version: u64,
    holds: (u64, u64),
    postings: (u64, u64),
    count: u64,
    tombstones: u64,
}

fn cold_record(state: &ColdState) -> ColdRecord {
    ColdRecord {
        version: state.version,
        holds: (state.holds.front, state.holds.back),
        postings: (state.postings.front, state.postings.back),
        count: state.count,
        tombstones: state.tombstones,
    }
}

fn cold_from(r: &ColdRecord) -> Result<ColdState, &'static str> {
    if r.holds.0 > r.holds.1 || r.postings.0 > r.postings.1 {
        return Err("a queue on disk that ends before it starts");
    }
    Ok(ColdState {
        version: r.version,
        holds: Span {
            front: r.holds.0,
            back: r.holds.1,
        },
        postings: Span {
            front: r.postings.0,
            back: r.postings.1,
        },
        count: r.count,
        tombstones: r.tombstones,
    })
}

fn transaction_record(r: &Record) -> TransactionRecord {
    let (hold, capture_of) = match r.part {
        Part::Hold { held, captured } => (Some((held, captured)), None),
        Part::Capture { stan, transmission } => (None, Some((stan, transmission))),
        Part::Other => (None, None),
    };
    TransactionRecord {
        card: card_record(&r.card),
        kind: kind_code(r.kind),
        amount: r.amount,
        effective: r.effective,
        hold,
        capture_of,
        reversed_before_arrival: r.state == State::ReversedBeforeArrival,
    }
}

fn record_from(r: TransactionRecord) -> Result<Record, &'static str> {
    let kind = *KINDS
        .get(usize::from(r.kind))
        .ok_or("unknown transaction kind")?;
    let state = if r.reversed_before_arrival {
        State::ReversedBeforeArrival
    } else {
        State::Live
    };
    let part = match (r.hold, r.capture_of) {
        (Some((held, captured)), None) => Part::Hold { held, captured },
        (None, Some((stan, transmission))) => Part::Capture { stan, transmission },
        (None, None) => Part::Other,
        (Some(_), Some(_)) => return Err("a hold that is also a capture"),
    };
    Ok(Record {
        card: card_from(r.card),
        kind,
        state,
        amount: r.amount,
        effective: r.effective,
        part,
    })
}

/// A kept transaction as the ledger's store on disk holds it (the snapshot's encoding).
pub fn encode_transaction(record: &Record, out: &mut Vec<u8>) {
    let _ = bincode::encode_into_std_write(transaction_record(record), out, CONFIG);
}

/// A kept transaction read back from the ledger's store on disk.
pub fn decode_transaction(bytes: &[u8]) -> Result<Record, String> {
    let (record, read): (TransactionRecord, usize) =
        bincode::decode_from_slice(bytes, CONFIG).map_err(|e| e.to_string())?;
    if read != bytes.len() {
        return Err("bytes after the transaction".to_owned());
    }
    record_from(record).map_err(str::to_owned)
}

impl ImageRecordV1 {
    /// The same state in today's shape: an open transaction in full effect, a captured hold
    /// with nothing held, a closed one reversed to zero.
    fn upgrade(self) -> Result<ImageRecord, &'static str> {
        let transactions = self
            .transactions
            .into_iter()
            .map(|(key, r)| {
                let is_hold = matches!(KINDS.get(usize::from(r.kind)), Some(k) if k.is_hold());
                let record = match r.state {
                    0 | 2 => {
                        let effective = if r.state == 0 { r.amount } else { 0 };
                        TransactionRecord {
                            card: r.card,
                            kind: r.kind,
                            amount: r.amount,
                            effective,
                            hold: is_hold.then_some((effective, 0)),
                            capture_of: None,
                            reversed_before_arrival: false,
                        }
                    }
                    // A captured hold: version 1 kept no record of the completion, and undid
                    // the capture when the hold was reversed. As a posting of the captured
                    // amount under the hold's key, a reversal naming it returns exactly that,
                    // and nothing more can be captured, as before.
                    1 => TransactionRecord {
                        card: r.card,
                        kind: kind_code(Kind::Purchase),
                        amount: r.captured,
                        effective: r.captured,
                        hold: None,
                        capture_of: None,
                        reversed_before_arrival: false,
                    },
                    _ => return Err("unknown transaction state"),
                };
                Ok((key, record))
            })
            .collect::<Result<_, _>>()?;
        Ok(ImageRecord {
            accounts: self.accounts,
            transactions,
            holds_by_age: self.holds_by_age,
            postings_by_age: self.postings_by_age,
            settlement: self.settlement,
            auth_counter: u64::from(self.auth_counter),
        })
    }
}

/// A remote approval an acquirer may still reverse or complete: the switch's request to the
/// issuer (MTI, field 11) for the acquirer's key, and whether it was reversed already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteOriginal {
    pub key: TxnKey,
    pub mti: [u8; 4],
    pub stan: u32,
    pub reversed: bool,
}

/// One issuer channel's part of a snapshot: its approvals as of its marker LSN (its records
/// from that LSN on are not in it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemotePart {
    pub issuer: String,
    pub marker_lsn: u64,
    pub originals: Vec<RemoteOriginal>,
}

#[derive(Encode, Decode)]
struct RemotePartRecord {
    issuer: String,
    marker_lsn: u64,
    originals: Vec<(KeyRecord, [u8; 4], u32, bool)>,
}

/// One shard's section of a snapshot: its marker LSN and its image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSection {
    pub marker_lsn: u64,
    pub image: ShardImage,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot header: {0}")]
    Header(&'static str),
    #[error("snapshot section {0}: {1}")]
    Section(usize, String),
}

/// The whole snapshot file for `sections`, in order of shard.
pub fn encode_snapshot(sections: &[SnapshotSection], created_seconds: u64) -> Vec<u8> {
    encode_snapshot_with_remote(sections, &[], created_seconds)
}

/// A snapshot of the shards' `sections` and the issuer channels' `remote` parts.
pub fn encode_snapshot_with_remote(
    sections: &[SnapshotSection],
    remote: &[RemotePart],
    created_seconds: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        SNAPSHOT_HEADER_LEN
            + sections
                .iter()
                .map(|s| 64 * s.image.accounts.len() + 64)
                .sum::<usize>(),
    );
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(sections.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&created_seconds.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..24]);
    out.extend_from_slice(&crc.to_le_bytes());
    for section in sections {
        let image = &section.image;
        let record = ImageRecord {
            accounts: image
                .accounts
                .iter()
                .map(|(card, a)| {
                    let account = AccountRecord {
                        ledger: a.ledger,
                        held: a.held,
                        currency: a.currency,
                        blocked: a.blocked,
                        limit_per_transaction: a.limit_per_transaction,
                    };
                    (card_record(card), account)
                })
                .collect(),
            transactions: image
                .transactions
                .iter()
                .map(|(key, r)| (key_record(key), transaction_record(r)))
                .collect(),
            holds_by_age: image
                .holds_by_age
                .iter()
                .map(|(at, k)| (*at, key_record(k)))
                .collect(),
            postings_by_age: image
                .postings_by_age
                .iter()
                .map(|(at, k)| (*at, key_record(k)))
                .collect(),
            settlement: image.settlement.clone(),
            auth_counter: image.auth_counter,
        };
        let mut body = section.marker_lsn.to_le_bytes().to_vec();
        let _ = bincode::encode_into_std_write(record, &mut body, CONFIG);
        let _ = bincode::encode_into_std_write(cold_record(&image.cold), &mut body, CONFIG);
        let length = (body.len() as u64).to_le_bytes();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&length), &body);
        out.extend_from_slice(&length);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&body);
    }
    let parts: Vec<RemotePartRecord> = remote
        .iter()
        .map(|part| RemotePartRecord {
            issuer: part.issuer.clone(),
            marker_lsn: part.marker_lsn,
            originals: part
                .originals
                .iter()
                .map(|o| (key_record(&o.key), o.mti, o.stan, o.reversed))
                .collect(),
        })
        .collect();
    let mut body = 0u64.to_le_bytes().to_vec();
    let _ = bincode::encode_into_std_write(parts, &mut body, CONFIG);
    let length = (body.len() as u64).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&length), &body);
    out.extend_from_slice(&length);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

pub fn decode_snapshot(bytes: &[u8]) -> Result<Vec<SnapshotSection>, SnapshotError> {
    decode_snapshot_with_remote(bytes).map(|(sections, _)| sections)
}

/// The shards' sections and (from version 3) the issuer channels' parts.
pub fn decode_snapshot_with_remote(
    bytes: &[u8],
) -> Result<(Vec<SnapshotSection>, Vec<RemotePart>), SnapshotError> {
    if bytes.len() < SNAPSHOT_HEADER_LEN {
        return Err(SnapshotError::Header("file shorter than its header"));
    }
    if bytes[0..8] != SNAPSHOT_MAGIC {
        return Err(SnapshotError::Header("bad magic (not a switch snapshot)"));
    }
    if crc32c::crc32c(&bytes[0..24]) != u32_at(bytes, 24) {
        return Err(SnapshotError::Header("checksum mismatch"));
    }
    let version = u32_at(bytes, 8);
    if !(1..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
        return Err(SnapshotError::Header("unsupported format version"));
    }
    let count = u32_at(bytes, 12) as usize;
    if !(1..=crate::limits::SHARDS_MAX).contains(&count) {
        return Err(SnapshotError::Header("shard count out of range"));
    }
    let mut sections = Vec::with_capacity(count);
    let mut at = SNAPSHOT_HEADER_LEN;
    for index in 0..count {
        let fail = |problem: &str| SnapshotError::Section(index, problem.to_owned());
        let prefix = bytes.get(at..at + 12).ok_or_else(|| fail("cut short"))?;
        let length = usize::try_from(u64_at(prefix, 0)).map_err(|_| fail("length out of range"))?;
        let body = bytes
            .get(at + 12..)
            .and_then(|rest| rest.get(..length))
            .ok_or_else(|| fail("cut short"))?;
        if length < 8
            || crc32c::crc32c_append(crc32c::crc32c(&prefix[0..8]), body) != u32_at(prefix, 8)
        {
            return Err(fail("checksum mismatch"));
        }
        let (record, mut read): (ImageRecord, usize) = if version == 1 {
            let (old, read): (ImageRecordV1, usize) =
                bincode::decode_from_slice(&body[8..], CONFIG).map_err(|e| fail(&e.to_string()))?;
            (old.upgrade().map_err(fail)?, read)
        } else {
            bincode::decode_from_slice(&body[8..], CONFIG).map_err(|e| fail(&e.to_string()))?
        };
        // From version 4, where the shard's transactions on disk stand (none before).
        let mut cold = ColdState::default();
        if version >= 4 {
            let rest = body.get(8 + read..).ok_or_else(|| fail("cut short"))?;
            let (state, more): (ColdRecord, usize) =
                bincode::decode_from_slice(rest, CONFIG).map_err(|e| fail(&e.to_string()))?;
            cold = cold_from(&state).map_err(fail)?;
            read += more;
        }
        if read != length - 8 {
            return Err(fail("bytes after the image"));
        }
        let transactions = record
            .transactions
            .into_iter()
            .map(|(key, r)| Ok((key_from(key), record_from(r).map_err(fail)?)))
            .collect::<Result<_, _>>()?;
        let image = ShardImage {
            accounts: record
                .accounts
                .into_iter()
                .map(|(card, a)| {
                    let account = Account {
                        ledger: a.ledger,
                        held: a.held,
                        currency: a.currency,
                        blocked: a.blocked,
                        limit_per_transaction: a.limit_per_transaction,
                    };
                    (card_from(card), account)
                })
                .collect(),
            transactions,
            holds_by_age: record
                .holds_by_age
                .into_iter()
                .map(|(at, k)| (at, key_from(k)))
                .collect(),
            postings_by_age: record
                .postings_by_age
                .into_iter()
                .map(|(at, k)| (at, key_from(k)))
                .collect(),
            settlement: record.settlement,
            auth_counter: record.auth_counter,
            cold,
        };
        sections.push(SnapshotSection {
            marker_lsn: u64_at(body, 0),
            image,
        });
        at += 12 + length;
    }
    let mut remote = Vec::new();
    if version >= 3 {
        let fail = |problem: &str| SnapshotError::Section(count, problem.to_owned());
        let prefix = bytes.get(at..at + 12).ok_or_else(|| fail("cut short"))?;
        let length = usize::try_from(u64_at(prefix, 0)).map_err(|_| fail("length out of range"))?;
        let body = bytes
            .get(at + 12..)
            .and_then(|rest| rest.get(..length))
            .ok_or_else(|| fail("cut short"))?;
        if length < 8
            || crc32c::crc32c_append(crc32c::crc32c(&prefix[0..8]), body) != u32_at(prefix, 8)
        {
            return Err(fail("checksum mismatch"));
        }
        let (parts, read): (Vec<RemotePartRecord>, usize) =
            bincode::decode_from_slice(&body[8..], CONFIG).map_err(|e| fail(&e.to_string()))?;
        if read != length - 8 {
            return Err(fail("bytes after the issuers' part"));
        }
        remote = parts
            .into_iter()
            .map(|p| RemotePart {
                issuer: p.issuer,
                marker_lsn: p.marker_lsn,
                originals: p
                    .originals
                    .into_iter()
                    .map(|(key, mti, stan, reversed)| RemoteOriginal {
                        key: key_from(key),
                        mti,
                        stan,
                        reversed,
                    })
                    .collect(),
            })
            .collect();
        at += 12 + length;
    }
    if at != bytes.len() {
        return Err(SnapshotError::Header("bytes after the last section"));
    }
    Ok((sections, remote))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_applied(stan: u32) -> Entry {
        Entry::Applied {
            posting: Posting {
                kind: Kind::Refund,
                card: CardToken {
                    hash: 0x0123_4567_89AB_CDEF_0011_2233_4455_6677,
                    last_four: 2,
                },
                amount: 3_000,
                currency: Some(840),
                key: TxnKey {
                    acquirer: 123_456,
                    terminal: *b"TERM0001",
                    stan,
                    transmission: 1_126_143_015,
                },
                original: Some(TxnKey {
                    acquirer: 1,
                    terminal: *b"TERM0001",
                    stan: 9,
                    transmission: 2,
                }),
                replacement: Some(700),
            },
            at_seconds: 1_795_000_000,
            fingerprint: 42,
            outcome: Outcome {
                code: ResponseCode::Approved,
                auth_id: Some(*b"000123"),
                balances: Some(Balances {
                    ledger: -5,
                    available: 7_000,
                    currency: 840,
                }),
            },
        }
    }

    #[test]
    fn entries_round_trip() {
        let expired = Entry::Expired {
            at_seconds: 7,
            holds: vec![(
                CardToken {
                    hash: 1,
                    last_four: 44,
                },
                TxnKey {
                    acquirer: 1,
                    terminal: [b' '; 8],
                    stan: 2,
                    transmission: 3,
                },
            )],
        };
        let expire = Entry::Expire {
            shard: 1,
            shards: 2,
            step: ExpiryStep {
                at_seconds: 9,
                hold_expiry_seconds: 604_800,
                reversal_window_seconds: 86_400,
                holds_max: 4_096,
                postings_max: 4_096,
            },
            done: Expiry {
                holds: 4_096,
                released: 4_000,
                forgotten: 3,
                more: true,
            },
        };
        let key = TxnKey {
            acquirer: 123_456,
            terminal: *b"TERM0001",
            stan: 42,
            transmission: 1_130_120_000,
        };
        let remote = Entry::Remote {
            at_seconds: 11,
            issuer: "sim".into(),
            key,
            fingerprint: 99,
            outcome: Outcome {
                code: ResponseCode::IssuerUnavailable,
                auth_id: None,
                balances: None,
            },
            sent: Some((*b"0100", 7)),
            advices: vec![
                Advice {
                    id: u128::MAX - 1,
                    issuer: "sim".into(),
                    created_seconds: 11,
                    sealed: vec![1, 2, 3],
                },
                Advice {
                    id: 4,
                    issuer: "sim".into(),
                    created_seconds: 11,
                    sealed: vec![4; 20],
                },
            ],
            original: Some((key, 12)),
        };
        let remote_sent = Entry::RemoteSent {
            at_seconds: 10,
            issuer: "sim".into(),
            key,
            fingerprint: 77,
            sent: (*b"0200", 999_999),
            reversal: Advice {
                id: 3,
                issuer: "sim".into(),
                created_seconds: 10,
                sealed: vec![9; 40],
            },
        };
        let approved_remote = Entry::Remote {
            at_seconds: 12,
            issuer: "sim".into(),
            key,
            fingerprint: 98,
            outcome: Outcome {
                code: ResponseCode::Approved,
                auth_id: Some(*b"123456"),
                balances: None,
            },
            sent: None,
            advices: Vec::new(),
            original: None,
        };
        let done = Entry::AdviceDone {
            at_seconds: 13,
            id: 5,
            delivered: true,
        };
        let card = CardToken {
            hash: 5,
            last_four: 6,
        };
        let opened = Entry::AccountOpened {
            at_seconds: 14,
            card,
            account: Account::new(1_000, 840),
        };
        let blocked = Entry::AccountBlocked {
            at_seconds: 15,
            card,
            blocked: true,
        };
        for entry in [
            sample_applied(1),
            expired,
            expire,
            opened,
            blocked,
            remote,
            remote_sent,
            approved_remote,
            done,
        ] {
            let mut payload = Vec::new();
            encode_entry(&entry, &mut payload);
            assert_eq!(decode_entry(&payload).unwrap(), entry);
            // Recovery skips entries by these two without decoding them.
            assert_eq!(
                carries_answer(&payload),
                matches!(entry, Entry::Applied { .. } | Entry::Remote { .. }),
                "{entry:?}"
            );
            assert_eq!(
                ledger_only(&payload),
                !matches!(
                    entry,
                    Entry::Remote { .. } | Entry::AdviceDone { .. } | Entry::RemoteSent { .. }
                ),
                "{entry:?}"
            );
            assert!(
                decode_entry(&payload[..payload.len() - 1]).is_err(),
                "truncated entry must not decode"
            );
        }
    }

    /// Logs and snapshots written before field 95 and split captures existed still read.
    #[test]
    fn version_1_entries_and_snapshots_still_read() {
        let Entry::Applied {
            posting, outcome, ..
        } = sample_applied(3)
        else {
            panic!("sample is an Applied entry")
        };
        let old = EntryRecord::Applied(AppliedRecord {
            at_seconds: 9,
            fingerprint: 8,
            kind: kind_code(posting.kind),
            card: card_record(&posting.card),
            amount: posting.amount,
            currency: posting.currency,
            key: key_record(&posting.key),
            original: None,
            code: *outcome.code.as_bytes(),
            auth_id: outcome.auth_id,
            balances: None,
        });
        let mut payload = Vec::new();
        bincode::encode_into_std_write(old, &mut payload, CONFIG).unwrap();
        assert!(carries_answer(&payload) && ledger_only(&payload));
        let Entry::Applied { posting: read, .. } = decode_entry(&payload).unwrap() else {
            panic!("an Applied entry")
        };
        assert_eq!((read.amount, read.replacement), (posting.amount, None));

        let card = CardRecord {
            hash: 5,
            last_four: 2,
        };
        let key = |stan| KeyRecord {
            acquirer: 1,
            terminal: *b"T1      ",
            stan,
            transmission: 4,
        };
        let old_transaction = |kind: Kind, state| TransactionRecordV1 {
            card: CardRecord {
                hash: 5,
                last_four: 2,
            },
            kind: kind_code(kind),
            amount: 100,
            state,
            captured: if state == 1 { 60 } else { 0 },
        };
        let image = ImageRecordV1 {
            accounts: vec![(
                card,
                AccountRecord {
                    ledger: 1_000,
                    held: 100,
                    currency: 840,
                    blocked: false,
                    limit_per_transaction: None,
                },
            )],
            transactions: vec![
                (key(1), old_transaction(Kind::Authorization, 0)),
                (key(2), old_transaction(Kind::Authorization, 1)),
                (key(3), old_transaction(Kind::Purchase, 2)),
                (key(4), old_transaction(Kind::Purchase, 0)),
            ],
            holds_by_age: vec![(1, key(1)), (2, key(2))],
            postings_by_age: vec![(3, key(3)), (4, key(4))],
            settlement: vec![(1, 5)],
            auth_counter: 12,
        };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&SNAPSHOT_MAGIC);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[0..24]);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let mut body = 77u64.to_le_bytes().to_vec();
        bincode::encode_into_std_write(image, &mut body, CONFIG).unwrap();
        let length = (body.len() as u64).to_le_bytes();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&length), &body);
        bytes.extend_from_slice(&length);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(&body);
        let sections = decode_snapshot(&bytes).unwrap();
        assert_eq!(sections[0].marker_lsn, 77);
        assert_eq!(sections[0].image.auth_counter, 12);
        let parts: Vec<(u32, u64, Part)> = sections[0]
            .image
            .transactions
            .iter()
            .map(|(k, r)| (k.stan, r.effective, r.part))
            .collect();
        let hold = |held, captured| Part::Hold { held, captured };
        assert_eq!(
            parts,
            vec![
                (1, 100, hold(100, 0)),
                (2, 60, Part::Other),
                (3, 0, Part::Other),
                (4, 100, Part::Other)
            ]
        );
        let captured = &sections[0].image.transactions[1].1;
        assert_eq!((captured.kind, captured.amount), (Kind::Purchase, 60));
    }

    #[test]
    fn every_kind_and_code_has_a_stored_form() {
        for kind in KINDS {
            assert_eq!(KINDS[usize::from(kind_code(kind))], kind);
        }
        for code in ResponseCode::ALL {
            assert_eq!(ResponseCode::from_bytes(*code.as_bytes()), Some(code));
        }
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let header = SegmentHeader {
            sequence: 7,
            first_lsn: 1_000,
        };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        assert_eq!(
            SegmentHeader::decode(&bytes[..31]),
            Err(HeaderError::Short(31))
        );
        let mut damaged = bytes;
        damaged[21] ^= 1;
        assert_eq!(SegmentHeader::decode(&damaged), Err(HeaderError::Checksum));
        damaged = bytes;
        damaged[0] = b'X';
        assert_eq!(SegmentHeader::decode(&damaged), Err(HeaderError::Magic));
    }

    #[test]
    fn records_frame_and_detect_damage() {
        let mut log = Vec::new();
        append_record(&mut log, 5, b"hello");
        append_record(&mut log, 6, b"world!");
        let RecordRead::Record {
            lsn, payload, len, ..
        } = read_record(&log)
        else {
            panic!("first record")
        };
        assert_eq!((lsn, payload, len), (5, &b"hello"[..], 8 + 8 + 5));
        let RecordRead::Record { lsn, payload, .. } = read_record(&log[len..]) else {
            panic!("second record")
        };
        assert_eq!((lsn, payload), (6, &b"world!"[..]));
        assert_eq!(read_record(&log[..len - 1]), RecordRead::Incomplete);
        assert_eq!(read_record(&log[..3]), RecordRead::Incomplete);
        for flip in [0, 4, 9, 17] {
            let mut damaged = log.clone();
            damaged[flip] ^= 0x40;
            assert!(
                matches!(
                    read_record(&damaged),
                    RecordRead::Damaged(_) | RecordRead::Incomplete
                ),
                "flip at {flip}"
            );
        }
    }

    #[test]
    fn snapshots_round_trip_and_reject_damage() {
        let card = CardToken {
            hash: 77,
            last_four: 1,
        };
        let key = TxnKey {
            acquirer: 1,
            terminal: *b"T1      ",
            stan: 3,
            transmission: 4,
        };
        let image = ShardImage {
            accounts: vec![(
                card,
                Account {
                    ledger: -3,
                    held: 9,
                    currency: 840,
                    blocked: true,
                    limit_per_transaction: Some(5),
                },
            )],
            transactions: vec![
                (
                    key,
                    Record {
                        card,
                        kind: Kind::Authorization,
                        state: State::Live,
                        amount: 9,
                        effective: 8,
                        part: Part::Hold {
                            held: 0,
                            captured: 4,
                        },
                    },
                ),
                (
                    TxnKey { stan: 5, ..key },
                    Record {
                        card,
                        kind: Kind::Completion,
                        state: State::Live,
                        amount: 4,
                        effective: 4,
                        part: Part::Capture {
                            stan: key.stan,
                            transmission: key.transmission,
                        },
                    },
                ),
                (
                    TxnKey { stan: 6, ..key },
                    Record {
                        card,
                        kind: Kind::ReversalAdvice,
                        state: State::ReversedBeforeArrival,
                        amount: 2,
                        effective: 0,
                        part: Part::Other,
                    },
                ),
            ],
            holds_by_age: vec![(11, key)],
            postings_by_age: vec![],
            settlement: vec![(123_456, 3)],
            auth_counter: 17,
            cold: ColdState {
                version: 12,
                holds: Span { front: 3, back: 9 },
                postings: Span { front: 0, back: 2 },
                count: 7,
                tombstones: 1,
            },
        };
        let sections = vec![
            SnapshotSection {
                marker_lsn: 40,
                image: image.clone(),
            },
            SnapshotSection {
                marker_lsn: 38,
                image: ShardImage::default(),
            },
        ];
        let bytes = encode_snapshot(&sections, 99);
        assert_eq!(decode_snapshot(&bytes), Ok(sections.clone()));
        for at in [3, 20, SNAPSHOT_HEADER_LEN + 5, bytes.len() - 3] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            assert!(decode_snapshot(&damaged).is_err(), "flip at {at}");
        }
        assert!(decode_snapshot(&bytes[..bytes.len() - 1]).is_err());
        assert_eq!(snapshot_lsn(&snapshot_file_name(38)), Some(38));

        // With the issuer channels' parts (format 3).
        let remote = vec![
            RemotePart {
                issuer: "sim".into(),
                marker_lsn: 41,
                originals: vec![
                    RemoteOriginal {
                        key,
                        mti: *b"0100",
                        stan: 999_999,
                        reversed: false,
                    },
                    RemoteOriginal {
                        key: TxnKey { stan: 9, ..key },
                        mti: *b"0120",
                        stan: 1,
                        reversed: true,
                    },
                ],
            },
            RemotePart {
                issuer: "other".into(),
                marker_lsn: 39,
                originals: Vec::new(),
            },
        ];
        let bytes = encode_snapshot_with_remote(&sections, &remote, 99);
        assert_eq!(
            decode_snapshot_with_remote(&bytes),
            Ok((sections.clone(), remote))
        );
        let mut damaged = bytes.clone();
        let at = bytes.len() - 5;
        damaged[at] ^= 0x10;
        assert!(
            decode_snapshot_with_remote(&damaged).is_err(),
            "a flip in the issuers' part"
        );
        assert!(decode_snapshot_with_remote(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_file_name(42), "00000000000000000042.wal");
        assert_eq!(segment_sequence("00000000000000000042.wal"), Some(42));
        assert_eq!(segment_sequence("42.wal"), None);
        assert_eq!(segment_sequence("00000000000000000042.tmp"), None);
    }
}
