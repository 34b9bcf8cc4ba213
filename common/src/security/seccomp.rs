//! Seccomp for containers: Docker's default profile, Docker's JSON profile
//! format (`--security-opt seccomp=FILE`), a compiler from the OCI
//! `LinuxSeccomp` to classic BPF, and loading the program.
//!
//! # Interface
//!
//! - [`docker_default`]`(caps, arch)`: moby's default profile, filtered for
//!   the container's bounding set and the native arch exactly as moby does
//!   when it writes a container's spec (rules `includes`/`excludes` on caps,
//!   arches and minimum kernel). The result goes into `config.json`.
//! - [`parse_docker_profile`]`(json, caps, arch)`: the same for a user's
//!   profile in Docker's JSON format (`Ok(None)`: the profile disables
//!   seccomp, as Docker treats one without default action and rules).
//! - [`compile`]`(&LinuxSeccomp)` → [`BpfProgram`], [`load`]`(&BpfProgram)`.
//! - [`no_new_privs`] sets PR_SET_NO_NEW_PRIVS.
//!
//! Loading needs either no_new_privs or CAP_SYS_ADMIN in the effective set.
//! The order the container's init follows is runc's:
//!
//! ```text
//! without --security-opt no-new-privileges:      with it:
//!   seccomp::load(&prog)?   // still privileged    seccomp::no_new_privs()?
//!   caps::prepare_for_setuid(&caps)?               caps::prepare_for_setuid(&caps)?
//!   setgroups/setgid/setuid                        setgroups/setgid/setuid
//!   caps::apply(&caps)?                            caps::apply(&caps)?
//!   execve                                         seccomp::load(&prog)?  // last
//!                                                  execve
//! ```
//!
//! In the first column the filter is already active for the remaining setup
//! syscalls (prctl, capset, setgroups, setresuid, execve, reading
//! /proc/sys/kernel/cap_last_cap); the default profile allows all of them, a
//! user's profile that does not makes the start fail, as under runc.
//! SECCOMP_FILTER_FLAG_TSYNC is never used: the init is single-threaded.
//!
//! # The compiled program
//!
//! Like libseccomp as runc uses it: the arch is checked first and a syscall
//! from an arch the profile does not list kills the process; on x86_64,
//! x32 syscalls (nr with bit 30) go to their own section if the profile
//! lists SCMP_ARCH_X32 and kill otherwise; i386 syscalls go to an i386
//! section when SCMP_ARCH_X86 is listed. As runc does, a syscall numbered
//! above the highest one the profile names returns ENOSYS instead of the
//! default action, so that libc falls back from syscalls newer than the
//! profile (unless the default action is ALLOW). Rules whose action equals
//! the default are dropped (runc does the same). Per syscall, conditional
//! rules are tried in profile order, then the first unconditional rule's
//! action applies, else the default. Args of several conditions on one rule
//! are ANDed, unless one index repeats, in which case each condition is its
//! own rule (runc's reading of the spec). 64-bit comparisons are done on the
//! two 32-bit halves; on 32-bit arches only the low half exists.
//! Syscalls are found by a binary search tree over runs of consecutive
//! numbers that share an outcome (a return value, or the argument tests
//! of one syscall): moby's profile allows most numbers in long runs, so
//! the tree has a few hundred leaves for the three x86 sections instead of
//! one per named syscall, and a syscall costs about log2(runs) + 2
//! instructions. The kernel checks, converts and JIT-compiles the whole
//! program at every container start, in the init's last steps before the
//! exec: its length is start latency. (The earlier layout, one leaf per
//! named number, is kept in the tests as the reference the runs must
//! agree with, number by number.)
//!
//! Names unknown for an arch are skipped (runc skips them too); tables:
//! x86_64, i386, x32 and aarch64 (`syscalls.rs`, generated).
//!
//! # Profile format
//!
//! The default profile is data (`default.seccomp`, embedded) in kist's own
//! line format; its header documents the syntax. It carries the facts of
//! moby's `profiles/seccomp/default.json`.

use oci_spec::runtime::{
    Arch, LinuxCapabilities, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use serde::Deserialize;

use super::caps;
use super::syscalls;

/// The default profile's text (kist's line format).
pub const DEFAULT_PROFILE: &str = include_str!("default.seccomp");

/// Errors of seccomp profile handling, compilation and loading.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp profile line {line}: {msg}")]
    Syntax { line: usize, msg: String },
    #[error("decoding seccomp profile failed: {0}")]
    Json(#[source] serde_json::Error),
    #[error("seccomp profile: {0}")]
    Invalid(String),
    #[error("seccomp: architecture {0:?} is not supported by kist's compiler")]
    UnsupportedArch(Arch),
    #[error("seccomp: action {0} is not supported")]
    UnsupportedAction(String),
    #[error("seccomp: compiled program too large ({0} instructions, the kernel takes 4096)")]
    TooLarge(usize),
    #[error("seccomp: internal jump out of range")]
    JumpRange,
    #[error("{op} failed: {source}")]
    Syscall {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

// ---------------------------------------------------------------------------
// Profiles with conditional rules (moby's model)

/// Conditions of a rule on the container and the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(default)]
    pub caps: Vec<String>,
    #[serde(default)]
    pub arches: Vec<String>,
    #[serde(default, deserialize_with = "de_kernel")]
    pub min_kernel: Option<(u32, u32)>,
}

fn de_kernel<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<(u32, u32)>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    match s.as_deref() {
        None | Some("") => Ok(None),
        Some(v) => parse_kernel(v).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!("invalid kernel version: {v:?}, expected \"<kernel>.<major>\""))
        }),
    }
}

fn parse_kernel(v: &str) -> Option<(u32, u32)> {
    let mut it = v.splitn(3, '.');
    let a = it.next()?.parse().ok()?;
    let b = it.next()?.parse().ok()?;
    if it.next().is_some() || (a == 0 && b == 0) {
        return None;
    }
    Some((a, b))
}

/// One rule of a profile before filtering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRule {
    pub syscall: LinuxSyscall,
    pub includes: Filter,
    pub excludes: Filter,
}

/// A profile with conditional rules, as Docker's JSON and kist's line format
/// describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub default_action: LinuxSeccompAction,
    pub default_errno_ret: Option<u32>,
    /// Explicit architectures (Docker JSON `architectures`).
    pub architectures: Vec<Arch>,
    /// (arch, sub-arches) pairs; the native arch's entry is expanded.
    pub arch_map: Vec<(Arch, Vec<Arch>)>,
    pub flags: Vec<LinuxSeccompFilterFlag>,
    pub rules: Vec<ProfileRule>,
}

/// What a profile is resolved against: the container's bounding set, the
/// native arch and the host kernel's version.
#[derive(Debug, Clone)]
pub struct Target {
    pub bounding: Vec<&'static str>,
    pub arch: Arch,
    pub kernel: (u32, u32),
}

impl Target {
    pub fn new(caps_: &LinuxCapabilities, arch: Arch) -> Target {
        let bounding = caps_.bounding().as_ref().map(caps::names).unwrap_or_default();
        Target { bounding, arch, kernel: host_kernel().unwrap_or((0, 0)) }
    }
}

/// The running kernel's "<kernel>.<major>" version.
pub fn host_kernel() -> Option<(u32, u32)> {
    let uts = nix::sys::utsname::uname().ok()?;
    let rel = uts.release().to_string_lossy().into_owned();
    let mut it = rel.split(|c: char| !c.is_ascii_digit());
    let a = it.next()?.parse().ok()?;
    let b = it.next()?.parse().ok()?;
    Some((a, b))
}

/// moby's (Go-derived) name of an arch, as used in `includes.arches`.
pub fn moby_arch_name(arch: Arch) -> &'static str {
    match arch {
        Arch::ScmpArchX86 => "x86",
        Arch::ScmpArchX86_64 => "amd64",
        Arch::ScmpArchX32 => "x32",
        Arch::ScmpArchArm => "arm",
        Arch::ScmpArchAarch64 => "arm64",
        Arch::ScmpArchLoongarch64 => "loongarch64",
        Arch::ScmpArchMips64 => "mips64",
        Arch::ScmpArchMips64n32 => "mips64n32",
        Arch::ScmpArchMipsel64 => "mipsel64",
        Arch::ScmpArchMipsel64n32 => "mips3l64n32",
        Arch::ScmpArchMipsel => "mipsel",
        Arch::ScmpArchPpc => "ppc",
        Arch::ScmpArchPpc64 => "ppc64",
        Arch::ScmpArchPpc64le => "ppc64le",
        Arch::ScmpArchRiscv64 => "riscv64",
        Arch::ScmpArchS390 => "s390",
        Arch::ScmpArchS390x => "s390x",
        _ => "",
    }
}

/// The arch this binary runs on.
pub fn native_arch() -> Arch {
    if cfg!(target_arch = "x86_64") {
        Arch::ScmpArchX86_64
    } else if cfg!(target_arch = "aarch64") {
        Arch::ScmpArchAarch64
    } else if cfg!(target_arch = "x86") {
        Arch::ScmpArchX86
    } else if cfg!(target_arch = "arm") {
        Arch::ScmpArchArm
    } else if cfg!(target_arch = "riscv64") {
        Arch::ScmpArchRiscv64
    } else if cfg!(target_arch = "s390x") {
        Arch::ScmpArchS390x
    } else if cfg!(target_arch = "powerpc64") {
        Arch::ScmpArchPpc64le
    } else {
        Arch::ScmpArchNative
    }
}

impl Profile {
    /// Filters the rules for `target` the way moby's `setupSeccomp` does and
    /// returns the OCI profile for the container's spec.
    pub fn resolve(&self, target: &Target) -> LinuxSeccomp {
        self.clone().into_resolved(target)
    }

    /// [`Profile::resolve`] without copying the rules.
    pub fn into_resolved(self, target: &Target) -> LinuxSeccomp {
        let arch_name = moby_arch_name(target.arch);
        let mut arches = self.architectures;
        if let Some((a, subs)) = self.arch_map.iter().find(|(a, _)| *a == target.arch) {
            arches.push(*a);
            arches.extend(subs.iter().copied());
        }
        let has = |c: &String| target.bounding.iter().any(|b| b == c);
        let kernel_ge = |v: (u32, u32)| target.kernel >= v;
        let syscalls: Vec<LinuxSyscall> = self
            .rules
            .into_iter()
            .filter(|r| {
                let ex = &r.excludes;
                if ex.arches.iter().any(|a| a == arch_name)
                    || ex.caps.iter().any(has)
                    || ex.min_kernel.is_some_and(kernel_ge)
                {
                    return false;
                }
                let inc = &r.includes;
                if (!inc.arches.is_empty() && !inc.arches.iter().any(|a| a == arch_name))
                    || !inc.caps.iter().all(has)
                    || inc.min_kernel.is_some_and(|v| !kernel_ge(v))
                {
                    return false;
                }
                true
            })
            .map(|r| r.syscall)
            .collect();
        let mut out = LinuxSeccomp::default();
        out.set_default_action(self.default_action);
        out.set_default_errno_ret(self.default_errno_ret);
        out.set_architectures((!arches.is_empty()).then_some(arches));
        out.set_flags((!self.flags.is_empty()).then_some(self.flags));
        out.set_syscalls(Some(syscalls));
        out
    }

    /// Parses kist's line format (see `default.seccomp`).
    pub fn parse_text(text: &str) -> Result<Profile, SeccompError> {
        let mut p = Profile {
            default_action: LinuxSeccompAction::ScmpActErrno,
            default_errno_ret: None,
            architectures: Vec::new(),
            arch_map: Vec::new(),
            flags: Vec::new(),
            rules: Vec::new(),
        };
        let mut have_default = false;
        // Names and args of the rule being read, moved into it when the next
        // rule starts (LinuxSyscall has no in-place accessors).
        let mut pending: (Vec<String>, Vec<LinuxSeccompArg>) = (Vec::new(), Vec::new());
        fn flush(rules: &mut [ProfileRule], pending: &mut (Vec<String>, Vec<LinuxSeccompArg>)) {
            if let Some(r) = rules.last_mut() {
                r.syscall.set_names(std::mem::take(&mut pending.0));
                let args = std::mem::take(&mut pending.1);
                r.syscall.set_args((!args.is_empty()).then_some(args));
            }
        }
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |msg: String| SeccompError::Syntax { line, msg };
            let body = raw.split('#').next().unwrap_or("");
            let indented = body.starts_with(' ') || body.starts_with('\t');
            let words: Vec<&str> = body.split_whitespace().collect();
            let Some((&kw, rest)) = words.split_first() else {
                continue;
            };
            if indented {
                let Some(rule) = p.rules.last_mut() else {
                    return Err(err("indented line outside a rule".into()));
                };
                match kw {
                    "names" => pending.0.extend(rest.iter().map(|s| s.to_string())),
                    "arg" => pending.1.push(parse_arg_words(rest).map_err(err)?),
                    "if" | "unless" => {
                        let f = if kw == "if" { &mut rule.includes } else { &mut rule.excludes };
                        match rest.split_first() {
                            Some((&"caps", v)) => f.caps.extend(v.iter().map(|s| s.to_string())),
                            Some((&"arches", v)) => f.arches.extend(v.iter().map(|s| s.to_string())),
                            Some((&"minkernel", [v])) => {
                                f.min_kernel = Some(
                                    parse_kernel(v)
                                        .ok_or_else(|| err(format!("bad kernel version {v:?}")))?,
                                )
                            }
                            _ => return Err(err(format!("bad condition {:?}", rest.join(" ")))),
                        }
                    }
                    _ => return Err(err(format!("unknown rule line {kw:?}"))),
                }
                continue;
            }
            match kw {
                "default" => {
                    let (a, e) = parse_action_words(rest).map_err(err)?;
                    p.default_action = a;
                    p.default_errno_ret = e;
                    have_default = true;
                }
                "archmap" => {
                    let mut it = rest.iter().map(|s| parse_arch(s));
                    let Some(a) = it.next() else {
                        return Err(err("archmap needs an arch".into()));
                    };
                    let subs = it.collect::<Result<Vec<_>, _>>().map_err(err)?;
                    p.arch_map.push((a.map_err(err)?, subs));
                }
                "arch" => {
                    for a in rest {
                        p.architectures.push(parse_arch(a).map_err(err)?);
                    }
                }
                "rule" => {
                    flush(&mut p.rules, &mut pending);
                    let (a, e) = parse_action_words(rest).map_err(err)?;
                    let mut s = LinuxSyscall::default();
                    s.set_action(a);
                    s.set_errno_ret(e);
                    p.rules.push(ProfileRule {
                        syscall: s,
                        includes: Filter::default(),
                        excludes: Filter::default(),
                    });
                }
                _ => return Err(err(format!("unknown keyword {kw:?}"))),
            }
        }
        flush(&mut p.rules, &mut pending);
        if !have_default {
            return Err(SeccompError::Syntax { line: 0, msg: "no default action".into() });
        }
        Ok(p)
    }

    /// Parses Docker's JSON profile format. `Ok(None)`: no default action and
    /// no rules, which Docker takes as "seccomp disabled".
    pub fn parse_docker_json(json: &[u8]) -> Result<Option<Profile>, SeccompError> {
        let d: DockerProfile = serde_json::from_slice(json).map_err(SeccompError::Json)?;
        let Some(default_action) = d.default_action else {
            if d.syscalls.is_empty() {
                return Ok(None);
            }
            return Err(SeccompError::Invalid("defaultAction missing".into()));
        };
        if !d.architectures.is_empty() && !d.arch_map.is_empty() {
            return Err(SeccompError::Invalid(
                "both 'architectures' and 'archMap' are specified in the seccomp profile, use either 'architectures' or 'archMap'".into(),
            ));
        }
        let mut rules = Vec::with_capacity(d.syscalls.len());
        for s in d.syscalls {
            let mut names = s.names;
            if let Some(n) = s.name {
                if !names.is_empty() {
                    return Err(SeccompError::Invalid(
                        "both 'name' and 'names' are specified in the seccomp profile, use either 'name' or 'names'"
                            .into(),
                    ));
                }
                names.push(n);
            }
            let mut sc = LinuxSyscall::default();
            sc.set_names(names);
            sc.set_action(s.action);
            sc.set_errno_ret(s.errno_ret);
            sc.set_args((!s.args.is_empty()).then_some(s.args));
            rules.push(ProfileRule {
                syscall: sc,
                includes: s.includes.unwrap_or_default(),
                excludes: s.excludes.unwrap_or_default(),
            });
        }
        Ok(Some(Profile {
            default_action,
            default_errno_ret: d.default_errno_ret,
            architectures: d.architectures,
            arch_map: d
                .arch_map
                .into_iter()
                .map(|a| (a.architecture, a.sub_architectures.unwrap_or_default()))
                .collect(),
            flags: d.flags,
            rules,
        }))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerProfile {
    default_action: Option<LinuxSeccompAction>,
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<Arch>,
    #[serde(default)]
    arch_map: Vec<DockerArch>,
    #[serde(default)]
    flags: Vec<LinuxSeccompFilterFlag>,
    #[serde(default, deserialize_with = "de_null_vec")]
    syscalls: Vec<DockerSyscall>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerArch {
    architecture: Arch,
    sub_architectures: Option<Vec<Arch>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerSyscall {
    name: Option<String>,
    #[serde(default, deserialize_with = "de_null_vec")]
    names: Vec<String>,
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "de_null_vec")]
    args: Vec<LinuxSeccompArg>,
    includes: Option<Filter>,
    excludes: Option<Filter>,
}

fn de_null_vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

fn parse_arch(s: &str) -> Result<Arch, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("unknown arch {s:?}"))
}

fn parse_num(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("bad number {s:?}"))
}

fn parse_action_words(w: &[&str]) -> Result<(LinuxSeccompAction, Option<u32>), String> {
    use LinuxSeccompAction as A;
    let num = |w: &[&str]| -> Result<Option<u32>, String> {
        match w {
            [] => Ok(None),
            [n] => u32::try_from(parse_num(n)?).map(Some).map_err(|_| format!("bad number {n:?}")),
            _ => Err(format!("trailing words {:?}", w.join(" "))),
        }
    };
    let Some((&a, rest)) = w.split_first() else {
        return Err("missing action".into());
    };
    let action = match a {
        "allow" => A::ScmpActAllow,
        "errno" => A::ScmpActErrno,
        "kill" => A::ScmpActKill,
        "kill-thread" => A::ScmpActKillThread,
        "kill-process" => A::ScmpActKillProcess,
        "trap" => A::ScmpActTrap,
        "trace" => A::ScmpActTrace,
        "log" => A::ScmpActLog,
        "notify" => A::ScmpActNotify,
        _ => return Err(format!("unknown action {a:?}")),
    };
    let n = num(rest)?;
    if n.is_some() && !matches!(action, A::ScmpActErrno | A::ScmpActTrace) {
        return Err(format!("action {a} takes no number"));
    }
    Ok((action, n))
}

fn parse_arg_words(w: &[&str]) -> Result<LinuxSeccompArg, String> {
    use LinuxSeccompOperator as O;
    let (idx, op, v, v2) = match w {
        [i, op, v] => (i, op, v, None),
        [i, op, v, v2] => (i, op, v, Some(parse_num(v2)?)),
        _ => return Err("arg needs INDEX OP VALUE [VALUE2]".into()),
    };
    let op = match *op {
        "eq" => O::ScmpCmpEq,
        "ne" => O::ScmpCmpNe,
        "lt" => O::ScmpCmpLt,
        "le" => O::ScmpCmpLe,
        "ge" => O::ScmpCmpGe,
        "gt" => O::ScmpCmpGt,
        "masked-eq" => O::ScmpCmpMaskedEq,
        other => return Err(format!("unknown operator {other:?}")),
    };
    let mut b = LinuxSeccompArgBuilder::default()
        .index(usize::try_from(parse_num(idx)?).map_err(|_| "bad index".to_string())?)
        .value(parse_num(v)?)
        .op(op);
    if let Some(v2) = v2 {
        b = b.value_two(v2);
    }
    b.build().map_err(|e| e.to_string())
}

/// moby's default profile for a container with capabilities `caps` on
/// `arch` (normally [`native_arch`]).
pub fn docker_default(caps_: &LinuxCapabilities, arch: Arch) -> LinuxSeccomp {
    match Profile::parse_text(DEFAULT_PROFILE) {
        Ok(p) => p.into_resolved(&Target::new(caps_, arch)),
        // The embedded profile is tested to parse; should it ever not, deny
        // everything rather than run unconfined.
        Err(_) => {
            let mut s = LinuxSeccomp::default();
            s.set_default_action(LinuxSeccompAction::ScmpActErrno);
            s
        }
    }
}

/// A profile in Docker's JSON format, filtered for `caps` and `arch` like the
/// default. `Ok(None)` when the profile disables seccomp.
pub fn parse_docker_profile(
    json: &[u8],
    caps_: &LinuxCapabilities,
    arch: Arch,
) -> Result<Option<LinuxSeccomp>, SeccompError> {
    Ok(Profile::parse_docker_json(json)?.map(|p| p.into_resolved(&Target::new(caps_, arch))))
}

// ---------------------------------------------------------------------------
// BPF

/// One classic BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// A compiled filter and the flags to load it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfProgram {
    pub insns: Vec<SockFilter>,
    /// SECCOMP_FILTER_FLAG_* bits (LOG, SPEC_ALLOW); never TSYNC.
    pub flags: u32,
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JEQ: u16 = 0x15;
const BPF_JGT: u16 = 0x25;
const BPF_JGE: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
const BPF_ALU_AND_K: u16 = 0x54;
const BPF_MAXINSNS: usize = 4096;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;

#[derive(Clone, Copy)]
enum Jmp {
    /// Skip n instructions.
    Skip(u8),
    Label(usize),
}

enum Op {
    Stmt(u16, u32),
    Jump(u16, u32, Jmp, Jmp),
    Ja(usize),
    Bind(usize),
}

#[derive(Default)]
struct Asm {
    ops: Vec<Op>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }
    fn stmt(&mut self, code: u16, k: u32) {
        self.ops.push(Op::Stmt(code, k));
    }
    fn jump(&mut self, code: u16, k: u32, jt: Jmp, jf: Jmp) {
        self.ops.push(Op::Jump(code, k, jt, jf));
    }
    fn ja(&mut self, l: usize) {
        self.ops.push(Op::Ja(l));
    }
    fn bind(&mut self, l: usize) {
        self.ops.push(Op::Bind(l));
    }
    fn ret(&mut self, k: u32) {
        self.stmt(BPF_RET_K, k);
    }
    fn finish(self) -> Result<Vec<SockFilter>, SeccompError> {
        let mut pos = vec![usize::MAX; self.labels];
        let mut n = 0usize;
        for op in &self.ops {
            match op {
                Op::Bind(l) => pos[*l] = n,
                _ => n += 1,
            }
        }
        if n > BPF_MAXINSNS {
            return Err(SeccompError::TooLarge(n));
        }
        let mut out = Vec::with_capacity(n);
        let off = |at: usize, j: Jmp| -> Result<u8, SeccompError> {
            match j {
                Jmp::Skip(s) => Ok(s),
                Jmp::Label(l) => {
                    let t = pos.get(l).copied().unwrap_or(usize::MAX);
                    t.checked_sub(at + 1).and_then(|d| u8::try_from(d).ok()).ok_or(SeccompError::JumpRange)
                }
            }
        };
        for op in &self.ops {
            let at = out.len();
            match op {
                Op::Bind(_) => {}
                Op::Stmt(code, k) => out.push(SockFilter { code: *code, jt: 0, jf: 0, k: *k }),
                Op::Jump(code, k, jt, jf) => {
                    out.push(SockFilter { code: *code, jt: off(at, *jt)?, jf: off(at, *jf)?, k: *k })
                }
                Op::Ja(l) => {
                    let t = pos.get(*l).copied().unwrap_or(usize::MAX);
                    let d = t.checked_sub(at + 1).ok_or(SeccompError::JumpRange)?;
                    out.push(SockFilter {
                        code: BPF_JMP_JA,
                        jt: 0,
                        jf: 0,
                        k: u32::try_from(d).map_err(|_| SeccompError::JumpRange)?,
                    });
                }
            }
        }
        Ok(out)
    }
}

fn action_value(action: LinuxSeccompAction, errno: Option<u32>) -> Result<u32, SeccompError> {
    use LinuxSeccompAction as A;
    match action {
        A::ScmpActNotify => Err(SeccompError::UnsupportedAction("SCMP_ACT_NOTIFY".into())),
        A::ScmpActErrno => Ok(RET_ERRNO | (errno.unwrap_or(libc::EPERM as u32) & 0xffff)),
        A::ScmpActTrace => Ok(0x7ff0_0000 | (errno.unwrap_or(0) & 0xffff)),
        other => Ok(other.as_u32(None)),
    }
}

#[derive(Clone, Copy)]
struct Cond {
    index: u32,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: u64,
}

#[derive(Default)]
struct Entry {
    named: bool,
    conditional: Vec<(Vec<Cond>, u32)>,
    fallback: Option<u32>,
}

struct Section {
    audit_arch: u32,
    table: &'static [(&'static str, u32)],
    /// Added to every number (x32).
    bias: u32,
    wide_args: bool,
}

/// Slots of the open-addressing index over a syscall table (a power of two,
/// at least twice the largest table).
const INDEX_SLOTS: usize = 2048;

fn fnv1a(s: &str) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h as usize
}

/// A hash index (slot -> table position + 1) over a table, built once per
/// process: a binary search costs ~9 string comparisons per name, and the
/// default profile resolves ~1300 names for x86_64, i386 and x32.
fn index_of(table: &'static [(&'static str, u32)]) -> &'static [u16] {
    use std::sync::OnceLock;
    static INDEXES: [OnceLock<Vec<u16>>; 4] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let which = [syscalls::X86_64, syscalls::I386, syscalls::X32, syscalls::AARCH64]
        .iter()
        .position(|t| std::ptr::eq(t.as_ptr(), table.as_ptr()))
        .unwrap_or(0);
    INDEXES[which].get_or_init(|| {
        let mut slots = vec![0u16; INDEX_SLOTS];
        for (i, (name, _)) in table.iter().enumerate() {
            let mut h = fnv1a(name) & (INDEX_SLOTS - 1);
            while slots[h] != 0 {
                h = (h + 1) & (INDEX_SLOTS - 1);
            }
            slots[h] = (i + 1) as u16;
        }
        slots
    })
}

fn lookup(table: &'static [(&'static str, u32)], name: &str) -> Option<u32> {
    let index = index_of(table);
    let mut h = fnv1a(name) & (INDEX_SLOTS - 1);
    loop {
        let i = usize::from(*index.get(h)?);
        if i == 0 {
            return None;
        }
        let (n, nr) = table.get(i - 1)?;
        if *n == name {
            return Some(*nr);
        }
        h = (h + 1) & (INDEX_SLOTS - 1);
    }
}

/// Rules per syscall number, sorted by number; the highest number named.
type Entries = (Vec<(u32, Entry)>, Option<u32>);

/// The rules per syscall number (sorted by number), and the highest number
/// the profile names (whatever the action; for the ENOSYS stub).
fn entries_for(seccomp: &LinuxSeccomp, default: u32, sec: &Section) -> Result<Entries, SeccompError> {
    // Indexed by number: tables are dense and small (< 1024).
    let top = sec.table.iter().map(|(_, n)| *n).max().unwrap_or(0) as usize;
    let mut map: Vec<Entry> = std::iter::repeat_with(Entry::default).take(top + 1).collect();
    let mut max_named: Option<u32> = None;
    for sc in seccomp.syscalls().as_deref().unwrap_or(&[]) {
        let action = action_value(sc.action(), sc.errno_ret())?;
        if action == default {
            for name in sc.names() {
                if let Some(nr) = lookup(sec.table, name) {
                    max_named = max_named.max(Some(nr));
                }
            }
            continue;
        }
        let args = sc.args().as_deref().unwrap_or(&[]);
        let mut conds = Vec::with_capacity(args.len());
        let mut seen = [0u8; 6];
        for a in args {
            let index = a.index();
            if index >= 6 {
                return Err(SeccompError::Invalid(format!("argument index {index} out of range")));
            }
            seen[index] += 1;
            conds.push(Cond {
                index: index as u32,
                op: a.op(),
                value: a.value(),
                value_two: a.value_two().unwrap_or(0),
            });
        }
        // One rule with all conditions, or one rule per condition when an
        // index repeats.
        let rules: Vec<Vec<Cond>> = if seen.iter().any(|&c| c > 1) {
            conds.into_iter().map(|c| vec![c]).collect()
        } else {
            vec![conds]
        };
        for name in sc.names() {
            let Some(nr) = lookup(sec.table, name) else {
                continue;
            };
            max_named = max_named.max(Some(nr));
            let Some(e) = map.get_mut(nr as usize) else {
                continue;
            };
            e.named = true;
            for r in &rules {
                if r.is_empty() {
                    if e.fallback.is_none() {
                        e.fallback = Some(action);
                    }
                } else {
                    e.conditional.push((r.clone(), action));
                }
            }
        }
    }
    let entries = map
        .into_iter()
        .enumerate()
        .filter(|(_, e)| e.named)
        .map(|(nr, e)| (nr as u32 | sec.bias, e))
        .collect();
    Ok((entries, max_named))
}

/// Emits one argument condition: falls through when it holds, jumps to
/// `fail` when it does not.
fn emit_cond(asm: &mut Asm, c: &Cond, wide: bool, fail: usize) {
    use LinuxSeccompOperator as O;
    let lo_off = OFF_ARGS + 8 * c.index;
    let hi_off = lo_off + 4;
    let (v, v2) = (c.value, c.value_two);
    let lo = |x: u64| x as u32;
    let hi = |x: u64| (x >> 32) as u32;
    let pass = asm.label();
    let f = Jmp::Label(fail);
    let p = Jmp::Label(pass);
    // For ops that are the negation of another, emit the positive test with
    // pass and fail swapped.
    let (op, t, e) = match c.op {
        O::ScmpCmpNe => (O::ScmpCmpEq, f, p),
        O::ScmpCmpLt => (O::ScmpCmpGe, f, p),
        O::ScmpCmpLe => (O::ScmpCmpGt, f, p),
        other => (other, p, f),
    };
    // (t, e): where to go when the positive test is true / false.
    match op {
        O::ScmpCmpMaskedEq => {
            if wide {
                asm.stmt(BPF_LD_W_ABS, hi_off);
                asm.stmt(BPF_ALU_AND_K, hi(v));
                asm.jump(BPF_JEQ, hi(v2), Jmp::Skip(0), e);
            }
            asm.stmt(BPF_LD_W_ABS, lo_off);
            asm.stmt(BPF_ALU_AND_K, lo(v));
            asm.jump(BPF_JEQ, lo(v2), t, e);
        }
        O::ScmpCmpGt | O::ScmpCmpGe => {
            if wide {
                asm.stmt(BPF_LD_W_ABS, hi_off);
                asm.jump(BPF_JGT, hi(v), t, Jmp::Skip(0));
                asm.jump(BPF_JEQ, hi(v), Jmp::Skip(0), e);
            }
            asm.stmt(BPF_LD_W_ABS, lo_off);
            let code = if op == O::ScmpCmpGt { BPF_JGT } else { BPF_JGE };
            asm.jump(code, lo(v), t, e);
        }
        _ => {
            if wide {
                asm.stmt(BPF_LD_W_ABS, hi_off);
                asm.jump(BPF_JEQ, hi(v), Jmp::Skip(0), e);
            }
            asm.stmt(BPF_LD_W_ABS, lo_off);
            asm.jump(BPF_JEQ, lo(v), t, e);
        }
    }
    asm.bind(pass);
}

/// Where a run of syscall numbers goes: straight to a return value, or to
/// the argument tests of one syscall (a label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ret(u32),
    Body(usize),
}

/// The runs: (first number, outcome), sorted, the first starting at 0,
/// each lasting until the next one starts; adjacent runs never share a
/// return value. `leaves`: (nr, body label, simple?, simple action), sorted
/// by number; numbers not among them get `default`.
fn runs(leaves: &[(u32, usize, bool, u32)], default: u32) -> Vec<(u32, Outcome)> {
    fn push(runs: &mut Vec<(u32, Outcome)>, start: u32, o: Outcome) {
        if runs.last().is_some_and(|l| l.0 == start) {
            runs.pop();
        }
        if matches!(o, Outcome::Ret(_)) && runs.last().is_some_and(|l| l.1 == o) {
            return;
        }
        runs.push((start, o));
    }
    let mut out = vec![(0, Outcome::Ret(default))];
    for &(nr, body, simple, action) in leaves {
        push(&mut out, nr, if simple { Outcome::Ret(action) } else { Outcome::Body(body) });
        if let Some(next) = nr.checked_add(1) {
            push(&mut out, next, Outcome::Ret(default));
        }
    }
    out
}

/// Instructions [`emit_runs`] emits for `runs`.
fn runs_size(runs: &[(u32, Outcome)]) -> usize {
    if runs.len() <= 1 {
        return 1;
    }
    let (left, right) = runs.split_at(runs.len() / 2);
    let l = runs_size(left);
    // A conditional jump reaches 255 instructions; beyond, a JA follows it.
    (if l <= 255 { 1 } else { 2 }) + l + runs_size(right)
}

/// A binary search over the runs' first numbers; the accumulator holds nr.
fn emit_runs(asm: &mut Asm, runs: &[(u32, Outcome)]) {
    match runs {
        [] => {}
        [(_, Outcome::Ret(k))] => asm.ret(*k),
        [(_, Outcome::Body(l))] => asm.ja(*l),
        _ => {
            let (left, right) = runs.split_at(runs.len() / 2);
            let to_right = asm.label();
            if runs_size(left) <= 255 {
                asm.jump(BPF_JGE, right[0].0, Jmp::Label(to_right), Jmp::Skip(0));
            } else {
                asm.jump(BPF_JGE, right[0].0, Jmp::Skip(0), Jmp::Skip(1));
                asm.ja(to_right);
            }
            emit_runs(asm, left);
            asm.bind(to_right);
            emit_runs(asm, right);
        }
    }
}

/// How the numbers are searched (see the module header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Runs,
    /// One leaf per named number: the earlier layout, the tests' reference.
    #[cfg(test)]
    PerNumber,
}

#[cfg(test)]
const LEAF: usize = 4;

#[cfg(test)]
fn emit_tree(asm: &mut Asm, entries: &[(u32, usize, bool, u32)], default: u32) {
    // entries: (nr, body label, simple?, simple action)
    if entries.len() <= LEAF {
        for &(nr, body, simple, action) in entries {
            asm.jump(BPF_JEQ, nr, Jmp::Skip(0), Jmp::Skip(1));
            if simple {
                asm.ret(action);
            } else {
                asm.ja(body);
            }
        }
        asm.ret(default);
        return;
    }
    let mid = entries.len() / 2;
    let right = asm.label();
    asm.jump(BPF_JGE, entries[mid].0, Jmp::Skip(0), Jmp::Skip(1));
    asm.ja(right);
    emit_tree(asm, &entries[..mid], default);
    asm.bind(right);
    emit_tree(asm, &entries[mid..], default);
}

fn emit_section(
    asm: &mut Asm,
    seccomp: &LinuxSeccomp,
    default: u32,
    enosys_stub: bool,
    sec: &Section,
    layout: Layout,
) -> Result<(), SeccompError> {
    let (map, max_named) = entries_for(seccomp, default, sec)?;
    if enosys_stub {
        if let Some(max) = max_named {
            asm.jump(BPF_JGT, max | sec.bias, Jmp::Skip(0), Jmp::Skip(1));
            asm.ret(RET_ERRNO | libc::ENOSYS as u32);
        }
    }
    let mut leaves = Vec::with_capacity(map.len());
    let mut bodies = Vec::new();
    for (nr, e) in &map {
        if e.conditional.is_empty() {
            leaves.push((*nr, 0, true, e.fallback.unwrap_or(default)));
        } else {
            let l = asm.label();
            leaves.push((*nr, l, false, 0));
            bodies.push((l, e));
        }
    }
    match layout {
        Layout::Runs => emit_runs(asm, &runs(&leaves, default)),
        #[cfg(test)]
        Layout::PerNumber => emit_tree(asm, &leaves, default),
    }
    for (l, e) in bodies {
        asm.bind(l);
        for (conds, action) in &e.conditional {
            let next = asm.label();
            for c in conds {
                emit_cond(asm, c, sec.wide_args, next);
            }
            asm.ret(*action);
            asm.bind(next);
        }
        asm.ret(e.fallback.unwrap_or(default));
    }
    Ok(())
}

/// Compiles an OCI seccomp profile into a BPF program for the native arch
/// (x86_64 with its i386 and x32 sub-arches, or aarch64).
pub fn compile(seccomp: &LinuxSeccomp) -> Result<BpfProgram, SeccompError> {
    compile_with(seccomp, Layout::Runs)
}

fn compile_with(seccomp: &LinuxSeccomp, layout: Layout) -> Result<BpfProgram, SeccompError> {
    let default = action_value(seccomp.default_action(), seccomp.default_errno_ret())?;
    let native = native_arch();
    let listed: Vec<Arch> = match seccomp.architectures().as_deref() {
        Some(a) if !a.is_empty() => a.to_vec(),
        _ => vec![native],
    };
    let wants = |a: Arch| listed.contains(&a) || (a == native && listed.contains(&Arch::ScmpArchNative));
    let mut sections: Vec<(Section, bool)> = Vec::new();
    match native {
        Arch::ScmpArchX86_64 => {
            if wants(Arch::ScmpArchX86_64) || wants(Arch::ScmpArchX32) {
                sections.push((
                    Section {
                        audit_arch: AUDIT_ARCH_X86_64,
                        table: syscalls::X86_64,
                        bias: 0,
                        wide_args: true,
                    },
                    wants(Arch::ScmpArchX86_64),
                ));
            }
            if wants(Arch::ScmpArchX86) {
                sections.push((
                    Section { audit_arch: AUDIT_ARCH_I386, table: syscalls::I386, bias: 0, wide_args: false },
                    true,
                ));
            }
        }
        Arch::ScmpArchAarch64 => {
            if wants(Arch::ScmpArchAarch64) {
                sections.push((
                    Section {
                        audit_arch: AUDIT_ARCH_AARCH64,
                        table: syscalls::AARCH64,
                        bias: 0,
                        wide_args: true,
                    },
                    true,
                ));
            }
        }
        other => return Err(SeccompError::UnsupportedArch(other)),
    }
    let enosys_stub = default != RET_ALLOW;
    let mut asm = Asm::default();
    asm.stmt(BPF_LD_W_ABS, OFF_ARCH);
    let labels: Vec<usize> = sections.iter().map(|_| asm.label()).collect();
    for ((sec, _), l) in sections.iter().zip(&labels) {
        asm.jump(BPF_JEQ, sec.audit_arch, Jmp::Skip(0), Jmp::Skip(1));
        asm.ja(*l);
    }
    asm.ret(RET_KILL_PROCESS);
    for ((sec, native_ok), l) in sections.iter().zip(&labels) {
        asm.bind(*l);
        asm.stmt(BPF_LD_W_ABS, OFF_NR);
        if sec.audit_arch == AUDIT_ARCH_X86_64 {
            // x32 shares the x86_64 audit arch; bit 30 of nr tells it apart.
            let x32 = asm.label();
            asm.jump(BPF_JGE, X32_SYSCALL_BIT, Jmp::Skip(0), Jmp::Skip(1));
            asm.ja(x32);
            if *native_ok {
                emit_section(&mut asm, seccomp, default, enosys_stub, sec, layout)?;
            } else {
                asm.ret(RET_KILL_PROCESS);
            }
            asm.bind(x32);
            if wants(Arch::ScmpArchX32) {
                let x = Section {
                    audit_arch: AUDIT_ARCH_X86_64,
                    table: syscalls::X32,
                    bias: X32_SYSCALL_BIT,
                    wide_args: true,
                };
                emit_section(&mut asm, seccomp, default, enosys_stub, &x, layout)?;
            } else {
                asm.ret(RET_KILL_PROCESS);
            }
        } else {
            emit_section(&mut asm, seccomp, default, enosys_stub, sec, layout)?;
        }
    }
    let insns = asm.finish()?;
    let mut flags = 0u32;
    for f in seccomp.flags().as_deref().unwrap_or(&[]) {
        match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => flags |= 2,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => flags |= 4,
            // TSYNC: the init is single-threaded; WAIT_KILLABLE_RECV only
            // matters with notify, which is not supported.
            _ => {}
        }
    }
    Ok(BpfProgram { insns, flags })
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

/// Sets PR_SET_NO_NEW_PRIVS on the calling thread (inherited by children,
/// kept across execve; cannot be undone).
pub fn no_new_privs() -> Result<(), SeccompError> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_NO_NEW_PRIVS,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        return Err(SeccompError::Syscall {
            op: "prctl(PR_SET_NO_NEW_PRIVS)",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Installs the program on the calling thread with
/// seccomp(SECCOMP_SET_MODE_FILTER). Needs no_new_privs or CAP_SYS_ADMIN
/// (see the module header for the order).
pub fn load(prog: &BpfProgram) -> Result<(), SeccompError> {
    let len = u16::try_from(prog.insns.len()).map_err(|_| SeccompError::TooLarge(prog.insns.len()))?;
    let fprog = SockFprog { len, filter: prog.insns.as_ptr() };
    const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
    // SAFETY: fprog points at prog.insns, which outlives the call; the kernel
    // copies the program before returning.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            libc::c_ulong::from(prog.flags),
            &fprog as *const SockFprog,
        )
    };
    if rc != 0 {
        return Err(SeccompError::Syscall {
            op: "seccomp(SECCOMP_SET_MODE_FILTER)",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
