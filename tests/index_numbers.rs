//! Normalisation over the forms of issue 3 and several countries (property tests).

use phonenumber::country::Id;
use proptest::prelude::*;
use smart_presence::numbers::{from_uri, normalize, NumberError, UriKind, E164};

/// A country: region, calling code, national trunk prefix ("" if none), and a strategy for
/// national significant numbers of a plausible mobile/fixed shape.
fn nsn(region: Id) -> BoxedStrategy<String> {
    match region {
        // FR mobile 6/7 + 8 digits, fixed 1-5 + 8 digits.
        Id::FR => "[1-7][0-9]{8}".boxed(),
        // NANP: NPA [2-9][0-8][0-9], NXX [2-9][0-9]{2}, 4 digits.
        Id::US => "[2-9][0-8][0-9][2-9][0-9]{2}[0-9]{4}".boxed(),
        // GB mobile 7[4-9] + 8 digits, London 20 + 8 digits.
        Id::GB => prop_oneof!["7[4-9][0-9]{8}", "20[3-8][0-9]{7}"].boxed(),
        // DE mobile 15x/16x/17x + 7-8 digits, Berlin 30 + 8 digits.
        Id::DE => prop_oneof!["1[5-7][0-9]{9}", "30[1-9][0-9]{7}"].boxed(),
        // IN mobile [6-9] + 9 digits.
        Id::IN => "[6-9][0-9]{9}".boxed(),
        // BR mobile: area [1-9][1-9] + 9 + 8 digits.
        Id::BR => "[1-9][1-9]9[0-9]{8}".boxed(),
        _ => unreachable!(),
    }
}

fn cc(region: Id) -> u16 {
    match region {
        Id::FR => 33,
        Id::US => 1,
        Id::GB => 44,
        Id::DE => 49,
        Id::IN => 91,
        Id::BR => 55,
        _ => unreachable!(),
    }
}

/// The national (as dialled in the country) form.
fn national(region: Id, nsn: &str) -> String {
    match region {
        Id::US => format!("({}) {}-{}", &nsn[..3], &nsn[3..6], &nsn[6..]),
        _ => format!("0{}", spaced(nsn)),
    }
}

fn spaced(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && i % 2 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn dashed(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && i % 3 == 0 {
            out.push('-');
        }
        out.push(c);
    }
    out
}

fn country() -> impl Strategy<Value = Id> {
    prop_oneof![Just(Id::FR), Just(Id::US), Just(Id::GB), Just(Id::DE), Just(Id::IN), Just(Id::BR)]
}

fn case() -> impl Strategy<Value = (Id, String)> {
    country().prop_flat_map(|r| (Just(r), nsn(r)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn every_form_gives_the_same_e164((region, nsn) in case()) {
        let cc = cc(region);
        let want = format!("+{cc}{nsn}");
        let e = normalize(&want, None).unwrap();
        prop_assert_eq!(e.to_string(), want.clone());
        prop_assert_eq!(e.country_code(), cc);
        // Human text, international.
        prop_assert_eq!(normalize(&format!("+{cc} {}", spaced(&nsn)), None).unwrap(), e);
        prop_assert_eq!(normalize(&format!("+{cc} {}", dashed(&nsn)), Some(Id::FR)).unwrap(), e);
        // 00 international prefix, with no region and with a region using 00.
        prop_assert_eq!(normalize(&format!("00{cc} {}", spaced(&nsn)), None).unwrap(), e);
        prop_assert_eq!(normalize(&format!("00{cc} {}", spaced(&nsn)), Some(Id::DE)).unwrap(), e);
        // National, with the region.
        let nat = national(region, &nsn);
        prop_assert_eq!(normalize(&nat, Some(region)).unwrap(), e, "national {:?}", nat);
        // National without a region: reported, never a panic, never a wrong number.
        prop_assert!(matches!(normalize(&nat, None), Err(NumberError::NeedsRegion(_))), "{:?}", nat);
        // URIs.
        prop_assert_eq!(from_uri(&format!("sip:{want}@example.com;user=phone"), None), UriKind::Phone(e));
        prop_assert_eq!(from_uri(&format!("sip:{want}@example.com"), None), UriKind::Phone(e));
        prop_assert_eq!(from_uri(&format!("tel:{want}"), None), UriKind::Phone(e));
        prop_assert_eq!(from_uri(&format!("tel:+{cc}-{}", dashed(&nsn)), None), UriKind::Phone(e));
        let nat_digits: String = nat.chars().filter(|c| c.is_ascii_digit()).collect();
        prop_assert_eq!(from_uri(&format!("sip:{nat_digits}@example.com;user=phone"), Some(region)), UriKind::Phone(e));
        let no_region = from_uri(&format!("sip:{nat_digits}@example.com;user=phone"), None);
        prop_assert!(matches!(no_region, UriKind::Invalid(_)));
        prop_assert_eq!(from_uri(&format!("tel:{nat_digits};phone-context=+{cc}"), None), UriKind::Phone(e));
        // The key round-trips and sorts like the number.
        prop_assert_eq!(E164::from_key(&e.as_key()), Some(e));
    }

    #[test]
    fn fast_path_agrees_with_the_parser((region, nsn) in case()) {
        let text = format!("+{}{}", cc(region), nsn);
        let fast = normalize(&text, None).unwrap();
        let parsed = phonenumber::parse(None, &text).unwrap();
        let slow = format!("+{}{}", parsed.code().value(), parsed.national());
        prop_assert_eq!(fast.to_string(), slow);
    }

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,40}", r in proptest::option::of(country())) {
        let _ = normalize(&s, r);
        let _ = from_uri(&s, r);
        let _ = from_uri(&format!("sip:{s}@x;user=phone"), r);
        let _ = from_uri(&format!("tel:{s}"), r);
    }

    #[test]
    fn plus_digits_never_panics(s in "\\+[0-9]{0,25}") {
        if let Ok(e) = normalize(&s, None) {
            // Idempotent; and unchanged when nothing follows the country code but digits
            // of the number (no trunk prefix).
            prop_assert_eq!(normalize(&e.to_string(), None).unwrap(), e);
            if e.national_digits().len() + e.country_code().to_string().len() == s.len() - 1 {
                prop_assert_eq!(e.to_string(), s);
            }
        }
    }
}

#[test]
fn examples_from_the_issue() {
    let want = "+33612345678";
    for s in ["+33 6 12 34 56 78", "0033 6 12 34 56 78", "+33612345678", "+33 (0)6 12 34 56 78"] {
        assert_eq!(normalize(s, None).unwrap().to_string(), want, "{s}");
    }
    assert_eq!(normalize("06 12 34 56 78", Some(Id::FR)).unwrap().to_string(), want);
    assert_eq!(normalize("+1 (415) 555-2671", None).unwrap().to_string(), "+14155552671");
    assert_eq!(normalize("(415) 555-2671", Some(Id::US)).unwrap().to_string(), "+14155552671");
    assert_eq!(normalize("07400 123456", Some(Id::GB)).unwrap().to_string(), "+447400123456");
    assert_eq!(normalize("030 12345678", Some(Id::DE)).unwrap().to_string(), "+493012345678");
    assert_eq!(normalize("098765 43210", Some(Id::IN)).unwrap().to_string(), "+919876543210");
    assert_eq!(normalize("(11) 98765-4321", Some(Id::BR)).unwrap().to_string(), "+5511987654321");
    for uri in ["sip:+33612345678@dom;user=phone", "tel:+33612345678", "tel:0612345678;phone-context=+33"] {
        assert_eq!(from_uri(uri, None), UriKind::Phone(normalize(want, None).unwrap()), "{uri}");
    }
    assert_eq!(from_uri("sip:0612345678@dom;user=phone", Some(Id::FR)), UriKind::Phone(normalize(want, None).unwrap()));
    assert_eq!(from_uri("sip:bob@dom", None), UriKind::Sip("sip:bob@dom".into()));
}

#[test]
fn fast_path_is_fast() {
    // Not a benchmark (see benches/index.rs); a guard against the fast path being lost.
    let inputs: Vec<String> = (0..1000).map(|i| format!("+3361234{:04}", i)).collect();
    for s in &inputs {
        normalize(s, None).unwrap();
    }
    let t = std::time::Instant::now();
    for _ in 0..100 {
        for s in &inputs {
            std::hint::black_box(normalize(std::hint::black_box(s), None).unwrap());
        }
    }
    let per = t.elapsed() / 100_000;
    // The full parser costs ~2 µs in release; even a debug build of the fast path stays
    // well below that.
    assert!(per < std::time::Duration::from_micros(2), "fast path took {per:?} per number");
}
