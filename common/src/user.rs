//! `-u user[:group]` resolved the way Docker (containerd) resolves it: names
//! and ids looked up in the image's `/etc/passwd` and `/etc/group`, the
//! primary group plus every group listing the user as a member as the
//! supplementary groups, and HOME from the passwd entry. ctr-spawn
//! resolves against the image's files, ctr-exec against the running
//! container's.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
}

impl crate::HasExitCode for UserError {
    fn exit_code(&self) -> crate::ExitCode {
        crate::ExitCode::Usage
    }
}

/// The numeric identity the container's process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<Passwd> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(Passwd {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<Group> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(Group {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| m.split(',').filter(|s| !s.is_empty()).map(String::from).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`) against
/// the contents of the image's passwd and group files.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Resolved, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let users = parse_passwd(passwd);
    let groups = parse_group(group);
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => users.iter().find(|u| u.uid == uid),
        Err(_) => Some(
            users
                .iter()
                .find(|u| u.name == user_part)
                .ok_or_else(|| UserError::UnknownUser(user_part.to_string()))?,
        ),
    };
    let uid = match entry {
        Some(e) => e.uid,
        None => user_part.parse::<u32>().map_err(|_| UserError::UnknownUser(user_part.to_string()))?,
    };
    let (gid, explicit_group) = match group_part {
        Some(g) if !g.is_empty() => match g.parse::<u32>() {
            Ok(gid) => (gid, true),
            Err(_) => (
                groups
                    .iter()
                    .find(|x| x.name == g)
                    .map(|x| x.gid)
                    .ok_or_else(|| UserError::UnknownGroup(g.to_string()))?,
                true,
            ),
        },
        _ => (entry.map(|e| e.gid).unwrap_or(0), false),
    };
    let mut additional_gids = vec![gid];
    if !explicit_group {
        if let Some(e) = entry {
            for g in &groups {
                if g.members.contains(&e.name) && !additional_gids.contains(&g.gid) {
                    additional_gids.push(g.gid);
                }
            }
        }
    }
    let home = entry.map(|e| e.home.clone()).filter(|h| !h.is_empty()).unwrap_or_else(|| "/".to_string());
    Ok(Resolved { uid, gid, additional_gids, home })
}

/// Reads `rel` (e.g. `etc/passwd`) from a stack of snapshot directories,
/// highest first: the first layer holding a regular file wins, a whiteout
/// (a character device) hides the lower ones. Missing is an empty file.
pub fn read_from_layers(layers_highest_first: &[PathBuf], rel: &Path) -> String {
    use std::os::unix::fs::FileTypeExt;
    for layer in layers_highest_first {
        let p = layer.join(rel);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_file() => return std::fs::read_to_string(&p).unwrap_or_default(),
            Ok(m) if m.file_type().is_char_device() => return String::new(),
            _ => continue,
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:www\nstaff:x:50:www\n";

    #[test]
    fn docker_rules() {
        assert_eq!(
            resolve("", PASSWD, GROUP).unwrap(),
            Resolved { uid: 0, gid: 0, additional_gids: vec![0], home: "/root".into() }
        );
        assert_eq!(
            resolve("www", PASSWD, GROUP).unwrap(),
            Resolved { uid: 33, gid: 33, additional_gids: vec![33, 50], home: "/var/www".into() }
        );
        assert_eq!(resolve("www:staff", PASSWD, GROUP).unwrap().additional_gids, vec![50]);
        let r = resolve("1234:99", PASSWD, GROUP).unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (1234, 99, "/"));
        assert_eq!(resolve("nobody", PASSWD, GROUP).unwrap_err(), UserError::UnknownUser("nobody".into()));
        assert_eq!(
            resolve("www:nogroup", PASSWD, GROUP).unwrap_err(),
            UserError::UnknownGroup("nogroup".into())
        );
    }
}
