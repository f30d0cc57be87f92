//! The Redis stores of issue 14 under the handles, on a real Redis, two handles per store
//! as two nodes would hold them: the rules the embedded default keeps (send limits and the
//! sweep, one account per name and number, a book's delete, nonce-count replay and expiry)
//! hold across handles too.

use crate::harness::RedisServer;
use smart_presence::accounts::{AccountError, Accounts};
use smart_presence::address_books::{AddressBooks, Contact, Limits as BookLimits};
use smart_presence::provisioning::{Check, Limits, Start, Verifications};
use smart_presence::storage::nonces::NonceStore;
use smart_presence::storage::redis::{Options, Redis, RedisAccounts, RedisAddressBooks, RedisNonces, RedisVerifications};
use std::sync::Arc;
use std::time::Duration;

fn connect(redis: &RedisServer) -> Arc<Redis> {
    let options = Options {
        url: redis.url(),
        sentinels: Vec::new(),
        master_name: String::new(),
        password: None,
        prefix: "t:".into(),
        replicas: 0,
        wait_timeout: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
    };
    Arc::new(Redis::connect(options).unwrap())
}

fn limits() -> Limits {
    Limits { code_length: 4, validity_secs: 600, max_sends: 2, max_sends_per_number: 5, window_secs: 1000, resend_after_secs: 60, max_wrong: 3 }
}

#[test]
fn verification_limits_codes_and_sweep_across_two_handles() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), &[]);
    let (one, two) = (connect(&redis), connect(&redis));
    let a = Verifications::with_store(Arc::new(RedisVerifications::open(one)), limits());
    let b = Verifications::with_store(Arc::new(RedisVerifications::open(two)), limits());
    let n = "+33612345678".parse().unwrap();
    for (i, device) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let v = if i % 2 == 0 { &a } else { &b };
        assert!(matches!(v.start(n, device, 0).unwrap(), Start::Send { .. }));
    }
    assert_eq!(b.start(n, "a", 10).unwrap(), Start::TooSoon { retry_after: 50 }, "a's code was sent through the other handle");
    assert!(matches!(b.start(n, "a", 60).unwrap(), Start::Send { .. }), "5th send to the number");
    assert_eq!(a.start(n, "e", 100).unwrap(), Start::TooMany { retry_after: 900 });
    let Start::Send { code, id, .. } = a.start("+33698765432".parse().unwrap(), "e", 100).unwrap() else { panic!() };
    assert!(b.set_delivery(&id, "delivered").unwrap());
    assert_eq!(a.delivery("+33698765432".parse().unwrap(), "e").unwrap().as_deref(), Some("delivered"));
    assert_eq!(b.check("+33698765432".parse().unwrap(), "e", &code, 101).unwrap(), Check::Correct);
    assert_eq!(a.check("+33698765432".parse().unwrap(), "e", &code, 101).unwrap(), Check::NoPending, "used up");
    assert_eq!(a.sweep(1000).unwrap(), 4, "a, b, c, d; the other number's window is not over");
    assert!(matches!(b.start(n, "e", 1000).unwrap(), Start::Send { .. }), "swept with its window");
    b.start(n, "f", 2000).unwrap();
    assert_eq!(b.sweep(5000).unwrap(), 0, "one node sweeps for all, once in a while");
    assert_eq!(redis.query(&["DEL", "t:v:swept"]).as_deref(), Some("1"));
    assert_eq!(b.sweep(5000).unwrap(), 3, "e and f, and the other number's, once the last sweep is old enough");
    a.remember_device(n, "a", 5).unwrap();
    assert!(b.knows_device(n, "a").unwrap() && !b.knows_device(n, "z").unwrap());
    assert!(!redis.query(&["KEYS", "t:lock:*"]).unwrap().contains("lock"), "every lock released");
}

#[test]
fn one_account_per_name_and_number_and_deletes_take_the_book() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), &[]);
    let (one, two) = (connect(&redis), connect(&redis));
    let a = Accounts::with_store(Arc::new(RedisAccounts::open(one.clone())), "example.org");
    let b = Accounts::with_store(Arc::new(RedisAccounts::open(two.clone())), "example.org");
    let n = "+33612345678".parse().unwrap();
    let first = a.provision(n, "33612345678").unwrap();
    assert!(first.created);
    let again = b.provision(n, "ignored").unwrap();
    assert!(!again.created && again.account.username == "33612345678");
    assert!(a.by_token(&first.credentials.token).unwrap().is_none(), "rotated at the other handle");
    assert_eq!(a.by_token(&again.credentials.token).unwrap().unwrap().username, "33612345678");
    assert!(a.check_password("33612345678", &again.credentials.password));
    assert!(matches!(b.create("33612345678", "x", &[]), Err(AccountError::UsernameTaken(_))));
    assert!(matches!(b.create("bob", "x", &[n]), Err(AccountError::NumberTaken { .. })));
    assert!(a.get("bob").unwrap().is_none(), "a failed create writes nothing");
    b.create("alice", "pw", &[]).unwrap();
    let names: Vec<String> = a.list().unwrap().into_iter().map(|x| x.username).collect();
    assert_eq!(names, ["33612345678", "alice"]);

    let book_limits = BookLimits { max_contacts: 4, log_versions: 3 };
    let books_a = AddressBooks::with_store(Arc::new(RedisAddressBooks::open(one)), &[7; 32], book_limits).unwrap();
    let books_b = AddressBooks::with_store(Arc::new(RedisAddressBooks::open(two)), &[7; 32], book_limits).unwrap();
    let bob = Contact { e164: "+33698765432".parse().unwrap(), number: "06 98 76 54 32".into(), name: Some("Bob".into()) };
    assert_eq!(books_a.replace("33612345678", vec![bob.clone()]).unwrap(), 1);
    assert!(matches!(books_b.apply("33612345678", 0, vec![], &[]), Err(smart_presence::address_books::BookError::Conflict { current: 1, .. })));
    assert_eq!(books_b.apply("33612345678", 1, vec![], &[bob.e164]).unwrap(), 2);
    assert_eq!(books_a.get("33612345678").unwrap().unwrap().contacts.len(), 0);
    assert!(b.delete("33612345678", &books_b).unwrap());
    assert!(books_a.get("33612345678").unwrap().is_none(), "the book went with its owner");
    assert!(a.get("33612345678").unwrap().is_none() && a.by_number(n).unwrap().is_none());
    assert!(a.by_token(&again.credentials.token).unwrap().is_none());
    // The change stream `t:ab:changes` stays (owner keys only, trimmed); nothing else of his.
    let left = redis.query(&["KEYS", "t:*"]).unwrap().replace("t:ab:changes", "");
    assert!(!left.contains("33612345678") && !left.contains("t:ab:"), "nothing of him is left: {left}");
}

#[test]
fn a_nonce_count_is_taken_once_and_forgotten_when_the_nonce_expires() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), &[]);
    let a = RedisNonces::open(connect(&redis), "sip").unwrap();
    let b = RedisNonces::open(connect(&redis), "sip").unwrap();
    let http = RedisNonces::open(connect(&redis), "http").unwrap();
    assert_eq!(a.secret(), b.secret(), "one secret per verifier");
    assert_ne!(a.secret(), http.secret());
    assert!(a.record("n1", 1, 101, 100).unwrap());
    assert!(!b.record("n1", 1, 101, 100).unwrap(), "replayed at the other node");
    assert!(http.record("n1", 1, 101, 100).unwrap(), "another verifier's counts are its own");
    assert!(b.record("n1", 3, 101, 100).unwrap());
    assert!(!a.record("n1", 2, 101, 100).unwrap(), "counts only go up");
    let ttl: i64 = redis.query(&["PTTL", "t:n:sip:nc:n1"]).unwrap().parse().unwrap();
    assert!((1..=2000).contains(&ttl), "kept while the nonce lives (plus a second): {ttl}");
}

#[test]
fn with_redis_gone_a_budget_is_charged_in_memory_until_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(dir.path(), &[]);
    let config = smart_presence::config::BudgetConfig { burst: 2, refill_per_day: 1, max_remembered: 100 };
    let budget = smart_presence::budget::Budget::with_store(Arc::new(smart_presence::storage::redis::RedisBudgets::open(connect(&redis)).unwrap()), &config);
    let numbers: Vec<_> = (0..4).map(|i| format!("+3361234500{i}").parse().unwrap()).collect();
    assert_eq!(budget.charge("alice", &numbers[..2]).unwrap().newly_charged, 2, "alice's burst spent in Redis");
    redis.kill9();
    let down = budget.charge("alice", &numbers[2..]).unwrap();
    assert_eq!(down.allowed, [true, true], "in memory, from a full bucket");
    assert_eq!(budget.charge("alice", &numbers[..1]).unwrap().allowed, [false], "and spent there");
    assert!(budget.status("alice").is_err(), "what Redis holds cannot be read");
    redis.restart(&[]);
    std::thread::sleep(smart_presence::storage::redis::conn::BACKOFF);
    assert_eq!(budget.charge("alice", &numbers[2..]).unwrap().allowed, [false, false], "Redis again: its bucket, empty");
    assert_eq!(budget.charge("alice", &numbers[..2]).unwrap().allowed, [true, true], "numbers charged in Redis are remembered");
}
