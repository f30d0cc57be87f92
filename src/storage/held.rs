//! A write lock held in a store for one key: what a handle takes around a read-modify-write
//! that several processes sharing the store could otherwise interleave. For a store only
//! one process opens (sled) there is nothing to take: the handle's own lock suffices, and
//! [`Held::nothing`] costs nothing. A shared store (Redis) releases its lock when the
//! [`Held`] is dropped. Owns no key names: each store chooses its own.

/// Released on drop.
pub struct Held(Option<Box<dyn FnOnce() + Send>>);

impl Held {
    /// Nothing held (a store one process owns).
    pub fn nothing() -> Held {
        Held(None)
    }

    /// Held until dropped, then `release` runs.
    pub fn until_drop(release: impl FnOnce() + Send + 'static) -> Held {
        Held(Some(Box::new(release)))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release();
        }
    }
}
