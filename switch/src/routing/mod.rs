//! BIN / PAN-prefix routing table: the longest configured prefix wins.

use crate::domain::Pan;

pub mod dispatch;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A card of ours: the ledger shard that owns the account.
    OnUs,
    /// A remote issuer, by the name of its channel.
    Issuer(String),
}

/// Prefixes sorted longest first, so the first match is the longest. Tables hold tens to
/// hundreds of prefixes; a linear scan over them stays in the nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingTable {
    /// (prefix, destination, fallback issuers in order).
    routes: Vec<(Vec<u8>, Destination, Vec<String>)>,
}

impl RoutingTable {
    /// Adds a route; false if the prefix is already routed.
    pub fn insert(&mut self, prefix: &[u8], destination: Destination) -> bool {
        self.insert_with_fallbacks(prefix, destination, Vec::new())
    }

    /// Adds a route to an issuer with the issuers to try, in order, when it is down; false
    /// if the prefix is already routed.
    pub fn insert_with_fallbacks(
        &mut self,
        prefix: &[u8],
        destination: Destination,
        fallbacks: Vec<String>,
    ) -> bool {
        if self.routes.iter().any(|(p, ..)| p == prefix) {
            return false;
        }
        let at = self
            .routes
            .partition_point(|(p, ..)| p.len() >= prefix.len());
        self.routes
            .insert(at, (prefix.to_vec(), destination, fallbacks));
        true
    }

    pub fn route(&self, pan: &Pan) -> Option<&Destination> {
        self.route_with_fallbacks(pan).map(|(d, _)| d)
    }

    /// The destination of `pan` and the issuers to fall back on, in order.
    pub fn route_with_fallbacks(&self, pan: &Pan) -> Option<(&Destination, &[String])> {
        let (digits, len) = pan.digits();
        let digits = &digits[..len];
        self.routes
            .iter()
            .find(|(prefix, ..)| digits.starts_with(prefix))
            .map(|(_, d, f)| (d, f.as_slice()))
    }

    /// Every route as (prefix, destination as configured: `on-us` or `issuer:NAME`), longest
    /// prefix first.
    pub fn routes(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.routes.iter().map(|(prefix, destination, _)| {
            let to = match destination {
                Destination::OnUs => "on-us".to_owned(),
                Destination::Issuer(name) => format!("issuer:{name}"),
            };
            (String::from_utf8_lossy(prefix).into_owned(), to)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let mut table = RoutingTable::default();
        assert!(table.insert(b"4", Destination::Issuer("visa".into())));
        assert!(table.insert(b"400000", Destination::OnUs));
        assert!(table.insert(b"4111", Destination::Issuer("sim".into())));
        assert!(
            !table.insert(b"4111", Destination::OnUs),
            "a prefix is routed once"
        );
        let cases = [
            ("4000000000000002", Some(Destination::OnUs)),
            ("4111111111111111", Some(Destination::Issuer("sim".into()))),
            ("4242424242424242", Some(Destination::Issuer("visa".into()))),
            ("5555555555554444", None),
        ];
        for (pan, expected) in cases {
            let pan = Pan::parse(pan.as_bytes()).unwrap();
            assert_eq!(table.route(&pan), expected.as_ref(), "{pan}");
        }
    }
}
