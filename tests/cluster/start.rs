//! Starting in cluster mode: a node comes up on a real Redis and says so; a Redis that is
//! not there stops the start with an error naming it.

use crate::harness::{node, RedisServer};

#[tokio::test]
async fn a_node_starts_on_redis_and_one_without_redis_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"), &[]);
    let mut n1 = node(dir.path(), "n1", &redis.url(), "");
    n1.start().await;
    assert!(n1.log().contains("cluster mode"), "{}", n1.log());
    n1.stop();

    let nowhere = format!("redis://127.0.0.1:{}", crate::common::free_port());
    let mut lost = node(dir.path(), "n2", &nowhere, "timeout_ms = 200");
    lost.write_config();
    let (code, err) = lost.start_failing();
    assert_ne!(code, Some(0));
    assert!(err.contains("cannot reach Redis") && err.contains(&nowhere), "{err}");
}
