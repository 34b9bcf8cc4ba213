//! Resource limits (rlimits) of a container's process, as Docker sets them.
//!
//! Measured on this project's reference host (Debian's docker.io 20.10,
//! containerd 1.6, runc 1.1; see tests/data/docker-probe/limits.txt):
//! without `--ulimit`, Docker writes no `rlimits` into the spec, so the
//! container inherits the limits of the daemon that started it — every one
//! of them, soft and hard, as they are. The daemonless equivalent is the
//! limits of the process that runs ctr-spawn: [`docker_default`] reads them
//! so that they can be written into `config.json` (runc then applies the
//! same values). `--ulimit` entries replace single types.
//!
//! Raising a hard limit needs CAP_SYS_RESOURCE, which hosts (this one
//! included) may withhold: [`clamp_to_host`] lowers any requested value to
//! the current hard limit and reports a warning instead of failing.
//! [`apply`] sets the limits with setrlimit in the container's init before
//! capabilities are dropped.

use oci_spec::runtime::{PosixRlimit, PosixRlimitBuilder, PosixRlimitType};

/// Errors of rlimit handling.
#[derive(Debug, thiserror::Error)]
pub enum RlimitError {
    #[error("getrlimit({0}) failed: {1}")]
    Get(&'static str, #[source] std::io::Error),
    #[error("setrlimit({0}, soft {1}, hard {2}) failed: {3}")]
    Set(&'static str, u64, u64, #[source] std::io::Error),
    #[error("invalid --ulimit {0:?}: {1}")]
    Parse(String, String),
}

/// A limit that could not be granted as asked and was lowered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub typ: PosixRlimitType,
    pub asked_soft: u64,
    pub asked_hard: u64,
    pub soft: u64,
    pub hard: u64,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}:{} exceeds the host's hard limit, using {}:{}",
            name(self.typ),
            show(self.asked_soft),
            show(self.asked_hard),
            show(self.soft),
            show(self.hard)
        )
    }
}

fn show(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// Every rlimit type with its resource number and Docker's `--ulimit` name.
pub const TYPES: &[(PosixRlimitType, u32, &str, &str)] = &[
    (PosixRlimitType::RlimitCpu, 0, "RLIMIT_CPU", "cpu"),
    (PosixRlimitType::RlimitFsize, 1, "RLIMIT_FSIZE", "fsize"),
    (PosixRlimitType::RlimitData, 2, "RLIMIT_DATA", "data"),
    (PosixRlimitType::RlimitStack, 3, "RLIMIT_STACK", "stack"),
    (PosixRlimitType::RlimitCore, 4, "RLIMIT_CORE", "core"),
    (PosixRlimitType::RlimitRss, 5, "RLIMIT_RSS", "rss"),
    (PosixRlimitType::RlimitNproc, 6, "RLIMIT_NPROC", "nproc"),
    (PosixRlimitType::RlimitNofile, 7, "RLIMIT_NOFILE", "nofile"),
    (PosixRlimitType::RlimitMemlock, 8, "RLIMIT_MEMLOCK", "memlock"),
    (PosixRlimitType::RlimitAs, 9, "RLIMIT_AS", "as"),
    (PosixRlimitType::RlimitLocks, 10, "RLIMIT_LOCKS", "locks"),
    (PosixRlimitType::RlimitSigpending, 11, "RLIMIT_SIGPENDING", "sigpending"),
    (PosixRlimitType::RlimitMsgqueue, 12, "RLIMIT_MSGQUEUE", "msgqueue"),
    (PosixRlimitType::RlimitNice, 13, "RLIMIT_NICE", "nice"),
    (PosixRlimitType::RlimitRtprio, 14, "RLIMIT_RTPRIO", "rtprio"),
    (PosixRlimitType::RlimitRttime, 15, "RLIMIT_RTTIME", "rttime"),
];

fn resource(t: PosixRlimitType) -> u32 {
    TYPES.iter().find(|e| e.0 == t).map(|e| e.1).unwrap_or(u32::MAX)
}

/// The `RLIMIT_*` name of a type.
pub fn name(t: PosixRlimitType) -> &'static str {
    TYPES.iter().find(|e| e.0 == t).map(|e| e.2).unwrap_or("RLIMIT_?")
}

fn rlimit(t: PosixRlimitType, soft: u64, hard: u64) -> PosixRlimit {
    // The builder cannot fail: every field is given.
    PosixRlimitBuilder::default().typ(t).soft(soft).hard(hard).build().unwrap_or_default()
}

/// The calling process's current limit of one type (RLIM_INFINITY as u64::MAX).
pub fn current(t: PosixRlimitType) -> Result<(u64, u64), RlimitError> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit struct for the call.
    let rc = unsafe { libc::getrlimit(resource(t) as _, &mut lim) };
    if rc != 0 {
        return Err(RlimitError::Get(name(t), std::io::Error::last_os_error()));
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// What a `docker run` container gets without `--ulimit`: the limits of
/// the process that starts it, every type (see the module header).
pub fn docker_default() -> Result<Vec<PosixRlimit>, RlimitError> {
    TYPES.iter().map(|(t, ..)| current(*t).map(|(s, h)| rlimit(*t, s, h))).collect()
}

/// Parses Docker's `--ulimit TYPE=SOFT[:HARD]` (`-1` or `unlimited` for no
/// limit; HARD defaults to SOFT).
pub fn parse_ulimit(text: &str) -> Result<PosixRlimit, RlimitError> {
    let bad = |m: &str| RlimitError::Parse(text.to_string(), m.to_string());
    let (typ, vals) = text.split_once('=').ok_or_else(|| bad("expected TYPE=SOFT[:HARD]"))?;
    let t = TYPES.iter().find(|e| e.3 == typ.trim()).map(|e| e.0).ok_or_else(|| bad("unknown limit type"))?;
    let num = |s: &str| -> Result<u64, RlimitError> {
        match s.trim() {
            "-1" | "unlimited" => Ok(u64::MAX),
            v => v.parse().map_err(|_| bad("not a number")),
        }
    };
    let (soft, hard) = match vals.split_once(':') {
        Some((s, h)) => (num(s)?, num(h)?),
        None => {
            let v = num(vals)?;
            (v, v)
        }
    };
    if soft > hard {
        return Err(bad("soft limit is greater than the hard limit"));
    }
    Ok(rlimit(t, soft, hard))
}

/// `base` with each of `overrides` replacing the entry of its type.
pub fn merge(base: &[PosixRlimit], overrides: &[PosixRlimit]) -> Vec<PosixRlimit> {
    let mut out: Vec<PosixRlimit> = base.to_vec();
    for o in overrides {
        match out.iter_mut().find(|r| r.typ() == o.typ()) {
            Some(r) => *r = *o,
            None => out.push(*o),
        }
    }
    out
}

/// Lowers every limit to the calling process's current hard limit (what it
/// can set without CAP_SYS_RESOURCE), never failing: each lowered entry
/// yields a warning. A type whose limit cannot be read is passed on as is.
pub fn clamp_to_host(limits: &[PosixRlimit]) -> (Vec<PosixRlimit>, Vec<Warning>) {
    clamp_with(limits, |t| current(t).ok().map(|(_, h)| h))
}

fn clamp_with(
    limits: &[PosixRlimit],
    host_hard: impl Fn(PosixRlimitType) -> Option<u64>,
) -> (Vec<PosixRlimit>, Vec<Warning>) {
    let mut out = Vec::with_capacity(limits.len());
    let mut warnings = Vec::new();
    for r in limits {
        let Some(max) = host_hard(r.typ()) else {
            out.push(*r);
            continue;
        };
        let hard = r.hard().min(max);
        let soft = r.soft().min(hard);
        if hard != r.hard() || soft != r.soft() {
            warnings.push(Warning { typ: r.typ(), asked_soft: r.soft(), asked_hard: r.hard(), soft, hard });
        }
        out.push(rlimit(r.typ(), soft, hard));
    }
    (out, warnings)
}

/// Sets each limit on the calling process (the container's init).
pub fn apply(limits: &[PosixRlimit]) -> Result<(), RlimitError> {
    for r in limits {
        let lim = libc::rlimit { rlim_cur: r.soft(), rlim_max: r.hard() };
        // SAFETY: `lim` is a valid rlimit struct; setrlimit only reads it.
        let rc = unsafe { libc::setrlimit(resource(r.typ()) as _, &lim) };
        if rc != 0 {
            return Err(RlimitError::Set(name(r.typ()), r.soft(), r.hard(), std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_callers_limits() {
        let d = docker_default().unwrap();
        assert_eq!(d.len(), 16);
        let nofile = d.iter().find(|r| r.typ() == PosixRlimitType::RlimitNofile).unwrap();
        assert_eq!((nofile.soft(), nofile.hard()), current(PosixRlimitType::RlimitNofile).unwrap());
    }

    #[test]
    fn parse_docker_spellings() {
        let r = parse_ulimit("nofile=1024:2048").unwrap();
        assert_eq!((r.typ(), r.soft(), r.hard()), (PosixRlimitType::RlimitNofile, 1024, 2048));
        let r = parse_ulimit("core=-1").unwrap();
        assert_eq!((r.soft(), r.hard()), (u64::MAX, u64::MAX));
        assert!(parse_ulimit("nofile=10:5").is_err());
        assert!(parse_ulimit("bogus=1").is_err());
        assert!(parse_ulimit("nofile").is_err());
    }

    #[test]
    fn clamp_lowers_and_warns() {
        let asked = [
            rlimit(PosixRlimitType::RlimitNofile, 1_048_576, 1_048_576),
            rlimit(PosixRlimitType::RlimitCore, 0, 100),
        ];
        let (out, w) = clamp_with(&asked, |t| match t {
            PosixRlimitType::RlimitNofile => Some(20000),
            _ => Some(u64::MAX),
        });
        assert_eq!((out[0].soft(), out[0].hard()), (20000, 20000));
        assert_eq!((out[1].soft(), out[1].hard()), (0, 100));
        assert_eq!(w.len(), 1);
        assert!(w[0].to_string().contains("RLIMIT_NOFILE"), "{}", w[0]);
        // Against the real host: never above the current hard limit.
        let (out, _) = clamp_to_host(&asked);
        let (_, hard) = current(PosixRlimitType::RlimitNofile).unwrap();
        assert!(out[0].hard() <= hard);
    }

    #[test]
    fn merge_replaces_by_type() {
        let base = docker_default().unwrap();
        let m = merge(&base, &[parse_ulimit("nofile=100:200").unwrap()]);
        assert_eq!(m.len(), base.len());
        let n = m.iter().find(|r| r.typ() == PosixRlimitType::RlimitNofile).unwrap();
        assert_eq!((n.soft(), n.hard()), (100, 200));
    }

    #[test]
    fn apply_in_child() {
        // SAFETY: the child only calls setrlimit/getrlimit and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let ok = apply(&[rlimit(PosixRlimitType::RlimitNofile, 64, 128)]).is_ok()
                && current(PosixRlimitType::RlimitNofile).ok() == Some((64, 128));
            // SAFETY: leave the forked child without unwinding into the harness.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}
