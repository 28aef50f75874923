//! The acquirer side: the listener that accepts connections, a session per connection
//! (reader, writer, and the actor that receives pipeline replies), the admission of each
//! request (ISO 8583 fields to the domain, in [`iso`]) and the idempotency table shared by all
//! sessions.

pub mod idempotency;
pub mod iso;
pub mod listener;
pub mod mac;
pub mod session;

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
}
