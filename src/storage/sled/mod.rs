//! The sled implementations of the stores of budgets, accounts, address books, verifications and presence
//! (with the registrar's registrations), one database per store under the data directory.
//! (The binding index's sled store lives in `index::sled_store`, with its mirror and bucket
//! layout; subscriptions in `subscription::durable`.) Like the rest of `storage`, they use
//! no domain module.
//!
//! The only place besides `index` that names a sled type; sled errors become
//! [`StorageError`]s here and never leave.

mod accounts;
mod address_books;
mod budgets;
mod presence;
mod verification;

pub use accounts::SledAccounts;
pub use address_books::SledAddressBooks;
pub use budgets::SledBudgets;
pub use presence::SledPublications;
pub use verification::SledVerifications;

use super::StorageError;

/// Whether `dir` holds a sled database (a store of an older layout, to copy out).
pub fn is_in(dir: &std::path::Path) -> bool {
    dir.join("conf").exists() || dir.join("db").exists()
}

/// Deletes a sled database's files from `dir` (once copied out), leaving anything else.
pub fn remove_files(dir: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "conf" || name == "db" || name.starts_with("snap.") {
            std::fs::remove_file(entry.path())?;
        } else if name == "blobs" {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> StorageError {
        StorageError::new(e)
    }
}
