//! Writing keys, certificates and lists: all of a command's outputs or none, never replacing an
//! existing file unless asked, and private keys readable by their owner only.
//!
//! Each output is first written in full to a temporary file beside its destination, then moved
//! into place: with a hard link when overwriting is not allowed (which fails atomically if the
//! destination appeared meanwhile), with a rename when it is.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Unix permissions for an output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Private keys: 0600.
    Private,
    /// Certificates, public keys and revocation lists: 0644.
    Public,
}

impl Mode {
    fn bits(self) -> u32 {
        match self {
            Self::Private => 0o600,
            Self::Public => 0o644,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: already exists (pass --force to overwrite it)", path.display())]
    Exists { path: PathBuf },
    #[error("{}: {cause}{}", path.display(), credential_hint(path))]
    Io { path: PathBuf, cause: io::Error },
    #[error(
        "{}: a private key readable by others (mode {mode:04o}); only its owner may read it: chmod 600 {}",
        path.display(),
        path.display()
    )]
    TooOpen { path: PathBuf, mode: u32 },
}

/// What to add to an error about `path` when it is a systemd credential that is not there: the
/// example configs name keys as the units hand them over, in /run/credentials/UNIT/, which
/// exists only while the unit runs.
pub fn credential_hint(path: &Path) -> &'static str {
    if path.starts_with("/run/credentials") && !path.exists() {
        " (a systemd credential, there only while its unit runs: `systemctl start` checks the \
         config with it first (ExecStartPre); to check by hand, give a copy of the config the \
         file the unit's LoadCredential= names)"
    } else {
        ""
    }
}

/// Reads a private key file, refusing one that its group or others may read or write (as ssh
/// does): such a key may already be another user's.
///
/// A systemd credential (a file in the unit's `$CREDENTIALS_DIRECTORY`) is the exception:
/// systemd makes it readable by the unit's user alone, with an ACL entry, and an ACL's mask
/// shows in the group bits of the mode, so a credential reads as 0440 however private it is.
pub fn read_private(path: &Path) -> Result<Vec<u8>, FileError> {
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY");
    read_private_in(path, credentials.as_deref().map(Path::new))
}

fn read_private_in(path: &Path, credentials: Option<&Path>) -> Result<Vec<u8>, FileError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut file = fs::File::open(path).map_err(io_error(path))?;
    let mode = file
        .metadata()
        .map_err(io_error(path))?
        .permissions()
        .mode()
        & 0o7777;
    let credential = credentials.is_some_and(|dir| {
        let canonical = |p: &Path| fs::canonicalize(p).ok();
        matches!((canonical(dir), canonical(path)), (Some(d), Some(p)) if p.starts_with(&d))
    });
    // A credential's group bits are systemd's ACL mask; its other bits are still its own.
    let exposed = if credential { 0o007 } else { 0o077 };
    if mode & exposed != 0 {
        return Err(FileError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut file, &mut bytes).map_err(io_error(path))?;
    Ok(bytes)
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |cause| FileError::Io {
        path: path.to_owned(),
        cause,
    }
}

/// Fails if any of `paths` exists and overwriting was not allowed. Commands call this before
/// doing any work, so a refused command has changed nothing.
pub fn check_absent<'a>(
    paths: impl IntoIterator<Item = &'a Path>,
    overwrite: bool,
) -> Result<(), FileError> {
    if overwrite {
        return Ok(());
    }
    for path in paths {
        if fs::symlink_metadata(path).is_ok() {
            return Err(FileError::Exists {
                path: path.to_owned(),
            });
        }
    }
    Ok(())
}

/// Writes a node's private keys (mode 0600) and public keys together. Every command that makes
/// node keys calls this, so they are written the same way everywhere.
pub fn write_node_keys(
    keys: &crate::NodeKeys,
    key_path: &Path,
    pub_path: &Path,
    overwrite: bool,
) -> Result<(), FileError> {
    check_absent([key_path, pub_path], overwrite)?;
    let mut out = OutputFiles::new(overwrite);
    out.stage(key_path, keys.to_pem().as_bytes(), Mode::Private)?;
    out.stage(pub_path, keys.public().to_pem().as_bytes(), Mode::Public)?;
    out.commit()
}

#[derive(Debug)]
struct Staged {
    temp: PathBuf,
    dest: PathBuf,
}

/// A set of files to be written together. Dropping it without [`OutputFiles::commit`] removes
/// the temporary files and leaves every destination untouched.
#[derive(Debug)]
pub struct OutputFiles {
    overwrite: bool,
    staged: Vec<Staged>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    let unique = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    dest.with_file_name(format!(".{name}.{}.{unique}.tmp", std::process::id()))
}

impl OutputFiles {
    pub fn new(overwrite: bool) -> Self {
        Self {
            overwrite,
            staged: Vec::new(),
        }
    }

    /// Writes `contents` to a temporary file beside `dest`, with `mode` from the start.
    pub fn stage(&mut self, dest: &Path, contents: &[u8], mode: Mode) -> Result<(), FileError> {
        check_absent([dest], self.overwrite)?;
        let temp = temp_path(dest);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode.bits())
            .open(&temp)
            .map_err(io_error(dest))?;
        self.staged.push(Staged {
            temp: temp.clone(),
            dest: dest.to_owned(),
        });
        file.write_all(contents).map_err(io_error(dest))?;
        file.sync_all().map_err(io_error(dest))?;
        Ok(())
    }

    /// Moves every staged file into place. If one cannot be placed, the ones already placed by
    /// this call are removed again (when they were new), so either all appear or none.
    pub fn commit(mut self) -> Result<(), FileError> {
        let staged = std::mem::take(&mut self.staged);
        let mut placed: Vec<&Path> = Vec::new();
        for item in &staged {
            let result = if self.overwrite {
                fs::rename(&item.temp, &item.dest).map_err(io_error(&item.dest))
            } else {
                match fs::hard_link(&item.temp, &item.dest) {
                    Ok(()) => fs::remove_file(&item.temp).map_err(io_error(&item.temp)),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(FileError::Exists {
                        path: item.dest.clone(),
                    }),
                    Err(e) => Err(io_error(&item.dest)(e)),
                }
            };
            if let Err(e) = result {
                if !self.overwrite {
                    for path in placed {
                        let _ = fs::remove_file(path);
                    }
                }
                for rest in &staged {
                    let _ = fs::remove_file(&rest.temp);
                }
                return Err(e);
            }
            placed.push(&item.dest);
        }
        for dir in staged.iter().filter_map(|s| s.dest.parent()) {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error(dir))?;
        }
        Ok(())
    }
}

impl Drop for OutputFiles {
    fn drop(&mut self) {
        for item in &self.staged {
            let _ = fs::remove_file(&item.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_credential_says_it_is_one() {
        let missing = Path::new("/run/credentials/lighthouse.service/lighthouse.key");
        let error = read_private(missing).unwrap_err().to_string();
        assert!(
            error.contains("a systemd credential") && error.contains("LoadCredential="),
            "{error}"
        );
        let elsewhere = Path::new("/nonexistent/node.key");
        let error = read_private(elsewhere).unwrap_err().to_string();
        assert!(!error.contains("credential"), "{error}");
    }

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_all_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let (key, crt) = (dir.path().join("n.key"), dir.path().join("n.crt"));
        let mut out = OutputFiles::new(false);
        out.stage(&key, b"secret", Mode::Private).unwrap();
        out.stage(&crt, b"cert", Mode::Public).unwrap();
        out.commit().unwrap();
        assert_eq!(fs::read(&key).unwrap(), b"secret");
        assert_eq!(mode_of(&key), 0o600);
        assert_eq!(entries(dir.path()), ["n.crt", "n.key"]);
    }

    #[test]
    fn refuses_to_clobber_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (key, crt) = (dir.path().join("n.key"), dir.path().join("n.crt"));
        fs::write(&crt, b"old").unwrap();
        assert!(matches!(
            check_absent([crt.as_path()], false),
            Err(FileError::Exists { .. })
        ));
        let mut out = OutputFiles::new(false);
        out.stage(&key, b"secret", Mode::Private).unwrap();
        assert!(matches!(
            out.stage(&crt, b"new", Mode::Public),
            Err(FileError::Exists { .. })
        ));
        drop(out);
        assert_eq!(entries(dir.path()), ["n.crt"]);
        assert_eq!(fs::read(&crt).unwrap(), b"old");
    }

    #[test]
    fn a_file_appearing_before_commit_rolls_back_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let mut out = OutputFiles::new(false);
        out.stage(&a, b"a", Mode::Public).unwrap();
        out.stage(&b, b"b", Mode::Public).unwrap();
        fs::write(&b, b"raced").unwrap();
        assert!(matches!(out.commit(), Err(FileError::Exists { .. })));
        assert_eq!(entries(dir.path()), ["b"]);
        assert_eq!(fs::read(&b).unwrap(), b"raced");
    }

    #[test]
    fn private_keys_open_to_others_are_refused_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("node.key");
        fs::write(&key, b"secret").unwrap();
        for (mode, refused) in [(0o600, false), (0o400, false), (0o640, true), (0o604, true)] {
            fs::set_permissions(&key, fs::Permissions::from_mode(mode)).unwrap();
            match read_private(&key) {
                Ok(bytes) => {
                    assert!(!refused, "{mode:o} was let through");
                    assert_eq!(bytes, b"secret");
                }
                Err(e) => {
                    assert!(refused, "{mode:o}: {e}");
                    let text = e.to_string();
                    assert!(text.contains(&format!("mode {mode:04o}")), "{text}");
                    assert!(
                        text.contains("node.key") && text.contains("chmod 600"),
                        "{text}"
                    );
                }
            }
        }
        assert!(matches!(
            read_private(&dir.path().join("absent.key")),
            Err(FileError::Io { .. })
        ));
        // In the unit's credentials directory, the mode is systemd's ACL mask, not the key's
        // exposure; anywhere else the same mode is refused.
        fs::set_permissions(&key, fs::Permissions::from_mode(0o440)).unwrap();
        assert!(read_private_in(&key, Some(dir.path())).is_ok());
        fs::set_permissions(&key, fs::Permissions::from_mode(0o444)).unwrap();
        assert!(
            read_private_in(&key, Some(dir.path())).is_err(),
            "world-readable"
        );
        fs::set_permissions(&key, fs::Permissions::from_mode(0o440)).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        assert!(read_private_in(&key, Some(elsewhere.path())).is_err());
    }

    #[test]
    fn overwrite_replaces_with_new_mode() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("n.key");
        fs::write(&key, b"old").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let mut out = OutputFiles::new(true);
        out.stage(&key, b"new", Mode::Private).unwrap();
        out.commit().unwrap();
        assert_eq!(fs::read(&key).unwrap(), b"new");
        assert_eq!(mode_of(&key), 0o600);
    }
}
