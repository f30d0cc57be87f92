//! Message bodies: what the presence server reads and writes inside SIP messages.
//!
//! Owns the body formats only: `Content-Encoding: deflate` ([`deflate`]), RFC 4826 resource
//! lists in ([`resource_lists`]), RFC 4662 RLMI + RFC 3863 PIDF multipart NOTIFY bodies out
//! ([`notify`], [`build_pidf`]), incoming PIDF for PUBLISH ([`pidf`]), and the rich presence
//! kept from it and composed per user ([`rich`]). Everything here is a
//! pure function over bytes: no I/O, no clock, no SIP headers (the one exception is the
//! `Content-Type` value a NOTIFY body needs, returned with the body because the two must
//! agree). Choosing the flavor per client, whether to compress, versions and throttling belong
//! to the callers; SIP parsing, transactions and the number index are other modules' and are
//! not touched from here.
//!
//! Error types carry the SIP status they map to (`sip_status()`) and reason phrases safe to
//! put on a status line.

pub mod deflate;
pub mod notify;
pub mod pidf;
mod pidf_out;
pub mod resource_lists;
pub mod rich;
mod xml;

pub use deflate::{deflate_zlib, deflate_zlib_into, inflate, InflateError, InflateLimits};
pub use notify::{
    build, build_split, full_state_floor, is_writable_uri, ContentType, Flavor, ListNotify, ResourceState,
    SplitNotify,
};
pub use pidf::{Basic, PidfError, Presence, Tuple};
pub use pidf_out::{build_pidf, build_pidf_into, UserPresence};
pub use resource_lists::ListError;
pub use xml::{escape_attr, escape_text};
