//! Every XML document the body module writes, and the liblinphone fixture lists, validated
//! against the IETF schemas in `presence-schemas/` with xmllint (Debian `libxml2-utils`).
//! The test fails, never skips, when xmllint is missing.

mod common;

use common::xmllint;
use smart_presence::body::{
    self, build, build_pidf, build_split, Flavor, ListNotify, ResourceState, UserPresence,
};
use std::path::Path;

/// A MIME part: its headers (CRLF-joined) and content.
struct Part {
    headers: String,
    content: Vec<u8>,
}

impl Part {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .split("\r\n")
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
    }
}

/// Splits a multipart body by RFC 2046 rules (independently of the writer).
fn split_multipart(body: &[u8], content_type: &str) -> Vec<Part> {
    let boundary = content_type
        .rsplit_once(";boundary=")
        .expect("boundary is the last parameter")
        .1;
    assert!(
        !boundary.contains([';', ' ', '"']),
        "boundary last and unquoted: {content_type}"
    );
    let body = std::str::from_utf8(body).unwrap();
    let first = format!("--{boundary}\r\n");
    assert!(body.starts_with(&first), "no preamble");
    let close = format!("\r\n--{boundary}--\r\n");
    assert!(body.ends_with(&close));
    let inner = &body[first.len()..body.len() - close.len()];
    inner
        .split(&format!("\r\n--{boundary}\r\n"))
        .map(|p| {
            let (headers, content) = p.split_once("\r\n\r\n").expect("headers end");
            Part {
                headers: headers.to_owned(),
                content: content.as_bytes().to_vec(),
            }
        })
        .collect()
}

fn user(contact: &str, away: bool) -> Option<UserPresence<'_>> {
    Some(UserPresence {
        contact,
        basic_open: true,
        away,
        timestamp: Some(1_795_438_605),
        doc: None,
    })
}

fn check_notify(n: &ListNotify) -> Vec<Part> {
    let mut out = Vec::new();
    let ct = build(n, &mut out);
    check_body(&out, ct.as_str(), n.flavor)
}

fn check_body(body: &[u8], ct: &str, flavor: Flavor) -> Vec<Part> {
    assert!(ct.starts_with("multipart/related;type=\"application/rlmi+xml\";start=\"<"));
    let parts = split_multipart(body, ct);
    let id_header = match flavor {
        Flavor::Linphone => "Content-Id",
        Flavor::Rfc => "Content-ID",
    };
    let start = ct
        .split("start=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p.header("Content-Transfer-Encoding"), Some("binary"));
        let id = p.header(id_header).expect("part id");
        if i == 0 {
            assert_eq!(
                p.header("Content-Type"),
                Some("application/rlmi+xml;charset=\"UTF-8\"")
            );
            let bare = start.trim_matches(['<', '>']);
            match flavor {
                Flavor::Linphone => assert_eq!(id, bare),
                Flavor::Rfc => assert_eq!(id, start),
            }
            xmllint("rlmi.xsd", &p.content);
        } else {
            assert_eq!(
                p.header("Content-Type"),
                Some("application/pidf+xml;charset=\"UTF-8\"")
            );
            let cid = id.trim_matches(['<', '>']);
            let rlmi = String::from_utf8_lossy(&parts[0].content);
            assert!(
                rlmi.contains(&format!("cid=\"{cid}\"")),
                "RLMI points at {cid}"
            );
            xmllint("pidf.xsd", &p.content);
            xmllint("pidf-with-extensions.xsd", &p.content);
        }
    }
    parts
}

fn sample() -> Vec<ResourceState<'static>> {
    vec![
        ResourceState {
            uri: "sip:+14155550100@example.org;user=phone",
            user: None,
        },
        ResourceState {
            uri: "sip:+33612345678@example.org;user=phone",
            user: user("sip:bob@example.org", false),
        },
        ResourceState {
            uri: "sip:+33698765432@example.org;user=phone",
            user: user("sip:carol@example.org", true),
        },
        ResourceState {
            uri: "tel:+33711223344",
            user: user("sip:never@example.org", false),
        },
        ResourceState {
            uri: "sip:bob@example.org?a=1&b=2",
            user: user("sip:dave@example.org;gr=x&y", false),
        },
        ResourceState {
            uri: "sip:0698765432@example.org;user=phone",
            user: None,
        },
    ]
}

#[test]
fn notify_bodies_validate_both_flavors() {
    let rs = sample();
    for flavor in [Flavor::Linphone, Flavor::Rfc] {
        for (version, full_state) in [(0, true), (5, false)] {
            let n = ListNotify {
                list_uri: "sip:rls@example.org",
                version,
                full_state,
                resources: &rs,
                flavor,
            };
            let parts = check_notify(&n);
            assert_eq!(parts.len(), 1 + 3, "RLMI + 3 users (tel: left out)");
            let away = String::from_utf8_lossy(&parts[2].content).into_owned();
            assert!(away.contains("<rpid:away/>"), "{away}");
        }
    }
}

#[test]
fn empty_and_all_user_lists_validate() {
    for flavor in [Flavor::Linphone, Flavor::Rfc] {
        let n = ListNotify {
            list_uri: "sip:rls@example.org",
            version: 0,
            full_state: true,
            resources: &[],
            flavor,
        };
        assert_eq!(check_notify(&n).len(), 1);
    }
}

#[test]
fn split_bodies_validate() {
    let uris: Vec<String> = (0..120)
        .map(|i| format!("sip:+3361{i:07}@example.org;user=phone"))
        .collect();
    let contacts: Vec<String> = (0..120).map(|i| format!("sip:u{i}@example.org")).collect();
    let rs: Vec<ResourceState> = uris
        .iter()
        .zip(&contacts)
        .enumerate()
        .map(|(i, (u, c))| ResourceState {
            uri: u,
            user: if i % 3 == 0 {
                user(c, i % 2 == 0)
            } else {
                None
            },
        })
        .collect();
    for flavor in [Flavor::Linphone, Flavor::Rfc] {
        let n = ListNotify {
            list_uri: "sip:rls@example.org",
            version: 0,
            full_state: true,
            resources: &rs,
            flavor,
        };
        let bodies = build_split(&n, 8_000, usize::MAX);
        assert!(bodies.len() > 1);
        for b in &bodies {
            check_body(&b.body, b.content_type.as_str(), flavor);
        }
    }
}

#[test]
fn standalone_pidf_validates() {
    for away in [false, true] {
        let p = UserPresence {
            contact: "sip:bob@example.org",
            basic_open: !away,
            away,
            timestamp: Some(0),
            doc: None,
        };
        let doc = build_pidf("sip:+33612345678@example.org;user=phone", &p);
        xmllint("pidf.xsd", &doc);
        xmllint("pidf-with-extensions.xsd", &doc);
    }
}

fn fixture_body(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/liblinphone-5.1")
        .join(name);
    let raw = std::fs::read(path).unwrap();
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    raw[at..].to_vec()
}

#[test]
fn fixture_lists_validate() {
    let xml = body::inflate(
        &fixture_body("01-subscribe-initial-udp-4numbers-deflate.raw"),
        &Default::default(),
    )
    .unwrap();
    xmllint("resource-lists.xsd", &xml);
    xmllint(
        "resource-lists.xsd",
        &fixture_body("02-subscribe-initial-tcp-1number-uncompressed.raw"),
    );
}

#[test]
fn xmllint_really_rejects() {
    let bad = b"<list xmlns=\"urn:ietf:params:xml:ns:rlmi\" uri=\"sip:a@b\" version=\"x\" fullState=\"true\"/>";
    let r = std::panic::catch_unwind(|| xmllint("rlmi.xsd", bad));
    assert!(r.is_err(), "a bad version must fail validation");
}

/// Issue 16: a rich document with every part we keep, read back through the PUBLISH reader
/// (so only what survives sanitising is written), as hostile as its text can be.
fn rich_doc() -> body::rich::Doc {
    let published = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
 xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" xmlns:op="urn:oma:xml:prs:pidf:oma-pres" entity="sip:bob@example.org">
 <tuple id="t"><status><basic>open</basic></status>
  <op:service-description><op:service-id>groupchat</op:service-id><op:version>1.1</op:version></op:service-description>
  <op:service-description><op:service-id>lime</op:service-id></op:service-description>
  <note xml:lang="en">In a call &lt;/note&gt; &amp; "busy"</note><note xml:lang="fr-CA">Au téléphone</note><note>plain</note></tuple>
 <note>presence note</note>
 <dm:person id="p"><rpid:activities><rpid:on-the-phone/><rpid:busy/><rpid:other>Gardening]]&gt;</rpid:other></rpid:activities>
  <rpid:mood><rpid:happy/><rpid:sleepy/></rpid:mood><dm:note xml:lang="en">Back at 5</dm:note><dm:timestamp>2026-12-03T07:04:18.25+01:00</dm:timestamp></dm:person>
 <dm:device id="d1"><dm:deviceID>urn:uuid:f2e04a49-5349-001e-bee3-edbaf7eb0b6d</dm:deviceID><dm:timestamp>2026-12-03T07:04:18Z</dm:timestamp></dm:device>
</presence>"#;
    let doc = body::rich::read(published.as_bytes()).unwrap();
    assert!(doc.person.is_some() && doc.capabilities.len() == 2 && doc.devices.len() == 1 && doc.notes.len() == 3, "{doc:?}");
    doc
}

#[test]
fn rich_documents_validate_standalone_and_in_lists() {
    let doc = rich_doc();
    for away in [false, true] {
        let p = UserPresence { contact: "sip:bob@example.org", basic_open: true, away, timestamp: Some(0), doc: Some(&doc) };
        let pidf = build_pidf("sip:+33612345678@example.org;user=phone", &p);
        let text = String::from_utf8_lossy(&pidf);
        assert!(text.contains("<rpid:on-the-phone/>") && text.contains("<op:service-id>lime</op:service-id><op:version>1.0</op:version>"), "{text}");
        assert_eq!(text.contains("<rpid:away/>"), away);
        xmllint("pidf.xsd", &pidf);
        xmllint("pidf-with-extensions.xsd", &pidf);
    }
    let uris: Vec<String> = (0..40).map(|i| format!("sip:+3361{i:07}@example.org;user=phone")).collect();
    let rs: Vec<ResourceState> = uris
        .iter()
        .enumerate()
        .map(|(i, u)| ResourceState {
            uri: u,
            user: (i % 2 == 0).then_some(UserPresence { contact: "sip:bob@example.org", basic_open: true, away: i % 4 == 0, timestamp: Some(1), doc: Some(&doc) }),
        })
        .collect();
    for flavor in [Flavor::Linphone, Flavor::Rfc] {
        let n = ListNotify { list_uri: "sip:rls@example.org", version: 0, full_state: true, resources: &rs, flavor };
        assert_eq!(check_notify(&n).len(), 21);
        // A large rich state still splits into valid bodies, each under the budget but the first.
        let bodies = build_split(&n, 6_000, usize::MAX);
        assert!(bodies.len() > 3, "{} bodies", bodies.len());
        let users: usize = bodies.iter().map(|b| check_body(&b.body, b.content_type.as_str(), flavor).len() - 1).sum();
        assert_eq!(users, 20, "every user once");
        assert!(bodies[1..].iter().all(|b| b.body.len() <= 6_000));
    }
}
