//! The SIP message layer: one `Message` type, our own parser and writer, stream framing.
//!
//! Owns the wire format only. It must not know about sockets, transactions or any
//! method's semantics. Everything above it sees `Message`/`Request`/`Response`; which code
//! parses underneath can change without them noticing.

pub mod capabilities;
pub mod framing;
pub mod header;
pub mod message;
pub mod parse;
pub mod request_checks;
pub mod salvage;
pub mod uri;
pub mod validate;
pub mod write;

pub use capabilities::{Advertised, Capabilities};
pub use header::{top_via, CSeq, NameAddr, Via};
pub use message::{Header, HeaderName, Headers, Message, Method, Request, Response};
pub use parse::{parse_message, ParseError};
pub use request_checks::{BadHeader, Event, ExpiryPolicy, MediaType};
pub use uri::{Scheme, Uri};
pub use validate::{check_request, BadRequest};
pub use write::{new_branch, new_tag, reason_phrase, PRODUCT};
