//! Device access control on cgroup v2: the OCI device rules compiled into an
//! eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE and attached to the
//! container's cgroup (v2 has no devices.allow file; this is what runc and
//! crun do too).
//!
//! Semantics are those of the v1 list the rules describe: the last rule that
//! matches a request decides; nothing matching means deny. An allow rule
//! matches when the requested access (r, w, m) is a subset of the rule's, a
//! deny rule when it shares any access bit with it.
//!
//! The program reads the context `struct bpf_cgroup_dev_ctx { u32
//! access_type /* access << 16 | type */; u32 major; u32 minor; }` into
//! r2 = type, r3 = access, r4 = major, r5 = minor and tests the rules from
//! the last to the first.

use std::os::fd::AsRawFd;
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const LDX_MEM_W: u8 = 0x61;
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU32_MOV_X: u8 = 0xbc;
const ALU64_MOV_K: u8 = 0xb7;
const JMP_JNE_K: u8 = 0x55;
const JMP_JNE_X: u8 = 0x5d;
const JMP_JEQ_K: u8 = 0x15;
const JMP_EXIT: u8 = 0x95;

const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn { code, regs: (dst & 0xf) | (src << 4), off, imm }
}

fn access_bits(access: Option<&str>) -> i32 {
    let a = access.unwrap_or("rwm");
    let mut bits = 0;
    for c in a.chars() {
        bits |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => 0,
        };
    }
    bits
}

/// Compiles OCI device rules into the program's instructions.
pub fn compile(rules: &[LinuxDeviceCgroup]) -> Vec<BpfInsn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        let mut block: Vec<BpfInsn> = Vec::new();
        // Jumps to "next rule" are patched once the block's length is known;
        // mark them with off = i16::MIN.
        const NEXT: i16 = i16::MIN;
        match r.typ() {
            Some(LinuxDeviceType::C) => block.push(insn(JMP_JNE_K, 2, 0, NEXT, DEV_CHAR)),
            Some(LinuxDeviceType::B) => block.push(insn(JMP_JNE_K, 2, 0, NEXT, DEV_BLOCK)),
            // 'a', none: every type. 'u'/'p' are not device-cgroup types.
            Some(LinuxDeviceType::A) | None => {}
            Some(_) => continue,
        }
        if let Some(m) = r.major().filter(|m| *m >= 0) {
            block.push(insn(JMP_JNE_K, 4, 0, NEXT, m as i32));
        }
        if let Some(m) = r.minor().filter(|m| *m >= 0) {
            block.push(insn(JMP_JNE_K, 5, 0, NEXT, m as i32));
        }
        let acc = access_bits(r.access().as_deref());
        let all = ACC_READ | ACC_WRITE | ACC_MKNOD;
        if r.allow() && acc != all {
            block.push(insn(ALU32_MOV_X, 1, 3, 0, 0));
            block.push(insn(ALU32_AND_K, 1, 0, 0, acc));
            block.push(insn(JMP_JNE_X, 1, 3, NEXT, 0));
        } else if !r.allow() && acc != all {
            block.push(insn(ALU32_MOV_X, 1, 3, 0, 0));
            block.push(insn(ALU32_AND_K, 1, 0, 0, acc));
            block.push(insn(JMP_JEQ_K, 1, 0, NEXT, 0));
        }
        block.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(r.allow())));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let n = block.len();
        let mut conditional = false;
        for (i, b) in block.iter_mut().enumerate() {
            if b.off == NEXT {
                b.off = (n - i - 1) as i16;
                conditional = true;
            }
        }
        p.extend(block);
        if !conditional {
            // A rule matching everything decides alone; the rules before it
            // in the list (and the default) can never be reached, and the
            // verifier rejects unreachable code.
            return p;
        }
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

/// Runs the program on one request (for tests and for explaining a
/// decision): `typ` is 'c' or 'b', `access` a subset of "rwm".
pub fn evaluate(prog: &[BpfInsn], typ: char, major: u32, minor: u32, access: &str) -> bool {
    let t = if typ == 'b' { DEV_BLOCK } else { DEV_CHAR } as u32;
    let ctx = [(access_bits(Some(access)) as u32) << 16 | t, major, minor];
    let mut r = [0u64; 11];
    let mut pc = 0usize;
    while let Some(i) = prog.get(pc) {
        let (dst, src) = (usize::from(i.regs & 0xf), usize::from(i.regs >> 4));
        pc += 1;
        let jump = |cond: bool, pc: &mut usize| {
            if cond {
                *pc = (*pc as i64 + i64::from(i.off)) as usize;
            }
        };
        match i.code {
            LDX_MEM_W => r[dst] = u64::from(ctx[(i.off / 4) as usize % 3]),
            ALU32_AND_K => r[dst] = u64::from(r[dst] as u32 & i.imm as u32),
            ALU32_RSH_K => r[dst] = u64::from((r[dst] as u32) >> i.imm),
            ALU32_MOV_X => r[dst] = u64::from(r[src] as u32),
            ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
            JMP_JNE_K => jump(r[dst] != i.imm as u32 as u64, &mut pc),
            JMP_JNE_X => jump(r[dst] != r[src], &mut pc),
            JMP_JEQ_K => jump(r[dst] == i.imm as u32 as u64, &mut pc),
            JMP_EXIT => return r[0] == 1,
            _ => return false,
        }
    }
    false
}

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    // The rest of union bpf_attr, zeroed.
    _rest: [u8; 64],
}

#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    _rest: [u8; 108],
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// Loads the program and attaches it to the cgroup v2 directory `dir`
/// (BPF_F_ALLOW_MULTI, so nested runtimes can add theirs). The program
/// lives as long as the cgroup.
pub fn attach(dir: &Path, prog: &[BpfInsn]) -> std::io::Result<()> {
    let cg = std::fs::File::open(dir)?;
    let license = b"Apache-2.0\0";
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"kist_device");
    // Without a log first: a verbose log that overflows fails the load with
    // ENOSPC. The log is only asked for to explain a failure.
    let load = |log: &mut [u8]| -> libc::c_long {
        let attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: prog.len() as u32,
            insns: prog.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: if log.is_empty() { 0 } else { log.as_mut_ptr() as u64 },
            kern_version: 0,
            prog_flags: 0,
            prog_name: name,
            _rest: [0; 64],
        };
        // SAFETY: attr is a valid, fully initialised bpf_attr prefix whose
        // pointers (insns, license, log) outlive the call; the size passed
        // is the struct's.
        unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                &attr as *const ProgLoadAttr,
                std::mem::size_of::<ProgLoadAttr>(),
            )
        }
    };
    if prog.len() > 1_000_000 {
        return Err(std::io::Error::from_raw_os_error(libc::E2BIG));
    }
    let fd = load(&mut []);
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        let mut log = vec![0u8; 1 << 16];
        let _ = load(&mut log);
        let text = String::from_utf8_lossy(&log);
        let last = text.trim_end_matches('\0').lines().last().unwrap_or("").to_string();
        return Err(std::io::Error::new(e.kind(), format!("BPF_PROG_LOAD: {e}: {last}")));
    }
    // SAFETY: fd was just returned by the kernel and is owned here only.
    let prog_fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let attach = ProgAttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
        _rest: [0; 108],
    };
    // SAFETY: a valid bpf_attr for BPF_PROG_ATTACH with open descriptors.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attach as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(e.kind(), format!("BPF_PROG_ATTACH: {e}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::docker_default_devices;

    #[test]
    fn docker_rules_decide_like_v1() {
        let p = compile(&docker_default_devices());
        assert!(evaluate(&p, 'c', 1, 3, "rw"), "/dev/null");
        assert!(evaluate(&p, 'c', 1, 7, "rwm"), "/dev/full");
        assert!(evaluate(&p, 'c', 136, 5, "rw"), "/dev/pts/5");
        assert!(evaluate(&p, 'c', 5, 2, "rw"), "ptmx");
        assert!(evaluate(&p, 'c', 10, 200, "rw"), "tun");
        assert!(!evaluate(&p, 'c', 1, 11, "r"), "/dev/kmsg");
        assert!(!evaluate(&p, 'c', 1, 1, "r"), "/dev/mem");
        assert!(!evaluate(&p, 'b', 8, 0, "r"), "/dev/sda");
        assert!(!evaluate(&p, 'c', 10, 229, "rw"), "fuse is denied");
        // mknod of any node is allowed, opening it is not.
        assert!(evaluate(&p, 'b', 8, 0, "m"));
        assert!(evaluate(&p, 'c', 1, 11, "m"));
        assert!(!evaluate(&p, 'c', 1, 11, "rm"));
    }

    #[test]
    fn last_rule_wins_and_partial_access() {
        let mut allow_r = LinuxDeviceCgroup::default();
        allow_r.set_allow(true);
        allow_r.set_typ(Some(LinuxDeviceType::C));
        allow_r.set_major(Some(4));
        allow_r.set_access(Some("r".into()));
        let mut deny_w = allow_r.clone();
        deny_w.set_allow(false);
        deny_w.set_access(Some("w".into()));
        let p = compile(&[allow_r.clone()]);
        assert!(evaluate(&p, 'c', 4, 1, "r"));
        assert!(!evaluate(&p, 'c', 4, 1, "rw"));
        assert!(!evaluate(&p, 'b', 4, 1, "r"));
        let mut all = LinuxDeviceCgroup::default();
        all.set_allow(true);
        all.set_access(Some("rwm".into()));
        let p = compile(&[all, deny_w]);
        assert!(evaluate(&p, 'c', 4, 1, "r"));
        assert!(!evaluate(&p, 'c', 4, 1, "w"));
        assert!(evaluate(&p, 'b', 8, 1, "rw"));
    }

    /// On the host's real cgroup2 mount (hybrid: /sys/fs/cgroup/unified),
    /// a child in a cgroup with Docker's device program can open /dev/null
    /// but not /dev/kmsg. Root only.
    #[test]
    fn kernel_enforces_device_program() {
        let base = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .iter()
            .map(Path::new)
            .find(|p| p.join("cgroup.controllers").exists());
        let Some(base) = base else {
            eprintln!("skipped: no cgroup2 mount");
            return;
        };
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = base.join(format!("kist-devtest-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let attached = attach(&dir, &compile(&docker_default_devices()));
        let procs = dir.join("cgroup.procs");
        // SAFETY: the child only joins the cgroup, opens two files and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = std::fs::write(&procs, "0").is_ok()
                && std::fs::File::open("/dev/null").is_ok()
                && std::fs::File::open("/dev/kmsg").err().and_then(|e| e.raw_os_error()) == Some(libc::EPERM);
            // SAFETY: leave the child without running the harness.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        for _ in 0..100 {
            if std::fs::remove_dir(&dir).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        attached.unwrap();
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status:#x}");
        assert!(!dir.exists());
    }
}
