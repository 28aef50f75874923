//! The admin API under `/v1` (JSON): accounts, top-ups and withdrawals, blocking, ledger
//! totals, the running configuration. Documented in `openapi.json` beside this file, served at
//! `/v1/openapi.json`; a test holds the two to the same routes.
//!
//! - Every call but the OpenAPI document needs `Authorization: Bearer <admin.token>` (401).
//! - Amounts are decimal strings in the account's currency (`"10.00"`), with its ISO 4217
//!   exponent; anything else is 400 with what is wrong.
//! - Every change goes through the shard that owns the card and the WAL, exactly as ISO 8583
//!   traffic does, and is answered only once durable. Top-ups and withdrawals are postings of
//!   the admin API's own acquirer ([`ADMIN_ACQUIRER`]), so the double entry holds; each needs
//!   an `Idempotency-Key` header: the same key again gets the same answer and changes nothing,
//!   another request under it gets 409.
//! - A PAN is accepted in the path and never given back but masked.

use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use actix::Addr;
use actix::prelude::SendError;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;

use crate::acquirer::idempotency::{Begin, IdempotencyStore};
use crate::config::currency_exponent;
use crate::config::{EMBEDDED_NAME, Settings};
use crate::domain::{
    CardToken, Kind, Minor, Outcome, Pan, Posting, ResponseCode, Tokenizer, TxnKey,
};
use crate::ledger::actor::{
    Admin, AdminDone, Change, GetAccount, GetRecord, LedgerActor, ShardTotal,
};
use crate::ledger::{Account, shard_of};
use crate::ops::journal::{Decision, Journal};
use crate::risk::{Action, Per, RiskEngine};
use crate::routing::RoutingTable;
use crate::routing::dispatch::Current;

/// The acquirer id under which the admin API's postings settle.
pub const ADMIN_ACQUIRER: u64 = 0;
/// How long a call waits for the ledger's durable answer.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// Every route the admin API serves, as (method, path): the OpenAPI document must list exactly
/// these.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/openapi.json"),
    ("POST", "/v1/accounts"),
    ("GET", "/v1/accounts/{pan}"),
    ("POST", "/v1/accounts/{pan}/top-ups"),
    ("POST", "/v1/accounts/{pan}/withdrawals"),
    ("POST", "/v1/accounts/{pan}/block"),
    ("POST", "/v1/accounts/{pan}/unblock"),
    ("GET", "/v1/ledger/totals"),
    ("GET", "/v1/accounts/{pan}/transactions"),
    ("GET", "/v1/decisions"),
    ("GET", "/v1/config/routing"),
    ("GET", "/v1/issuers"),
    ("GET", "/v1/config/risk"),
    ("POST", "/v1/config/reload"),
];

/// The OpenAPI 3 document of [`ROUTES`].
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the admin API works on, known once the ledger is recovered. (`Debug` by hand: not
/// the key.)
pub struct Context {
    pub shards: Arc<[Addr<LedgerActor>]>,
    pub idempotency: Arc<IdempotencyStore>,
    pub tokenizer: Tokenizer,
    /// Keys the hash that turns an `Idempotency-Key` into a request identity.
    pub key: [u8; 16],
    /// The routing table and risk rules in force (replaced by a reload).
    pub running: RwLock<(RoutingTable, Arc<RiskEngine>)>,
    pub journal: Arc<Journal>,
    /// The rules and the routing table every worker reads; a reload replaces them.
    pub rules: Arc<Current<RiskEngine>>,
    pub routes: Arc<Current<RoutingTable>>,
    /// The issuer channels, in configuration order.
    pub channels: Vec<Addr<crate::issuer::channel::IssuerChannel>>,
    /// The configuration file the switch started with (or the embedded default's name).
    pub source: String,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("shards", &self.shards.len())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The admin API's state: its token from the start, its context once the switch is ready.
/// (`Debug` by hand: not the token.)
#[derive(Default)]
pub struct AdminState {
    pub token: Option<String>,
    pub context: OnceLock<Context>,
}

/// An error answer: a status and a message a person can act on.
struct Problem(StatusCode, String);

impl Problem {
    fn bad(message: impl Into<String>) -> Problem {
        Problem(StatusCode::BAD_REQUEST, message.into())
    }

    fn response(self) -> HttpResponse {
        HttpResponse::build(self.0).json(json!({ "error": self.1 }))
    }
}

type Answer = Result<HttpResponse, Problem>;

fn answer(result: Answer) -> HttpResponse {
    result.unwrap_or_else(Problem::response)
}

/// Checks the bearer token (in constant time) and that the switch is ready.
fn authorize<'a>(state: &'a AdminState, request: &HttpRequest) -> Result<&'a Context, Problem> {
    let Some(token) = &state.token else {
        return Err(Problem(
            StatusCode::FORBIDDEN,
            "the admin API is off: set admin.token in the configuration".into(),
        ));
    };
    let given = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0;
    if !same {
        return Err(Problem(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer <admin.token>)".into(),
        ));
    }
    state.context.get().ok_or_else(|| {
        Problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the switch is not ready (recovering or stopping)".into(),
        )
    })
}

fn card_of(context: &Context, pan: &str) -> Result<(Pan, CardToken), Problem> {
    let pan = Pan::parse(pan.as_bytes())
        .map_err(|e| Problem::bad(format!("the PAN in the path is not valid: {e}")))?;
    let card = context.tokenizer.token(&pan);
    Ok((pan, card))
}

fn shard<'a>(context: &'a Context, card: &CardToken) -> &'a Addr<LedgerActor> {
    &context.shards[shard_of(card, context.shards.len())]
}

/// A card token as risk rules name it: 32 hex digits.
fn token_hex(card: &CardToken) -> String {
    format!("{:032x}", card.hash)
}

/// Minor units as a decimal string in `currency`.
fn decimal(minor: i64, currency: u16) -> String {
    let exponent = currency_exponent(currency).unwrap_or(2);
    Decimal::from_i128_with_scale(i128::from(minor), exponent).to_string()
}

/// A decimal amount in `currency`, as minor units: positive, at most the currency's decimals,
/// and within the 12 digits of field 4.
fn minor(text: &str, currency: u16) -> Result<Minor, Problem> {
    let exponent = currency_exponent(currency)
        .ok_or_else(|| Problem::bad(format!("currency {currency} is not a known ISO 4217 code")))?;
    let value = Decimal::from_str_exact(text).map_err(|_| {
        Problem::bad(format!(
            "amount {text:?} is not a decimal such as \"10.00\""
        ))
    })?;
    if value <= Decimal::ZERO {
        return Err(Problem::bad(format!("amount {text:?} is not above zero")));
    }
    if value.scale() > exponent {
        return Err(Problem::bad(format!(
            "amount {text:?} has more than {exponent} decimals for currency {currency}"
        )));
    }
    // Checked: rust_decimal's `*` panics on overflow, and this is input.
    let minor = value
        .checked_mul(Decimal::from(10u64.pow(exponent)))
        .ok_or_else(|| Problem::bad(format!("amount {text:?} exceeds 12 digits of minor units")))?
        .trunc();
    u64::try_from(minor.mantissa())
        .ok()
        .filter(|m| *m <= 999_999_999_999)
        .ok_or_else(|| Problem::bad(format!("amount {text:?} exceeds 12 digits of minor units")))
}

fn account_json(pan: &Pan, card: &CardToken, account: &Account) -> serde_json::Value {
    json!({
        "card": pan.to_string(),
        // The keyed hash that stands for the PAN in the ledger and the log: what a risk rule's
        // `cards` list names (it cannot be turned back into the PAN without ledger.token_key).
        "token": token_hex(card),
        "currency": account.currency,
        "ledger": decimal(account.ledger, account.currency),
        "available": decimal(account.available(), account.currency),
        "held": decimal(account.held, account.currency),
        "blocked": account.blocked,
        "limit_per_transaction": account.limit_per_transaction
            .map(|l| decimal(i64::try_from(l).unwrap_or(i64::MAX), account.currency)),
    })
}

async fn read_account(context: &Context, pan: &Pan, card: CardToken) -> Result<Account, Problem> {
    shard(context, &card)
        .send(GetAccount(card))
        .await
        .map_err(|_| {
            Problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the ledger is stopping".into(),
            )
        })?
        .ok_or_else(|| Problem(StatusCode::NOT_FOUND, format!("no account for card {pan}")))
}

/// Sends a change to the card's shard and waits until it is durable. `recorded` (an
/// Idempotency-Key's identity) gets the outcome in the idempotency table when the ledger
/// decides, on the WAL writer's thread, whether or not this call is still waiting then.
async fn change(
    context: &Context,
    card: &CardToken,
    change: Change,
    recorded: Option<TxnKey>,
) -> Result<Outcome, Problem> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let idempotency = context.idempotency.clone();
    let done = AdminDone(Box::new(move |outcome: Outcome| {
        if let Some(key) = recorded {
            if outcome.code == ResponseCode::SystemMalfunction {
                // Not durable: the key is free to be tried again (after the restart).
                idempotency.abandon(&key, outcome);
            } else {
                idempotency.finish(&key, outcome);
            }
        }
        let _ = reply.send(outcome);
    }));
    if let Err(refused) = shard(context, card).try_send(Admin { change, done }) {
        // Never reached the ledger: nothing changed.
        let (SendError::Full(admin) | SendError::Closed(admin)) = refused;
        admin
            .done
            .call(Outcome::decline(ResponseCode::SystemMalfunction));
        return Err(Problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the ledger is busy or stopping; nothing changed".into(),
        ));
    }
    match tokio::time::timeout(ANSWER_WAIT, answer).await {
        Ok(Ok(outcome)) if outcome.code == ResponseCode::SystemMalfunction => Err(unavailable()),
        Ok(Ok(outcome)) => Ok(outcome),
        _ => Err(Problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "no answer from the ledger in time: the outcome is unknown; retry with the same Idempotency-Key".into(),
        )),
    }
}

async fn change_of(
    context: &Context,
    card: &CardToken,
    change_: Change,
    key: TxnKey,
) -> Result<Outcome, Problem> {
    change(context, card, change_, Some(key)).await
}

fn unavailable() -> Problem {
    Problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "the change was not made durable (log full or failed, or table full); retry with the same Idempotency-Key"
            .into(),
    )
}

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

pub async fn get_account(
    state: web::Data<AdminState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    answer(
        async {
            let context = authorize(&state, &request)?;
            let (pan, card) = card_of(context, &path)?;
            let account = read_account(context, &pan, card).await?;
            Ok(HttpResponse::Ok().json(account_json(&pan, &card, &account)))
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    pan: String,
    #[serde(default = "default_currency")]
    currency: u16,
    limit_per_transaction: Option<String>,
}

fn default_currency() -> u16 {
    840
}

/// Parses a JSON body, with serde's message (field, line, column) for a malformed one.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    // Not serde's message: it may quote a value, and a value may be a PAN.
    serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "a field is missing, unknown or of the wrong type",
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "not valid JSON"
            }
            serde_json::error::Category::Io => "unreadable",
        };
        Problem::bad(format!(
            "malformed JSON body at line {}, column {}: {what} (expected fields: see /v1/openapi.json)",
            e.line(),
            e.column()
        ))
    })
}

pub async fn create_account(
    state: web::Data<AdminState>,
    request: HttpRequest,
    bytes: web::Bytes,
) -> HttpResponse {
    answer(
        async {
            let context = authorize(&state, &request)?;
            let new: NewAccount = body(&bytes)?;
            let (pan, card) = card_of(context, &new.pan)?;
            let limit = new
                .limit_per_transaction
                .as_deref()
                .map(|l| minor(l, new.currency))
                .transpose()?;
            if currency_exponent(new.currency).is_none() {
                return Err(Problem::bad(format!(
                    "currency {} is not a known ISO 4217 code",
                    new.currency
                )));
            }
            // An account opens at zero: money enters through a top-up, as a posting, so that
            // the ledger's total changes only by deposits and withdrawals.
            let account = Account {
                limit_per_transaction: limit,
                ..Account::new(0, new.currency)
            };
            let outcome = change(context, &card, Change::Open { card, account }, None).await?;
            if outcome.code == ResponseCode::DuplicateTransmission {
                return Err(Problem(
                    StatusCode::CONFLICT,
                    format!("card {pan} has an account already"),
                ));
            }
            Ok(HttpResponse::Created().json(account_json(&pan, &card, &account)))
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Movement {
    amount: String,
}

/// The request identity of an `Idempotency-Key`: the admin acquirer, and 96 bits of a keyed
/// hash of the key in field 41 and the STAN (field 7 zero, which no request carries).
fn identity(context: &Context, key: &str) -> TxnKey {
    use siphasher::sip128::Hasher128;
    use std::hash::Hasher;
    let mut hasher = siphasher::sip128::SipHasher24::new_with_key(&context.key);
    hasher.write(b"switch admin idempotency key\0");
    hasher.write(key.as_bytes());
    let hash = hasher.finish128().as_u128().to_le_bytes();
    let mut terminal = [0u8; 8];
    terminal.copy_from_slice(&hash[..8]);
    let mut stan = [0u8; 4];
    stan.copy_from_slice(&hash[8..12]);
    TxnKey {
        acquirer: ADMIN_ACQUIRER,
        terminal,
        stan: u32::from_le_bytes(stan),
        transmission: 0,
    }
}

fn reason(code: ResponseCode) -> &'static str {
    match code {
        ResponseCode::InsufficientFunds => "insufficient funds",
        ResponseCode::RestrictedCard => "the card is blocked",
        ResponseCode::ExceedsAmountLimit => "above the card's limit per transaction",
        ResponseCode::InvalidAmount => "the amount does not fit the account",
        _ => "declined",
    }
}

async fn movement(
    state: web::Data<AdminState>,
    request: HttpRequest,
    path: web::Path<String>,
    bytes: web::Bytes,
    kind: Kind,
) -> HttpResponse {
    answer(async {
        let context = authorize(&state, &request)?;
        let (pan, card) = card_of(context, &path)?;
        let movement: Movement = body(&bytes)?;
        let key = request
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.is_empty() && k.len() <= 255)
            .ok_or_else(|| {
                Problem::bad("an Idempotency-Key header (1 to 255 characters) is required")
            })?;
        let account = read_account(context, &pan, card).await?;
        let amount = minor(&movement.amount, account.currency)?;
        let identity = identity(context, key);
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut hasher = siphasher::sip::SipHasher24::new_with_key(&context.key);
            (kind == Kind::Deposit, card.hash, amount).hash(&mut hasher);
            hasher.finish()
        };
        let outcome = match context.idempotency.begin(identity, fingerprint) {
            Begin::Replay(outcome) => outcome,
            Begin::Conflict => {
                return Err(Problem(
                    StatusCode::CONFLICT,
                    "this Idempotency-Key was used for another request".into(),
                ));
            }
            Begin::InFlight(decided) => tokio::time::timeout(ANSWER_WAIT, decided)
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or_else(|| {
                    Problem(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the first request with this key is still undecided; retry with the same key"
                            .into(),
                    )
                })?,
            Begin::TooManyWaiting | Begin::Full => {
                return Err(Problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too busy to take this request now; retry with the same key".into(),
                ));
            }
            Begin::New => {
                let posting = Posting {
                    kind,
                    card,
                    amount,
                    currency: Some(account.currency),
                    key: identity,
                    original: None,
                    replacement: None,
                };
                // The idempotency entry is finished (or freed) by the ledger's answer itself.
                let change = Change::Post {
                    posting,
                    fingerprint,
                };
                change_of(context, &card, change, identity).await?
            }
        };
        if matches!(
            outcome.code,
            ResponseCode::SystemMalfunction | ResponseCode::IssuerUnavailable
        ) {
            return Err(unavailable());
        }
        let mut outcome = outcome;
        let mut note = None;
        if outcome.code == ResponseCode::DuplicateTransmission {
            // The key's identity is still held by a transaction the ledger keeps: this key's
            // own, once its answer left the idempotency window. The same card, kind and amount
            // is the same request, applied once already.
            let same = shard(context, &card)
                .send(GetRecord(identity))
                .await
                .ok()
                .flatten()
                .is_some_and(|r| r.card == card && r.kind == kind && r.amount == amount);
            if !same {
                return Err(Problem(
                    StatusCode::CONFLICT,
                    "this Idempotency-Key was used for another request".into(),
                ));
            }
            let now = read_account(context, &pan, card).await?;
            outcome = Outcome {
                code: ResponseCode::Approved,
                auth_id: None,
                balances: Some(crate::domain::Balances {
                    ledger: now.ledger,
                    available: now.available(),
                    currency: now.currency,
                }),
            };
            note = Some("applied once already under this Idempotency-Key; the balances are today's");
        }
        tracing::info!(
            operation = if kind == Kind::Deposit { "top-up" } else { "withdrawal" },
            card = %pan,
            amount = %decimal(i64::try_from(amount).unwrap_or(i64::MAX), account.currency),
            response_code = outcome.code.as_str(),
            key = format!("{:08x}", identity.stan),
            "admin API posting"
        );
        crate::ops::metrics::metrics().count(b"ADMN", outcome.code, crate::ops::metrics::Route::OnUs);
        let balances = outcome.balances.map(|b| {
            json!({
                "ledger": decimal(b.ledger, b.currency),
                "available": decimal(b.available, b.currency),
            })
        });
        let body = json!({
            "card": pan.to_string(),
            "approved": outcome.code.is_approved(),
            "response_code": outcome.code.as_str(),
            "reason": if outcome.code.is_approved() { "approved" } else { reason(outcome.code) },
            "amount": decimal(i64::try_from(amount).unwrap_or(i64::MAX), account.currency),
            "currency": account.currency,
            "balances": balances,
            "note": note,
        });
        let status = if outcome.code.is_approved() {
            StatusCode::OK
        } else {
            StatusCode::CONFLICT
        };
        Ok(HttpResponse::build(status).json(body))
    }
    .await)
}

pub async fn top_up(
    state: web::Data<AdminState>,
    request: HttpRequest,
    path: web::Path<String>,
    bytes: web::Bytes,
) -> HttpResponse {
    movement(state, request, path, bytes, Kind::Deposit).await
}

pub async fn withdrawal(
    state: web::Data<AdminState>,
    request: HttpRequest,
    path: web::Path<String>,
    bytes: web::Bytes,
) -> HttpResponse {
    movement(state, request, path, bytes, Kind::CashWithdrawal).await
}

async fn set_blocked(
    state: web::Data<AdminState>,
    request: HttpRequest,
    path: web::Path<String>,
    blocked: bool,
) -> HttpResponse {
    answer(
        async {
            let context = authorize(&state, &request)?;
            let (pan, card) = card_of(context, &path)?;
            let outcome = change(context, &card, Change::Block { card, blocked }, None).await?;
            if outcome.code == ResponseCode::InvalidCardNumber {
                return Err(Problem(
                    StatusCode::NOT_FOUND,
                    format!("no account for card {pan}"),
                ));
            }
            let account = read_account(context, &pan, card).await?;
            Ok(HttpResponse::Ok().json(account_json(&pan, &card, &account)))
        }
        .await,
    )
}

pub async fn block(
    state: web::Data<AdminState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    set_blocked(state, request, path, true).await
}

pub async fn unblock(
    state: web::Data<AdminState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    set_blocked(state, request, path, false).await
}

pub async fn totals(state: web::Data<AdminState>, request: HttpRequest) -> HttpResponse {
    answer(async {
        let context = authorize(&state, &request)?;
        let mut shards = Vec::with_capacity(context.shards.len());
        for shard in context.shards.iter() {
            let total = shard.send(ShardTotal).await.map_err(|_| {
                Problem(StatusCode::SERVICE_UNAVAILABLE, "the ledger is stopping".into())
            })?;
            shards.push(total);
        }
        let total: i128 = shards.iter().sum();
        Ok(HttpResponse::Ok().json(json!({
            "total_minor": total.to_string(),
            "shards_minor": shards.iter().map(i128::to_string).collect::<Vec<_>>(),
            "meaning": "card balances plus acquirer settlement positions, in minor units: constant under all traffic",
        })))
    }
    .await)
}

/// Each issuer channel's state: health, links, outstanding requests, queued advices.
pub async fn issuers(state: web::Data<AdminState>, request: HttpRequest) -> HttpResponse {
    answer(
        async {
            let context = authorize(&state, &request)?;
            let mut issuers = Vec::with_capacity(context.channels.len());
            for channel in &context.channels {
                // Bounded: a channel with a full mailbox must not hang the operator's call.
                let status = tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    channel.send(crate::issuer::channel::Status),
                )
                .await
                .map_err(|_| {
                    Problem(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "an issuer channel did not answer within 2 s".into(),
                    )
                })?
                .map_err(|_| {
                    Problem(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the switch is stopping".into(),
                    )
                })?;
                issuers.push(status);
            }
            Ok(HttpResponse::Ok().json(json!({ "issuers": issuers })))
        }
        .await,
    )
}

pub async fn routing(state: web::Data<AdminState>, request: HttpRequest) -> HttpResponse {
    answer(
        async {
            let context = authorize(&state, &request)?;
            let running = context
                .running
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let routes: Vec<_> = running
                .0
                .routes()
                .map(|(prefix, to)| json!({ "prefix": prefix, "to": to }))
                .collect();
            Ok(HttpResponse::Ok().json(json!({ "routes": routes })))
        }
        .await,
    )
}

pub async fn risk(state: web::Data<AdminState>, request: HttpRequest) -> HttpResponse {
    answer(
        async {
            let context = authorize(&state, &request)?;
            let running = context
                .running
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            Ok(HttpResponse::Ok().json(risk_json(&running.1)))
        }
        .await,
    )
}

/// The risk rules in force, as `[risk]` would give them, with each velocity table's use.
fn risk_json(engine: &RiskEngine) -> serde_json::Value {
    let rules = engine.rules();
    let money = |minor: u64| decimal(i64::try_from(minor).unwrap_or(i64::MAX), rules.currency);
    let list: Vec<_> = rules
        .rules
        .iter()
        .zip(engine.velocity_use())
        .map(|(rule, used)| {
            let w = &rule.when;
            let text = |b: &[u8]| String::from_utf8_lossy(b).trim_end().to_owned();
            let mut out = json!({ "name": &*rule.name });
            let o = out.as_object_mut().expect("an object");
            match rule.action {
                Action::Decline(code) => o.insert("code".into(), code.as_str().into()),
                Action::Score(score) => o.insert("score".into(), score.into()),
            };
            let kinds: Vec<_> = crate::risk::KIND_NAMES
                .iter()
                .filter(|(k, _)| w.kinds & crate::risk::kind_bit(*k) != 0)
                .map(|(_, n)| *n)
                .collect();
            o.insert("kinds".into(), kinds.into());
            let mut put = |key: &str, value: serde_json::Value, present: bool| {
                if present {
                    o.insert(key.into(), value);
                }
            };
            put(
                "cards",
                w.cards
                    .iter()
                    .map(|c| format!("{c:032x}"))
                    .collect::<Vec<_>>()
                    .into(),
                !w.cards.is_empty(),
            );
            put(
                "bin_ranges",
                w.bins
                    .iter()
                    .map(|(l, h)| vec![text(l), text(h)])
                    .collect::<Vec<_>>()
                    .into(),
                !w.bins.is_empty(),
            );
            put(
                "merchant_categories",
                w.merchant_categories.clone().into(),
                !w.merchant_categories.is_empty(),
            );
            put(
                "countries",
                w.countries.clone().into(),
                !w.countries.is_empty(),
            );
            put(
                "currencies",
                w.currencies.clone().into(),
                !w.currencies.is_empty(),
            );
            put(
                "entry_modes",
                w.entry_modes
                    .iter()
                    .map(|m| text(m))
                    .collect::<Vec<_>>()
                    .into(),
                !w.entry_modes.is_empty(),
            );
            put(
                "merchants",
                w.merchants
                    .iter()
                    .map(|m| text(m))
                    .collect::<Vec<_>>()
                    .into(),
                !w.merchants.is_empty(),
            );
            put(
                "terminals",
                w.terminals
                    .iter()
                    .map(|t| text(t))
                    .collect::<Vec<_>>()
                    .into(),
                !w.terminals.is_empty(),
            );
            put(
                "acquirers",
                w.acquirers
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .into(),
                !w.acquirers.is_empty(),
            );
            put(
                "amount_above",
                w.amount_above.map(money).into(),
                w.amount_above.is_some(),
            );
            put(
                "hours",
                w.hours
                    .map(|(f, t)| {
                        format!("{:02}:{:02}-{:02}:{:02}", f / 60, f % 60, t / 60, t % 60)
                    })
                    .into(),
                w.hours.is_some(),
            );
            if let Some(v) = rule.velocity {
                put(
                    "per",
                    match v.per {
                        Per::Card => "card",
                        Per::Merchant => "merchant",
                        Per::Terminal => "terminal",
                    }
                    .into(),
                    true,
                );
                put("window_seconds", v.window_seconds.into(), true);
                put(
                    "count_max",
                    v.limit.count_max.into(),
                    v.limit.count_max.is_some(),
                );
                put(
                    "amount_max",
                    v.limit.amount_max.map(money).into(),
                    v.limit.amount_max.is_some(),
                );
                if let Some((slots, evictions)) = used {
                    put("velocity_slots", slots.into(), true);
                    put("velocity_evictions", evictions.into(), true);
                }
            }
            out
        })
        .collect();
    json!({
        "enabled": rules.enabled,
        "currency": rules.currency,
        "rates": rules.rates.iter().map(|r| (r.currency.to_string(), r.rate.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
        "score_decline": rules.score_decline,
        "score_review": rules.score_review,
        "utc_offset_minutes": rules.utc_offset_minutes,
        "velocity_keys_max": rules.velocity_keys_max,
        "velocity_merchants_max": rules.velocity_merchants_max,
        "velocity_terminals_max": rules.velocity_terminals_max,
        "rules": list,
    })
}

fn decision_json(decision: &Decision, currency: Option<u16>) -> serde_json::Value {
    let amount = i64::try_from(decision.amount).unwrap_or(i64::MAX);
    json!({
        "at": decision.at_seconds,
        "mti": String::from_utf8_lossy(&decision.mti),
        "acquirer": decision.key.acquirer.to_string(),
        "terminal": String::from_utf8_lossy(&decision.key.terminal).trim_end(),
        "stan": format!("{:06}", decision.key.stan),
        "transmission": format!("{:010}", decision.key.transmission),
        "rrn": String::from_utf8_lossy(&decision.rrn).trim_end(),
        "card": decision.card.map(|c| format!("…{:04}", c.last_four)),
        "token": decision.card.as_ref().map(token_hex),
        "amount": match currency {
            Some(currency) => decimal(amount, currency),
            None => decision.amount.to_string(),
        },
        "response_code": decision.code.as_str(),
        "approved": decision.code.is_approved(),
        "check": decision.code.check(),
        "rule": decision.rule.as_deref(),
        "route": decision.route.name(),
        "issuer": decision.via.as_ref().map(|v| &*v.issuer),
        "issuer_route": decision.via.as_ref().map(|v| v.how),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    limit: Option<usize>,
}

/// An account's recent transactions (the journal's window), newest first.
pub async fn transactions(
    state: web::Data<AdminState>,
    request: HttpRequest,
    path: web::Path<String>,
    query: web::Query<Limit>,
) -> HttpResponse {
    answer(
        async {
            let context = authorize(&state, &request)?;
            let (pan, card) = card_of(context, &path)?;
            let account = read_account(context, &pan, card).await?;
            let limit = query.limit.unwrap_or(50).clamp(1, 1_000);
            let found = context.journal.find(limit, |d| d.card == Some(card));
            let list: Vec<_> = found
                .iter()
                .map(|d| decision_json(d, Some(account.currency)))
                .collect();
            Ok(HttpResponse::Ok().json(json!({ "card": pan.to_string(), "transactions": list })))
        }
        .await,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionQuery {
    acquirer: Option<u64>,
    stan: Option<u32>,
    /// MMDD of field 7.
    date: Option<String>,
    rrn: Option<String>,
}

/// The explanation of recent decisions: by acquirer, STAN and date (MMDD of field 7), or by
/// retrieval reference number (field 37).
pub async fn decisions(
    state: web::Data<AdminState>,
    request: HttpRequest,
    query: web::Query<DecisionQuery>,
) -> HttpResponse {
    answer(
        async {
            let context = authorize(&state, &request)?;
            let found = match (&query.rrn, query.acquirer, query.stan, &query.date) {
                (Some(rrn), None, None, None) => {
                    let rrn = rrn.as_bytes();
                    context.journal.find(100, |d| {
                        let len = d.rrn.iter().rposition(|b| *b != b' ').map_or(0, |i| i + 1);
                        &d.rrn[..len] == rrn
                    })
                }
                (None, Some(acquirer), Some(stan), Some(date)) => {
                    let day: u64 = date
                        .parse()
                        .ok()
                        .filter(|d| date.len() == 4 && (101..=1231).contains(d))
                        .ok_or_else(|| Problem::bad(format!("date {date:?} is not MMDD")))?;
                    context.journal.find(100, |d| {
                        d.key.acquirer == acquirer
                            && d.key.stan == stan
                            && d.key.transmission / 1_000_000 == day
                    })
                }
                _ => {
                    return Err(Problem::bad(
                        "give either rrn, or acquirer, stan and date (MMDD of field 7)",
                    ));
                }
            };
            if found.is_empty() {
                return Err(Problem(
                    StatusCode::NOT_FOUND,
                    "no such decision in the recent window (limits.decisions_kept)".into(),
                ));
            }
            let list: Vec<_> = found.iter().map(|d| decision_json(d, None)).collect();
            Ok(HttpResponse::Ok().json(json!({ "decisions": list })))
        }
        .await,
    )
}

/// Reloads the routing table and the risk rules from the configuration file the switch
/// started with: the whole file is checked first, and an invalid one changes nothing. Other
/// keys take effect at a restart. For the admin API and SIGHUP alike.
pub fn reload(context: &Context) -> Result<serde_json::Value, String> {
    if context.source == EMBEDDED_NAME {
        return Err(
            "the switch runs the embedded default configuration: there is no file to reload".into(),
        );
    }
    // One reload at a time (the admin API and SIGHUP may race): every worker gets the same.
    static RELOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = RELOADING.lock().unwrap_or_else(PoisonError::into_inner);
    let settings =
        Settings::load(std::path::Path::new(&context.source)).map_err(|e| e.to_string())?;
    if settings.token_key != context.key {
        return Err(format!(
            "{}: ledger.token_key differs from the running one: no log can change it, and the next start would refuse; nothing reloaded",
            context.source
        ));
    }
    {
        let running = context
            .running
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let next: Vec<(String, String)> = settings.routes.routes().collect();
        for (prefix, to) in running.0.routes().filter(|(_, to)| to == "on-us") {
            if !next.contains(&(prefix.clone(), to)) {
                return Err(format!(
                    "{}: the on-us route of {prefix} is gone or changed: completions and reversals of its cards could no longer reach their accounts; change it at a restart; nothing reloaded",
                    context.source
                ));
            }
        }
    }
    let table = Arc::new(settings.routes.clone());
    // The engine first: if it cannot be built, nothing is replaced.
    let engine = {
        let running = context
            .running
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::new(
            RiskEngine::reloaded(Some(&running.1), settings.risk, crate::clock::unix_millis())
                .map_err(|error| format!("{}: {error}; nothing reloaded", context.source))?,
        )
    };
    for reset in engine.velocity_resets() {
        tracing::warn!(file = %context.source, "reload: {reset}");
    }
    let resets = engine.velocity_resets().to_vec();
    context.routes.set(table);
    context.rules.set(engine.clone());
    *context
        .running
        .write()
        .unwrap_or_else(PoisonError::into_inner) = (settings.routes, engine);
    Ok(json!({
        "reloaded": context.source,
        "applied": ["routes", "risk"],
        "velocity_reset": resets,
        "note": "other keys take effect at a restart",
    }))
}

pub async fn reload_config(state: web::Data<AdminState>, request: HttpRequest) -> HttpResponse {
    answer(
        async {
            let context = authorize(&state, &request)?;
            let done = reload(context).map_err(Problem::bad)?;
            tracing::info!(file = %context.source, "configuration reloaded (routes, risk) by the admin API");
            Ok(HttpResponse::Ok().json(done))
        }
        .await,
    )
}

/// Registers [`ROUTES`] on an actix-web app.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/v1/openapi.json", web::get().to(openapi))
        .route("/v1/accounts", web::post().to(create_account))
        .route("/v1/accounts/{pan}", web::get().to(get_account))
        .route("/v1/accounts/{pan}/top-ups", web::post().to(top_up))
        .route("/v1/accounts/{pan}/withdrawals", web::post().to(withdrawal))
        .route("/v1/accounts/{pan}/block", web::post().to(block))
        .route("/v1/accounts/{pan}/unblock", web::post().to(unblock))
        .route("/v1/ledger/totals", web::get().to(totals))
        .route(
            "/v1/accounts/{pan}/transactions",
            web::get().to(transactions),
        )
        .route("/v1/decisions", web::get().to(decisions))
        .route("/v1/config/routing", web::get().to(routing))
        .route("/v1/issuers", web::get().to(issuers))
        .route("/v1/config/risk", web::get().to(risk))
        .route("/v1/config/reload", web::post().to(reload_config));
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("on", &self.token.is_some())
            .field("ready", &self.context.get().is_some())
            .finish()
    }
}

impl AdminState {
    pub fn new(token: Option<String>) -> AdminState {
        AdminState {
            token,
            context: OnceLock::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every documented operation is a served route and every served route is documented.
    #[test]
    fn the_openapi_document_lists_exactly_the_served_routes() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(document["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, operations) in document["paths"].as_object().unwrap() {
            for method in operations.as_object().unwrap().keys() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
        documented.sort();
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        served.sort();
        assert_eq!(documented, served);
    }

    #[test]
    fn amounts_follow_the_currency() {
        let cases: [(&str, u16, Result<Minor, &str>); 7] = [
            ("10.00", 840, Ok(1_000)),
            ("10", 840, Ok(1_000)),
            ("150", 392, Ok(150)),
            ("1.5", 392, Err("more than 0 decimals")),
            ("0", 840, Err("not above zero")),
            ("ten", 840, Err("not a decimal")),
            ("99999999999.99", 840, Err("exceeds 12 digits")),
        ];
        for (text, currency, expected) in cases {
            match (minor(text, currency), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(Problem(_, message)), Err(want)) => {
                    assert!(message.contains(want), "{text}: {message}")
                }
                (got, want) => panic!("{text}: {:?} vs {want:?}", got.map_err(|p| p.1)),
            }
        }
        assert_eq!(decimal(-150, 840), "-1.50");
        assert_eq!(decimal(150, 392), "150");
    }
}
