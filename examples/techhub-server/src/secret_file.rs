//! The JWT secret kept beside the data when `TECHHUB_JWT_SECRET` is not set.
//!
//! A secret that others can read, that is a symlink (it could point anywhere, or be swapped), or that is too
//! short is refused with a message, never rewritten: replacing it silently would end every session, and the
//! operator must learn that the file was tampered with or mis-set. A missing file is created, readable by
//! the owner only, without following a link planted in its place.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use techhub_core::auth::MIN_SECRET_BYTES;

/// The file's name, in the data directory.
pub(crate) const FILE_NAME: &str = "techhub-jwt-secret";

/// Why the secret file cannot be used.
#[derive(Debug)]
pub(crate) struct SecretFileError {
    /// The file.
    pub(crate) path: PathBuf,
    /// What is wrong.
    pub(crate) problem: String,
}

impl std::fmt::Display for SecretFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} (fix or remove the file, or set TECHHUB_JWT_SECRET)", self.path.display(), self.problem)
    }
}

/// The secret in `dir`'s secret file, created (random, owner-only) when there is none. Returns it and whether
/// it was created now.
pub(crate) fn load_or_create(dir: &Path, fresh: impl FnOnce() -> String) -> Result<(String, bool), SecretFileError> {
    let path = dir.join(FILE_NAME);
    let refuse = |problem: String| SecretFileError { path: path.clone(), problem };
    match std::fs::symlink_metadata(&path) {
        Ok(metadata) => {
            if metadata.file_type().is_symlink() {
                return Err(refuse("is a symbolic link; the secret must be a regular file".to_owned()));
            }
            if !metadata.is_file() {
                return Err(refuse("is not a regular file".to_owned()));
            }
            check_private(&metadata).map_err(refuse)?;
            let mut text = String::new();
            std::fs::File::open(&path)
                .and_then(|mut file| file.read_to_string(&mut text))
                .map_err(|error| refuse(format!("cannot be read: {error}")))?;
            let secret = text.trim();
            if secret.len() < MIN_SECRET_BYTES {
                return Err(refuse(format!(
                    "holds {} bytes; a secret needs at least {MIN_SECRET_BYTES}",
                    secret.len()
                )));
            }
            Ok((secret.to_owned(), false))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let secret = fresh();
            create_private(&path, &secret).map_err(|error| refuse(format!("cannot be created: {error}")))?;
            Ok((secret, true))
        }
        Err(error) => Err(refuse(format!("cannot be inspected: {error}"))),
    }
}

#[cfg(unix)]
fn check_private(metadata: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!("is readable or writable by group or others (mode {mode:o}); chmod 600 it"));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_metadata: &std::fs::Metadata) -> Result<(), String> {
    Ok(())
}

/// Creates `path` exclusively (failing if anything, a link included, is already there), owner-only.
#[cfg(unix)]
fn create_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn create_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const GOOD: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

    fn fresh() -> String {
        "f".repeat(64)
    }

    fn write(dir: &Path, contents: &str, mode: u32) -> PathBuf {
        let path = dir.join(FILE_NAME);
        std::fs::write(&path, contents).expect("written");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn a_missing_secret_is_created_owner_only_and_then_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let (secret, created) = load_or_create(dir.path(), fresh).expect("created");
        assert!(created);
        let mode = std::fs::metadata(dir.path().join(FILE_NAME)).expect("exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, created) = load_or_create(dir.path(), || unreachable!("kept")).expect("kept");
        assert_eq!((again, created), (secret, false));
    }

    #[test]
    fn a_readable_by_others_short_or_linked_secret_is_refused_and_left_alone() {
        for (contents, mode, what) in [(GOOD, 0o644, "group or others"), (GOOD, 0o640, "group or others")] {
            let dir = tempfile::tempdir().expect("dir");
            let path = write(dir.path(), contents, mode);
            let error = load_or_create(dir.path(), fresh).expect_err("refused");
            assert!(error.to_string().contains(what), "{error}");
            assert_eq!(std::fs::read_to_string(path).expect("kept"), contents, "never rewritten");
        }

        let dir = tempfile::tempdir().expect("dir");
        let path = write(dir.path(), "too short", 0o600);
        let error = load_or_create(dir.path(), fresh).expect_err("refused");
        assert!(error.to_string().contains("at least 32"), "{error}");
        assert_eq!(std::fs::read_to_string(path).expect("kept"), "too short", "never rewritten");

        let dir = tempfile::tempdir().expect("dir");
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, GOOD).expect("written");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::symlink(&target, dir.path().join(FILE_NAME)).expect("linked");
        let error = load_or_create(dir.path(), fresh).expect_err("refused");
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert!(error.to_string().contains("TECHHUB_JWT_SECRET"), "{error}");
    }
}
