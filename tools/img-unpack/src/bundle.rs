//! The OCI runtime bundle of `--bundle DIR`: `config.json` next to
//! `rootfs/`, as `umoci unpack` writes it, so that `runc run -b DIR` runs
//! the image. The spec starts from the runtime-spec defaults (what `runc
//! spec` prints) and takes the process from the image config.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use kist_common::record::RunConfig;
use oci_spec::runtime::{ProcessBuilder, Spec, UserBuilder};

use crate::resolve::{self, CleanPath};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot build the runtime spec")]
    Spec(#[from] oci_spec::OciSpecError),
    #[error("image user {0:?} does not exist in the image's /etc/passwd")]
    NoUser(String),
    #[error("image group {0:?} does not exist in the image's /etc/group")]
    NoGroup(String),
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: kist_common::fsutil::FsError,
    },
}

impl kist_common::HasExitCode for BundleError {
    fn exit_code(&self) -> kist_common::ExitCode {
        match self {
            BundleError::Spec(_) => kist_common::ExitCode::Failure,
            BundleError::NoUser(_) | BundleError::NoGroup(_) => kist_common::ExitCode::NotFound,
            BundleError::Write { source, .. } => kist_common::HasExitCode::exit_code(source),
        }
    }
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Reads a file of the unpacked root, resolved inside it.
fn read_in_root(rootfs: &Path, path: &str) -> Option<String> {
    let root = resolve::open_root(rootfs).ok()?;
    let fd = resolve::open_in_root(root.as_fd(), &CleanPath::new(path.as_bytes()), libc::O_RDONLY).ok()?;
    let mut s = String::new();
    std::fs::File::from(fd).read_to_string(&mut s).ok()?;
    Some(s)
}

/// uid, gid and additional gids for the image's `User`, looked up in the
/// image's own passwd and group files as Docker does.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32, Vec<u32>), BundleError> {
    if user.is_empty() {
        return Ok((0, 0, Vec::new()));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_root(rootfs, "/etc/passwd").unwrap_or_default();
    let group = read_in_root(rootfs, "/etc/group").unwrap_or_default();
    let pw: Vec<Vec<&str>> =
        passwd.lines().map(|l| l.split(':').collect()).filter(|f: &Vec<&str>| f.len() >= 4).collect();
    let gr: Vec<Vec<&str>> =
        group.lines().map(|l| l.split(':').collect()).filter(|f: &Vec<&str>| f.len() >= 3).collect();
    let (uid, name, mut gid) = if let Ok(n) = u.parse::<u32>() {
        let entry = pw.iter().find(|f| f[2].parse() == Ok(n));
        (n, entry.map(|f| f[0].to_string()), entry.and_then(|f| f[3].parse().ok()).unwrap_or(0))
    } else {
        let f = pw.iter().find(|f| f[0] == u).ok_or_else(|| BundleError::NoUser(u.to_string()))?;
        (f[2].parse().unwrap_or(0), Some(u.to_string()), f[3].parse().unwrap_or(0))
    };
    if let Some(g) = g {
        gid = if let Ok(n) = g.parse::<u32>() {
            n
        } else {
            let f = gr.iter().find(|f| f[0] == g).ok_or_else(|| BundleError::NoGroup(g.to_string()))?;
            f[2].parse().unwrap_or(0)
        };
    }
    let mut extra = Vec::new();
    if let Some(name) = name {
        for f in &gr {
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(n) = f[2].parse::<u32>() {
                    if n != gid && !extra.contains(&n) {
                        extra.push(n);
                    }
                }
            }
        }
    }
    Ok((uid, gid, extra))
}

/// Writes `DIR/config.json` for the root file system at `DIR/rootfs`.
pub fn write_config(dir: &Path, config: &RunConfig) -> Result<(), BundleError> {
    let rootfs = dir.join("rootfs");
    let mut spec = Spec::default();
    let mut args: Vec<String> = config.entrypoint.clone().unwrap_or_default();
    args.extend(config.cmd.clone().unwrap_or_default());
    if args.is_empty() {
        args.push("sh".into());
    }
    let mut env = config.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let (uid, gid, extra) = resolve_user(&rootfs, &config.user)?;
    let mut user = UserBuilder::default().uid(uid).gid(gid);
    if !extra.is_empty() {
        user = user.additional_gids(extra);
    }
    let default_process = spec.process().clone().unwrap_or_default();
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user.build()?)
        .args(args)
        .env(env)
        .cwd(if config.working_dir.is_empty() { "/".to_string() } else { config.working_dir.clone() })
        .capabilities(default_process.capabilities().clone().unwrap_or_default())
        .rlimits(default_process.rlimits().clone().unwrap_or_default())
        .no_new_privileges(true)
        .build()?;
    spec.set_process(Some(process));
    spec.set_hostname(Some("kist".to_string()));
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path("rootfs".into());
    root.set_readonly(Some(false));
    spec.set_root(Some(root));
    let mut annotations = std::collections::HashMap::new();
    for (k, v) in &config.labels {
        annotations.insert(k.clone(), v.clone());
    }
    if !config.stop_signal.is_empty() {
        annotations.insert("org.opencontainers.image.stopSignal".to_string(), config.stop_signal.clone());
    }
    spec.set_annotations(Some(annotations));
    let path = dir.join("config.json");
    kist_common::fsutil::atomic_write_json(&path, &spec)
        .map_err(|source| BundleError::Write { path: path.display().to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_from_the_image() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nwww:x:33:33::/var/www:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nwww:x:33:www\nstaff:x:50:www\n").unwrap();
        assert_eq!(resolve_user(d.path(), "www").unwrap(), (33, 33, vec![50]));
        assert_eq!(resolve_user(d.path(), "1000:50").unwrap(), (1000, 50, vec![]));
        assert_eq!(resolve_user(d.path(), "www:root").unwrap(), (33, 0, vec![33, 50]));
        assert!(resolve_user(d.path(), "nobody").is_err());
    }
}
