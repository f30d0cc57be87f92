//! Secrets written to disk (a generated TLS key, the address books' master key): readable
//! by their owner only from the moment they exist. A leaf: it knows only the file system.

use anyhow::Context;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Whether an existing file may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Replace,
    /// Never overwrite: a lost key loses what it sealed.
    Refuse,
}

/// Writes `data` to `path` with mode 0600, creating its directory.
pub fn write(path: &Path, data: &[u8], existing: Existing) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    match existing {
        Existing::Replace => options.create(true).truncate(true),
        Existing::Refuse => options.create_new(true),
    };
    let mut f = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(data).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn owner_only_and_refuses_to_overwrite_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key");
        write(&path, b"one", Existing::Refuse).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(write(&path, b"two", Existing::Refuse).is_err());
        write(&path, b"three", Existing::Replace).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
    }
}
