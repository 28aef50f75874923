//! The hasher of the tables whose keys acquirers choose (transaction keys, request identities):
//! fast, and seeded from the operating system's random source.

use std::hash::BuildHasher;
use std::sync::OnceLock;

use foldhash::SharedSeed;
use foldhash::fast::{FoldHasher, SeedableRandomState};

/// foldhash's fast hasher (a tenth of SipHash's cost on these keys: bench/RESULTS.md), with
/// both of its seeds drawn from the operating system's random source through std's
/// `RandomState`. foldhash's own random state derives its shared secret from addresses and the
/// clock; a table whose slots an acquirer could predict can be flooded with colliding keys,
/// stalling a shard. foldhash calls itself "minimally DoS-resistant": it holds against keys
/// crafted without the seed, not against an attacker who recovers it by timing the process.
#[derive(Clone, Debug)]
pub struct TableHasher(SeedableRandomState);

impl Default for TableHasher {
    fn default() -> Self {
        static SHARED: OnceLock<SharedSeed> = OnceLock::new();
        let shared = SHARED.get_or_init(|| SharedSeed::from_u64(os_random()));
        TableHasher(SeedableRandomState::with_seed(os_random(), shared))
    }
}

impl BuildHasher for TableHasher {
    type Hasher = FoldHasher<'static>;

    fn build_hasher(&self) -> FoldHasher<'static> {
        self.0.build_hasher()
    }
}

/// 64 random bits: std's `RandomState` keys SipHash from the operating system's random source
/// (once per thread, then a counter), so a hash of a constant under a new one is unpredictable.
fn os_random() -> u64 {
    std::hash::RandomState::new().hash_one(0x5eed_u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_table_hashes_differently_and_consistently() {
        let (a, b) = (TableHasher::default(), TableHasher::default());
        let key = (123_456u64, *b"TERM0001", 7u32);
        assert_eq!(a.hash_one(key), a.clone().hash_one(key));
        assert_ne!(a.hash_one(key), b.hash_one(key));
        let mut map: std::collections::HashMap<u64, u64, TableHasher> =
            std::collections::HashMap::default();
        map.extend((0..1_000).map(|i| (i, i * 2)));
        assert!((0..1_000).all(|i| map.get(&i) == Some(&(i * 2))));
    }
}
