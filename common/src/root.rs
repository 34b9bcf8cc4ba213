//! The state root: one directory shared by every tool, chosen by `--root`,
//! else `$KIST_ROOT`, else `/var/lib/kist` for root and
//! `$XDG_DATA_HOME/kist` (or `~/.local/share/kist`) for everyone else.

use std::path::{Path, PathBuf};

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error(
        "cannot choose a state root: neither $XDG_DATA_HOME nor $HOME is set (use --root or $KIST_ROOT)"
    )]
    NoHome,
    #[error("cannot create state root {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl crate::HasExitCode for RootError {
    fn exit_code(&self) -> crate::ExitCode {
        match self {
            RootError::NoHome => crate::ExitCode::Usage,
            RootError::Create { source, .. } => crate::exit::io_exit_code(source),
        }
    }
}

/// The state directory and the layout inside it.
#[derive(Debug, Clone)]
pub struct StateRoot {
    path: PathBuf,
}

impl StateRoot {
    /// Resolves the root from an explicit flag, the environment, or the
    /// per-user default. Does not touch the file system.
    pub fn resolve(flag: Option<&Path>) -> Result<StateRoot, RootError> {
        if let Some(p) = flag {
            return Ok(StateRoot::at(p));
        }
        if let Some(p) = std::env::var_os("KIST_ROOT").filter(|v| !v.is_empty()) {
            return Ok(StateRoot::at(Path::new(&p)));
        }
        if nix::unistd::geteuid().is_root() {
            return Ok(StateRoot::at(Path::new("/var/lib/kist")));
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return Ok(StateRoot::at(&Path::new(&x).join("kist")));
        }
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => Ok(StateRoot::at(&Path::new(&h).join(".local/share/kist"))),
            None => Err(RootError::NoHome),
        }
    }

    pub fn at(path: &Path) -> StateRoot {
        // Absolute, so that paths recorded in records and bundles stay valid
        // for tools started in another working directory.
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().map(|c| c.join(path)).unwrap_or_else(|_| path.to_path_buf())
        };
        StateRoot { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the root and its top-level directories if missing.
    pub fn ensure(&self) -> Result<(), RootError> {
        for dir in [
            self.path.clone(),
            self.blobs_dir(),
            self.tmp_dir(),
            self.snapshots_dir(),
            self.containers_dir(),
            self.names_dir(),
            self.locks_dir(),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|source| RootError::Create { path: dir.clone(), source })?;
        }
        Ok(())
    }

    pub fn oci_layout_file(&self) -> PathBuf {
        self.path.join("oci-layout")
    }

    pub fn index_file(&self) -> PathBuf {
        self.path.join("index.json")
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.path.join("blobs/sha256")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// Where partial downloads and other work in progress lives: outside
    /// `blobs/`, so that nothing unverified is ever visible there, and on the
    /// same file system, so that the final rename is atomic.
    pub fn tmp_dir(&self) -> PathBuf {
        self.path.join("tmp")
    }

    /// Intents of writes published before the disk had them; see
    /// [`crate::settle`].
    pub fn unsettled_dir(&self) -> PathBuf {
        self.path.join("unsettled")
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.path.join("snapshots")
    }

    pub fn snapshot_dir(&self, chain_id: &Digest) -> PathBuf {
        self.snapshots_dir().join(chain_id.hex())
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.path.join("containers")
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }

    pub fn names_dir(&self) -> PathBuf {
        self.path.join("names")
    }

    pub fn volumes_dir(&self) -> PathBuf {
        self.path.join("volumes")
    }

    pub fn networks_dir(&self) -> PathBuf {
        self.path.join("networks")
    }

    /// Lock files live apart from the data they guard so that readers of
    /// the OCI layout (skopeo, umoci) never see them.
    pub fn locks_dir(&self) -> PathBuf {
        self.path.join("locks")
    }

    /// The lock guarding `index.json` and blob garbage collection.
    pub fn store_lock(&self) -> PathBuf {
        self.locks_dir().join("store.lock")
    }

    /// Held shared by img-unpack while it makes snapshots and exclusively
    /// by img-rm's collection, so that no snapshot in the making is swept.
    /// Collection takes it before the store lock, never after.
    pub fn snapshots_lock(&self) -> PathBuf {
        self.locks_dir().join("snapshots.lock")
    }

    /// Held shared by img-fetch for a whole pull (blobs land before the
    /// index names them) and exclusively by img-rm's collection.
    pub fn fetch_lock(&self) -> PathBuf {
        self.locks_dir().join("fetch.lock")
    }

    /// A per-blob lock, so that two fetches of the same blob download it once.
    pub fn blob_lock(&self, digest: &Digest) -> PathBuf {
        self.locks_dir().join(format!("blob-{}.lock", digest.hex()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_wins_and_layout_is_under_root() {
        let r = StateRoot::resolve(Some(Path::new("/x/y"))).unwrap();
        assert_eq!(r.path(), Path::new("/x/y"));
        let d: Digest =
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse().unwrap();
        assert_eq!(
            r.blob_path(&d),
            Path::new("/x/y/blobs/sha256/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
    }

    #[test]
    fn relative_root_becomes_absolute() {
        let r = StateRoot::at(Path::new("rel"));
        assert!(r.path().is_absolute());
    }
}
