//! The subscription records of this node in Redis (`subs:<node>`, a hash), so that a
//! survivor can end them if this node dies. Written by the subscription store's own
//! write-behind batches (`subscription::durable::Mirror`): one pipeline per batch, never a
//! write per request. Owns that hash's writes; reading it back is `takeover`'s and `lease`'s.

use super::Cluster;
use crate::subscription::durable::Mirror;
use std::sync::Arc;

/// Records per HSET when a whole store is rewritten.
const CHUNK: usize = 1000;

pub struct RedisRecords {
    cluster: Arc<Cluster>,
    key: String,
}

impl RedisRecords {
    pub fn new(cluster: Arc<Cluster>) -> RedisRecords {
        let key = cluster.subs_key(&cluster.node);
        RedisRecords { cluster, key }
    }
}

impl Mirror for RedisRecords {
    fn apply(&self, puts: &[(&[u8], &[u8])], removes: &[&[u8]]) -> Result<(), String> {
        let result = self.cluster.redis.run(|c| {
            let mut pipe = ::redis::pipe();
            pipe.atomic();
            for chunk in puts.chunks(CHUNK) {
                let cmd = pipe.cmd("HSET").arg(&self.key);
                for (k, v) in chunk {
                    cmd.arg(*k).arg(*v);
                }
                cmd.ignore();
            }
            for chunk in removes.chunks(CHUNK) {
                pipe.cmd("HDEL").arg(&self.key).arg(chunk).ignore();
            }
            pipe.query::<()>(c)
        });
        result.map_err(|e| e.to_string())
    }

    fn replace(&self, all: &[(Vec<u8>, Vec<u8>)]) -> Result<(), String> {
        let result = self.cluster.redis.run(|c| {
            let mut pipe = ::redis::pipe();
            pipe.atomic().cmd("DEL").arg(&self.key).ignore();
            for chunk in all.chunks(CHUNK) {
                let cmd = pipe.cmd("HSET").arg(&self.key);
                for (k, v) in chunk {
                    cmd.arg(k.as_slice()).arg(v.as_slice());
                }
                cmd.ignore();
            }
            pipe.query::<()>(c)
        });
        result.map_err(|e| e.to_string())
    }

    fn reachable(&self) -> bool {
        self.cluster.redis.run(|c| ::redis::cmd("PING").query::<String>(c)).is_ok()
    }
}
