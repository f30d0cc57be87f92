//! RFC 4662 NOTIFY bodies for a resource-list subscription: `multipart/related` with the RLMI
//! document first and one PIDF part per service user.
//!
//! # Format
//!
//! CRLF line ends, no preamble, every part `Content-Transfer-Encoding: binary`. The
//! [`Flavor`] picks the part-id spelling: liblinphone 5.1 ignores the whole body unless it sees
//! `Content-Id: cidN` (that spelling, no brackets); RFC clients get `Content-ID: <cidN@host>`
//! with `host` taken from the list URI. In both, `boundary` is the last `Content-Type`
//! parameter (liblinphone 5.1 crashes otherwise).
//!
//! The boundary is a constant: every line we write inside a part starts with `<`, and caller
//! strings are XML-escaped (CR and LF included), so no part can contain a CRLF followed by
//! `--` and the boundary. Constant output is also easier to test and to compress.
//!
//! Resource URIs are echoed exactly as the client wrote them (only XML-escaped): liblinphone
//! ignores a resource whose URI differs by a byte. **A `tel:` URI (or an empty one) is never
//! written**: such resources are left out of the body entirely, because liblinphone 5.1 crashes
//! on a `tel:` resource URI. See [`is_writable_uri`]. No `<name>` element is ever written
//! either (liblinphone 5.1 risks a crash on a `<name>` for a resource matching no friend).
//!
//! # Splitting a full state ([`build_split`])
//!
//! When a full-state body is larger than the caller's budget, or carries more users than
//! its cap (liblinphone 5.1 slows down more than linearly with users per NOTIFY), it becomes:
//! 1. one full-state NOTIFY (`fullState="true"`, version `v`) listing **every** resource, with
//!    an instance and PIDF part for as many users, in list order, as fit the budget; the other
//!    users appear as bare `<resource uri>` (RFC 4662 §5.5: state not known yet);
//! 2. partial NOTIFYs (`fullState="false"`, versions `v+1`, `v+2`, ...) listing only the
//!    remaining users, each with its instance and PIDF, as many per NOTIFY as fit.
//!
//! This is what RFC 4662 §5.2/§5.6 allows and what liblinphone handles: a partial NOTIFY
//! updates only the resources it lists, so the users it carries are added and nothing else
//! changes. A user can only be taken away by a full state, which the first NOTIFY is. The
//! RLMI of a full state is never split (it must list every resource), so the first body can
//! exceed the budget when the list alone does; every body carries at least one user. The
//! budget is in uncompressed bytes: with deflate, pass the wire budget times the expected
//! ratio (full-state bodies shrink 9-11 times).

use super::pidf_out::{push_num, write_pidf, UserPresence};
use super::xml::escape_attr;

/// Which spelling of part ids the client understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Flavor {
    /// liblinphone before 5.4: `Content-Id: cidN`, no brackets.
    Linphone,
    /// RFC 2392/4662: `Content-ID: <cidN@host>`.
    Rfc,
}

/// One resource of the list, as the client wrote it, and what we know of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceState<'a> {
    /// The entry URI byte for byte as received (after XML unescaping). Never `tel:`: see
    /// [`is_writable_uri`].
    pub uri: &'a str,
    /// `Some` for a service user (instance + PIDF part), `None` for anyone else (bare resource).
    pub user: Option<UserPresence<'a>>,
}

/// Everything one list NOTIFY body says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListNotify<'a> {
    /// The list's URI (the SUBSCRIBE's Request-URI).
    pub list_uri: &'a str,
    /// RLMI version: 0 for the first NOTIFY, then +1 for every NOTIFY of the subscription.
    pub version: u32,
    /// Whether this body is the full state (every resource listed).
    pub full_state: bool,
    pub resources: &'a [ResourceState<'a>],
    pub flavor: Flavor,
}

/// The `Content-Type` header value that goes with a body (`boundary` last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType(String);

impl ContentType {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<ContentType> for String {
    fn from(c: ContentType) -> String {
        c.0
    }
}

impl std::fmt::Display for ContentType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The multipart boundary of every NOTIFY body (see the module doc for why a constant is safe).
pub const BOUNDARY: &str = "sp-rlmi-7c4d1e9a";

/// False for URIs that must never appear as a resource URI: empty, or `tel:` (any case).
pub fn is_writable_uri(uri: &str) -> bool {
    !uri.is_empty() && !uri.get(..4).is_some_and(|s| s.eq_ignore_ascii_case("tel:"))
}

/// Writes the whole body for `n` into `out` (appending) and returns its Content-Type value.
pub fn build(n: &ListNotify, out: &mut Vec<u8>) -> ContentType {
    out.reserve(size_hint(n));
    let w = Writer::new(n);
    let items = n
        .resources
        .iter()
        .filter(|r| is_writable_uri(r.uri))
        .map(|r| (r, r.user.is_some()));
    w.body(out, n.version, n.full_state, items);
    w.content_type()
}

/// About the size of `n`'s whole body, so that it is written without growing its buffer
/// (each growth copies it, and the buffers a list NOTIFY grows through are pages faulted
/// in and given back every time).
fn size_hint(n: &ListNotify) -> usize {
    n.resources.iter().fold(512 + n.list_uri.len(), |size, r| {
        let user = r.user.as_ref().map_or(0, |u| PART_SIZE + r.uri.len() + u.contact.len());
        size + RESOURCE_SIZE + r.uri.len() + user
    })
}

/// A resource's RLMI element beyond its URI, with an instance.
const RESOURCE_SIZE: usize = 80;
/// A user's PIDF part beyond its URIs (part headers, tuple, status, person).
const PART_SIZE: usize = 700;

/// The smallest body a full state of `n` can be sent in: the RLMI listing every resource,
/// without any user's part (a split never goes below it: the RLMI of a full state is whole).
pub fn full_state_floor(n: &ListNotify) -> Vec<u8> {
    let w = Writer::new(n);
    let items = n.resources.iter().filter(|r| is_writable_uri(r.uri)).map(|r| (r, false));
    let mut out = Vec::new();
    w.body(&mut out, n.version, true, items);
    out
}

/// One NOTIFY body of a split full state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitNotify {
    pub version: u32,
    pub full_state: bool,
    pub body: Vec<u8>,
    pub content_type: ContentType,
}

/// Builds `n` as one body if it fits `max_body` bytes and `max_users` users, else as
/// described in the module doc. Versions run from `n.version` up, one per body.
pub fn build_split(n: &ListNotify, max_body: usize, max_users: usize) -> Vec<SplitNotify> {
    let w = Writer::new(n);
    let mut body = Vec::new();
    let content_type = build(n, &mut body);
    let users = n.resources.iter().filter(|r| r.user.is_some() && is_writable_uri(r.uri)).count();
    let max_users = max_users.max(1);
    if body.len() <= max_body && users <= max_users {
        let (version, full_state) = (n.version, n.full_state);
        return vec![SplitNotify {
            version,
            full_state,
            body,
            content_type,
        }];
    }
    let writable: Vec<&ResourceState> = n
        .resources
        .iter()
        .filter(|r| is_writable_uri(r.uri))
        .collect();
    let mut out = Vec::new();
    let rest = if n.full_state {
        let (first, rest) = w.split_first(&writable, n.version, max_body, max_users);
        out.push(first);
        rest
    } else {
        writable
    };
    let mut version = n.version.wrapping_add(out.len() as u32);
    let mut left = &rest[..];
    while !left.is_empty() {
        let base = w.size(version, false, std::iter::empty());
        let k = w.fitting(left, base, max_body, false).min(max_users).max(1);
        let mut body = Vec::new();
        w.body(
            &mut body,
            version,
            false,
            left[..k].iter().map(|r| (*r, true)),
        );
        let content_type = w.content_type();
        out.push(SplitNotify {
            version,
            full_state: false,
            body,
            content_type,
        });
        version = version.wrapping_add(1);
        left = &left[k..];
    }
    out
}

/// Formatting context of one NOTIFY: flavor and the host part of RFC content ids.
struct Writer<'n> {
    list_uri: &'n str,
    flavor: Flavor,
    host: &'n str,
}

impl<'n> Writer<'n> {
    fn new(n: &ListNotify<'n>) -> Self {
        Writer {
            list_uri: n.list_uri,
            flavor: n.flavor,
            host: cid_host(n.list_uri),
        }
    }

    fn content_type(&self) -> ContentType {
        let mut s = String::with_capacity(100);
        s.push_str("multipart/related;type=\"application/rlmi+xml\";start=\"<cid0");
        if self.flavor == Flavor::Rfc {
            s.push('@');
            s.push_str(self.host);
        }
        s.push_str(">\";boundary=");
        s.push_str(BOUNDARY);
        ContentType(s)
    }

    /// The body: RLMI listing `items`, then a PIDF part for each item flagged `true`.
    fn body<'r>(
        &self,
        out: &mut Vec<u8>,
        version: u32,
        full_state: bool,
        items: impl Iterator<Item = (&'r ResourceState<'r>, bool)> + Clone,
    ) {
        self.part_head(out, 0, b"application/rlmi+xml");
        out.extend_from_slice(b"<list xmlns=\"urn:ietf:params:xml:ns:rlmi\" uri=\"");
        escape_attr(out, self.list_uri);
        out.extend_from_slice(b"\" version=\"");
        push_num(out, u64::from(version), 1);
        out.extend_from_slice(if full_state {
            b"\" fullState=\"true\">\r\n"
        } else {
            b"\" fullState=\"false\">\r\n"
        });
        let mut cid = 0;
        for (r, with_user) in items.clone() {
            let inst = with_user && r.user.is_some();
            cid += usize::from(inst);
            self.resource(out, r.uri, inst.then_some(cid));
        }
        out.extend_from_slice(b"</list>");
        let mut cid = 0;
        for (r, with_user) in items {
            if let (true, Some(u)) = (with_user, &r.user) {
                cid += 1;
                self.part(out, r.uri, u, cid);
            }
        }
        out.extend_from_slice(b"\r\n--");
        out.extend_from_slice(BOUNDARY.as_bytes());
        out.extend_from_slice(b"--\r\n");
    }

    /// `<resource uri>` with an active instance pointing at part `cid`, or bare.
    fn resource(&self, out: &mut Vec<u8>, uri: &str, cid: Option<usize>) {
        out.extend_from_slice(b"<resource uri=\"");
        escape_attr(out, uri);
        let Some(cid) = cid else {
            out.extend_from_slice(b"\"/>\r\n");
            return;
        };
        out.extend_from_slice(b"\"><instance id=\"i");
        push_num(out, cid as u64, 1);
        out.extend_from_slice(b"\" state=\"active\" cid=\"");
        self.cid(out, cid);
        out.extend_from_slice(b"\"/></resource>\r\n");
    }

    /// CRLF, delimiter and headers of a part, up to and including the blank line.
    fn part_head(&self, out: &mut Vec<u8>, cid: usize, mime: &[u8]) {
        if cid > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--");
        out.extend_from_slice(BOUNDARY.as_bytes());
        out.extend_from_slice(b"\r\nContent-Transfer-Encoding: binary\r\n");
        match self.flavor {
            Flavor::Linphone => {
                out.extend_from_slice(b"Content-Id: ");
                self.cid(out, cid);
            }
            Flavor::Rfc => {
                out.extend_from_slice(b"Content-ID: <");
                self.cid(out, cid);
                out.push(b'>');
            }
        }
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(mime);
        out.extend_from_slice(b";charset=\"UTF-8\"\r\n\r\n");
    }

    fn part(&self, out: &mut Vec<u8>, uri: &str, user: &UserPresence, cid: usize) {
        self.part_head(out, cid, b"application/pidf+xml");
        write_pidf(out, uri, user);
    }

    /// `cidN` or `cidN@host`, as it appears in the RLMI `cid` attribute.
    fn cid(&self, out: &mut Vec<u8>, n: usize) {
        out.extend_from_slice(b"cid");
        push_num(out, n as u64, 1);
        if self.flavor == Flavor::Rfc {
            out.push(b'@');
            out.extend_from_slice(self.host.as_bytes());
        }
    }

    /// The full-state body of a split: every resource, instances for the users that fit.
    /// Returns it with the users left for partial NOTIFYs.
    fn split_first<'r>(
        &self,
        writable: &[&'r ResourceState<'r>],
        version: u32,
        max_body: usize,
        max_users: usize,
    ) -> (SplitNotify, Vec<&'r ResourceState<'r>>) {
        let users: Vec<&ResourceState> = writable
            .iter()
            .copied()
            .filter(|r| r.user.is_some())
            .collect();
        let base = self.size(version, true, writable.iter().map(|r| (*r, false)));
        let k = self.fitting(&users, base, max_body, true).min(max_users);
        // Index in `writable` of the first user left out.
        let cut = writable
            .iter()
            .enumerate()
            .filter(|(_, r)| r.user.is_some())
            .nth(k);
        let cut = cut.map_or(writable.len(), |(i, _)| i);
        let mut body = Vec::new();
        let items = writable.iter().enumerate().map(|(i, r)| (*r, i < cut));
        self.body(&mut body, version, true, items);
        let content_type = self.content_type();
        (
            SplitNotify {
                version,
                full_state: true,
                body,
                content_type,
            },
            users[k..].to_vec(),
        )
    }

    fn size<'r>(
        &self,
        version: u32,
        full_state: bool,
        items: impl Iterator<Item = (&'r ResourceState<'r>, bool)> + Clone,
    ) -> usize {
        let mut v = Vec::new();
        self.body(&mut v, version, full_state, items);
        v.len()
    }

    /// How many of `users` (from the front) fit in `budget` on top of `base` bytes. In a full
    /// state their bare `<resource>` is already in `base`; in a partial it is not.
    fn fitting(&self, users: &[&ResourceState], base: usize, budget: usize, listed: bool) -> usize {
        let mut total = base;
        let mut scratch = Vec::new();
        for (i, r) in users.iter().enumerate() {
            let cid = i + 1;
            scratch.clear();
            self.resource(&mut scratch, r.uri, r.user.map(|_| cid));
            if listed {
                let mut bare = Vec::new();
                self.resource(&mut bare, r.uri, None);
                total -= bare.len();
            }
            if let Some(u) = &r.user {
                self.part(&mut scratch, r.uri, u, cid);
            }
            total += scratch.len();
            if total > budget {
                return i;
            }
        }
        users.len()
    }
}

/// Host of the list URI for RFC 2392 content ids; a safe fallback when it is not a plain name.
fn cid_host(list_uri: &str) -> &str {
    let rest = list_uri.split_once(':').map_or(list_uri, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = rest.split([';', '?', '>', ':']).next().unwrap_or("");
    let plain = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if plain {
        host
    } else {
        "smart-presence.invalid"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "sip:rls@example.org";

    fn user(contact: &str) -> Option<UserPresence<'_>> {
        Some(UserPresence {
            contact,
            basic_open: true,
            away: false,
            timestamp: Some(1_795_438_605),
            doc: None,
        })
    }

    fn notify<'a>(resources: &'a [ResourceState<'a>], flavor: Flavor) -> (String, ContentType) {
        let n = ListNotify {
            list_uri: LIST,
            version: 0,
            full_state: true,
            resources,
            flavor,
        };
        let mut out = Vec::new();
        let ct = build(&n, &mut out);
        (String::from_utf8(out).unwrap(), ct)
    }

    #[test]
    fn linphone_flavor_exact_bytes() {
        let rs = [
            ResourceState {
                uri: "sip:+33612345678@example.org;user=phone",
                user: user("sip:bob@example.org"),
            },
            ResourceState {
                uri: "sip:+33698765432@example.org;user=phone",
                user: None,
            },
        ];
        let (body, ct) = notify(&rs, Flavor::Linphone);
        assert_eq!(
            ct.as_str(),
            "multipart/related;type=\"application/rlmi+xml\";start=\"<cid0>\";boundary=sp-rlmi-7c4d1e9a"
        );
        let want = "--sp-rlmi-7c4d1e9a\r\n\
Content-Transfer-Encoding: binary\r\n\
Content-Id: cid0\r\n\
Content-Type: application/rlmi+xml;charset=\"UTF-8\"\r\n\
\r\n\
<list xmlns=\"urn:ietf:params:xml:ns:rlmi\" uri=\"sip:rls@example.org\" version=\"0\" fullState=\"true\">\r\n\
<resource uri=\"sip:+33612345678@example.org;user=phone\"><instance id=\"i1\" state=\"active\" cid=\"cid1\"/></resource>\r\n\
<resource uri=\"sip:+33698765432@example.org;user=phone\"/>\r\n\
</list>\r\n\
--sp-rlmi-7c4d1e9a\r\n\
Content-Transfer-Encoding: binary\r\n\
Content-Id: cid1\r\n\
Content-Type: application/pidf+xml;charset=\"UTF-8\"\r\n\
\r\n\
<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:+33612345678@example.org;user=phone\">\r\n\
<tuple id=\"t1\"><status><basic>open</basic></status><contact priority=\"1\">sip:bob@example.org</contact>\
<timestamp>2026-11-23T12:56:45Z</timestamp></tuple>\r\n\
</presence>\r\n\
--sp-rlmi-7c4d1e9a--\r\n";
        assert_eq!(body, want);
    }

    #[test]
    fn linphone_rules() {
        let rs = [
            ResourceState {
                uri: "sip:a@x",
                user: user("sip:a1@x"),
            },
            ResourceState {
                uri: "sip:b@x",
                user: user("sip:b1@x"),
            },
        ];
        let (body, ct) = notify(&rs, Flavor::Linphone);
        assert!(ct.as_str().ends_with(&format!(";boundary={BOUNDARY}")));
        assert!(!body.contains("Content-ID") && !body.contains("Content-Id: <"));
        assert_eq!(
            body.matches("Content-Transfer-Encoding: binary\r\n")
                .count(),
            3
        );
        assert_eq!(body.matches("<contact priority=\"1\">").count(), 2);
        assert!(body.starts_with("--"), "no preamble");
        assert!(!body.replace("\r\n", "").contains('\n'), "CRLF only");
        // The delimiter appears only where we put it: 3 openings and the close.
        assert_eq!(body.matches(&format!("--{BOUNDARY}")).count(), 4);
        assert!(body.contains("cid=\"cid2\"") && body.contains("Content-Id: cid2\r\n"));
    }

    #[test]
    fn rfc_flavor_ids() {
        let rs = [ResourceState {
            uri: "sip:a@x",
            user: user("sip:a1@x"),
        }];
        let (body, ct) = notify(&rs, Flavor::Rfc);
        assert_eq!(
            ct.as_str(),
            "multipart/related;type=\"application/rlmi+xml\";start=\"<cid0@example.org>\";boundary=sp-rlmi-7c4d1e9a"
        );
        assert!(body.contains("Content-ID: <cid0@example.org>\r\n"));
        assert!(body.contains("Content-ID: <cid1@example.org>\r\n"));
        assert!(body.contains("cid=\"cid1@example.org\""));
        assert!(!body.contains("Content-Id"));
    }

    #[test]
    fn cid_host_fallbacks() {
        assert_eq!(cid_host("sip:rls@example.org;transport=tcp"), "example.org");
        assert_eq!(cid_host("sips:example.org:5061"), "example.org");
        assert_eq!(cid_host("sip:rls@[::1]"), "smart-presence.invalid");
        assert_eq!(cid_host(""), "smart-presence.invalid");
    }

    #[test]
    fn tel_and_empty_uris_are_never_written() {
        let rs = [
            ResourceState {
                uri: "tel:+33612345678",
                user: user("sip:t@x"),
            },
            ResourceState {
                uri: "TEL:+1",
                user: None,
            },
            ResourceState {
                uri: "",
                user: None,
            },
            ResourceState {
                uri: "sip:ok@x",
                user: None,
            },
        ];
        let (body, _) = notify(&rs, Flavor::Linphone);
        assert!(!body.to_ascii_lowercase().contains("tel:"));
        assert_eq!(body.matches("<resource ").count(), 1);
        assert!(!body.contains("application/pidf+xml"));
        assert!(is_writable_uri("sip:tel@x") && !is_writable_uri("Tel:1"));
    }

    #[test]
    fn uris_echoed_with_escaping_only() {
        let rs = [ResourceState {
            uri: "sip:a&b\"<c>@x;user=phone",
            user: user("sip:c<d>@x"),
        }];
        let (body, _) = notify(&rs, Flavor::Linphone);
        assert!(body.contains("<resource uri=\"sip:a&amp;b&quot;&lt;c&gt;@x;user=phone\">"));
        assert!(body.contains("entity=\"sip:a&amp;b&quot;&lt;c&gt;@x;user=phone\""));
        assert!(body.contains(">sip:c&lt;d&gt;@x</contact>"));
    }

    #[test]
    fn appends_and_versions() {
        let rs = [ResourceState {
            uri: "sip:a@x",
            user: None,
        }];
        let n = ListNotify {
            list_uri: LIST,
            version: 41,
            full_state: false,
            resources: &rs,
            flavor: Flavor::Linphone,
        };
        let mut out = b"keep".to_vec();
        build(&n, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("keep--"));
        assert!(s.contains("version=\"41\" fullState=\"false\""));
    }

    fn many(n: usize, every: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| {
                (
                    format!("sip:+336{i:08}@example.org;user=phone"),
                    if i % every == 0 {
                        format!("sip:u{i}@example.org")
                    } else {
                        String::new()
                    },
                )
            })
            .collect()
    }

    fn states(v: &[(String, String)]) -> Vec<ResourceState<'_>> {
        v.iter()
            .map(|(u, c)| ResourceState {
                uri: u,
                user: if c.is_empty() { None } else { user(c) },
            })
            .collect()
    }

    #[test]
    fn a_list_body_is_written_without_growing_its_buffer() {
        for every in [1, 5, 1000] {
            let data = many(100, every);
            let rs = states(&data);
            for flavor in [Flavor::Linphone, Flavor::Rfc] {
                let n = ListNotify { list_uri: LIST, version: 0, full_state: true, resources: &rs, flavor };
                let mut out = Vec::new();
                build(&n, &mut out);
                let hint = size_hint(&n);
                assert!(out.len() <= hint && hint < out.len() * 2, "{} bytes, hint {hint}", out.len());
            }
        }
    }

    #[test]
    fn split_small_is_single() {
        let data = many(10, 2);
        let rs = states(&data);
        let n = ListNotify {
            list_uri: LIST,
            version: 3,
            full_state: true,
            resources: &rs,
            flavor: Flavor::Linphone,
        };
        let parts = build_split(&n, 1 << 20, usize::MAX);
        assert_eq!(parts.len(), 1);
        let mut whole = Vec::new();
        build(&n, &mut whole);
        assert_eq!(parts[0].body, whole);
        assert_eq!((parts[0].version, parts[0].full_state), (3, true));
    }

    #[test]
    fn split_full_state_covers_every_user_once() {
        let data = many(200, 5);
        let rs = states(&data);
        for flavor in [Flavor::Linphone, Flavor::Rfc] {
            let n = ListNotify {
                list_uri: LIST,
                version: 7,
                full_state: true,
                resources: &rs,
                flavor,
            };
            let max = 16_000;
            let parts = build_split(&n, max, usize::MAX);
            assert!(parts.len() > 2, "{} parts", parts.len());
            let first = String::from_utf8(parts[0].body.clone()).unwrap();
            assert!(parts[0].full_state);
            assert_eq!(
                first.matches("<resource ").count(),
                200,
                "full state lists everyone"
            );
            let mut seen = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                assert_eq!(p.version, 7 + i as u32);
                assert_eq!(p.full_state, i == 0);
                assert!(p.body.len() <= max, "part {i} is {} bytes", p.body.len());
                let s = String::from_utf8(p.body.clone()).unwrap();
                for chunk in s.split("entity=\"").skip(1) {
                    seen.push(chunk.split('"').next().unwrap().to_owned());
                }
                if i > 0 {
                    assert_eq!(
                        s.matches("<resource ").count(),
                        s.matches("<instance ").count()
                    );
                }
            }
            let want: Vec<String> = data
                .iter()
                .filter(|(_, c)| !c.is_empty())
                .map(|(u, _)| u.clone())
                .collect();
            assert_eq!(seen, want);
        }
    }

    #[test]
    fn split_partial_chunks_everything_listed() {
        let data = many(100, 2);
        let rs = states(&data);
        let n = ListNotify {
            list_uri: LIST,
            version: 9,
            full_state: false,
            resources: &rs,
            flavor: Flavor::Rfc,
        };
        let parts = build_split(&n, 6_000, usize::MAX);
        assert!(parts.len() > 1);
        let mut listed = 0;
        for (i, p) in parts.iter().enumerate() {
            assert_eq!((p.version, p.full_state), (9 + i as u32, false));
            assert!(p.body.len() <= 6_000);
            listed += String::from_utf8_lossy(&p.body)
                .matches("<resource ")
                .count();
        }
        assert_eq!(listed, 100);
    }

    #[test]
    fn split_caps_users_per_notify() {
        let data = many(25, 1);
        let rs = states(&data);
        let n = ListNotify { list_uri: LIST, version: 3, full_state: true, resources: &rs, flavor: Flavor::Linphone };
        let parts = build_split(&n, 1 << 20, 10);
        let users: Vec<usize> = parts.iter().map(|p| String::from_utf8_lossy(&p.body).matches("<instance").count()).collect();
        assert_eq!(users, [10, 10, 5]);
        assert_eq!(String::from_utf8_lossy(&parts[0].body).matches("<resource ").count(), 25, "full state lists all");
        assert_eq!(parts.iter().map(|p| (p.version, p.full_state)).collect::<Vec<_>>(), [(3, true), (4, false), (5, false)]);
    }

    #[test]
    fn split_tiny_budget_still_progresses() {
        let data = many(20, 2);
        let rs = states(&data);
        let n = ListNotify {
            list_uri: LIST,
            version: 0,
            full_state: true,
            resources: &rs,
            flavor: Flavor::Linphone,
        };
        let parts = build_split(&n, 10, usize::MAX);
        assert_eq!(
            parts.len(),
            1 + 10,
            "one full state without users, then one user each"
        );
        assert!(!String::from_utf8_lossy(&parts[0].body).contains("<instance"));
    }

    /// RLMI `uri` attributes, unescaped, in order.
    fn rlmi_uris(rlmi: &[u8]) -> Vec<String> {
        use quick_xml::events::Event;
        let mut r = quick_xml::Reader::from_reader(rlmi);
        let mut v = Vec::new();
        loop {
            match r.read_event().expect("well-formed RLMI") {
                Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"resource" => {
                    let a = e.try_get_attribute("uri").unwrap().unwrap();
                    v.push(a.unescape_value().unwrap().into_owned());
                }
                Event::Eof => return v,
                _ => {}
            }
        }
    }

    proptest::proptest! {
        /// Whatever the strings, the body stays a valid multipart whose XML gives them back.
        #[test]
        fn arbitrary_strings_round_trip(
            uris in proptest::collection::vec("(sip:)?[^\\x00-\\x1f]{0,12}(\r\n--sp-rlmi-7c4d1e9a)?", 1..6),
            contact in "[^\\x00-\\x1f]{1,12}",
        ) {
            let rs: Vec<ResourceState> = uris
                .iter()
                .enumerate()
                .map(|(i, u)| ResourceState { uri: u, user: (i % 2 == 0).then(|| user(&contact).unwrap()) })
                .collect();
            let (body, _) = notify(&rs, Flavor::Linphone);
            let delim = format!("\r\n--{BOUNDARY}");
            let writable: Vec<&ResourceState> = rs.iter().filter(|r| is_writable_uri(r.uri)).collect();
            let users = writable.iter().filter(|r| r.user.is_some()).count();
            proptest::prop_assert_eq!(body.matches(&delim).count(), users + 1);
            let rlmi = body.split(&delim).next().unwrap().split("\r\n\r\n").nth(1).unwrap();
            let want: Vec<String> = writable.iter().map(|r| r.uri.to_owned()).collect();
            proptest::prop_assert_eq!(rlmi_uris(rlmi.as_bytes()), want);
            for part in body.split(&delim).skip(1).take(users) {
                let xml = part.split_once("\r\n\r\n").unwrap().1;
                let p = crate::body::pidf::parse(xml.as_bytes()).unwrap();
                proptest::prop_assert!(writable.iter().any(|r| r.uri == p.entity));
                let want = Some(contact.trim()).filter(|c| !c.is_empty());
                proptest::prop_assert_eq!(p.tuples[0].contact.as_deref(), want);
            }
        }
    }
}
