//! Address books in their own sled database (`data_dir/address-books`): owner key (16
//! bytes) → the postcard encoding of the [`StoredBook`]. One value per book, so a change
//! is one write whatever the book's size; each is flushed before it returns.

use crate::storage::address_books::{AddressBookStore, BookError, StoredBook, Tag};
use std::path::Path;

pub struct SledAddressBooks {
    db: sled::Db,
}

impl From<sled::Error> for BookError {
    fn from(e: sled::Error) -> BookError {
        BookError::Storage(e.into())
    }
}

impl SledAddressBooks {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<SledAddressBooks, BookError> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new().path(dir).cache_capacity(1 << 20).open()?;
        Ok(SledAddressBooks { db })
    }
}

impl AddressBookStore for SledAddressBooks {
    fn get(&self, owner: &Tag) -> Result<Option<StoredBook>, BookError> {
        match self.db.get(owner)? {
            Some(v) => postcard::from_bytes(&v).map(Some).map_err(|e| BookError::Corrupt(e.to_string())),
            None => Ok(None),
        }
    }

    fn put(&self, owner: &Tag, book: &StoredBook) -> Result<(), BookError> {
        let bytes = postcard::to_allocvec(book).map_err(|e| BookError::Corrupt(e.to_string()))?;
        self.db.insert(owner, bytes)?;
        self.db.flush()?;
        Ok(())
    }

    fn remove(&self, owner: &Tag) -> Result<bool, BookError> {
        let existed = self.db.remove(owner)?.is_some();
        self.db.flush()?;
        Ok(existed)
    }
}
