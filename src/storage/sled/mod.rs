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

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> StorageError {
        StorageError::new(e)
    }
}
