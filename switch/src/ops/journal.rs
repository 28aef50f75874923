//! The recent decisions, for operators: what each answered request got and which check decided
//! it, kept for a bounded window (`limits.decisions_kept` in all) and looked up by the admin API
//! by acquirer, STAN and date, by retrieval reference number (field 37), or by card.
//!
//! One part per worker thread, each behind its own lock, so that sessions on different workers
//! never wait for each other; the admin API, rare, reads them all. Memory is the bound times
//! about 100 bytes. It is observability, not state: it is not logged, and starts empty.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use crate::domain::{CardToken, Minor, ResponseCode, TxnKey};
use crate::ops::metrics::Route;

/// One answered request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub at_seconds: u64,
    pub key: TxnKey,
    /// Field 37, space-padded (all spaces when absent).
    pub rrn: [u8; 12],
    /// The card, when the request got as far as reading it.
    pub card: Option<CardToken>,
    pub mti: [u8; 4],
    pub amount: Minor,
    pub code: ResponseCode,
    pub route: Route,
    /// The risk rule that declined it.
    pub rule: Option<std::sync::Arc<str>>,
    /// For a remote card: the issuer that decided it, and how.
    pub via: Option<crate::pipeline::Via>,
}

#[derive(Debug)]
pub struct Journal {
    parts: Vec<Mutex<VecDeque<Decision>>>,
    part_max: usize,
}

impl Journal {
    /// A journal of `parts` parts keeping `kept` decisions in all.
    pub fn new(parts: usize, kept: usize) -> Journal {
        let parts = parts.max(1);
        Journal {
            parts: (0..parts).map(|_| Mutex::new(VecDeque::new())).collect(),
            part_max: (kept / parts).max(1),
        }
    }

    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Keeps `decision` in part `part`, forgetting that part's oldest beyond the bound.
    pub fn record(&self, part: usize, decision: Decision) {
        let Some(part) = self.parts.get(part % self.parts.len()) else {
            return;
        };
        let mut part = part.lock().unwrap_or_else(PoisonError::into_inner);
        if part.len() >= self.part_max {
            part.pop_front();
        }
        part.push_back(decision);
    }

    /// Up to `limit` decisions that `matches`, newest first.
    pub fn find(&self, limit: usize, matches: impl Fn(&Decision) -> bool) -> Vec<Decision> {
        let mut found: Vec<Decision> = Vec::new();
        for part in &self.parts {
            let part = part.lock().unwrap_or_else(PoisonError::into_inner);
            found.extend(
                part.iter()
                    .rev()
                    .filter(|d| matches(d))
                    .take(limit)
                    .cloned(),
            );
        }
        found.sort_by_key(|d| std::cmp::Reverse(d.at_seconds));
        found.truncate(limit);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(stan: u32, at_seconds: u64) -> Decision {
        Decision {
            at_seconds,
            key: TxnKey {
                acquirer: 1,
                terminal: *b"T1      ",
                stan,
                transmission: 1_130_000_000,
            },
            rrn: *b"000000000001",
            card: None,
            mti: *b"0100",
            amount: 100,
            code: ResponseCode::InsufficientFunds,
            route: Route::OnUs,
            rule: None,
            via: None,
        }
    }

    #[test]
    fn keeps_the_newest_within_the_bound_and_finds_newest_first() {
        let journal = Journal::new(2, 4);
        for stan in 0..10 {
            journal.record(
                usize::try_from(stan).unwrap(),
                decision(stan, u64::from(stan)),
            );
        }
        let all = journal.find(100, |_| true);
        assert_eq!(
            all.iter().map(|d| d.key.stan).collect::<Vec<_>>(),
            [9, 8, 7, 6],
            "two per part, newest first"
        );
        assert_eq!(journal.find(1, |d| d.key.stan % 2 == 0)[0].key.stan, 8);
        assert!(
            journal.find(10, |d| d.key.stan == 1).is_empty(),
            "forgotten"
        );
    }
}
