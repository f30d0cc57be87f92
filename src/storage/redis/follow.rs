//! The loop of a thread that follows a Redis Stream (the binding, presence and book feeds)
//! on a connection of its own: connect when not connected, take one step, keep the
//! connection while steps succeed, drop it after a failure and connect again, paced, until
//! the feed says stop.
//!
//! Owns that loop only: what a step reads and what is logged are the feed's.

use super::conn::Redis;
use crate::storage::StorageError;
use ::redis::Connection;
use std::time::Duration;

/// What a following thread does on its connection, and says about its failures.
pub trait Follower {
    /// Whether to end the thread now (checked before each step).
    fn stopped(&self) -> bool;
    /// One step on the connection; Ok(false) ends the thread, an error drops the connection.
    fn step(&mut self, conn: &mut Connection) -> Result<bool, StorageError>;
    /// No connection could be made (the loop pauses, then tries again).
    fn unreachable(&mut self, e: &StorageError);
    /// A step failed (the loop connects again).
    fn failed(&mut self, e: &StorageError);
    /// A step succeeded.
    fn went_on(&mut self) {}
}

/// How a follower's connection is kept.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// The connection's read timeout (longer than a step's blocking read).
    pub read_timeout: Duration,
    /// Pause after a failed connect.
    pub unreachable: Duration,
    /// Pause after a failed step, before connecting again (zero: none).
    pub failed: Duration,
}

/// Runs `follower` on `redis` until it says stop.
pub fn run(redis: &Redis, pace: Pace, follower: &mut impl Follower) {
    let mut conn: Option<Connection> = None;
    while !follower.stopped() {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match redis.dedicated(Some(pace.read_timeout)) {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    follower.unreachable(&e);
                    std::thread::sleep(pace.unreachable);
                    continue;
                }
            },
        };
        match follower.step(c) {
            Ok(true) => follower.went_on(),
            Ok(false) => return,
            Err(e) => {
                follower.failed(&e);
                conn = None;
                if !pace.failed.is_zero() {
                    std::thread::sleep(pace.failed);
                }
            }
        }
    }
}
