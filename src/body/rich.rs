//! Rich presence: what a PUBLISH says beyond open/closed, kept as a small sanitised model
//! ([`Doc`]), composed across a user's publications ([`compose`]) and written back into the
//! PIDF documents we send (`pidf_out`).
//!
//! # What is kept (the rule)
//!
//! Only these, everything else is dropped (unknown namespaces and elements, with their
//! subtrees; attributes other than `id` and `xml:lang`):
//! - RFC 3863: the notes of `<presence>` and of its tuples (`<note xml:lang>`), a tuple's
//!   `<timestamp>`;
//! - RFC 4479 `dm:person`: its RPID activities, mood, `dm:note`s and timestamp (`dm:timestamp`,
//!   or the unprefixed `<timestamp>` liblinphone 5.1 writes there); `dm:device`: its id,
//!   `dm:deviceID` and timestamp;
//! - RFC 4480: `rpid:activities` and `rpid:mood` tokens of the RFC's lists, and the text of
//!   their `<rpid:other>`;
//! - OMA `service-description` in a tuple (`urn:oma:xml:prs:pidf:oma-pres`): service-id and
//!   version, i.e. Linphone's capabilities (liblinphone 5.1 itself announces them in its
//!   REGISTER Contact, `+org.linphone.specs`; see [`capabilities_of_specs`]).
//!
//! Values are checked (timestamps must be `xs:dateTime`, ids NCNames, languages language
//! tags, capability ids tokens): a bad value is dropped, not the document. Notes are cut to
//! [`MAX_NOTE`] bytes, lists to a few entries: what we emit is bounded and always valid
//! against the PIDF, data-model and RPID schemas. Hostile XML is refused by the same screen
//! as every body (`xml::screen`), before anything is kept.
//!
//! Must not know SIP headers, the store or who watches.

use super::xml::{self, escape_attr, escape_text};
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use serde::{Deserialize, Serialize};

pub const NS_DM: &[u8] = b"urn:ietf:params:xml:ns:pidf:data-model";
pub const NS_RPID: &[u8] = b"urn:ietf:params:xml:ns:pidf:rpid";
pub const NS_OMA: &[u8] = b"urn:oma:xml:prs:pidf:oma-pres";

/// Longest note kept, in bytes (cut at a character boundary).
pub const MAX_NOTE: usize = 512;
const MAX_NOTES: usize = 8;
const MAX_ACTIVITIES: usize = 8;
const MAX_CAPABILITIES: usize = 16;
const MAX_DEVICES: usize = 8;
const MAX_VALUE: usize = 256;

/// RFC 4480 §3.2 activities.
pub const ACTIVITIES: &[&str] = &[
    "appointment", "away", "breakfast", "busy", "dinner", "holiday", "in-transit", "looking-for-work", "meal", "meeting",
    "on-the-phone", "performance", "permanent-absence", "playing", "presentation", "shopping", "sleeping", "spectator",
    "steering", "travel", "tv", "vacation", "working", "worship",
];

/// RFC 4480 §3.3 moods.
pub const MOODS: &[&str] = &[
    "afraid", "amazed", "angry", "annoyed", "anxious", "ashamed", "bored", "brave", "calm", "cold", "confused", "contented",
    "cranky", "curious", "depressed", "disappointed", "disgusted", "distracted", "embarrassed", "excited", "flirtatious",
    "frustrated", "grumpy", "guilty", "happy", "hot", "humbled", "humiliated", "hungry", "hurt", "impressed", "indignant",
    "interested", "invincible", "jealous", "lonely", "mean", "moody", "nervous", "neutral", "offended", "playful", "proud",
    "relieved", "remorseful", "restless", "sad", "sarcastic", "serious", "shocked", "shy", "sick", "sleepy", "stressed",
    "surprised", "thirsty", "worried",
];

/// A note and its language (`xml:lang`), if it had a valid one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub lang: Option<Box<str>>,
    pub text: Box<str>,
}

/// A capability: OMA service-id and version (Linphone: `groupchat` 1.1, `lime` 1.0, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    pub id: Box<str>,
    pub version: Box<str>,
}

/// An RFC 4479 device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: Box<str>,
    pub device_id: Box<str>,
    pub timestamp: Option<Box<str>>,
}

impl Device {
    /// Has the id and deviceID the data model requires.
    fn is_whole(&self) -> bool {
        !self.id.is_empty() && !self.device_id.is_empty()
    }
}

/// The person of RFC 4479, as far as we keep it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// Tokens of [`ACTIVITIES`].
    pub activities: Vec<Box<str>>,
    /// `<rpid:other>` activity text.
    pub other_activity: Option<Box<str>>,
    /// Tokens of [`MOODS`].
    pub moods: Vec<Box<str>>,
    pub notes: Vec<Note>,
    pub timestamp: Option<Box<str>>,
}

impl Person {
    fn is_empty(&self) -> bool {
        self.activities.is_empty() && self.other_activity.is_none() && self.moods.is_empty() && self.notes.is_empty()
    }
}

/// What one publication (or the composition of several) says beyond open/closed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doc {
    pub person: Option<Person>,
    /// Notes about the service (tuple and presence notes), at most one per language.
    pub notes: Vec<Note>,
    pub capabilities: Vec<Capability>,
    pub devices: Vec<Device>,
}

impl Doc {
    /// True when it says nothing.
    pub fn is_empty(&self) -> bool {
        self.person.as_ref().is_none_or(Person::is_empty) && self.notes.is_empty() && self.capabilities.is_empty() && !self.devices.iter().any(Device::is_whole)
    }
}

/// Reads the rich part of a PIDF document that `pidf::parse` accepted (it screens hostile
/// XML first). Returns the sanitised model (possibly empty).
pub fn read(input: &[u8]) -> Result<Doc, super::PidfError> {
    let bad = super::PidfError;
    let mut r = xml::reader(input);
    let mut path: Vec<(Ns, Box<str>)> = Vec::new();
    let mut doc = Doc::default();
    let mut lang: Option<Box<str>> = None;
    loop {
        let (ns, ev) = r.read_resolved_event().map_err(|_| bad("malformed XML"))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if path.len() >= xml::MAX_DEPTH {
                    return Err(bad("XML nested too deeply"));
                }
                let name: Box<str> = String::from_utf8_lossy(e.local_name().as_ref()).into();
                path.push((Ns::of(&ns), name));
                lang = start(&mut doc, &path, e)?;
                if matches!(ev, Event::Empty(_)) {
                    path.pop();
                }
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(ref t) => {
                let s = xml::text(t).map_err(bad)?;
                text(&mut doc, &path, s.trim(), lang.take());
            }
            Event::Eof => return Ok(doc),
            _ => {}
        }
    }
}

/// The namespaces we keep something from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ns {
    Pidf,
    Dm,
    Rpid,
    Oma,
    Other,
}

impl Ns {
    fn of(res: &ResolveResult) -> Ns {
        for (ns, v) in [(super::pidf::NS, Ns::Pidf), (NS_DM, Ns::Dm), (NS_RPID, Ns::Rpid), (NS_OMA, Ns::Oma)] {
            if xml::in_ns(res, ns) {
                return v;
            }
        }
        Ns::Other
    }
}

/// The path below `<presence>` as (namespace, name) pairs, for matching.
fn below(path: &[(Ns, Box<str>)]) -> Vec<(Ns, &str)> {
    path.iter().skip(1).map(|(n, s)| (*n, &**s)).collect()
}

/// An element opens: records what its attributes say; returns its `xml:lang`.
fn start(doc: &mut Doc, path: &[(Ns, Box<str>)], e: &BytesStart) -> Result<Option<Box<str>>, super::PidfError> {
    let lang = xml::attrs(e, Some(b"xml:lang")).map_err(super::PidfError)?.filter(|l| is_lang(l)).map(Into::into);
    let p = below(path);
    match p.as_slice() {
        [(Ns::Dm, "person")] => {
            doc.person.get_or_insert_with(Person::default);
        }
        [(Ns::Dm, "person"), (Ns::Rpid, "activities"), (Ns::Rpid, token)] => {
            let person = doc.person.get_or_insert_with(Person::default);
            if let Some(t) = ACTIVITIES.iter().find(|a| *a == token) {
                push_unique(&mut person.activities, (*t).into(), MAX_ACTIVITIES);
            }
        }
        [(Ns::Dm, "person"), (Ns::Rpid, "mood"), (Ns::Rpid, token)] => {
            let person = doc.person.get_or_insert_with(Person::default);
            if let Some(t) = MOODS.iter().find(|a| *a == token) {
                push_unique(&mut person.moods, (*t).into(), MAX_ACTIVITIES);
            }
        }
        [(Ns::Dm, "device")] if doc.devices.len() < MAX_DEVICES => {
            // A device with a bad id is kept empty, so that its children land on it; devices
            // without a valid id and deviceID are never written.
            let id = xml::attrs(e, Some(b"id")).map_err(super::PidfError)?.filter(|i| is_ncname(i));
            doc.devices.push(Device { id: id.unwrap_or_default().into(), device_id: "".into(), timestamp: None });
        }
        _ => {}
    }
    Ok(lang)
}

/// Text inside the element at the end of `path`.
fn text(doc: &mut Doc, path: &[(Ns, Box<str>)], s: &str, lang: Option<Box<str>>) {
    if s.is_empty() {
        return;
    }
    let note = || Note { lang: lang.clone(), text: cut(s, MAX_NOTE).into() };
    match below(path).as_slice() {
        [(Ns::Pidf, "note")] | [(Ns::Pidf, "tuple"), (Ns::Pidf, "note")] => add_note(&mut doc.notes, note()),
        [(Ns::Pidf, "tuple"), (Ns::Oma, "service-description"), (Ns::Oma, "service-id")] if is_token(s) => {
            if doc.capabilities.len() < MAX_CAPABILITIES && !doc.capabilities.iter().any(|c| &*c.id == s) {
                doc.capabilities.push(Capability { id: s.into(), version: "1.0".into() });
            }
        }
        [(Ns::Pidf, "tuple"), (Ns::Oma, "service-description"), (Ns::Oma, "version")] if is_version(s) => {
            // The version follows its service-id (OMA's order).
            if let Some(c) = doc.capabilities.last_mut() {
                c.version = s.into();
            }
        }
        [(Ns::Dm, "person"), (Ns::Dm, "note")] => {
            if let Some(p) = doc.person.as_mut() {
                add_note(&mut p.notes, note());
            }
        }
        [(Ns::Dm, "person"), (Ns::Dm | Ns::Pidf, "timestamp")] if is_datetime(s) => {
            if let Some(p) = doc.person.as_mut() {
                p.timestamp = Some(s.into());
            }
        }
        [(Ns::Dm, "person"), (Ns::Rpid, "activities"), (Ns::Rpid, "other")] => {
            if let Some(p) = doc.person.as_mut() {
                p.other_activity = Some(cut(s, MAX_NOTE).into());
            }
        }
        [(Ns::Dm, "device"), (Ns::Dm, "deviceID")] if is_uri(s) => {
            if let Some(d) = doc.devices.last_mut() {
                d.device_id = s.into();
            }
        }
        [(Ns::Dm, "device"), (Ns::Dm, "timestamp")] if is_datetime(s) => {
            if let Some(d) = doc.devices.last_mut() {
                d.timestamp = Some(s.into());
            }
        }
        _ => {}
    }
}

fn push_unique(list: &mut Vec<Box<str>>, v: Box<str>, max: usize) {
    if list.len() < max && !list.contains(&v) {
        list.push(v);
    }
}

/// Keeps the first note of each language.
fn add_note(notes: &mut Vec<Note>, n: Note) {
    if notes.len() < MAX_NOTES && !notes.iter().any(|m| m.lang == n.lang) {
        notes.push(n);
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A language tag as `xs:language` allows: letters, digits and hyphens, 1-8 per subtag.
fn is_lang(s: &str) -> bool {
    !s.is_empty() && s.len() <= 35 && s.split('-').all(|t| (1..=8).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// An XML NCName in ASCII (what `xs:ID` attributes need).
fn is_ncname(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && s.len() <= 64
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// A version liblinphone can read as a float: digits and at most one dot.
fn is_version(s: &str) -> bool {
    !s.is_empty() && s.len() <= 8 && s.bytes().all(|c| c.is_ascii_digit() || c == b'.') && s.bytes().filter(|c| *c == b'.').count() <= 1 && s.as_bytes()[0].is_ascii_digit()
}

fn is_uri(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_VALUE && s.contains(':') && s.bytes().all(|c| c.is_ascii_graphic())
}

/// `xs:dateTime`: `YYYY-MM-DDThh:mm:ss[.s+](Z|±hh:mm)?`.
fn is_datetime(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let fixed = b.len() >= 19
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !fixed {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 9 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest.as_bytes() {
        [] | [b'Z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()),
        _ => false,
    }
}

/// Capabilities from a REGISTER Contact's `+org.linphone.specs` value
/// (`ephemeral/1.1,groupchat/1.1,lime`): name, and version (1.0 when none is given).
pub fn capabilities_of_specs(specs: &str) -> Vec<Capability> {
    let mut out: Vec<Capability> = Vec::new();
    for spec in specs.trim_matches('"').split(',').map(str::trim) {
        let (id, version) = spec.split_once('/').unwrap_or((spec, "1.0"));
        if is_token(id) && is_version(version) && out.len() < MAX_CAPABILITIES && !out.iter().any(|c| &*c.id == id) {
            out.push(Capability { id: id.into(), version: version.into() });
        }
    }
    out
}

/// RFC 4479 composition of one presentity's publications, newest first: the person of the
/// newest publication that says something about him; notes one per language, the newest
/// winning; capabilities and devices the union (the newest version of each).
pub fn compose<'d>(docs: impl Iterator<Item = &'d Doc>) -> Doc {
    let mut out = Doc::default();
    for d in docs {
        if out.person.is_none() {
            out.person = d.person.clone().filter(|p| !p.is_empty());
        }
        for n in &d.notes {
            add_note(&mut out.notes, n.clone());
        }
        for c in &d.capabilities {
            if out.capabilities.len() < MAX_CAPABILITIES && !out.capabilities.iter().any(|k| k.id == c.id) {
                out.capabilities.push(c.clone());
            }
        }
        for dev in &d.devices {
            if out.devices.len() < MAX_DEVICES && !out.devices.iter().any(|k| k.id == dev.id) && dev.is_whole() {
                out.devices.push(dev.clone());
            }
        }
    }
    out
}

/// The namespace declarations a document with `doc` (and maybe `away`) needs.
pub(crate) fn write_namespaces(out: &mut Vec<u8>, doc: Option<&Doc>, away: bool) {
    let person = away || doc.is_some_and(|d| d.person.is_some() || !d.devices.is_empty());
    if person {
        out.extend_from_slice(b" xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\"");
    }
    if doc.is_some_and(|d| !d.capabilities.is_empty()) {
        out.extend_from_slice(b" xmlns:op=\"urn:oma:xml:prs:pidf:oma-pres\"");
    }
}

/// Inside our tuple, after `<status>`: the capabilities (PIDF's extension slot).
pub(crate) fn write_capabilities(out: &mut Vec<u8>, doc: &Doc) {
    for c in &doc.capabilities {
        out.extend_from_slice(b"<op:service-description><op:service-id>");
        escape_text(out, &c.id);
        out.extend_from_slice(b"</op:service-id><op:version>");
        escape_text(out, &c.version);
        out.extend_from_slice(b"</op:version></op:service-description>");
    }
}

/// Inside our tuple, after `<contact>`: the service notes.
pub(crate) fn write_notes(out: &mut Vec<u8>, notes: &[Note], element: &[u8]) {
    for n in notes {
        out.push(b'<');
        out.extend_from_slice(element);
        if let Some(l) = &n.lang {
            out.extend_from_slice(b" xml:lang=\"");
            escape_attr(out, l);
            out.push(b'"');
        }
        out.push(b'>');
        escape_text(out, &n.text);
        out.extend_from_slice(b"</");
        out.extend_from_slice(element);
        out.push(b'>');
    }
}

/// After the tuples: the person (with `away` added when asked) and the devices.
pub(crate) fn write_person(out: &mut Vec<u8>, doc: Option<&Doc>, away: bool) {
    let person = doc.and_then(|d| d.person.as_ref());
    if away || person.is_some() {
        out.extend_from_slice(b"<dm:person id=\"p1\">");
        let mut activities: Vec<&str> = person.map(|p| p.activities.iter().map(|a| &**a).collect()).unwrap_or_default();
        if away && !activities.contains(&"away") {
            activities.insert(0, "away");
        }
        let other = person.and_then(|p| p.other_activity.as_deref()).filter(|_| !away);
        if !activities.is_empty() || other.is_some() {
            out.extend_from_slice(b"<rpid:activities>");
            for a in &activities {
                out.extend_from_slice(b"<rpid:");
                out.extend_from_slice(a.as_bytes());
                out.extend_from_slice(b"/>");
            }
            if let Some(o) = other {
                out.extend_from_slice(b"<rpid:other>");
                escape_text(out, o);
                out.extend_from_slice(b"</rpid:other>");
            }
            out.extend_from_slice(b"</rpid:activities>");
        }
        if let Some(p) = person.filter(|p| !p.moods.is_empty()) {
            out.extend_from_slice(b"<rpid:mood>");
            for m in &p.moods {
                out.extend_from_slice(b"<rpid:");
                out.extend_from_slice(m.as_bytes());
                out.extend_from_slice(b"/>");
            }
            out.extend_from_slice(b"</rpid:mood>");
        }
        if let Some(p) = person {
            write_notes(out, &p.notes, b"dm:note");
            if let Some(t) = &p.timestamp {
                out.extend_from_slice(b"<dm:timestamp>");
                escape_text(out, t);
                out.extend_from_slice(b"</dm:timestamp>");
            }
        }
        out.extend_from_slice(b"</dm:person>\r\n");
    }
    for d in doc.map_or(&[][..], |d| &d.devices).iter().filter(|d| d.is_whole()) {
        out.extend_from_slice(b"<dm:device id=\"");
        escape_attr(out, &d.id);
        out.extend_from_slice(b"\"><dm:deviceID>");
        escape_text(out, &d.device_id);
        out.extend_from_slice(b"</dm:deviceID>");
        if let Some(t) = &d.timestamp {
            out.extend_from_slice(b"<dm:timestamp>");
            escape_text(out, t);
            out.extend_from_slice(b"</dm:timestamp>");
        }
        out.extend_from_slice(b"</dm:device>\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What liblinphone 5.1.65 PUBLISHes for "on the phone" with a note (fixture 41).
    const LINPHONE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:bob@example.org" xmlns="urn:ietf:params:xml:ns:pidf">
 <tuple id="y1b-gr">
  <status>
   <basic>open</basic>
  </status>
  <contact priority="0.8">sip:bob@example.org</contact>
  <note xml:lang="en">In a call</note>
  <timestamp>2026-12-03T07:04:18Z</timestamp>
 </tuple>
 <dm:person id="xof.q.">
  <rpid:activities>
   <rpid:on-the-phone/>
  </rpid:activities>
  <timestamp>2026-12-03T07:04:18Z</timestamp>
 </dm:person>
</presence>"#;

    #[test]
    fn reads_what_liblinphone_publishes() {
        let d = read(LINPHONE.as_bytes()).unwrap();
        let p = d.person.as_ref().unwrap();
        assert_eq!(p.activities, vec![Box::from("on-the-phone")]);
        assert_eq!(p.timestamp.as_deref(), Some("2026-12-03T07:04:18Z"));
        assert_eq!(d.notes, vec![Note { lang: Some("en".into()), text: "In a call".into() }]);
    }

    #[test]
    fn keeps_known_drops_unknown() {
        let doc = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
 xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" xmlns:op="urn:oma:xml:prs:pidf:oma-pres" xmlns:x="urn:example:x" entity="sip:a@x">
 <tuple id="t"><status><basic>open</basic><x:secret>s</x:secret></status>
  <op:service-description><op:service-id>groupchat</op:service-id><op:version>1.1</op:version></op:service-description>
  <op:service-description><op:service-id>bad id!</op:service-id></op:service-description>
  <x:evil><note>not a note</note></x:evil>
  <note xml:lang="fr">Au téléphone</note><note xml:lang="bad lang">x</note></tuple>
 <dm:person id="p"><rpid:activities><rpid:busy/><rpid:dancing/><rpid:other>Gardening</rpid:other></rpid:activities>
  <rpid:mood><rpid:happy/></rpid:mood><dm:note>Back at 5</dm:note><dm:timestamp>not a date</dm:timestamp></dm:person>
 <dm:device id="d1"><dm:deviceID>urn:uuid:1234</dm:deviceID><dm:timestamp>2026-01-01T00:00:00.5+01:00</dm:timestamp></dm:device>
 <dm:device id="1bad"><dm:deviceID>urn:uuid:5678</dm:deviceID></dm:device>
 <x:tracking>1</x:tracking>
</presence>"#;
        let d = read(doc.as_bytes()).unwrap();
        assert_eq!(d.capabilities, vec![Capability { id: "groupchat".into(), version: "1.1".into() }]);
        assert_eq!(d.notes, vec![Note { lang: Some("fr".into()), text: "Au téléphone".into() }, Note { lang: None, text: "x".into() }]);
        let p = d.person.clone().unwrap();
        assert_eq!(p.activities, vec![Box::from("busy")]);
        assert_eq!(p.other_activity.as_deref(), Some("Gardening"));
        assert_eq!(p.moods, vec![Box::from("happy")]);
        assert_eq!(p.notes, vec![Note { lang: None, text: "Back at 5".into() }]);
        assert_eq!(p.timestamp, None);
        assert_eq!(d.devices[0], Device { id: "d1".into(), device_id: "urn:uuid:1234".into(), timestamp: Some("2026-01-01T00:00:00.5+01:00".into()) });
        assert!(!d.devices[1].is_whole(), "a bad id is kept empty, never written");
        assert_eq!(compose([&d].into_iter()).devices.len(), 1);
    }

    #[test]
    fn notes_are_cut_and_bounded() {
        let long = "é".repeat(MAX_NOTE);
        let notes: String = (0..20).map(|i| format!("<note xml:lang=\"l{i}\">{long}</note>")).collect();
        let doc = format!("<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"x\">{notes}</presence>");
        let d = read(doc.as_bytes()).unwrap();
        assert_eq!(d.notes.len(), MAX_NOTES);
        assert!(d.notes.iter().all(|n| n.text.len() <= MAX_NOTE && n.text.len() >= MAX_NOTE - 1));
    }

    #[test]
    fn specs_become_capabilities() {
        let caps = capabilities_of_specs("\"ephemeral/1.1,groupchat/1.1,lime,bad spec,x/1.a\"");
        let ids: Vec<(&str, &str)> = caps.iter().map(|c| (&*c.id, &*c.version)).collect();
        assert_eq!(ids, [("ephemeral", "1.1"), ("groupchat", "1.1"), ("lime", "1.0")]);
    }

    #[test]
    fn composition_takes_the_newest_person_and_the_union_of_the_rest() {
        let phone = read(LINPHONE.as_bytes()).unwrap();
        let registrar = Doc { capabilities: capabilities_of_specs("groupchat/1.1,lime"), ..Doc::default() };
        let desk = Doc {
            person: Some(Person { activities: vec!["meeting".into()], ..Person::default() }),
            notes: vec![Note { lang: Some("en".into()), text: "old".into() }, Note { lang: Some("de".into()), text: "alt".into() }],
            capabilities: capabilities_of_specs("groupchat/1.0,ephemeral/1.1"),
            ..Doc::default()
        };
        let c = compose([&phone, &registrar, &desk].into_iter());
        assert_eq!(c.person.unwrap().activities, vec![Box::from("on-the-phone")], "the newest person");
        let notes: Vec<&str> = c.notes.iter().map(|n| &*n.text).collect();
        assert_eq!(notes, ["In a call", "alt"], "one per language, the newest first");
        let caps: Vec<(&str, &str)> = c.capabilities.iter().map(|c| (&*c.id, &*c.version)).collect();
        assert_eq!(caps, [("groupchat", "1.1"), ("lime", "1.0"), ("ephemeral", "1.1")]);
        assert!(compose(std::iter::empty()).is_empty());
    }

    #[test]
    fn datetimes() {
        for ok in ["2026-12-03T07:04:18Z", "2026-12-03T07:04:18", "2026-12-03T07:04:18.123+02:00"] {
            assert!(is_datetime(ok), "{ok}");
        }
        for bad in ["2026-12-03", "2026-12-03T07:04:18.Z", "2026-12-03T07:04:18+2", "x026-12-03T07:04:18Z", ""] {
            assert!(!is_datetime(bad), "{bad}");
        }
    }
}
