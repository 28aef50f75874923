//! Admission of a decoded message, as a session does it: identity, fingerprint, the MAC check,
//! the financial request in the domain, the demo risk rules, and the response to it.

use adapters::DialectName;
use switch::acquirer::{iso, mac};
use switch::config::Settings;
use switch::domain::request::YearMonth;
use switch::domain::{Outcome, ResponseCode, Tokenizer};
use switch::risk::RiskEngine;

fn main() {
    let tokenizer = Tokenizer::new([7; 16]);
    let key = mac::MacKey([9; 16]);
    let mut rules = Settings::embedded().expect("the default is valid").risk;
    // Small tables, made anew for each input, and a fixed date and time: each input runs the
    // same way every time (AFL's stability), whatever ran before it.
    rules.velocity_keys_max = 14;
    rules.velocity_merchants_max = 14;
    rules.velocity_terminals_max = 14;
    let today = YearMonth {
        year: 2026,
        month: 11,
    };
    afl::fuzz!(|data: &[u8]| {
        let engine = RiskEngine::new(rules.clone()).expect("memory");
        let dialect = DialectName::Default.dialect();
        let Ok(message) = dialect.decode(data) else {
            return;
        };
        let _ = iso::identity(&message);
        let _ = iso::fingerprint(&message, &[1; 16]);
        let field = mac::mac_field(message.fields().map(|(n, _)| n).max().unwrap_or(0));
        if let Some(value) = message.get(field) {
            let _ = mac::verify(&key, data, value);
        }
        match iso::parse_request(&message, today, &tokenizer) {
            Ok(request) => {
                let verdict = engine.evaluate(&request, 1_796_040_000_000);
                let outcome = match verdict {
                    Ok(passed) => {
                        passed.approved();
                        Outcome {
                            code: ResponseCode::Approved,
                            auth_id: Some(*b"A1B2C3"),
                            balances: None,
                        }
                    }
                    Err(decline) => Outcome::decline(decline.code),
                };
                if let Some(response) = iso::response(&message, &outcome) {
                    let mut out = Vec::new();
                    let _ = dialect.encode(&response, &mut out);
                }
            }
            Err(code) => {
                if let Some(response) = iso::response(&message, &Outcome::decline(code)) {
                    let mut out = Vec::new();
                    let _ = dialect.encode(&response, &mut out);
                }
            }
        }
    });
}
