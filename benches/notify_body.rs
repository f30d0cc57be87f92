//! Body costs on the subscribe path: building (and compressing) a full-state NOTIFY (users
//! with open/closed only, and the same list where every user carries a rich document, issue
//! 16), and inflating + parsing the list a SUBSCRIBE carries.
//!
//! `cargo bench --bench notify_body`. Sizes are printed once before the timings.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use flate2::Compression;
use rand::{Rng, SeedableRng};
use smart_presence::body::deflate::deflate_zlib_level;
use smart_presence::body::{
    build, deflate_zlib_into, inflate, resource_lists, Flavor, InflateLimits, ListNotify,
    ResourceState, UserPresence,
};

const FIXTURE: &[u8] =
    include_bytes!("../fixtures/liblinphone-5.1/01-subscribe-initial-udp-4numbers-deflate.raw");

/// `n` sorted liblinphone-style entries (French mobiles), deterministic.
fn numbers(n: usize) -> Vec<String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(500);
    let mut v: Vec<String> = (0..n)
        .map(|_| {
            format!(
                "sip:+336{:08}@example.org;user=phone",
                rng.gen_range(0..100_000_000u32)
            )
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn list_xml(uris: &[String]) -> Vec<u8> {
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<resource-lists xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns=\"urn:ietf:params:xml:ns:resource-lists\">\n <list>\n",
    );
    for u in uris {
        s.push_str(&format!("  <entry uri=\"{u}\"/>\n"));
    }
    s.push_str(" </list>\n</resource-lists>\n");
    s.into_bytes()
}

/// What liblinphone 5.1 publishes for "on the phone" with a note (fixture 41), with the
/// capabilities its REGISTER announces: the document the server composes for such a user.
fn linphone_rich_doc() -> smart_presence::body::rich::Doc {
    let publish = include_bytes!("../fixtures/liblinphone-5.1/41-publish-on-the-phone-with-note-udp.txt");
    let at = publish.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut doc = smart_presence::body::rich::read(&publish[at..]).unwrap();
    doc.capabilities = smart_presence::body::rich::capabilities_of_specs("ephemeral/1.1,groupchat/1.1,lime");
    doc
}

/// 500 entries, every fifth a user (100), every tenth away; each user with `doc`.
fn users<'a>(uris: &'a [String], contacts: &'a [String], doc: Option<&'a smart_presence::body::rich::Doc>) -> Vec<ResourceState<'a>> {
    uris.iter()
        .zip(contacts)
        .enumerate()
        .map(|(i, (u, c))| ResourceState {
            uri: u,
            user: (i % 5 == 0).then_some(UserPresence {
                contact: c,
                basic_open: true,
                away: i % 10 == 0,
                timestamp: Some(1_795_438_605),
                doc,
            }),
        })
        .collect()
}

/// Issue 18: a realistic address book's full state (100 entries, 20 users), what a
/// restart's resumed NOTIFY carries: building it, and its deflate alone.
fn bench_notify_100(c: &mut Criterion) {
    let uris = numbers(100);
    let contacts: Vec<String> = (0..uris.len()).map(|i| format!("sip:user{i}@example.org")).collect();
    let rs = users(&uris, &contacts, None);
    let n = ListNotify { list_uri: "sip:rls@example.org", version: 0, full_state: true, resources: &rs, flavor: Flavor::Linphone };
    let mut body = Vec::new();
    build(&n, &mut body);
    let mut z = Vec::new();
    deflate_zlib_into(&body, &mut z);
    println!("full state, 100 entries / 20 users: {} bytes raw, zlib fast {}", body.len(), z.len());
    let mut g = c.benchmark_group("notify_100_entries_20_users");
    bench_build(&mut g, &n, body.len());
    g.bench_function("deflate_zlib", |b| {
        b.iter(|| {
            z.clear();
            deflate_zlib_into(black_box(&body), &mut z);
            black_box(z.len());
        })
    });
    g.finish();
}

/// Issue 16: the same 500-entry list, its 100 users each with a rich document.
fn bench_notify_rich(c: &mut Criterion) {
    let uris = numbers(500);
    let contacts: Vec<String> = (0..uris.len()).map(|i| format!("sip:user{i}@example.org")).collect();
    let doc = linphone_rich_doc();
    let rs = users(&uris, &contacts, Some(&doc));
    let n = ListNotify { list_uri: "sip:rls@example.org", version: 0, full_state: true, resources: &rs, flavor: Flavor::Linphone };
    let mut body = Vec::new();
    build(&n, &mut body);
    let mut fast = Vec::new();
    deflate_zlib_into(&body, &mut fast);
    println!("full state, 500 entries / 100 rich users: {} bytes raw, zlib fast {} ({:.1}x)", body.len(), fast.len(), body.len() as f64 / fast.len() as f64);
    let mut g = c.benchmark_group("notify_500_entries_100_rich_users");
    bench_build(&mut g, &n, body.len());
    g.finish();
}

/// `build`, and `build+deflate_zlib` (what the server does: fast level, one compressor per
/// thread), of `n`.
fn bench_build(g: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>, n: &ListNotify, size: usize) {
    let mut out = Vec::with_capacity(size);
    g.bench_function("build", |b| {
        b.iter(|| {
            out.clear();
            black_box(build(black_box(n), &mut out));
        })
    });
    let mut z = Vec::with_capacity(size);
    g.bench_function("build+deflate_zlib", |b| {
        b.iter(|| {
            out.clear();
            z.clear();
            build(black_box(n), &mut out);
            deflate_zlib_into(&out, &mut z);
            black_box(z.len());
        })
    });
}

fn bench_notify(c: &mut Criterion) {
    let uris = numbers(500);
    let contacts: Vec<String> = (0..uris.len())
        .map(|i| format!("sip:user{i}@example.org"))
        .collect();
    let rs = users(&uris, &contacts, None);
    let n = ListNotify {
        list_uri: "sip:rls@example.org",
        version: 0,
        full_state: true,
        resources: &rs,
        flavor: Flavor::Linphone,
    };

    let mut body = Vec::new();
    build(&n, &mut body);
    let mut fast = Vec::new();
    deflate_zlib_into(&body, &mut fast);
    let mut default = Vec::new();
    deflate_zlib_level(&body, Compression::default(), &mut default);
    let mut best = Vec::new();
    deflate_zlib_level(&body, Compression::best(), &mut best);
    println!(
        "full state, {} entries / {} users: {} bytes raw, zlib fast {} ({:.1}x), default {} ({:.1}x), best {} ({:.1}x)",
        rs.len(),
        rs.iter().filter(|r| r.user.is_some()).count(),
        body.len(),
        fast.len(),
        body.len() as f64 / fast.len() as f64,
        default.len(),
        body.len() as f64 / default.len() as f64,
        best.len(),
        body.len() as f64 / best.len() as f64,
    );

    let mut g = c.benchmark_group("notify_500_entries_100_users");
    bench_build(&mut g, &n, body.len());
    let mut out = Vec::with_capacity(body.len());
    let mut z = Vec::with_capacity(body.len());
    for (name, level) in [
        ("build+zlib_fast", Compression::fast()),
        ("build+zlib_default", Compression::default()),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                z.clear();
                build(black_box(&n), &mut out);
                deflate_zlib_level(&out, level, &mut z);
                black_box(z.len());
            })
        });
    }
    g.finish();
}

fn bench_parse(c: &mut Criterion) {
    let at = FIXTURE.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let fixture = &FIXTURE[at..];
    let uris = numbers(500);
    let xml = list_xml(&uris);
    let mut big = Vec::new();
    deflate_zlib_level(&xml, Compression::default(), &mut big);
    println!(
        "generated list: {} entries, {} bytes XML, {} bytes deflated",
        uris.len(),
        xml.len(),
        big.len()
    );
    let limits = InflateLimits::default();

    let mut g = c.benchmark_group("subscribe_list");
    g.bench_function("fixture_4_entries_inflate+parse", |b| {
        b.iter(|| {
            let x = inflate(black_box(fixture), &limits).unwrap();
            black_box(resource_lists::parse(&x, 5000).unwrap())
        })
    });
    g.bench_function("generated_500_entries_inflate+parse", |b| {
        b.iter(|| {
            let x = inflate(black_box(&big), &limits).unwrap();
            black_box(resource_lists::parse(&x, 5000).unwrap())
        })
    });
    g.bench_function("generated_500_entries_parse_only", |b| {
        b.iter(|| black_box(resource_lists::parse(black_box(&xml), 5000).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench_notify, bench_notify_100, bench_notify_rich, bench_parse);
criterion_main!(benches);
