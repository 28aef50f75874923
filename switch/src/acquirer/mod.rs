//! The acquirer side: the listener that accepts connections, a session per connection
//! (reader, writer, and the actor that receives pipeline replies), the admission of each
//! request (ISO 8583 fields to the domain, in [`iso`]) and the idempotency table shared by all
//! sessions.

pub mod archive;
pub mod idempotency;
pub mod iso;
pub mod listener;
pub mod mac;
pub mod session;
pub mod tls;

/// An acquirer of `[[acquirers]]` in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquirer {
    pub id: u64,
    pub name: String,
    /// Connections this acquirer may hold at once; a connection is counted from its first
    /// financial request naming the acquirer.
    pub connections_max: usize,
    /// With `mac = "aes-cmac"`: every request but network management must carry a correct
    /// MAC (63 otherwise), and every response to it carries one.
    pub mac_key: Option<mac::MacKey>,
    /// With `sources`: the only addresses that may speak for this acquirer (58 otherwise), and
    /// a connection from one of them speaks for it alone.
    pub sources: Vec<ipnet::IpNet>,
    /// With `client_cert_cn` (mutual TLS): only a connection whose client certificate has this
    /// subject common name may speak for this acquirer (58 otherwise), and such a connection
    /// speaks for it alone.
    pub client_cert_cn: Option<String>,
    /// Requests of this acquirer being decided at once, over all its connections; beyond it,
    /// 91 at once (`None`: only each connection's `limits.inflight_per_connection`).
    pub inflight_max: Option<usize>,
}

impl Acquirer {
    /// Whether `sources` lets `address` speak for this acquirer.
    pub fn admits(&self, address: std::net::IpAddr) -> bool {
        self.sources.is_empty()
            || self
                .sources
                .iter()
                .any(|net| net.contains(&address.to_canonical()))
    }
}

/// The acquirer whose `sources` hold `address` most narrowly (the longest prefix, as routers
/// choose): a connection from it is bound to that acquirer by source. The configuration refuses
/// one range in two acquirers, so two matches of the same length cannot differ; if they did,
/// nothing would be bound.
pub fn bound_by_source<'a>(
    acquirers: impl IntoIterator<Item = &'a Acquirer>,
    address: std::net::IpAddr,
) -> Option<u64> {
    let address = address.to_canonical();
    let mut best: Option<(u8, Option<u64>)> = None;
    for acquirer in acquirers {
        for net in acquirer.sources.iter().filter(|net| net.contains(&address)) {
            let length = net.prefix_len();
            best = match best {
                Some((known, _)) if known > length => best,
                Some((known, Some(id))) if known == length && id != acquirer.id => {
                    Some((known, None))
                }
                Some((known, holder)) if known == length => Some((known, holder)),
                _ => Some((length, Some(acquirer.id))),
            };
        }
    }
    best.and_then(|(_, holder)| holder)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquirer(id: u64, sources: &[&str]) -> Acquirer {
        Acquirer {
            id,
            name: format!("acquirer {id}"),
            connections_max: 1,
            mac_key: None,
            sources: sources.iter().map(|s| s.parse().unwrap()).collect(),
            client_cert_cn: None,
            inflight_max: None,
        }
    }

    #[test]
    fn sources_admit_their_addresses_in_either_ip_form() {
        let limited = acquirer(1, &["10.1.0.0/16", "2001:db8::/32"]);
        let open = acquirer(2, &[]);
        let v4 = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(limited.admits(v4("10.1.2.3")));
        assert!(limited.admits(v4("::ffff:10.1.2.3")), "IPv4-mapped");
        assert!(limited.admits(v4("2001:db8::7")));
        assert!(!limited.admits(v4("10.2.0.1")));
        assert!(!limited.admits(v4("127.0.0.1")));
        assert!(open.admits(v4("127.0.0.1")), "no sources: any address");
        let all = [limited.clone(), open.clone(), acquirer(3, &["10.1.2.0/24"])];
        assert_eq!(bound_by_source(&all, v4("::ffff:10.1.9.9")), Some(1));
        assert_eq!(
            bound_by_source(&all, v4("10.1.2.3")),
            Some(3),
            "the narrower range"
        );
        assert_eq!(bound_by_source(all.iter().rev(), v4("10.1.2.3")), Some(3));
        assert_eq!(bound_by_source(&all, v4("192.0.2.1")), None);
        let tied = [acquirer(4, &["10.9.0.0/16"]), acquirer(5, &["10.9.0.0/16"])];
        assert_eq!(
            bound_by_source(&tied, v4("10.9.1.1")),
            None,
            "never chosen by order"
        );
    }
}
