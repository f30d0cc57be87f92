//! Address books in their own sled database (`data_dir/address-books`), two trees keyed by
//! the owner key (16 bytes): `books` holds the postcard encoding of each [`StoredBook`],
//! `logs` its change log. One value each per book, so a change is one atomic batch of two
//! writes whatever the book's size, and reading a book never reads its log; each change is
//! flushed before it returns.

use crate::storage::address_books::{AddressBookStore, BookError, LoggedChange, StoredBook, Tag};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::path::Path;

pub struct SledAddressBooks {
    db: sled::Db,
    books: sled::Tree,
    logs: sled::Tree,
}

impl From<sled::Error> for BookError {
    fn from(e: sled::Error) -> BookError {
        BookError::Storage(e.into())
    }
}

fn tx_err(e: TransactionError<BookError>) -> BookError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, BookError> {
    postcard::to_allocvec(value).map_err(|e| BookError::Corrupt(e.to_string()))
}

fn decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, BookError> {
    postcard::from_bytes(bytes).map_err(|e| BookError::Corrupt(e.to_string()))
}

impl SledAddressBooks {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<SledAddressBooks, BookError> {
        std::fs::create_dir_all(dir)?;
        let db = super::open(&sled::Config::new().path(dir).cache_capacity(1 << 20))?;
        Ok(SledAddressBooks { books: db.open_tree("books")?, logs: db.open_tree("logs")?, db })
    }
}

impl AddressBookStore for SledAddressBooks {
    fn get(&self, owner: &Tag) -> Result<Option<StoredBook>, BookError> {
        self.books.get(owner)?.map(|v| decode(&v)).transpose()
    }

    fn log(&self, owner: &Tag) -> Result<Vec<LoggedChange>, BookError> {
        Ok(self.logs.get(owner)?.map(|v| decode(&v)).transpose()?.unwrap_or_default())
    }

    fn put(&self, owner: &Tag, book: &StoredBook, log: &[LoggedChange]) -> Result<(), BookError> {
        let (book, log) = (encode(book)?, encode(log)?);
        (&self.books, &self.logs)
            .transaction(|(books, logs)| -> Result<(), ConflictableTransactionError<BookError>> {
                books.insert(&owner[..], book.as_slice())?;
                logs.insert(&owner[..], log.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.db.flush()?;
        Ok(())
    }

    fn remove(&self, owner: &Tag) -> Result<bool, BookError> {
        let existed = (&self.books, &self.logs)
            .transaction(|(books, logs)| -> Result<bool, ConflictableTransactionError<BookError>> {
                logs.remove(&owner[..])?;
                Ok(books.remove(&owner[..])?.is_some())
            })
            .map_err(tx_err)?;
        self.db.flush()?;
        Ok(existed)
    }
}
