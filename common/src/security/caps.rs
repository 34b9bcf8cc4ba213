//! Linux capabilities of a container's process: Docker's default set, the
//! `--cap-add` / `--cap-drop` / `--privileged` rules, and applying a set to
//! the calling process right before it execs the container's command.
//!
//! The sets are `oci_spec::runtime::LinuxCapabilities`, so the same value goes
//! into the bundle's `config.json` (runc runs it unchanged) and into
//! [`apply`].
//!
//! # The order the container's init follows
//!
//! ```text
//! caps::prepare_for_setuid(&caps)?;   // drop the bounding set, PR_SET_KEEPCAPS=1
//! setgroups(..); setgid(..); setuid(..);
//! caps::apply(&caps)?;                // KEEPCAPS=0, capset(inh, prm, eff), ambient
//! seccomp::load(..)?;                 // last: capset/prctl may be filtered
//! execve(..);
//! ```
//!
//! `prepare_for_setuid` must run while the process still has CAP_SETPCAP in
//! its effective set (before setuid to a non-root uid clears it): dropping
//! from the bounding set needs it. PR_SET_KEEPCAPS keeps the permitted set
//! across the uid change so that `apply` can still raise what the container
//! is allowed. When the container runs as root, calling only `apply` is
//! enough (it drops the bounding set itself when that is still needed).
//! The kernel computes the final sets at execve: a root process gets
//! permitted = effective = bounding; a non-root process without file
//! capabilities ends with empty permitted and effective sets, exactly as
//! under `docker run -u`.
//!
//! Raw `capget`/`capset` (`_LINUX_CAPABILITY_VERSION_3`) and `prctl` are
//! used instead of a crate: they are three syscalls, and ctr-spawn's start-up
//! pays for nothing else.

use std::collections::HashSet;

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

/// Errors of capability handling.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("unknown capability: {0:?}")]
    Unknown(String),
    #[error("capability not supported by your kernel or not available in the current environment: {0:?}")]
    NotAvailable(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} failed: {source}")]
    Syscall {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Every capability oci-spec knows, with its kernel number and canonical name.
pub const TABLE: &[(Capability, u8, &str)] = &[
    (Capability::Chown, 0, "CAP_CHOWN"),
    (Capability::DacOverride, 1, "CAP_DAC_OVERRIDE"),
    (Capability::DacReadSearch, 2, "CAP_DAC_READ_SEARCH"),
    (Capability::Fowner, 3, "CAP_FOWNER"),
    (Capability::Fsetid, 4, "CAP_FSETID"),
    (Capability::Kill, 5, "CAP_KILL"),
    (Capability::Setgid, 6, "CAP_SETGID"),
    (Capability::Setuid, 7, "CAP_SETUID"),
    (Capability::Setpcap, 8, "CAP_SETPCAP"),
    (Capability::LinuxImmutable, 9, "CAP_LINUX_IMMUTABLE"),
    (Capability::NetBindService, 10, "CAP_NET_BIND_SERVICE"),
    (Capability::NetBroadcast, 11, "CAP_NET_BROADCAST"),
    (Capability::NetAdmin, 12, "CAP_NET_ADMIN"),
    (Capability::NetRaw, 13, "CAP_NET_RAW"),
    (Capability::IpcLock, 14, "CAP_IPC_LOCK"),
    (Capability::IpcOwner, 15, "CAP_IPC_OWNER"),
    (Capability::SysModule, 16, "CAP_SYS_MODULE"),
    (Capability::SysRawio, 17, "CAP_SYS_RAWIO"),
    (Capability::SysChroot, 18, "CAP_SYS_CHROOT"),
    (Capability::SysPtrace, 19, "CAP_SYS_PTRACE"),
    (Capability::SysPacct, 20, "CAP_SYS_PACCT"),
    (Capability::SysAdmin, 21, "CAP_SYS_ADMIN"),
    (Capability::SysBoot, 22, "CAP_SYS_BOOT"),
    (Capability::SysNice, 23, "CAP_SYS_NICE"),
    (Capability::SysResource, 24, "CAP_SYS_RESOURCE"),
    (Capability::SysTime, 25, "CAP_SYS_TIME"),
    (Capability::SysTtyConfig, 26, "CAP_SYS_TTY_CONFIG"),
    (Capability::Mknod, 27, "CAP_MKNOD"),
    (Capability::Lease, 28, "CAP_LEASE"),
    (Capability::AuditWrite, 29, "CAP_AUDIT_WRITE"),
    (Capability::AuditControl, 30, "CAP_AUDIT_CONTROL"),
    (Capability::Setfcap, 31, "CAP_SETFCAP"),
    (Capability::MacOverride, 32, "CAP_MAC_OVERRIDE"),
    (Capability::MacAdmin, 33, "CAP_MAC_ADMIN"),
    (Capability::Syslog, 34, "CAP_SYSLOG"),
    (Capability::WakeAlarm, 35, "CAP_WAKE_ALARM"),
    (Capability::BlockSuspend, 36, "CAP_BLOCK_SUSPEND"),
    (Capability::AuditRead, 37, "CAP_AUDIT_READ"),
    (Capability::Perfmon, 38, "CAP_PERFMON"),
    (Capability::Bpf, 39, "CAP_BPF"),
    (Capability::CheckpointRestore, 40, "CAP_CHECKPOINT_RESTORE"),
];

/// Docker's default capabilities, in moby's order.
pub const DOCKER_DEFAULT: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// The kernel number of a capability.
pub fn number(cap: Capability) -> u8 {
    TABLE.iter().find(|(c, _, _)| *c == cap).map(|(_, n, _)| *n).unwrap_or(u8::MAX)
}

/// The canonical `CAP_*` name of a capability.
pub fn name(cap: Capability) -> &'static str {
    TABLE.iter().find(|(c, _, _)| *c == cap).map(|(_, _, s)| *s).unwrap_or("CAP_UNKNOWN")
}

/// Parses a capability name the way Docker does: case-insensitive, with or
/// without the `CAP_` prefix. ("ALL" is handled by [`adjust`].)
pub fn parse(text: &str) -> Result<Capability, CapsError> {
    let upper = text.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    TABLE.iter().find(|(_, _, s)| *s == full).map(|(c, _, _)| *c).ok_or(CapsError::Unknown(full))
}

/// A bit mask (bit n = capability n) of a set.
pub fn mask(set: &Capabilities) -> u64 {
    set.iter().fold(0u64, |m, c| match number(*c) {
        n if n < 64 => m | (1u64 << n),
        _ => m,
    })
}

/// The set of a bit mask (bits without a known capability are ignored).
pub fn from_mask(mask: u64) -> Capabilities {
    TABLE.iter().filter(|(_, n, _)| mask & (1u64 << *n) != 0).map(|(c, _, _)| *c).collect()
}

/// bounding = permitted = effective = `set`; inheritable and ambient empty:
/// the shape Docker (containerd's spec options) writes.
pub fn uniform(set: Capabilities) -> LinuxCapabilities {
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()));
    caps.set_permitted(Some(set.clone()));
    caps.set_effective(Some(set));
    caps.set_inheritable(Some(Capabilities::new()));
    caps.set_ambient(Some(Capabilities::new()));
    caps
}

/// Docker's 14 default capabilities in bounding, permitted and effective.
pub fn docker_default() -> LinuxCapabilities {
    uniform(DOCKER_DEFAULT.iter().copied().collect())
}

/// The highest capability number the running kernel knows
/// (/proc/sys/kernel/cap_last_cap).
pub fn last_cap() -> Result<u8, CapsError> {
    const PATH: &str = "/proc/sys/kernel/cap_last_cap";
    let text = std::fs::read_to_string(PATH).map_err(|source| CapsError::Read { path: PATH, source })?;
    text.trim().parse::<u8>().map_err(|e| CapsError::Read {
        path: PATH,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// The capabilities `--privileged` gives, as Docker computes them: every
/// capability the running kernel knows that the calling process has in its
/// effective set (a capability the host withholds cannot be granted).
pub fn all_supported() -> Result<LinuxCapabilities, CapsError> {
    Ok(uniform(available()?))
}

/// Kernel-known capabilities in the caller's effective set.
fn available() -> Result<Capabilities, CapsError> {
    let last = last_cap()?;
    let current = current()?;
    Ok(TABLE
        .iter()
        .filter(|(c, n, _)| *n <= last && current.effective.contains(c))
        .map(|(c, _, _)| *c)
        .collect())
}

/// Applies `--cap-add` and `--cap-drop` to `base` with Docker's rules:
/// names case-insensitive, `CAP_` optional; `--cap-add ALL` gives every
/// available capability except the dropped ones; `--cap-drop ALL` keeps only
/// the added ones; otherwise the dropped ones are removed from the base and
/// the added ones joined. A name the kernel or this environment does not
/// offer is an error, as in Docker. The result is uniform (see [`uniform`]),
/// computed from `base`'s bounding set.
pub fn adjust(
    base: &LinuxCapabilities,
    add: &[String],
    drop: &[String],
) -> Result<LinuxCapabilities, CapsError> {
    if add.is_empty() && drop.is_empty() {
        return Ok(base.clone());
    }
    // Only consulted for validation and "ALL"; reading it lazily keeps the
    // common path free of /proc reads.
    let available = available()?;
    let normalize = |names: &[String]| -> Result<(bool, Vec<Capability>), CapsError> {
        let mut all = false;
        let mut out = Vec::new();
        for n in names {
            if n.trim().eq_ignore_ascii_case("ALL") {
                all = true;
                continue;
            }
            let cap = parse(n)?;
            if !available.contains(&cap) {
                return Err(CapsError::NotAvailable(name(cap).to_string()));
            }
            out.push(cap);
        }
        Ok((all, out))
    };
    let (drop_all, drops) = normalize(drop)?;
    let (add_all, adds) = normalize(add)?;
    let result: Capabilities = if add_all {
        available.iter().filter(|c| !drops.contains(c)).copied().collect()
    } else if drop_all {
        adds.into_iter().collect()
    } else {
        let basics = base.bounding().clone().unwrap_or_default();
        basics.into_iter().filter(|c| !drops.contains(c)).chain(adds).collect()
    };
    Ok(uniform(result))
}

/// The calling thread's capability sets (from capget and prctl).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentCaps {
    pub effective: Capabilities,
    pub permitted: Capabilities,
    pub inheritable: Capabilities,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Reads the calling thread's effective, permitted and inheritable sets.
pub fn current() -> Result<CurrentCaps, CapsError> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are valid, properly sized (version 3 uses two
    // data structs) and live for the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut CapHeader, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(CapsError::Syscall { op: "capget", source: std::io::Error::last_os_error() });
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok(CurrentCaps {
        effective: from_mask(join(data[0].effective, data[1].effective)),
        permitted: from_mask(join(data[0].permitted, data[1].permitted)),
        inheritable: from_mask(join(data[0].inheritable, data[1].inheritable)),
    })
}

fn prctl(
    op: &'static str,
    option: libc::c_int,
    arg2: libc::c_ulong,
    arg3: libc::c_ulong,
) -> Result<i32, CapsError> {
    // SAFETY: the prctl options used here take integer arguments only; no
    // pointers are passed.
    let rc = unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if rc < 0 {
        return Err(CapsError::Syscall { op, source: std::io::Error::last_os_error() });
    }
    Ok(rc)
}

/// Removes from the bounding set every capability not in `keep` that the
/// kernel knows and the set still holds. Needs CAP_SETPCAP.
fn drop_bounding(keep: u64, last: u8) -> Result<(), CapsError> {
    for n in 0..=last {
        if keep & (1u64 << n) != 0 {
            continue;
        }
        if prctl("prctl(PR_CAPBSET_READ)", libc::PR_CAPBSET_READ, n.into(), 0)? == 1 {
            prctl("prctl(PR_CAPBSET_DROP)", libc::PR_CAPBSET_DROP, n.into(), 0)?;
        }
    }
    Ok(())
}

fn set_mask(set: &Option<Capabilities>, last: u8) -> u64 {
    let all = if last >= 63 { u64::MAX } else { (1u64 << (last + 1)) - 1 };
    set.as_ref().map(mask).unwrap_or(0) & all
}

/// First step of the init's credential change, while still root with full
/// capabilities: drops the bounding set to `caps.bounding` and sets
/// PR_SET_KEEPCAPS so the permitted set survives setuid. Capabilities the
/// running kernel does not know are ignored (as runc does).
pub fn prepare_for_setuid(caps: &LinuxCapabilities) -> Result<(), CapsError> {
    let last = last_cap()?;
    drop_bounding(set_mask(caps.bounding(), last), last)?;
    prctl("prctl(PR_SET_KEEPCAPS)", libc::PR_SET_KEEPCAPS, 1, 0)?;
    Ok(())
}

/// Last step before seccomp and exec, after setgroups/setgid/setuid: drops
/// the bounding set (if [`prepare_for_setuid`] did not), clears
/// PR_SET_KEEPCAPS, sets inheritable, permitted and effective with capset,
/// and sets the ambient set to `caps.ambient` (normally empty: cleared).
pub fn apply(caps: &LinuxCapabilities) -> Result<(), CapsError> {
    let last = last_cap()?;
    let bounding = set_mask(caps.bounding(), last);
    drop_bounding(bounding, last)?;
    prctl("prctl(PR_SET_KEEPCAPS)", libc::PR_SET_KEEPCAPS, 0, 0)?;
    let eff = set_mask(caps.effective(), last);
    let prm = set_mask(caps.permitted(), last);
    let inh = set_mask(caps.inheritable(), last);
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [
        CapData { effective: eff as u32, permitted: prm as u32, inheritable: inh as u32 },
        CapData {
            effective: (eff >> 32) as u32,
            permitted: (prm >> 32) as u32,
            inheritable: (inh >> 32) as u32,
        },
    ];
    // SAFETY: header and data are valid version-3 structures that outlive the
    // call; capset only reads them.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(CapsError::Syscall { op: "capset", source: std::io::Error::last_os_error() });
    }
    prctl(
        "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        0,
    )?;
    let amb = set_mask(caps.ambient(), last);
    for n in 0..=last {
        if amb & (1u64 << n) != 0 {
            prctl(
                "prctl(PR_CAP_AMBIENT_RAISE)",
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                n.into(),
            )?;
        }
    }
    Ok(())
}

/// The names of a set, sorted by capability number (for config.json and
/// messages).
pub fn names(set: &Capabilities) -> Vec<&'static str> {
    let set: HashSet<_> = set.iter().collect();
    TABLE.iter().filter(|(c, _, _)| set.contains(c)).map(|(_, _, s)| *s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_dockers_fourteen() {
        let caps = docker_default();
        let b = caps.bounding().clone().unwrap();
        assert_eq!(b.len(), 14);
        // Docker's CapBnd/CapEff/CapPrm in /proc/self/status.
        assert_eq!(mask(&b), 0x0000_0000_a804_25fb);
        assert_eq!(caps.permitted(), caps.bounding());
        assert_eq!(caps.effective(), caps.bounding());
        assert!(caps.inheritable().as_ref().unwrap().is_empty());
        assert!(caps.ambient().as_ref().unwrap().is_empty());
    }

    #[test]
    fn table_numbers_unique_and_dense() {
        for (i, (_, n, _)) in TABLE.iter().enumerate() {
            assert_eq!(usize::from(*n), i);
        }
    }

    #[test]
    fn parse_spellings() {
        assert_eq!(parse("net_admin").unwrap(), Capability::NetAdmin);
        assert_eq!(parse("CAP_NET_ADMIN").unwrap(), Capability::NetAdmin);
        assert_eq!(parse("Cap_Sys_Admin").unwrap(), Capability::SysAdmin);
        assert!(matches!(parse("NOPE"), Err(CapsError::Unknown(n)) if n == "CAP_NOPE"));
    }

    #[test]
    fn adjust_rules() {
        let base = docker_default();
        let r = adjust(&base, &["net_admin".into()], &["CAP_CHOWN".into(), "mknod".into()]).unwrap();
        let b = r.bounding().clone().unwrap();
        assert!(b.contains(&Capability::NetAdmin));
        assert!(!b.contains(&Capability::Chown));
        assert!(!b.contains(&Capability::Mknod));
        assert_eq!(b.len(), 13);
        assert_eq!(r.effective(), r.bounding());

        let r = adjust(&base, &["kill".into()], &["ALL".into()]).unwrap();
        assert_eq!(r.bounding().clone().unwrap(), [Capability::Kill].into_iter().collect());

        let r = adjust(&base, &["all".into()], &["sys_admin".into()]).unwrap();
        let b = r.bounding().clone().unwrap();
        assert!(!b.contains(&Capability::SysAdmin));
        assert!(b.contains(&Capability::NetAdmin));
        assert_eq!(b, {
            let mut all = available().unwrap();
            all.remove(&Capability::SysAdmin);
            all
        });

        assert!(matches!(adjust(&base, &["bogus".into()], &[]), Err(CapsError::Unknown(_))));
        // Unchanged when nothing is asked.
        assert_eq!(adjust(&base, &[], &[]).unwrap(), base);
    }

    #[test]
    fn all_supported_follows_kernel_and_host() {
        let all = all_supported().unwrap();
        let b = all.bounding().clone().unwrap();
        let last = last_cap().unwrap();
        let cur = current().unwrap();
        for (c, n, _) in TABLE {
            assert_eq!(b.contains(c), *n <= last && cur.effective.contains(c), "{c:?}");
        }
    }

    fn status_field(status: &str, key: &str) -> u64 {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    }

    /// Runs `f` in a forked child; returns its exit status.
    fn in_child(f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only runs `f` and _exits; tests accept the
        // fork-in-threaded-process caveats (glibc's malloc is fork-safe).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(99);
            // SAFETY: leaving the child without running the parent's atexit
            // handlers or test harness.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "child died: {status:#x}");
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn apply_as_root_sets_docker_sets() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let code = in_child(|| {
            apply(&docker_default()).unwrap();
            let s = std::fs::read_to_string("/proc/self/status").unwrap();
            let want = 0xa804_25fb;
            let ok = status_field(&s, "CapBnd:") == want
                && status_field(&s, "CapEff:") == want
                && status_field(&s, "CapPrm:") == want
                && status_field(&s, "CapInh:") == 0
                && status_field(&s, "CapAmb:") == 0;
            if ok {
                0
            } else {
                1
            }
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn setuid_transition_keeps_requested_caps() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let code = in_child(|| {
            let caps = docker_default();
            prepare_for_setuid(&caps).unwrap();
            // SAFETY: plain credential syscalls in a single-threaded child.
            unsafe {
                if libc::setgid(1000) != 0 || libc::setuid(1000) != 0 {
                    return 2;
                }
            }
            apply(&caps).unwrap();
            let s = std::fs::read_to_string("/proc/self/status").unwrap();
            let want = 0xa804_25fb;
            let ok = status_field(&s, "CapBnd:") == want
                && status_field(&s, "CapEff:") == want
                && status_field(&s, "CapPrm:") == want;
            // KEEPCAPS must be cleared again.
            // SAFETY: PR_GET_KEEPCAPS takes no pointer arguments.
            let keep = unsafe { libc::prctl(libc::PR_GET_KEEPCAPS, 0, 0, 0, 0) };
            if ok && keep == 0 {
                0
            } else {
                1
            }
        });
        assert_eq!(code, 0);
    }
}
