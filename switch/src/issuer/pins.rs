//! Log records still needed by queued advices. A snapshot holds the ledger, not the queues of
//! the issuer channels, so pruning the log behind a snapshot must keep every segment from the
//! oldest record that queued an advice not yet acknowledged (or given up): recovery rebuilds
//! the queues from those records.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// LSNs of records that queued advices still open, with how many each holds.
#[derive(Debug, Default)]
pub struct Pins(Mutex<BTreeMap<u64, u32>>);

impl Pins {
    /// The record at `lsn` is needed until [`Pins::unpin`].
    pub fn pin(&self, lsn: u64) {
        if let Ok(mut pins) = self.0.lock() {
            *pins.entry(lsn).or_insert(0) += 1;
        }
    }

    pub fn unpin(&self, lsn: u64) {
        if let Ok(mut pins) = self.0.lock()
            && let Some(count) = pins.get_mut(&lsn)
        {
            *count -= 1;
            if *count == 0 {
                pins.remove(&lsn);
            }
        }
    }

    /// The oldest record still needed, if any.
    pub fn oldest(&self) -> Option<u64> {
        self.0
            .lock()
            .ok()
            .and_then(|pins| pins.keys().next().copied())
    }

    pub fn len(&self) -> usize {
        self.0
            .lock()
            .map_or(0, |pins| pins.values().map(|&n| n as usize).sum())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_pin_holds_until_each_of_its_holders_lets_go() {
        let pins = Pins::default();
        assert_eq!(pins.oldest(), None);
        pins.pin(10);
        pins.pin(10);
        pins.pin(30);
        assert_eq!(pins.oldest(), Some(10));
        pins.unpin(10);
        assert_eq!(pins.oldest(), Some(10));
        pins.unpin(10);
        assert_eq!(pins.oldest(), Some(30));
        assert_eq!(pins.len(), 1);
        pins.unpin(30);
        pins.unpin(99);
        assert!(pins.is_empty());
    }
}
