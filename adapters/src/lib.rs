//! Wire side of the switch: ISO 8583 dialects, codec and framing.
//!
//! **This crate knows nothing of the switch.** It turns bytes into [`Message`]s and back,
//! and finds frame boundaries in a byte stream; it does no I/O of its own.
//!
//! - [`dialect`]: field definitions as data (`default`, `ascii-hex-bitmap`, `bcd`).
//! - [`message`]: a message as MTI plus field values, borrowing from the input where it can.
//! - [`codec`]: [`Dialect::decode`](dialect::Dialect::decode) and
//!   [`Dialect::encode`](dialect::Dialect::encode), with errors that name field and offset.
//! - [`framing`]: length headers (2-byte binary or 4 ASCII digits) and the maximum frame size.
#![forbid(unsafe_code)]

pub mod codec;
pub mod dialect;
pub mod framing;
pub mod message;

pub use codec::{DecodeError, DecodeErrorKind, EncodeError, PartialDecode};
pub use dialect::{Dialect, DialectName};
pub use framing::{FrameError, FrameHeader};
pub use message::{Message, Mti};
