//! The sled implementations of the stores of accounts, address books, verifications and
//! presence (with the registrar's registrations), one database per store under the data
//! directory; and the carrying over of the stores that moved to record logs (`storage::log`:
//! budgets, and subscriptions, whose older records `subscription::durable` reads). (The
//! binding index's sled store lives in `index::sled_store`, with its mirror and bucket
//! layout.) Like the rest of `storage`, they use no domain module.
//!
//! The only place besides `index` (and `subscription::durable`'s reading of its older
//! store) that names a sled type; sled errors become [`StorageError`]s here and never
//! leave.

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

/// Carries a store of an older layout (a sled database in `dir`) into `log`, once: `copy`
/// puts each of its records and returns how many. Only a log with nothing yet takes them;
/// a log with entries is the store already (the copy was made, and a crash came before the
/// sled files were deleted: copying again would bring back what the log has since changed,
/// a budget's salt among them), so the sled files are only deleted. `store` names it in
/// the log lines.
pub fn carry_into<E: From<std::io::Error>>(
    dir: &std::path::Path,
    log: &mut super::log::Log,
    store: &str,
    copy: impl FnOnce(&mut dyn FnMut(&[u8], &[u8])) -> Result<u64, E>,
) -> Result<(), E> {
    if !is_in(dir) {
        return Ok(());
    }
    if log.end() > super::log::HEADER {
        tracing::warn!(dir = %dir.display(), "{store}: sled files beside a log with records (a copy cut short before their deletion?): the log is kept, the sled files deleted");
        return Ok(remove_files(dir)?);
    }
    let mut refused = None;
    let copied = copy(&mut |key, value| {
        if let Err(e) = log.push(super::log::Kind::Put, key, value) {
            refused.get_or_insert(e);
        }
    })?;
    if let Some(e) = refused {
        return Err(e.into());
    }
    log.write()?;
    log.sync()?;
    remove_files(dir)?;
    tracing::info!(copied, "{store}: the records of the older layout (sled) copied into the log");
    Ok(())
}

/// Opens a sled database, waiting up to two seconds for the lock on its files: sled lets
/// go of a database this process has just closed only when its flusher thread ends, which
/// on a loaded machine can come after an immediate reopen (a store reopened at once).
pub fn open(config: &sled::Config) -> sled::Result<sled::Db> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if is_lock_error(&e) && std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => return opened,
        }
    }
}

/// Whether sled failed to open because another handle holds the database.
pub fn is_lock_error(e: &std::io::Error) -> bool {
    e.to_string().contains("could not acquire lock")
}

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
