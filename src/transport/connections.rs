//! The table of open TCP/TLS connections, so requests to a client (our NOTIFYs) go back
//! over the connection it opened (RFC 3261 §18.2.2, RFC 5923 `alias`).

use super::{ConnId, Protocol};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// The write side of one connection.
#[derive(Clone)]
pub struct ConnHandle {
    pub id: ConnId,
    tx: mpsc::Sender<Bytes>,
}

impl ConnHandle {
    /// Queues bytes for the connection's writer; fails when its queue is full or it closed.
    pub fn try_send(&self, data: Bytes) -> Result<(), Bytes> {
        self.tx.try_send(data).map_err(|e| match e {
            mpsc::error::TrySendError::Full(d) | mpsc::error::TrySendError::Closed(d) => d,
        })
    }
}

#[derive(Default)]
pub struct ConnectionTable {
    next_id: AtomicU64,
    inner: Mutex<Tables>,
}

#[derive(Default)]
struct Tables {
    by_id: HashMap<ConnId, ConnHandle>,
    by_remote: HashMap<(Protocol, SocketAddr), ConnId>,
}

impl ConnectionTable {
    pub fn insert(&self, protocol: Protocol, remote: SocketAddr, tx: mpsc::Sender<Bytes>) -> ConnHandle {
        let id = ConnId::new(self.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        let handle = ConnHandle { id, tx };
        let mut t = self.inner.lock();
        t.by_id.insert(id, handle.clone());
        t.by_remote.insert((protocol, remote), id);
        handle
    }

    pub fn remove(&self, id: ConnId, protocol: Protocol, remote: SocketAddr) {
        let mut t = self.inner.lock();
        t.by_id.remove(&id);
        if t.by_remote.get(&(protocol, remote)) == Some(&id) {
            t.by_remote.remove(&(protocol, remote));
        }
    }

    pub fn get(&self, id: ConnId) -> Option<ConnHandle> {
        self.inner.lock().by_id.get(&id).cloned()
    }

    pub fn find(&self, protocol: Protocol, remote: SocketAddr) -> Option<ConnHandle> {
        let t = self.inner.lock();
        t.by_remote.get(&(protocol, remote)).and_then(|id| t.by_id.get(id)).cloned()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
