//! How a media worker confines itself before FFmpeg sees a byte of the upload. Each layer is
//! best-effort (what the kernel or the process's privileges allow) and reported in the
//! worker's [`SandboxReport`]:
//!
//! 1. a network namespace of its own (`unshare(CLONE_NEWNET)`, else a user and network
//!    namespace), so not even the loopback of the host is reachable;
//! 2. rlimits: address space, CPU seconds, largest file written, open files, no core dump;
//! 3. `PR_SET_NO_NEW_PRIVS` and every Linux capability dropped;
//! 4. Landlock: no file system access at all but to its output folder (the upload was opened
//!    before), no TCP bind or connect, no signal to a process outside the sandbox;
//! 5. seccomp: `socket()` only for AF_UNIX, and no `connect`, `bind`, `listen`, `accept` or
//!    `send*` at all (a pathname UNIX socket — a database's, a container runtime's — is
//!    reachable from any network namespace, and Landlock only guards those from ABI 9 on), no
//!    exec, no new process (threads only), no ptrace, no namespace or mount change, no
//!    io_uring (which would bypass the socket rules), no signal to another process, no x32
//!    system call.
//!
//! Everything here applies to the calling thread and the threads it creates later; the
//! worker calls [`confine`] while it has a single thread.

use std::path::Path;

use super::protocol::{Limits, SandboxReport};

/// What to confine the worker to.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    /// Resource limits.
    pub limits: Limits,
    /// The one folder the worker may write (and read) in, if any.
    pub writable_dir: Option<&'a Path>,
}

/// Confines the calling process (it must still be single-threaded) as `plan` says, as far as
/// the kernel allows, and says what was enforced.
pub fn confine(plan: &Plan<'_>) -> SandboxReport {
    let mut report = SandboxReport::default();
    match unshare_network() {
        Ok(()) => report.network_namespace = true,
        Err(e) => report
            .notes
            .push(format!("no network namespace of its own: {e}")),
    }
    match set_rlimits(&plan.limits) {
        Ok(()) => report.rlimits = true,
        Err(e) => report.notes.push(format!("rlimits: {e}")),
    }
    if let Err(e) = no_new_privs() {
        report.notes.push(format!("no_new_privs: {e}"));
    }
    match drop_capabilities() {
        Ok(()) => report.capabilities_dropped = true,
        Err(e) => report.notes.push(format!("capabilities: {e}")),
    }
    let landlock = landlock(plan.writable_dir);
    report.landlock_enforced = landlock.enforced;
    report.landlock_abi = landlock.abi;
    report.landlock = landlock.summary;
    if !landlock.enforced {
        report.notes.push(format!("Landlock: {}", report.landlock));
    }
    match seccomp() {
        Ok(()) => report.seccomp = true,
        Err(e) => report.notes.push(format!("seccomp: {e}")),
    }
    report
}

/// The calling thread's last OS error.
fn os_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Moves the process into a network namespace of its own: no interface but a loopback that is
/// down.
pub fn unshare_network() -> Result<(), String> {
    // SAFETY: unshare(2) changes only the calling task's namespaces; no memory is involved.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0 {
        return Ok(());
    }
    let privileged = os_error();
    // Without CAP_SYS_ADMIN, a user namespace (where unprivileged ones are allowed) brings the
    // right to make a network namespace. The worker's files stay its own: a new user namespace
    // does not change the process's real uid, only how it is shown.
    // SAFETY: as above; the process is single-threaded, which CLONE_NEWUSER requires.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) } == 0 {
        return Ok(());
    }
    Err(format!(
        "unshare(CLONE_NEWNET): {privileged}; with a user namespace: {}",
        os_error()
    ))
}

/// Sets the rlimits of `limits`, plus no core dump.
pub fn set_rlimits(limits: &Limits) -> Result<(), String> {
    use rlimit::Resource;
    let memory = limits.memory_mb.saturating_mul(1024 * 1024);
    let set = |what: &str, r: Resource, soft: u64, hard: u64| {
        rlimit::setrlimit(r, soft, hard).map_err(|e| format!("{what}: {e}"))
    };
    set("RLIMIT_CORE", Resource::CORE, 0, 0)?;
    set("RLIMIT_AS", Resource::AS, memory, memory)?;
    // SIGXCPU at the soft limit, SIGKILL a second later if it is ignored.
    set(
        "RLIMIT_CPU",
        Resource::CPU,
        limits.cpu_secs,
        limits.cpu_secs.saturating_add(1),
    )?;
    set(
        "RLIMIT_FSIZE",
        Resource::FSIZE,
        limits.file_bytes,
        limits.file_bytes,
    )?;
    set(
        "RLIMIT_NOFILE",
        Resource::NOFILE,
        limits.open_files,
        limits.open_files,
    )?;
    Ok(())
}

/// `PR_SET_NO_NEW_PRIVS`: no exec can ever grant privileges again (needed by seccomp and
/// Landlock without CAP_SYS_ADMIN).
fn no_new_privs() -> Result<(), String> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == 0 {
        Ok(())
    } else {
        Err(os_error().to_string())
    }
}

/// Drops every capability (effective, permitted, inheritable and ambient): a worker started by
/// root keeps root's uid but none of its powers (no DAC override, no raw sockets, …).
pub fn drop_capabilities() -> Result<(), String> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    // Ambient capabilities first (they need permitted ones to be cleared anyway); EINVAL means
    // a kernel without them.
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset(2) reads the header and two data structs (version 3), which live on this
    // stack frame for the duration of the call.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(os_error().to_string())
    }
}

/// What [`landlock()`] did.
#[derive(Debug, Clone)]
pub struct LandlockOutcome {
    /// The ruleset restricts the process (fully or partially).
    pub enforced: bool,
    /// The kernel's ABI version.
    pub abi: Option<i32>,
    /// In words.
    pub summary: String,
}

/// Landlock ABI whose rights the worker asks for: file system (with truncate and device
/// ioctls), TCP bind/connect (ABI 4) and the abstract-socket and signal scopes (ABI 6). On an
/// older kernel whatever it knows is enforced (best effort).
const LANDLOCK_ABI: landlock::ABI = landlock::ABI::V6;

/// Restricts file system access to `writable_dir` (read, write, create and remove regular
/// files in it; nothing else anywhere), denies TCP bind and connect, and scopes signals and
/// abstract UNIX sockets to the sandbox.
pub fn landlock(writable_dir: Option<&Path>) -> LandlockOutcome {
    use landlock::{
        Access, AccessFs, AccessNet, LandlockStatus, PathBeneath, PathFd, Ruleset, RulesetAttr,
        RulesetCreatedAttr, RulesetStatus, Scope,
    };
    let attempt = || -> Result<landlock::RestrictionStatus, String> {
        let mut ruleset = Ruleset::default()
            .handle_access(AccessFs::from_all(LANDLOCK_ABI))
            .and_then(|r| r.handle_access(AccessNet::from_all(LANDLOCK_ABI)))
            .and_then(|r| r.scope(Scope::from_all(LANDLOCK_ABI)))
            .and_then(|r| r.create())
            .map_err(|e| e.to_string())?;
        if let Some(dir) = writable_dir {
            let fd = PathFd::new(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let rights = AccessFs::ReadFile
                | AccessFs::WriteFile
                | AccessFs::ReadDir
                | AccessFs::MakeReg
                | AccessFs::RemoveFile
                | AccessFs::Truncate;
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd, rights))
                .map_err(|e| e.to_string())?;
        }
        ruleset.restrict_self().map_err(|e| e.to_string())
    };
    match attempt() {
        Ok(status) => {
            let abi = match status.landlock {
                LandlockStatus::Available {
                    effective_abi,
                    kernel_abi,
                } => Some(kernel_abi.unwrap_or(effective_abi as i32)),
                _ => None,
            };
            let abi_text = abi.map_or_else(String::new, |a| format!(" (kernel ABI {a})"));
            match status.ruleset {
                RulesetStatus::FullyEnforced => LandlockOutcome {
                    enforced: true,
                    abi,
                    summary: format!("fully enforced{abi_text}"),
                },
                RulesetStatus::PartiallyEnforced => LandlockOutcome {
                    enforced: true,
                    abi,
                    summary: format!(
                        "partially enforced{abi_text}: the kernel lacks some rights of ABI {}",
                        LANDLOCK_ABI as i32
                    ),
                },
                RulesetStatus::NotEnforced => LandlockOutcome {
                    enforced: false,
                    abi,
                    summary: match status.landlock {
                        LandlockStatus::NotEnabled => {
                            "not enforced: Landlock is built into this kernel but not enabled \
                             (boot with lsm=…,landlock)"
                                .into()
                        }
                        LandlockStatus::NotImplemented => {
                            "not enforced: this kernel has no Landlock (Linux 5.13+ with \
                             CONFIG_SECURITY_LANDLOCK)"
                                .into()
                        }
                        _ => format!("not enforced{abi_text}"),
                    },
                },
            }
        }
        Err(e) => LandlockOutcome {
            enforced: false,
            abi: None,
            summary: format!("not enforced: {e}"),
        },
    }
}

// Classic BPF, as seccomp runs it: BPF_LD | BPF_W | BPF_ABS (the first two are 0).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_JMP_JSET_K: u16 = 0x05 | 0x40;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
/// Offsets in `struct seccomp_data`: the system call's number, the architecture, and the low
/// 32 bits of its first argument (little-endian).
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARG0_LOW: u32 = 16;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn errno(e: i32) -> u32 {
    SECCOMP_RET_ERRNO | (e as u32 & 0xffff)
}

/// System calls a media worker never needs, refused with EPERM.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn denied_syscalls() -> Vec<libc::c_long> {
    let mut v = vec![
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_sendto,
        libc::SYS_sendmsg,
        libc::SYS_sendmmsg,
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_pidfd_open,
        libc::SYS_pidfd_getfd,
        libc::SYS_pidfd_send_signal,
        libc::SYS_tkill,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_kexec_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([libc::SYS_fork, libc::SYS_vfork]);
    v
}

/// The worker's seccomp filter (its own pid, `pid`, is the only target of signals it may send).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn seccomp_filter(pid: u32) -> Vec<libc::sock_filter> {
    let mut p = vec![
        stmt(BPF_LD_W_ABS, DATA_ARCH),
        jump(BPF_JMP_JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, DATA_NR),
    ];
    // x32 system calls share x86_64's audit architecture; none is expected.
    #[cfg(target_arch = "x86_64")]
    {
        p.push(jump(BPF_JMP_JGE_K, 0x4000_0000, 0, 1));
        p.push(stmt(BPF_RET_K, errno(libc::EPERM)));
    }
    for nr in denied_syscalls() {
        p.push(jump(BPF_JMP_JEQ_K, nr as u32, 0, 1));
        p.push(stmt(BPF_RET_K, errno(libc::EPERM)));
    }
    // clone3's flags are in memory a filter cannot read: ENOSYS makes glibc fall back to
    // clone, whose flags it can.
    p.push(jump(BPF_JMP_JEQ_K, libc::SYS_clone3 as u32, 0, 1));
    p.push(stmt(BPF_RET_K, errno(libc::ENOSYS)));
    // `nr` allowed only when `test` of its first argument against `k` holds.
    let mut allow_if = |nr: libc::c_long, test: u16, k: u32, deny: u32| {
        p.push(jump(BPF_JMP_JEQ_K, nr as u32, 0, 4));
        p.push(stmt(BPF_LD_W_ABS, DATA_ARG0_LOW));
        p.push(jump(test, k, 0, 1));
        p.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
        p.push(stmt(BPF_RET_K, deny));
    };
    let unix = libc::AF_UNIX as u32;
    allow_if(libc::SYS_socket, BPF_JMP_JEQ_K, unix, errno(libc::EACCES));
    allow_if(
        libc::SYS_socketpair,
        BPF_JMP_JEQ_K,
        unix,
        errno(libc::EACCES),
    );
    let thread = libc::CLONE_THREAD as u32;
    allow_if(libc::SYS_clone, BPF_JMP_JSET_K, thread, errno(libc::EPERM));
    for nr in [
        libc::SYS_kill,
        libc::SYS_tgkill,
        libc::SYS_rt_sigqueueinfo,
        libc::SYS_rt_tgsigqueueinfo,
    ] {
        allow_if(nr, BPF_JMP_JEQ_K, pid, errno(libc::EPERM));
    }
    p.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    p
}

/// Installs [`seccomp_filter`] on the calling thread (and the threads it creates later).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn seccomp() -> Result<(), String> {
    no_new_privs()?;
    let filter = seccomp_filter(std::process::id());
    let program = libc::sock_fprog {
        len: u16::try_from(filter.len()).map_err(|_| "filter too long".to_string())?,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `program` points at `filter`, which outlives the call; the kernel copies it.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &program as *const libc::sock_fprog,
            0,
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(os_error().to_string())
    }
}

/// No filter for this architecture.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn seccomp() -> Result<(), String> {
    Err(format!(
        "no filter for this architecture ({})",
        std::env::consts::ARCH
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Runs `f` on a thread of its own (seccomp and Landlock apply to the calling thread, so
    /// the test harness stays unconfined).
    fn on_confined_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        match std::thread::spawn(f).join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    fn socket(domain: libc::c_int) -> Result<(), i32> {
        // SAFETY: plain syscall; the descriptor is closed at once.
        let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(os_error().raw_os_error().unwrap_or(0));
        }
        // SAFETY: `fd` is ours.
        unsafe { libc::close(fd) };
        Ok(())
    }

    #[test]
    fn the_seccomp_filter_refuses_sockets_but_af_unix_and_any_connection() {
        let dir = tempfile_dir("unix");
        let path = dir.join("daemon.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let sock = path.clone();
        let outcome = on_confined_thread(move || {
            seccomp()?;
            let unix_connect = std::os::unix::net::UnixStream::connect(&sock).map(|_| ());
            Ok::<_, String>((
                unix_connect,
                socket(libc::AF_INET),
                socket(libc::AF_INET6),
                socket(libc::AF_NETLINK),
                socket(libc::AF_UNIX),
                std::net::TcpStream::connect("127.0.0.1:9").map(|_| ()),
                std::process::Command::new("/bin/true").status().map(|_| ()),
                std::thread::spawn(|| 7).join().ok(),
            ))
        });
        let (unix_connect, inet, inet6, netlink, unix, connect, exec, thread) =
            outcome.unwrap_or_else(|e| panic!("seccomp could not be installed: {e}"));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            unix_connect.map_err(|e| e.raw_os_error()),
            Err(Some(libc::EPERM)),
            "a local daemon's socket was reached"
        );
        assert_eq!(inet, Err(libc::EACCES));
        assert_eq!(inet6, Err(libc::EACCES));
        assert_eq!(netlink, Err(libc::EACCES));
        assert_eq!(unix, Ok(()));
        assert!(connect.is_err(), "a TCP connection was opened");
        assert!(exec.is_err(), "a program was started");
        assert_eq!(thread, Some(7), "threads still work");
        // The test process itself is unaffected.
        assert_eq!(socket(libc::AF_INET), Ok(()));
    }

    #[test]
    fn landlock_leaves_only_the_writable_folder() {
        let outside = tempfile_dir("outside");
        let secret = outside.join("secret.txt");
        std::fs::write(&secret, "hunter2").unwrap_or_else(|e| panic!("{e}"));
        let work = tempfile_dir("work");
        let work2 = work.clone();
        let (outcome, read_outside, write_inside, read_back) = on_confined_thread(move || {
            let outcome = landlock(Some(&work2));
            let read_outside = std::fs::File::open(&secret).and_then(|mut f| {
                let mut s = String::new();
                f.read_to_string(&mut s).map(|_| s)
            });
            let inside = work2.join("out.flac");
            let write_inside = std::fs::write(&inside, b"fLaC");
            let read_back = std::fs::read(&inside);
            (outcome, read_outside, write_inside, read_back)
        });
        let _ = std::fs::remove_dir_all(&outside);
        let _ = std::fs::remove_dir_all(&work);
        if kernel_landlock_abi().is_none() {
            eprintln!(
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 !!! SKIPPED: this kernel has no Landlock ({})\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n",
                outcome.summary
            );
            return;
        }
        assert!(outcome.enforced, "{}", outcome.summary);
        eprintln!("Landlock: {}", outcome.summary);
        let err = read_outside.expect_err("a file outside the sandbox was read");
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
        assert!(write_inside.is_ok(), "{write_inside:?}");
        assert_eq!(read_back.ok().as_deref(), Some(&b"fLaC"[..]));
    }

    /// The kernel's Landlock ABI, asked directly (not through the code under test).
    fn kernel_landlock_abi() -> Option<libc::c_long> {
        // SAFETY: with a null attribute and the VERSION flag (1) the call only returns a number.
        let abi = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<libc::c_void>(),
                0usize,
                1 as libc::c_long,
            )
        };
        (abi > 0).then_some(abi)
    }

    fn tempfile_dir(what: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "echo-confine-{what}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        dir
    }
}
