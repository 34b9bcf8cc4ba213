//! Unit tests of the seccomp profile, compiler and loader. The loading tests
//! fork a child, install a filter there and check real syscall results.

use super::*;
use crate::security::caps;
use oci_spec::runtime::Capability;

fn x86_64(c: &LinuxCapabilities) -> LinuxSeccomp {
    docker_default(c, Arch::ScmpArchX86_64)
}

fn rules_for<'a>(s: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
    s.syscalls().as_deref().unwrap_or(&[]).iter().filter(|r| r.names().iter().any(|n| n == name)).collect()
}

#[test]
fn embedded_profile_parses() {
    let p = Profile::parse_text(DEFAULT_PROFILE).unwrap();
    assert_eq!(p.default_action, LinuxSeccompAction::ScmpActErrno);
    assert_eq!(p.default_errno_ret, Some(1));
    assert_eq!(p.rules.len(), 33);
    let names: usize = p.rules.iter().map(|r| r.syscall.names().len()).sum();
    assert_eq!(names, 442);
}

#[test]
fn default_profile_shape() {
    let s = x86_64(&caps::docker_default());
    assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(s.default_errno_ret(), Some(1));
    assert_eq!(
        s.architectures().clone().unwrap(),
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    );
    // reboot is gated on CAP_SYS_BOOT, mount/unshare on CAP_SYS_ADMIN.
    assert!(rules_for(&s, "reboot").is_empty());
    assert!(rules_for(&s, "mount").is_empty());
    assert!(rules_for(&s, "unshare").is_empty());
    // clone carries the CLONE_NEW* mask without SYS_ADMIN.
    let clone = rules_for(&s, "clone");
    assert_eq!(clone.len(), 1);
    let a = clone[0].args().clone().unwrap();
    assert_eq!(a[0].index(), 0);
    assert_eq!(a[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
    assert_eq!(a[0].value(), 0x7e02_0000);
    // clone3 answers ENOSYS so libc falls back to clone.
    let c3 = rules_for(&s, "clone3");
    assert_eq!((c3[0].action(), c3[0].errno_ret()), (LinuxSeccompAction::ScmpActErrno, Some(38)));
    // arch-gated: arch_prctl on amd64, not the arm-only ones.
    assert!(!rules_for(&s, "arch_prctl").is_empty());
    assert!(rules_for(&s, "arm_fadvise64_64").is_empty());
    // socket: three rules around AF_VSOCK (40).
    assert_eq!(rules_for(&s, "socket").len(), 3);
    assert_eq!(rules_for(&s, "personality").len(), 5);
    // Unconditional allow-list + minkernel 4.8 rule + 3 socket + 5 personality
    // + 2 amd64 arch rules + chroot (CAP_SYS_CHROOT) + clone + clone3.
    assert_eq!(s.syscalls().as_ref().unwrap().len(), 1 + 1 + 3 + 5 + 2 + 1 + 1 + 1);
    assert_eq!(rules_for(&s, "chroot").len(), 1);
}

#[test]
fn caps_open_rules() {
    let mut set = caps::DOCKER_DEFAULT.to_vec();
    set.extend([Capability::SysAdmin, Capability::SysBoot]);
    let c = caps::uniform(set.into_iter().collect());
    let s = x86_64(&c);
    assert_eq!(rules_for(&s, "reboot").len(), 1);
    let clone = rules_for(&s, "clone");
    assert_eq!(clone.len(), 1);
    assert!(clone[0].args().is_none(), "unconditional clone with SYS_ADMIN");
    assert!(rules_for(&s, "clone3").iter().all(|r| r.action() == LinuxSeccompAction::ScmpActAllow));
    assert!(!rules_for(&s, "mount").is_empty());
}

#[test]
fn aarch64_arches() {
    let s = docker_default(&caps::docker_default(), Arch::ScmpArchAarch64);
    assert_eq!(s.architectures().clone().unwrap(), vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]);
    assert!(rules_for(&s, "arch_prctl").is_empty());
    assert!(!rules_for(&s, "arm_fadvise64_64").is_empty());
}

#[test]
fn docker_json_matches_line_format() {
    // The same facts written in Docker's JSON format resolve identically.
    let json = br#"{
      "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
      "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
      "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["reboot"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_BOOT"]}},
        {"name": "ptrace", "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
         "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}}
      ]}"#;
    let text = "default errno 1\narchmap SCMP_ARCH_X86_64 SCMP_ARCH_X86 SCMP_ARCH_X32\n\
        rule allow\n  names read write\nrule allow\n  names reboot\n  if caps CAP_SYS_BOOT\n\
        rule allow\n  names ptrace\n  if minkernel 4.8\n\
        rule allow\n  names clone\n  arg 0 masked-eq 2114060288 0\n  unless caps CAP_SYS_ADMIN\n  unless arches s390 s390x\n";
    let c = caps::docker_default();
    let a = parse_docker_profile(json, &c, Arch::ScmpArchX86_64).unwrap().unwrap();
    let b = Profile::parse_text(text).unwrap().resolve(&Target::new(&c, Arch::ScmpArchX86_64));
    assert_eq!(a, b);
    assert_eq!(a.syscalls().as_ref().unwrap().len(), 3);
    // Docker: an empty profile means unconfined.
    assert!(parse_docker_profile(b"{}", &c, Arch::ScmpArchX86_64).unwrap().is_none());
    assert!(parse_docker_profile(b"{\"defaultAction\": 7}", &c, Arch::ScmpArchX86_64).is_err());
    assert!(parse_docker_profile(
        br#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],"archMap":[{"architecture":"SCMP_ARCH_X86_64"}]}"#,
        &c,
        Arch::ScmpArchX86_64
    )
    .is_err());
}

#[test]
fn minkernel_filters() {
    let text = "default errno 1\nrule allow\n  names ptrace\n  if minkernel 4.8\nrule allow\n  names kcmp\n  unless minkernel 99.0\n";
    let p = Profile::parse_text(text).unwrap();
    let mut t = Target::new(&caps::docker_default(), Arch::ScmpArchX86_64);
    t.kernel = (4, 7);
    assert_eq!(p.resolve(&t).syscalls().as_ref().unwrap().len(), 1);
    t.kernel = (6, 1);
    assert_eq!(p.resolve(&t).syscalls().as_ref().unwrap().len(), 2);
}

#[test]
fn syntax_errors_are_located() {
    let e = Profile::parse_text("default errno 1\nrule allow\n  names a\n  arg 0 wat 1\n").unwrap_err();
    assert!(matches!(e, SeccompError::Syntax { line: 4, .. }), "{e}");
    assert!(Profile::parse_text("rule allow\n").is_err());
    assert!(Profile::parse_text("default errno 1\n  names x\n").is_err());
}

#[test]
fn compile_default_is_fast_and_small() {
    let c = caps::docker_default();
    let t = std::time::Instant::now();
    let mut n = 0;
    for _ in 0..100 {
        let s = docker_default(&c, native_arch());
        n = compile(&s).unwrap().insns.len();
    }
    let per = t.elapsed() / 100;
    eprintln!("default profile: parse+resolve+compile {per:?} per run, {n} instructions");
    assert!(n > 300 && n <= 4096, "{n}");
}

// ---------------------------------------------------------------------------
// A tiny BPF interpreter: checks the compiler's output without the kernel.

fn run_bpf(prog: &[SockFilter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u32; 16];
    data[0] = nr;
    data[1] = arch;
    for (i, a) in args.iter().enumerate() {
        data[4 + 2 * i] = *a as u32;
        data[5 + 2 * i] = (*a >> 32) as u32;
    }
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        pc += 1;
        match i.code {
            BPF_LD_W_ABS => acc = data[(i.k / 4) as usize],
            BPF_ALU_AND_K => acc &= i.k,
            BPF_RET_K => return i.k,
            BPF_JMP_JA => pc += i.k as usize,
            BPF_JEQ | BPF_JGT | BPF_JGE => {
                let t = match i.code {
                    BPF_JEQ => acc == i.k,
                    BPF_JGT => acc > i.k,
                    _ => acc >= i.k,
                };
                pc += if t { i.jt } else { i.jf } as usize;
            }
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
}

const EPERM: u32 = RET_ERRNO | 1;

#[test]
fn interpreter_default_profile_x86_64() {
    let s = x86_64(&caps::docker_default());
    let p = compile(&s).unwrap().insns;
    let nr = |n: &str| lookup(syscalls::X86_64, n).unwrap();
    let call = |n: &str, a0: u64| run_bpf(&p, AUDIT_ARCH_X86_64, nr(n), [a0, 0, 0, 0, 0, 0]);
    assert_eq!(call("read", 0), RET_ALLOW);
    assert_eq!(call("execve", 0), RET_ALLOW);
    assert_eq!(call("reboot", 0), EPERM);
    assert_eq!(call("mount", 0), EPERM);
    assert_eq!(call("keyctl", 0), EPERM);
    assert_eq!(call("chroot", 0), RET_ALLOW, "CAP_SYS_CHROOT is a default cap");
    assert_eq!(call("clone3", 0), RET_ERRNO | 38);
    // clone: plain fork flags pass, any CLONE_NEW* is refused.
    assert_eq!(call("clone", libc::SIGCHLD as u64), RET_ALLOW);
    assert_eq!(call("clone", (libc::CLONE_NEWUSER as u64) | 17), EPERM);
    assert_eq!(call("clone", libc::CLONE_NEWNS as u64), EPERM);
    // A high bit set beyond 32 bits does not confuse the mask.
    assert_eq!(call("clone", 1u64 << 40), RET_ALLOW);
    // socket: AF_VSOCK (40) refused, neighbours allowed.
    assert_eq!(call("socket", 39), RET_ALLOW);
    assert_eq!(call("socket", 40), EPERM);
    assert_eq!(call("socket", 41), RET_ALLOW);
    assert_eq!(call("socket", 37), RET_ALLOW);
    assert_eq!(call("socket", 38), EPERM);
    assert_eq!(call("socket", 1u64 << 32), RET_ALLOW, "GT on the high half");
    // personality: only the listed values.
    assert_eq!(call("personality", 0), RET_ALLOW);
    assert_eq!(call("personality", 0xffff_ffff), RET_ALLOW);
    assert_eq!(call("personality", 1), EPERM);
    assert_eq!(call("personality", 0x1_0000_0000), EPERM);
    // Numbers above the highest named syscall: ENOSYS; gaps below: EPERM.
    assert_eq!(run_bpf(&p, AUDIT_ARCH_X86_64, 1000, [0; 6]), RET_ERRNO | 38);
    // A foreign arch is killed; i386 is handled by its own section.
    assert_eq!(run_bpf(&p, AUDIT_ARCH_AARCH64, 0, [0; 6]), RET_KILL_PROCESS);
    let i386_read = lookup(syscalls::I386, "read").unwrap();
    assert_eq!(run_bpf(&p, AUDIT_ARCH_I386, i386_read, [0; 6]), RET_ALLOW);
    let i386_reboot = lookup(syscalls::I386, "reboot").unwrap();
    assert_eq!(run_bpf(&p, AUDIT_ARCH_I386, i386_reboot, [0; 6]), EPERM);
    // x32 has its own numbers with bit 30.
    let x32_read = lookup(syscalls::X32, "read").unwrap() | X32_SYSCALL_BIT;
    assert_eq!(run_bpf(&p, AUDIT_ARCH_X86_64, x32_read, [0; 6]), RET_ALLOW);
    let x32_reboot = lookup(syscalls::X32, "reboot").unwrap() | X32_SYSCALL_BIT;
    assert_eq!(run_bpf(&p, AUDIT_ARCH_X86_64, x32_reboot, [0; 6]), EPERM);
    // Every syscall the profile allows unconditionally is allowed, every
    // number in the table that is not named is refused with EPERM.
    let allowed: std::collections::HashSet<&str> = s
        .syscalls()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
        .flat_map(|r| r.names().iter().map(|n| n.as_str()))
        .collect();
    for (name, n) in syscalls::X86_64 {
        let got = run_bpf(&p, AUDIT_ARCH_X86_64, *n, [0; 6]);
        if allowed.contains(name) {
            assert_eq!(got, RET_ALLOW, "{name}");
        } else if !["clone", "socket", "personality", "clone3"].contains(name) {
            assert!(got == EPERM || got == RET_ERRNO | 38, "{name}: {got:#x}");
        }
    }
}

#[test]
fn interpreter_all_operators() {
    use LinuxSeccompOperator as O;
    let mk = |op: O, v: u64, v2: Option<u64>| {
        let mut b = LinuxSeccompArgBuilder::default().index(2usize).op(op).value(v);
        if let Some(v2) = v2 {
            b = b.value_two(v2);
        }
        let a = b.build().unwrap();
        let mut sc = LinuxSyscall::default();
        sc.set_names(vec!["write".into()]);
        sc.set_action(LinuxSeccompAction::ScmpActAllow);
        sc.set_args(Some(vec![a]));
        let mut s = LinuxSeccomp::default();
        s.set_default_action(LinuxSeccompAction::ScmpActErrno);
        s.set_architectures(Some(vec![Arch::ScmpArchX86_64]));
        s.set_syscalls(Some(vec![sc]));
        compile(&s).unwrap().insns
    };
    let nr = lookup(syscalls::X86_64, "write").unwrap();
    let big = 0x1_0000_0005u64;
    let values = [0u64, 4, 5, 6, 0xffff_ffff, 0x1_0000_0000, big, big + 1, u64::MAX];
    for (op, f) in [
        (O::ScmpCmpEq, (|a: u64, v: u64| a == v) as fn(u64, u64) -> bool),
        (O::ScmpCmpNe, |a, v| a != v),
        (O::ScmpCmpLt, |a, v| a < v),
        (O::ScmpCmpLe, |a, v| a <= v),
        (O::ScmpCmpGt, |a, v| a > v),
        (O::ScmpCmpGe, |a, v| a >= v),
    ] {
        for v in [5u64, big] {
            let p = mk(op, v, None);
            for a in values {
                let want = if f(a, v) { RET_ALLOW } else { EPERM };
                assert_eq!(
                    run_bpf(&p, AUDIT_ARCH_X86_64, nr, [0, 0, a, 0, 0, 0]),
                    want,
                    "{op:?} {a:#x} vs {v:#x}"
                );
            }
        }
    }
    let mask = 0xff00_0000_00f0u64;
    let p = mk(O::ScmpCmpMaskedEq, mask, Some(0x1100_0000_0010));
    for a in values.iter().copied().chain([0x1100_0000_0010, 0x11ff_0000_001f, 0x1100_0000_0020]) {
        let want = if a & mask == 0x1100_0000_0010 { RET_ALLOW } else { EPERM };
        assert_eq!(run_bpf(&p, AUDIT_ARCH_X86_64, nr, [0, 0, a, 0, 0, 0]), want, "masked {a:#x}");
    }
}

#[test]
fn interpreter_actions_and_precedence() {
    let text = "default kill-process\narch SCMP_ARCH_X86_64\n\
        rule errno 13\n  names openat\n  arg 0 eq 5\n\
        rule allow\n  names openat\n\
        rule trap\n  names getpid\nrule log\n  names getuid\nrule trace 7\n  names getgid\n\
        rule kill-thread\n  names gettid\nrule errno\n  names getppid\n\
        rule allow\n  names write\n  arg 0 eq 1\n  arg 0 eq 2\n";
    let s = Profile::parse_text(text)
        .unwrap()
        .resolve(&Target::new(&caps::docker_default(), Arch::ScmpArchX86_64));
    let p = compile(&s).unwrap().insns;
    let nr = |n: &str| lookup(syscalls::X86_64, n).unwrap();
    let r = |n: &str, a0: u64| run_bpf(&p, AUDIT_ARCH_X86_64, nr(n), [a0, 0, 0, 0, 0, 0]);
    assert_eq!(r("openat", 5), RET_ERRNO | 13);
    assert_eq!(r("openat", 6), RET_ALLOW);
    assert_eq!(r("getpid", 0), 0x0003_0000);
    assert_eq!(r("getuid", 0), 0x7ffc_0000);
    assert_eq!(r("getgid", 0), 0x7ff0_0007);
    assert_eq!(r("gettid", 0), 0);
    assert_eq!(r("getppid", 0), RET_ERRNO | 1);
    // The same index twice: each condition is its own rule (OR).
    assert_eq!(r("write", 1), RET_ALLOW);
    assert_eq!(r("write", 2), RET_ALLOW);
    assert_eq!(r("write", 3), RET_KILL_PROCESS);
    assert_eq!(r("read", 0), RET_KILL_PROCESS);
    // Only x86_64 listed: i386 and x32 are killed.
    assert_eq!(run_bpf(&p, AUDIT_ARCH_I386, 3, [0; 6]), RET_KILL_PROCESS);
    assert_eq!(run_bpf(&p, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, [0; 6]), RET_KILL_PROCESS);
    // Default ALLOW: no ENOSYS stub, listed errno rules still apply.
    let s = Profile::parse_text("default allow\nrule errno 1\n  names reboot\n")
        .unwrap()
        .resolve(&Target::new(&caps::docker_default(), Arch::ScmpArchX86_64));
    let p = compile(&s).unwrap().insns;
    assert_eq!(run_bpf(&p, AUDIT_ARCH_X86_64, 1000, [0; 6]), RET_ALLOW);
    assert_eq!(run_bpf(&p, AUDIT_ARCH_X86_64, nr("reboot"), [0; 6]), RET_ERRNO | 1);
    // notify is refused.
    let s = Profile::parse_text("default errno 1\nrule notify\n  names reboot\n")
        .unwrap()
        .resolve(&Target::new(&caps::docker_default(), Arch::ScmpArchX86_64));
    assert!(matches!(compile(&s), Err(SeccompError::UnsupportedAction(_))));
}

// ---------------------------------------------------------------------------
// The run layout against the per-number one: the same answer for every
// number, arch and argument vector that can tell them apart.

/// Argument vectors for `s`: zeros and all ones, and for every rule its
/// conditions' values (the masked value for masked-eq) placed together,
/// then each one varied (±1, the other half set, cleared, all ones).
fn probe_args(s: &LinuxSeccomp) -> Vec<[u64; 6]> {
    let mut out = vec![[0u64; 6], [u64::MAX; 6], [1u64; 6]];
    for rule in s.syscalls().as_deref().unwrap_or(&[]) {
        let args = rule.args().as_deref().unwrap_or(&[]);
        let hit = |a: &LinuxSeccompArg| match a.op() {
            LinuxSeccompOperator::ScmpCmpMaskedEq => a.value_two().unwrap_or(0),
            _ => a.value(),
        };
        let mut base = [0u64; 6];
        for a in args {
            base[a.index()] = hit(a);
        }
        out.push(base);
        for a in args {
            let v = hit(a);
            for x in [
                v.wrapping_add(1),
                v.wrapping_sub(1),
                v ^ (1 << 32),
                v | 0xffff_ffff_0000_0000,
                v & 0xffff_ffff,
                a.value(),
                a.value() | 1,
                0,
                u64::MAX,
            ] {
                let mut b = base;
                b[a.index()] = x;
                out.push(b);
                let mut one = [0u64; 6];
                one[a.index()] = x;
                out.push(one);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Syscall numbers to try: every number of every table and beyond, with
/// and without the x32 bit, and the edges of the 32-bit range.
fn probe_numbers() -> Vec<u32> {
    let mut out: Vec<u32> = (0..1200).collect();
    out.extend((0..1200).map(|n| n | X32_SYSCALL_BIT));
    out.extend([
        X32_SYSCALL_BIT - 1,
        0x7fff_ffff,
        0x8000_0000,
        0x8000_0001,
        0xbfff_ffff,
        0xc000_0000,
        0xffff_fffe,
        u32::MAX,
    ]);
    out
}

/// Compiles `s` in both layouts and checks that they agree everywhere the
/// probes reach; returns the two programs' lengths (runs, per number).
fn assert_layouts_agree(what: &str, s: &LinuxSeccomp) -> (usize, usize) {
    let runs = compile_with(s, Layout::Runs).unwrap().insns;
    let per = compile_with(s, Layout::PerNumber).unwrap().insns;
    let args = probe_args(s);
    // Numbers whose rules test arguments get every vector; the others two.
    let mut conditional = std::collections::BTreeSet::new();
    for table in [syscalls::X86_64, syscalls::I386, syscalls::X32] {
        for rule in s.syscalls().as_deref().unwrap_or(&[]) {
            if rule.args().as_ref().is_some_and(|a| !a.is_empty()) {
                for n in rule.names() {
                    if let Some(nr) = lookup(table, n) {
                        conditional.insert(nr);
                        conditional.insert(nr | X32_SYSCALL_BIT);
                    }
                }
            }
        }
    }
    let mut checked = 0usize;
    for arch in [AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, AUDIT_ARCH_AARCH64, 0x1234_5678] {
        for nr in probe_numbers() {
            let vectors: &[[u64; 6]] = if conditional.contains(&nr) { &args } else { &args[..2] };
            for a in vectors {
                let (x, y) = (run_bpf(&runs, arch, nr, *a), run_bpf(&per, arch, nr, *a));
                assert_eq!(
                    x, y,
                    "{what}: arch {arch:#x} nr {nr:#x} args {a:x?}: runs {x:#x}, per number {y:#x}"
                );
                checked += 1;
            }
        }
    }
    eprintln!(
        "{what}: {} instructions (per number: {}), {} runs of the interpreter agree",
        runs.len(),
        per.len(),
        checked
    );
    (runs.len(), per.len())
}

#[test]
fn runs_layout_matches_per_number_default_profile() {
    let (runs, per) = assert_layouts_agree("default caps", &x86_64(&caps::docker_default()));
    // Shorter by more than half: that is the point of the layout.
    assert!(runs * 2 < per, "{runs} vs {per}");
    let all = caps::uniform(caps::from_mask(u64::MAX));
    assert_layouts_agree("all caps", &x86_64(&all));
    assert_layouts_agree("no caps", &x86_64(&caps::uniform(Default::default())));
}

#[test]
fn runs_layout_matches_per_number_other_profiles() {
    let target = Target::new(&caps::docker_default(), Arch::ScmpArchX86_64);
    let texts = [
        // Default allow: no ENOSYS stub, the last run reaches u32::MAX.
        "default allow\nrule errno 1\n  names reboot mount\nrule kill-process\n  names read\n  arg 0 eq 7\n",
        // Neighbouring numbers with different actions, and the first and last numbers.
        "default errno 1\narch SCMP_ARCH_X86_64 SCMP_ARCH_X86 SCMP_ARCH_X32\n\
         rule allow\n  names read write open close\nrule errno 13\n  names stat\n\
         rule trap\n  names fstat\nrule allow\n  names lstat\n  arg 1 masked-eq 0xff 0x10\n\
         rule log\n  names poll\nrule allow\n  names io_pgetevents\n  arg 0 gt 0x100000000\n\
         rule allow\n  names openat\n  arg 0 eq 1\n  arg 0 eq 2\n",
        // Only x86_64 listed: the other sections kill.
        "default kill-process\narch SCMP_ARCH_X86_64\nrule allow\n  names getpid gettid\n",
    ];
    for (i, t) in texts.iter().enumerate() {
        let s = Profile::parse_text(t).unwrap().resolve(&target);
        assert_layouts_agree(&format!("profile {i}"), &s);
    }
    if let Ok(json) = std::fs::read("/usr/share/containers/seccomp.json") {
        let s = parse_docker_profile(&json, &caps::docker_default(), native_arch()).unwrap().unwrap();
        assert_layouts_agree("containers/common", &s);
    }
}

#[test]
fn runs_merge_neighbours_and_keep_bodies() {
    let d = RET_ERRNO | 1;
    // Numbers 3, 4, 5 allowed, 7 with a body, 8 allowed, the rest default.
    let leaves = [
        (3, 0, true, RET_ALLOW),
        (4, 0, true, RET_ALLOW),
        (5, 0, true, RET_ALLOW),
        (7, 9, false, 0),
        (8, 0, true, RET_ALLOW),
    ];
    let r = runs(&leaves, d);
    assert_eq!(
        r,
        vec![
            (0, Outcome::Ret(d)),
            (3, Outcome::Ret(RET_ALLOW)),
            (6, Outcome::Ret(d)),
            (7, Outcome::Body(9)),
            (8, Outcome::Ret(RET_ALLOW)),
            (9, Outcome::Ret(d)),
        ]
    );
    // A named number whose action is the default merges into its neighbours.
    assert_eq!(runs(&[(2, 0, true, d)], d), vec![(0, Outcome::Ret(d))]);
    assert_eq!(runs(&[(0, 0, true, RET_ALLOW)], d), vec![(0, Outcome::Ret(RET_ALLOW)), (1, Outcome::Ret(d))]);
    assert_eq!(
        runs(&[(u32::MAX, 0, true, RET_ALLOW)], d),
        vec![(0, Outcome::Ret(d)), (u32::MAX, Outcome::Ret(RET_ALLOW))]
    );
}

#[test]
fn long_runs_lists_get_far_jumps() {
    // Alternating outcomes over 1000 numbers: subtrees beyond 255 instructions
    // need the JA form, and the interpreter still finds every number.
    let leaves: Vec<(u32, usize, bool, u32)> = (0..1000)
        .map(|n| (n, 0, true, if n % 2 == 0 { RET_ALLOW } else { RET_ERRNO | (n & 0xfff) }))
        .collect();
    let r = runs(&leaves, RET_ERRNO | 1);
    let mut asm = Asm::default();
    asm.stmt(BPF_LD_W_ABS, OFF_NR);
    emit_runs(&mut asm, &r);
    let p = asm.finish().unwrap();
    assert_eq!(p.len(), 1 + runs_size(&r));
    for n in 0..1100u32 {
        let want = if n >= 1000 {
            RET_ERRNO | 1
        } else if n % 2 == 0 {
            RET_ALLOW
        } else {
            RET_ERRNO | (n & 0xfff)
        };
        assert_eq!(run_bpf(&p, AUDIT_ARCH_X86_64, n, [0; 6]), want, "{n}");
    }
}

// ---------------------------------------------------------------------------
// The kernel: load in a forked child.

fn in_child(f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only runs `f` and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(99);
        // SAFETY: leave the child without running the harness.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "child died: {status:#x}");
    libc::WEXITSTATUS(status)
}

fn errno_of(rc: libc::c_long) -> i32 {
    if rc == -1 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    }
}

#[test]
fn kernel_enforces_default_profile() {
    let prog = compile(&docker_default(&caps::docker_default(), native_arch())).unwrap();
    let code = in_child(move || {
        if no_new_privs().is_err() || load(&prog).is_err() {
            return 10;
        }
        // SAFETY: raw syscalls with integer arguments; failures are expected.
        let unshare = unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) };
        if errno_of(unshare) != libc::EPERM {
            return 11;
        }
        // SAFETY: as above; mount with null pointers fails before touching memory.
        let mount = unsafe { libc::syscall(libc::SYS_mount, 0usize, 0usize, 0usize, 0usize, 0usize) };
        if errno_of(mount) != libc::EPERM {
            return 12;
        }
        // SAFETY: socket(AF_VSOCK) only creates (or refuses) a descriptor.
        let vsock = unsafe { libc::syscall(libc::SYS_socket, libc::AF_VSOCK, libc::SOCK_STREAM, 0) };
        if errno_of(vsock) != libc::EPERM {
            return 13;
        }
        // SAFETY: clone3 with a null argument must be answered ENOSYS by the filter.
        let c3 = unsafe { libc::syscall(libc::SYS_clone3, 0usize, 0usize) };
        if errno_of(c3) != libc::ENOSYS {
            return 14;
        }
        // SAFETY: an unassigned syscall number above every known one.
        let high = unsafe { libc::syscall(1000) };
        if errno_of(high) != libc::ENOSYS {
            return 15;
        }
        // Allowed: getpid, a plain fork, reading a file.
        // SAFETY: getpid has no arguments.
        if unsafe { libc::getpid() } <= 0 {
            return 16;
        }
        if std::fs::read("/proc/self/status").is_err() {
            return 17;
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        if !status.lines().any(|l| l.starts_with("Seccomp:") && l.ends_with('2')) {
            return 18;
        }
        // SAFETY: fork in the single-threaded child; the grandchild _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: leave the grandchild immediately.
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            return 19;
        }
        let mut st = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        0
    });
    assert_eq!(code, 0);
}

#[test]
fn kernel_small_filter_blocks_keyctl() {
    let text = "default allow\nrule errno 1\n  names keyctl\nrule errno 13\n  names getpriority\n  arg 0 eq 0x100000000\n";
    let s = Profile::parse_text(text).unwrap().resolve(&Target::new(&caps::docker_default(), native_arch()));
    let prog = compile(&s).unwrap();
    let code = in_child(move || {
        if no_new_privs().is_err() || load(&prog).is_err() {
            return 10;
        }
        // SAFETY: keyctl(KEYCTL_GET_KEYRING_ID, ...) with integer args.
        let k = unsafe { libc::syscall(libc::SYS_keyctl, 0, -3i64, 0) };
        if errno_of(k) != libc::EPERM {
            return 11;
        }
        // The high half matters: which=0 is allowed, 1<<32 refused.
        // SAFETY: getpriority with integer arguments.
        let a = unsafe { libc::syscall(libc::SYS_getpriority, 0u64, 0u64) };
        // SAFETY: as above.
        let b = unsafe { libc::syscall(libc::SYS_getpriority, 1u64 << 32, 0u64) };
        if errno_of(a) != 0 || errno_of(b) != libc::EACCES {
            return 12;
        }
        0
    });
    assert_eq!(code, 0);
}

#[test]
fn timing_breakdown() {
    let c = caps::docker_default();
    let t = std::time::Instant::now();
    for _ in 0..100 {
        let _ = Profile::parse_text(DEFAULT_PROFILE).unwrap();
    }
    eprintln!("parse {:?}", t.elapsed() / 100);
    let p = Profile::parse_text(DEFAULT_PROFILE).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..100 {
        let _ = Target::new(&c, native_arch());
    }
    eprintln!("target {:?}", t.elapsed() / 100);
    let tg = Target::new(&c, native_arch());
    let t = std::time::Instant::now();
    for _ in 0..100 {
        let _ = p.resolve(&tg);
    }
    eprintln!("resolve {:?}", t.elapsed() / 100);
    let s = p.resolve(&tg);
    let t = std::time::Instant::now();
    for _ in 0..100 {
        let _ = compile(&s).unwrap();
    }
    eprintln!("compile {:?}", t.elapsed() / 100);
}

/// A real-world profile in Docker's JSON format: containers/common's
/// (installed with skopeo as golang-github-containers-common). Skipped when
/// absent.
#[test]
fn parses_compiles_and_loads_containers_common_profile() {
    let Ok(json) = std::fs::read("/usr/share/containers/seccomp.json") else {
        eprintln!("skipped: /usr/share/containers/seccomp.json not installed");
        return;
    };
    let s = parse_docker_profile(&json, &caps::docker_default(), native_arch()).unwrap().unwrap();
    assert!(s.syscalls().as_ref().unwrap().len() > 5);
    // Without CAP_SYS_MODULE that profile answers delete_module with an
    // explicit EPERM rule, which differs from its default (ENOSYS); were it
    // executed, a null name would only fail with EFAULT.
    let dm = rules_for(&s, "delete_module");
    assert_eq!(dm.len(), 1);
    assert_eq!((dm[0].action(), dm[0].errno_ret()), (LinuxSeccompAction::ScmpActErrno, Some(1)));
    assert_eq!(s.default_errno_ret(), Some(38));
    let want = libc::EPERM;
    let prog = compile(&s).unwrap();
    let code = in_child(move || {
        if no_new_privs().is_err() || load(&prog).is_err() {
            return 10;
        }
        // SAFETY: getpid has no arguments; delete_module gets a null name.
        let ok = unsafe { libc::getpid() } > 0
            && errno_of(unsafe { libc::syscall(libc::SYS_delete_module, 0usize, 0) }) == want;
        if ok {
            0
        } else {
            11
        }
    });
    assert_eq!(code, 0);
}
