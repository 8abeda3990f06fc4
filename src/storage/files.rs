//! The SQLite files are private to the daemon's user: the database holds
//! the server's signing key, so nobody else on the machine may read it,
//! whatever umask the daemon was started under.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::StorageError;

/// Mode of directories the daemon creates for its data.
const DIR_MODE: u32 = 0o700;
/// Mode of the database and its companion files.
const FILE_MODE: u32 = 0o600;

/// Creates the database's directory (0700) and file (0600) if they are
/// missing, and takes group and other access away from the database, its
/// write-ahead log and shared-memory file if an older daemon left them
/// readable. SQLite gives the `-wal` and `-shm` files it creates the
/// database file's mode, so they follow.
pub fn prepare_sqlite(path: &Path) -> Result<(), StorageError> {
    let fail = |what: &Path, e: io::Error| {
        StorageError::Unavailable(format!("cannot prepare {}: {e}", what.display()))
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(parent)
            .map_err(|e| fail(parent, e))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|e| fail(path, e))?;
    for file in [
        path.to_path_buf(),
        companion(path, "-wal"),
        companion(path, "-shm"),
    ] {
        restrict(&file).map_err(|e| fail(&file, e))?;
    }
    Ok(())
}

fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Removes group and other permissions from `file` if it exists.
fn restrict(file: &Path) -> io::Result<()> {
    let mode = match std::fs::metadata(file) {
        Ok(metadata) => metadata.permissions().mode(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if mode & 0o077 != 0 {
        std::fs::set_permissions(file, Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_a_private_directory_and_file_and_tightens_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state/deeper/homing.db");
        prepare_sqlite(&db).unwrap();
        assert_eq!(mode(&dir.path().join("state/deeper")), 0o700);
        assert_eq!(mode(&db), 0o600);

        let wal = companion(&db, "-wal");
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&db, Permissions::from_mode(0o664)).unwrap();
        prepare_sqlite(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&wal), 0o600);
    }
}
