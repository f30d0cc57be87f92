//! Phone-number normalisation: every form a client or an operator sends, to one canonical
//! E.164 value.
//!
//! Forms handled:
//!
//! - `+33612345678` (already E.164): a fast path that never runs the full parser;
//! - human text: `+33 6 12 34 56 78`, `06 12 34 56 78` (national: needs a region),
//!   `0033 6 12 34 56 78`, `+1 (415) 555-2671`;
//! - URIs, through [`from_uri`]: `sip:+33612345678@dom;user=phone`,
//!   `sip:0612345678@dom;user=phone` (national), `tel:+33612345678`,
//!   `tel:0612345678;phone-context=+33`.
//!
//! Everything that is not the fast path goes through `phonenumber::parse` (about 2 µs).
//! Both paths then apply the same plausibility rule: the country code must exist and the
//! national significant number must have a length the numbering plan of that country code
//! allows (taken from the `phonenumber` metadata). No number-range validation is done: a
//! number that is well formed but not (yet) allocated is accepted, so that the result does
//! not depend on which path was taken nor on the age of the metadata.
//!
//! Nothing here panics on bad input: errors are [`NumberError`] or [`UriKind::Invalid`].

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::sip::uri::{percent_decode, Scheme, Uri};

/// An ISO 3166 region (`FR`, `US`, ...), as the `phonenumber` crate names them.
pub type Region = phonenumber::country::Id;

/// Parses a region code such as `"FR"` (case-insensitive).
pub fn parse_region(s: &str) -> Result<Region, NumberError> {
    let up = s.trim().to_ascii_uppercase();
    Region::from_str(&up).map_err(|_| NumberError::UnknownRegion(s.trim().to_string()))
}

/// The region to read a subscriber's national numbers with: his own (the region of his bound
/// number) if known, else the configured default.
pub fn effective_region(own_number: Option<E164>, default: Option<Region>) -> Option<Region> {
    own_number.and_then(|n| n.region()).or(default)
}

/// Largest number of digits accepted (country code included). E.164 says 15; a few
/// numbering plans in the metadata allow longer national numbers, so we accept up to 17.
const MAX_DIGITS: u32 = 17;

/// A canonical E.164 number: the digits after `+`, as an integer. The first digit of an
/// E.164 number is never 0, so the integer alone is unambiguous (no length needed).
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(u64);

impl E164 {
    /// The 8-byte big-endian key used by the index (sorts like the numbers).
    #[inline]
    pub fn as_key(&self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Inverse of [`E164::as_key`]; `None` if the bytes are not a plausible number.
    pub fn from_key(key: &[u8]) -> Option<E164> {
        let arr: [u8; 8] = key.try_into().ok()?;
        let v = u64::from_be_bytes(arr);
        if v == 0 || digit_count(v) > MAX_DIGITS {
            return None;
        }
        Some(E164(v))
    }

    /// The digits (without `+`) as an integer.
    #[inline]
    pub fn digits(&self) -> u64 {
        self.0
    }

    /// Appends `+` and the digits to `out`, as `Display` writes them, without the
    /// formatting machinery (list NOTIFYs write a hundred of these).
    pub fn push_to(&self, out: &mut String) {
        out.push_str(self.write_to(&mut [0; 21]));
    }

    /// `+` and the digits, as `Display` writes them, in `buf` (no allocation).
    pub fn write_to<'a>(&self, buf: &'a mut [u8; 21]) -> &'a str {
        let mut i = buf.len();
        let mut v = self.0;
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        i -= 1;
        buf[i] = b'+';
        // ASCII digits and `+` only.
        std::str::from_utf8(&buf[i..]).unwrap_or_default()
    }

    /// Builds a number from its digits, applying the same checks as [`normalize`].
    pub fn from_digits(digits: u64) -> Result<E164, NumberError> {
        check(digits)
    }

    /// The country calling code (`33` for `+33612345678`).
    pub fn country_code(&self) -> u16 {
        split_cc(self.0).map(|(cc, _, _)| cc).unwrap_or(0)
    }

    /// The national significant number as digits (leading zeros, e.g. Italian, included).
    pub fn national_digits(&self) -> String {
        let s = self.0.to_string();
        let cc_len = split_cc(self.0).map(|(_, l, _)| l).unwrap_or(0) as usize;
        s[cc_len..].to_string()
    }

    /// The region the number belongs to: the precise one when the numbering plan tells
    /// (`+1 416...` is CA), else the main region of the country code; `None` for
    /// non-geographic codes (`+800`, `+882`, ...).
    pub fn region(&self) -> Option<Region> {
        let text = self.to_string();
        if let Ok(p) = phonenumber::parse(None, &text) {
            if let Some(id) = p.country().id() {
                return Some(id);
            }
        }
        cc_table()[self.country_code() as usize].main_region
    }

    /// Whether `phonenumber` considers the number valid (allocated ranges). Slow (µs); not
    /// used by [`normalize`], offered for operators' checks.
    pub fn is_valid(&self) -> bool {
        phonenumber::parse(None, self.to_string()).map(|p| phonenumber::is_valid(&p)).unwrap_or(false)
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}", self.0)
    }
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E164(+{})", self.0)
    }
}

impl FromStr for E164 {
    type Err = NumberError;
    /// Same as `normalize(s, None)`: international forms only.
    fn from_str(s: &str) -> Result<E164, NumberError> {
        normalize(s, None)
    }
}

impl serde::Serialize for E164 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for E164 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<E164, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        normalize(&s, None).map_err(serde::de::Error::custom)
    }
}

/// Why an input is not a usable phone number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("empty number")]
    Empty,
    #[error("national number {0:?} needs a region (none known)")]
    NeedsRegion(String),
    #[error("unknown country calling code in {0:?}")]
    UnknownCountryCode(String),
    #[error("number {0:?} is too short for its country")]
    TooShort(String),
    #[error("number {0:?} is too long for its country")]
    TooLong(String),
    #[error("number {0:?} has an extension; only plain numbers can be bound")]
    Extension(String),
    #[error("not a phone number: {0:?}")]
    Unparseable(String),
    #[error("unknown region {0:?}")]
    UnknownRegion(String),
}

/// What a URI designates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UriKind {
    /// A phone number (`tel:`, `sip:...;user=phone`, or `sip:+digits@...`).
    Phone(E164),
    /// A plain SIP user, as its canonical address of record ([`crate::identity`]).
    Sip(String),
    /// Neither; the reason says why.
    Invalid(String),
}

/// Builds `phonenumber`'s metadata (done lazily on first use: ~100 ms, which stalled the
/// first SUBSCRIBE that needed it) and our country-code table. Called once at start.
pub fn warm_up() {
    let _ = phonenumber::parse(None, "+33612345678");
    let _ = cc_table();
}

/// Normalises human text or bare digits to E.164. `region` is used for national numbers
/// (the subscriber's own region, else the configured default); `None` makes national
/// numbers an error ([`NumberError::NeedsRegion`]).
pub fn normalize(input: &str, region: Option<Region>) -> Result<E164, NumberError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(NumberError::Empty);
    }
    if let Some(r) = fast_path(s.as_bytes()) {
        return r.map_err(|e| e.with_input(s));
    }
    slow_path(s, region)
}

/// `+` and digits only, first digit not 0, national part not starting with 0 (that may be a
/// trunk prefix to strip, left to the full parser). `None`: not for the fast path.
#[inline]
fn fast_path(b: &[u8]) -> Option<Result<E164, NumberError>> {
    if b.len() < 2 || b.len() > 1 + MAX_DIGITS as usize || b[0] != b'+' || b[1] == b'0' {
        return None;
    }
    let mut v: u64 = 0;
    for &c in &b[1..] {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + d as u64;
    }
    let Some((_, cc_len, _)) = split_cc(v) else {
        return Some(Err(NumberError::UnknownCountryCode(String::new())));
    };
    if b.get(1 + cc_len as usize) == Some(&b'0') {
        return None;
    }
    Some(check(v))
}

fn slow_path(s: &str, region: Option<Region>) -> Result<E164, NumberError> {
    // Reject anything with letters other than in a tel-URI-ish form the parser knows;
    // the parser itself is lenient (it extracts numbers from text), so pre-filter.
    let mut digits = 0usize;
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits += 1;
        }
    }
    if digits == 0 {
        return Err(NumberError::Unparseable(s.to_string()));
    }
    let lower = s.to_ascii_lowercase();
    let looks_uri = lower.starts_with("tel:") || lower.contains(";phone-context=");
    if !looks_uri
        && (!s.chars().all(|c| c.is_ascii_digit() || is_text_separator(c) || c == '+')
            || s.chars().filter(|&c| c == '+').count() > 1
            || s.find('+').is_some_and(|i| i != 0))
    {
        return Err(NumberError::Unparseable(s.to_string()));
    }
    let compact: String = s.chars().filter(|c| c.is_ascii_digit() || *c == '+').collect();
    let international = compact.starts_with('+');
    // "00" is the international prefix of most of the world; when no region tells
    // otherwise, treat it as "+".
    let intl_digits = if let Some(d) = compact.strip_prefix('+') {
        Some(d)
    } else if region.is_none() && compact.starts_with("00") {
        Some(&compact[2..])
    } else {
        None
    };
    if !looks_uri {
        if let Some(d) = intl_digits {
            if let Some(r) = with_trunk_prefix(d, s) {
                return r;
            }
        }
    }
    let owned;
    let text: &str = if !international && region.is_none() && compact.starts_with("00") && !looks_uri {
        owned = format!("+{}", &compact[2..]);
        &owned
    } else {
        s
    };
    if region.is_none() && !text.trim_start().starts_with('+') && !looks_uri {
        return Err(NumberError::NeedsRegion(s.to_string()));
    }
    let p = phonenumber::parse(region, text).map_err(|e| parse_error(e, region.is_none(), s))?;
    from_parsed(&p, s)
}

/// `+CC 0...`: the national part keeps its trunk prefix (`+33 (0)6 12 34 56 78`, or a
/// `tel:06...;phone-context=+33`). The parser only strips it for allocated ranges, so read
/// the rest as a national number of the code's main region: stripped where that region has
/// a trunk prefix, kept where the zero belongs to the number (Italy).
fn with_trunk_prefix(d: &str, s: &str) -> Option<Result<E164, NumberError>> {
    let t = cc_table();
    for len in 1..=3usize {
        if len >= d.len() {
            return None;
        }
        let cc: usize = d[..len].parse().ok()?;
        if !t[cc].known {
            continue;
        }
        let rest = &d[len..];
        if !rest.starts_with('0') {
            return None;
        }
        let region = t[cc].main_region?;
        let p = match phonenumber::parse(Some(region), rest) {
            Ok(p) => p,
            Err(e) => return Some(Err(parse_error(e, false, s))),
        };
        if p.code().value() as usize != cc {
            return None;
        }
        return Some(from_parsed(&p, s));
    }
    None
}

fn parse_error(e: phonenumber::ParseError, no_region: bool, s: &str) -> NumberError {
    match e {
        phonenumber::ParseError::InvalidCountryCode => {
            if no_region {
                NumberError::NeedsRegion(s.to_string())
            } else {
                NumberError::UnknownCountryCode(s.to_string())
            }
        }
        phonenumber::ParseError::TooShortNsn | phonenumber::ParseError::TooShortAfterIdd => {
            NumberError::TooShort(s.to_string())
        }
        phonenumber::ParseError::TooLong => NumberError::TooLong(s.to_string()),
        _ => NumberError::Unparseable(s.to_string()),
    }
}

fn from_parsed(p: &phonenumber::PhoneNumber, s: &str) -> Result<E164, NumberError> {
    if p.extension().is_some() {
        return Err(NumberError::Extension(s.to_string()));
    }
    let cc = p.code().value() as u64;
    let nat = p.national();
    // A national part that still starts with 0 is either a number of a country whose
    // numbers keep it (Italy's fixed lines) or a second trunk prefix / garbage
    // (`+61 0 0000001`): only a valid number of its country may keep it, or reading the
    // result again would strip one more zero.
    if nat.zeros() > 0 && !phonenumber::is_valid(p) {
        return Err(NumberError::Unparseable(s.to_string()));
    }
    let nat_len = if nat.value() == 0 { 0 } else { digit_count(nat.value()) } + nat.zeros() as u32;
    let total = digit_count(cc) + nat_len;
    if cc == 0 || total > MAX_DIGITS {
        return Err(NumberError::TooLong(s.to_string()));
    }
    let v = cc * 10u64.pow(nat_len) + nat.value();
    check(v).map_err(|e| e.with_input(s))
}

/// Separators people write in numbers (RFC 3966 visual separators, spaces, slashes).
fn is_text_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' | '\t')
}

/// The common plausibility rule of both paths.
fn check(v: u64) -> Result<E164, NumberError> {
    let Some((cc, cc_len, info)) = split_cc(v) else {
        return Err(NumberError::UnknownCountryCode(format!("+{v}")));
    };
    let _ = cc;
    let nsn_len = digit_count(v) - cc_len;
    if nsn_len < info.min_len as u32 {
        return Err(NumberError::TooShort(format!("+{v}")));
    }
    if nsn_len > info.max_len as u32 || digit_count(v) > MAX_DIGITS {
        return Err(NumberError::TooLong(format!("+{v}")));
    }
    Ok(E164(v))
}

impl NumberError {
    fn with_input(self, s: &str) -> NumberError {
        let s = s.to_string();
        match self {
            NumberError::UnknownCountryCode(_) => NumberError::UnknownCountryCode(s),
            NumberError::TooShort(_) => NumberError::TooShort(s),
            NumberError::TooLong(_) => NumberError::TooLong(s),
            other => other,
        }
    }
}

#[inline]
fn digit_count(v: u64) -> u32 {
    if v == 0 {
        1
    } else {
        v.ilog10() + 1
    }
}

#[derive(Copy, Clone, Default)]
struct CcInfo {
    known: bool,
    min_len: u8,
    max_len: u8,
    main_region: Option<Region>,
}

fn cc_table() -> &'static [CcInfo; 1000] {
    static TABLE: OnceLock<Box<[CcInfo; 1000]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([CcInfo::default(); 1000]);
        for meta in phonenumber::metadata::DATABASE.iter() {
            let cc = meta.country_code() as usize;
            if cc == 0 || cc >= 1000 {
                continue;
            }
            // The general descriptor's lengths are not filled in by the crate's loader:
            // take the union over the kinds of numbers a person can have.
            use phonenumber::Type as T;
            let d = meta.descriptors();
            let lens = [
                T::FixedLine, T::Mobile, T::TollFree, T::PremiumRate, T::SharedCost,
                T::PersonalNumber, T::Voip, T::Pager, T::Uan, T::Voicemail,
            ]
            .into_iter()
            .filter_map(|t| d.get(t))
            .flat_map(|desc| desc.possible_length().iter().copied());
            let (lo, hi) = lens.fold((u16::MAX, 0u16), |(lo, hi), l| (lo.min(l), hi.max(l)));
            let (lo, hi) = if hi == 0 { (4u8, 15u8) } else { (lo as u8, hi as u8) };
            let e = &mut t[cc];
            if e.known {
                e.min_len = e.min_len.min(lo);
                e.max_len = e.max_len.max(hi);
            } else {
                *e = CcInfo { known: true, min_len: lo, max_len: hi, main_region: None };
            }
            let id = Region::from_str(meta.id()).ok();
            if id.is_some() && (meta.is_main_country_for_code() || e.main_region.is_none()) {
                e.main_region = id;
            }
        }
        t
    })
}

/// Splits off the country code: (code, its number of digits, plan info). Country codes are
/// prefix-free, so the first known prefix of 1, 2 or 3 digits is it.
#[inline]
fn split_cc(v: u64) -> Option<(u16, u32, &'static CcInfo)> {
    let n = digit_count(v);
    let t = cc_table();
    for len in 1..=3u32 {
        if len >= n {
            return None;
        }
        let cc = (v / 10u64.pow(n - len)) as usize;
        if t[cc].known {
            return Some((cc as u16, len, &t[cc]));
        }
    }
    None
}

/// Classifies a SIP or tel URI (optionally in `<...>`, optionally with a display name).
/// A SIP URI whose user part is `+` and digits is read as its number here (list entries
/// name numbers); as an identity it is a user too ([`crate::identity`]).
pub fn from_uri(uri: &str, region: Option<Region>) -> UriKind {
    if let Some(kind) = plain_phone_uri(uri, region) {
        return kind;
    }
    let parsed = match Uri::parse(crate::identity::addr_spec(uri)) {
        Ok(u) => u,
        Err(e) => return UriKind::Invalid(format!("{e} in {uri:?}")),
    };
    if parsed.scheme == Scheme::Tel {
        let number = parsed.user.as_deref().unwrap_or("");
        let params = parsed.params.iter().map(|(k, v)| (k.as_str(), v.as_deref().unwrap_or("")));
        return phone(tel_digits(number, params, region));
    }
    // userinfo = user [":" password]
    let Some(user) = parsed.user.as_deref().and_then(|u| u.split(':').next()) else {
        return UriKind::Invalid(format!("no user part in {uri:?}"));
    };
    if parsed.is_user_phone() {
        return phone(tel_number(user, region));
    }
    // Without user=phone, a user part that is `+` and digits (visual separators allowed)
    // is a phone number too.
    let decoded = percent_decode(user);
    if is_global_number(decoded.split(';').next().unwrap_or("")) {
        return phone(tel_number(&decoded, region));
    }
    match parsed.aor() {
        Ok(aor) => UriKind::Sip(aor),
        Err(e) => UriKind::Invalid(format!("{e} in {uri:?}")),
    }
}

/// The common entry, `sip:+<digits>@<host>[:<port>][;user=phone]`, read without building a
/// [`Uri`] (an address book holds thousands): the answer `from_uri` would give; None for
/// anything else, which takes the general way.
fn plain_phone_uri(uri: &str, region: Option<Region>) -> Option<UriKind> {
    let (user, hostport) = uri.strip_prefix("sip:")?.split_once('@')?;
    let digits = user.strip_prefix('+')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hostport = hostport.strip_suffix(";user=phone").unwrap_or(hostport);
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "0"));
    let host_ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let port_ok = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    // `user` is `+` and digits only: no parameters or separators for `tel_number` to strip.
    (host_ok && port_ok).then(|| phone(normalize(user, region)))
}

fn phone(n: Result<E164, NumberError>) -> UriKind {
    match n {
        Ok(n) => UriKind::Phone(n),
        Err(e) => UriKind::Invalid(e.to_string()),
    }
}

/// `+` then digits, visual separators allowed.
fn is_global_number(s: &str) -> bool {
    s.len() > 1 && s.starts_with('+') && s[1..].chars().all(|c| c.is_ascii_digit() || matches!(c, '-' | '.' | '(' | ')'))
}

/// A telephone-subscriber (RFC 3966) written as one string: `number[;params]`.
fn tel_number(sub: &str, region: Option<Region>) -> Result<E164, NumberError> {
    let mut parts = sub.split(';');
    let raw = parts.next().unwrap_or("");
    let params = parts.map(|p| p.split_once('=').unwrap_or((p, "")));
    tel_digits(raw, params, region)
}

/// A telephone-subscriber's number and parameters: the number global (`+...`) or local
/// with a `phone-context`; an extension (`ext`, `isub`) is refused.
fn tel_digits<'a>(raw: &str, params: impl Iterator<Item = (&'a str, &'a str)>, region: Option<Region>) -> Result<E164, NumberError> {
    let mut context = None;
    for (k, v) in params {
        let k = k.trim().to_ascii_lowercase();
        if k == "phone-context" {
            context = Some(v.trim());
        } else if k == "ext" || k == "isub" {
            return Err(NumberError::Extension(raw.to_string()));
        }
    }
    let number = strip_visual(raw)?;
    if number.starts_with('+') {
        return normalize(&number, region);
    }
    match context {
        Some(ctx) if ctx.starts_with('+') => {
            let ctx_digits = strip_visual(ctx)?;
            normalize(&format!("{ctx_digits}{number}"), None)
        }
        // A domain-name context tells nothing about the region: use ours.
        _ => normalize(&number, region),
    }
}

/// Removes RFC 3966 visual separators; fails on anything that is not a digit or `+`.
fn strip_visual(s: &str) -> Result<String, NumberError> {
    let s = percent_decode(s);
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        match c {
            '0'..='9' => out.push(c),
            '+' if i == 0 => out.push(c),
            '-' | '.' | '(' | ')' => {}
            _ => return Err(NumberError::Unparseable(s.to_string())),
        }
    }
    if out.is_empty() || out == "+" {
        return Err(NumberError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn push_to_writes_what_display_writes() {
        for digits in [1u64, 9, 10, 33612345678, 999_999_999_999_999, u64::MAX] {
            let n = super::E164(digits);
            let mut s = String::from("x");
            n.push_to(&mut s);
            assert_eq!(s, format!("x{n}"));
        }
    }

    #[test]
    fn the_plain_phone_shortcut_answers_as_the_general_way() {
        for uri in [
            "sip:+33612345678@example.org;user=phone",
            "sip:+33612345678@example.org",
            "sip:+33612345678@127.0.0.1:5060;user=phone",
            "sip:+1415555@example.org;user=phone",
            "sip:+@example.org;user=phone",
            "sip:+3361234567890123456789@example.org;user=phone",
        ] {
            let general = match Uri::parse(crate::identity::addr_spec(uri)) {
                Ok(_) => {
                    let user = uri[4..].split('@').next().unwrap();
                    phone(tel_number(user, None))
                }
                Err(e) => UriKind::Invalid(e.to_string()),
            };
            match plain_phone_uri(uri, None) {
                Some(fast) => assert_eq!(format!("{fast:?}"), format!("{general:?}"), "{uri}"),
                None => assert!(uri.contains("sip:+@"), "{uri} should take the shortcut"),
            }
        }
        for other in ["sips:+33612345678@example.org", "sip:+33612345678@ex ample.org", "sip:alice@example.org", "sip:+3361;x@e.org", "<sip:+33612345678@example.org>"] {
            assert!(plain_phone_uri(other, None).is_none(), "{other}");
        }
    }

    use super::*;
    use phonenumber::country::Id;

    fn n(s: &str) -> E164 {
        normalize(s, None).unwrap()
    }

    #[test]
    fn forms_of_the_issue() {
        let fr = Some(Id::FR);
        let want = n("+33612345678");
        assert_eq!(want.to_string(), "+33612345678");
        assert_eq!(normalize("+33 6 12 34 56 78", None).unwrap(), want);
        assert_eq!(normalize("06 12 34 56 78", fr).unwrap(), want);
        assert_eq!(normalize("0033 6 12 34 56 78", None).unwrap(), want);
        assert_eq!(normalize("0033 6 12 34 56 78", fr).unwrap(), want);
        assert_eq!(normalize("+1 (415) 555-2671", None).unwrap().to_string(), "+14155552671");
        assert_eq!(from_uri("sip:+33612345678@dom;user=phone", None), UriKind::Phone(want));
        assert_eq!(from_uri("sip:0612345678@dom;user=phone", fr), UriKind::Phone(want));
        assert!(matches!(from_uri("sip:0612345678@dom;user=phone", None), UriKind::Invalid(_)));
        assert_eq!(from_uri("tel:+33612345678", None), UriKind::Phone(want));
        assert_eq!(from_uri("tel:0612345678;phone-context=+33", None), UriKind::Phone(want));
        assert_eq!(from_uri("tel:06-12-34-56-78;phone-context=+33", None), UriKind::Phone(want));
        assert_eq!(from_uri("<sip:+33-6-12-34-56-78@Dom>", None), UriKind::Phone(want));
        assert_eq!(from_uri("sip:bob@Example.COM;transport=tcp", None), UriKind::Sip("sip:bob@example.com".into()));
        assert_eq!(from_uri("\"Bob\" <sips:bob@example.com:5061>", None), UriKind::Sip("sip:bob@example.com".into()));
        assert!(matches!(from_uri("sip:example.com", None), UriKind::Invalid(_)));
        assert_eq!(from_uri("sip:b%6Fb@x.org", None), UriKind::Sip("sip:bob@x.org".into()));
        assert!(matches!(from_uri("sip:a%40b@x.org", None), UriKind::Invalid(_)));
        assert!(matches!(from_uri("sip:a%00b@x.org", None), UriKind::Invalid(_)));
        assert!(matches!(from_uri("sip:@x.org", None), UriKind::Invalid(_)));
        assert_eq!(from_uri("sip:alice:secret@X.org;user=ip?subject=x", None), UriKind::Sip("sip:alice@x.org".into()));
        assert!(matches!(from_uri("mailto:a@b", None), UriKind::Invalid(_)));
    }

    #[test]
    fn national_without_region_is_an_error() {
        assert!(matches!(normalize("06 12 34 56 78", None), Err(NumberError::NeedsRegion(_))));
        assert!(matches!(normalize("0612345678", None), Err(NumberError::NeedsRegion(_))));
    }

    #[test]
    fn garbage_is_reported() {
        for s in ["", "   ", "+", "abc", "+33abc", "++33612345678", "+999123456789", "+3361", "+33612345678901234", "tel:", "06 12 x4"] {
            assert!(normalize(s, Some(Id::FR)).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn country_code_and_region() {
        let x = n("+33612345678");
        assert_eq!(x.country_code(), 33);
        assert_eq!(x.region(), Some(Id::FR));
        assert_eq!(n("+14155552671").country_code(), 1);
        assert_eq!(n("+14155552671").region(), Some(Id::US));
        assert_eq!(n("+447400123456").region(), Some(Id::GB));
        assert_eq!(n("+919876543210").country_code(), 91);
        assert_eq!(n("+5511987654321").country_code(), 55);
        assert_eq!(n("+390612345678").national_digits(), "0612345678");
    }

    #[test]
    fn regions() {
        assert_eq!(parse_region("fr").unwrap(), Id::FR);
        assert!(parse_region("XX").is_err());
        let us = n("+14155552671");
        assert_eq!(effective_region(Some(us), Some(Id::FR)), Some(Id::US));
        assert_eq!(effective_region(None, Some(Id::FR)), Some(Id::FR));
        assert_eq!(crate::config::Config::default().numbers.default_region, Some(Id::FR));
    }

    #[test]
    fn key_roundtrip() {
        let x = n("+33612345678");
        assert_eq!(E164::from_key(&x.as_key()), Some(x));
        assert_eq!(E164::from_key(&[0u8; 8]), None);
    }

    #[test]
    fn italian_leading_zero_is_kept() {
        assert_eq!(n("+39 06 1234 5678").to_string(), "+390612345678");
        assert_eq!(normalize("06 1234 5678", Some(Id::IT)).unwrap().to_string(), "+390612345678");
        assert_eq!(n("+390612345678").to_string(), "+390612345678");
    }

    #[test]
    fn a_zero_left_after_the_trunk_prefix_is_refused() {
        // Found by the property test: read as +61 0000001, which read again lost one more zero.
        assert!(normalize("+61000000001", None).is_err());
        assert!(normalize("+61 0 412 345 678", None).is_ok());
    }
}
