//! File trees as data, for comparing an unpacked root with a trusted
//! unpacker's and for proving that nothing outside a directory changed:
//! every path with its type, mode, owner, symlink target, content digest,
//! device number and xattrs; an overlay mount of snapshots, unmounted on drop.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Symlink target, file content digest, or device number.
    pub data: String,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Modification time; compared only when asked for.
    pub mtime: i64,
}

fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let c = CString::new(path.as_os_str().as_bytes()).expect("path");
    let mut names = vec![0u8; 65536];
    // SAFETY: valid path and buffer for the call.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return out;
    }
    names.truncate(n as usize);
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let key = String::from_utf8_lossy(name).into_owned();
        // Overlay's own bookkeeping and labels the host adds are not image content.
        if key.starts_with("trusted.overlay.") || key == "security.selinux" {
            continue;
        }
        let cn = CString::new(name).expect("name");
        let mut value = vec![0u8; 65536];
        // SAFETY: valid strings and buffer for the call.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        if len >= 0 {
            value.truncate(len as usize);
            out.insert(key, value);
        }
    }
    out
}

/// Every path under `root` (relative, `/`-rooted; the root itself as `/`).
pub fn scan(root: &Path) -> BTreeMap<String, Node> {
    scan_except(root, &[])
}

/// Like `scan`, skipping the subtrees named (absolute paths).
pub fn scan_except(root: &Path, skip: &[PathBuf]) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if skip.iter().any(|s| s == &p) {
            continue;
        }
        let md = std::fs::symlink_metadata(&p).expect("lstat");
        let ft = md.file_type();
        let (kind, data) = if ft.is_symlink() {
            ("symlink", std::fs::read_link(&p).expect("readlink").to_string_lossy().into_owned())
        } else if ft.is_dir() {
            let mut children: Vec<PathBuf> =
                std::fs::read_dir(&p).expect("readdir").map(|e| e.expect("entry").path()).collect();
            children.sort();
            stack.extend(children);
            ("dir", String::new())
        } else if ft.is_file() {
            let bytes = std::fs::read(&p).expect("read");
            ("file", format!("{:x}", Sha256::digest(&bytes)))
        } else if ft.is_fifo() {
            ("fifo", String::new())
        } else if ft.is_char_device() {
            ("char", format!("{}:{}", libc::major(md.rdev()), libc::minor(md.rdev())))
        } else if ft.is_block_device() {
            ("block", format!("{}:{}", libc::major(md.rdev()), libc::minor(md.rdev())))
        } else {
            ("socket", String::new())
        };
        let rel = p.strip_prefix(root).expect("under root");
        let key = format!("/{}", rel.display());
        out.insert(
            key,
            Node {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                data,
                xattrs: xattrs(&p),
                mtime: md.mtime(),
            },
        );
    }
    out
}

/// Differences between two scans, one line each; empty when equal.
pub fn diff(left: &BTreeMap<String, Node>, right: &BTreeMap<String, Node>, mtimes: bool) -> Vec<String> {
    let mut out = Vec::new();
    for (k, a) in left {
        match right.get(k) {
            None => out.push(format!("only left: {k} ({a:?})")),
            Some(b) => {
                let mut a2 = a.clone();
                let mut b2 = b.clone();
                if !mtimes {
                    a2.mtime = 0;
                    b2.mtime = 0;
                }
                if a.kind == "symlink" {
                    // Symlink modes are meaningless on Linux.
                    a2.mode = 0;
                    b2.mode = 0;
                }
                if a2 != b2 {
                    out.push(format!("differs: {k}\n   left  {a:?}\n   right {b:?}"));
                }
            }
        }
    }
    for k in right.keys() {
        if !left.contains_key(k) {
            out.push(format!("only right: {k} ({:?})", right[k]));
        }
    }
    out
}

/// An overlay of snapshot directories (lowest first) with an empty upper
/// directory, mounted at a temporary directory and unmounted on drop.
pub struct Overlay {
    dir: tempfile::TempDir,
    pub merged: PathBuf,
}

impl Overlay {
    pub fn mount(snapshots: &[PathBuf]) -> Overlay {
        let dir = tempfile::Builder::new().prefix("kist-ovl-").tempdir().expect("tempdir");
        let merged = dir.path().join("merged");
        for d in ["merged", "upper", "work"] {
            std::fs::create_dir(dir.path().join(d)).expect("mkdir");
        }
        let lower: Vec<String> = snapshots.iter().rev().map(|p| p.display().to_string()).collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            dir.path().join("upper").display(),
            dir.path().join("work").display()
        );
        let out = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&merged)
            .output()
            .expect("mount");
        assert!(out.status.success(), "mount overlay: {}", String::from_utf8_lossy(&out.stderr));
        Overlay { dir, merged }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.merged).status();
        let _ = self.dir.path();
    }
}
