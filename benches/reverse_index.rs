//! The reverse index (`subscription::phones`, issue 18): filling it with 100,000 lists of
//! 100 numbers, as a restart loads its stored subscriptions, and a list coming and going
//! in an index that holds them (the same list each time, its buckets in the cache, and a
//! new one each time, as on the wire). A restart's load adds many lists at a time
//! (`Locator::order`, `watch_ordered`).
//!
//! The lists are drawn from 2,000,000 mobiles, so a number is on ~5 lists, and the index
//! (60 MB of entries) is far bigger than the processor's caches, as at a million.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use smart_presence::numbers::E164;
use smart_presence::subscription::phones::PhoneIndex;

/// The server's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LISTS: u32 = 100_000;
const PER_LIST: u64 = 100;
const POPULATION: u64 = 2_000_000;

/// List `id`'s numbers: a fixed pseudo-random draw from the population.
fn list(id: u32) -> Vec<E164> {
    let mut x = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..PER_LIST)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mobile = 33_600_000_000 + x % POPULATION;
            E164::from_key(&mobile.to_be_bytes()).expect("a plausible number")
        })
        .collect()
}

fn lists() -> Vec<Vec<E164>> {
    (1..=LISTS).map(list).collect()
}

fn filled(lists: &[Vec<E164>]) -> PhoneIndex {
    let mut index = PhoneIndex::default();
    for (id, numbers) in (1..).zip(lists) {
        index.watch_all(numbers, id);
    }
    index
}

fn filled_by(lists: &[Vec<E164>], batch: usize) -> PhoneIndex {
    let mut index = PhoneIndex::default();
    let ids = 1..;
    let numbered: Vec<(u32, &[E164])> = ids.zip(lists).map(|(id, l)| (id, l.as_slice())).collect();
    for some in numbered.chunks(batch) {
        let ordered = index.locator().order(some.iter().copied());
        index.watch_ordered(ordered);
    }
    index
}

fn reverse_index(c: &mut Criterion) {
    let all = lists();
    let mut group = c.benchmark_group("reverse_index");
    group.sample_size(10);
    group.bench_function("fill_100k_lists", |b| {
        b.iter_batched(|| (), |()| filled(&all), BatchSize::PerIteration)
    });
    for batch in [1_000, 10_000] {
        group.bench_function(format!("fill_100k_lists_{batch}_at_a_time"), |b| {
            b.iter_batched(|| (), |()| filled_by(&all, batch), BatchSize::PerIteration)
        });
    }
    let mut index = filled(&all);
    let extra = list(LISTS + 1);
    group.bench_function("list_in_and_out_of_100k", |b| {
        b.iter(|| {
            index.watch_all(&extra, LISTS + 1);
            index.unwatch_all(&extra, LISTS + 1);
        })
    });
    // The same with a different list each time, as on the wire: its buckets are cold.
    let others: Vec<Vec<E164>> = (LISTS + 2..LISTS + 10_002).map(list).collect();
    let mut turn = others.iter().cycle();
    group.bench_function("cold_list_in_and_out_of_100k", |b| {
        b.iter(|| {
            let numbers = turn.next().expect("a cycle never ends");
            index.watch_all(numbers, LISTS + 1);
            index.unwatch_all(numbers, LISTS + 1);
        })
    });
    group.finish();
}

criterion_group!(benches, reverse_index);
criterion_main!(benches);
