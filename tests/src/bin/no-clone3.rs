//! `no-clone3 CMD [ARG...]`: runs CMD with clone3(2) refused with ENOSYS,
//! as Docker's default seccomp profile refuses it inside a container and
//! kernels before 5.3 lack it, so that tests reach the paths that do
//! without it (ctr-spawn's clone(2) and its `cgroup.procs` placement).
//! glibc falls back to clone(2) on ENOSYS for its own threads and forks.
//! Installing the filter needs CAP_SYS_ADMIN (the tests run as root).

use std::ffi::CString;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// clone3's number on both architectures (the generic table).
const NR_CLONE3: u32 = 435;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn main() {
    let args: Vec<CString> =
        std::env::args().skip(1).map(|a| CString::new(a).expect("an argument with a NUL byte")).collect();
    if args.is_empty() {
        eprintln!("usage: no-clone3 CMD [ARG...]");
        std::process::exit(2);
    }
    let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let mut program = [
        // seccomp_data.arch: another architecture's calls pass untouched.
        stmt(ld, 4),
        jump(jeq, AUDIT_ARCH, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        // seccomp_data.nr
        stmt(ld, 0),
        jump(jeq, NR_CLONE3, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    // SAFETY: a valid filter program that outlives the call.
    let rc = unsafe {
        libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog as *const libc::sock_fprog)
    };
    if rc != 0 {
        eprintln!("no-clone3: seccomp: {}", std::io::Error::last_os_error());
        std::process::exit(125);
    }
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: a NUL-terminated argv of valid C strings.
    unsafe { libc::execvp(argv[0], argv.as_ptr()) };
    eprintln!("no-clone3: {}: {}", args[0].to_string_lossy(), std::io::Error::last_os_error());
    std::process::exit(127);
}
