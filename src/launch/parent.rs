//! The parent side: clone, id maps, signal forwarding, terminal, exit status.

use super::child::{self, ChildPipes};
use super::explain::Explain;
use super::plan::{map_text, IdMapping};
use super::StartupPlan;
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{step}: {source}")]
    Sys { step: &'static str, source: Errno },
    #[error("{0}")]
    Child(String),
    #[error("{step}: {detail}")]
    IdMap { step: &'static str, detail: String },
}

pub use super::failure::FORWARDED;

/// Hooks the caller runs around clone (cgroup placement).
pub trait BeforeStart {
    /// Before clone: files the child writes "0" into to move itself (cgroup v1 `tasks`), opened
    /// here so that the child needs no path lookup and the kernel checks our credentials.
    fn self_join_files(&mut self) -> Result<Vec<(std::path::PathBuf, OwnedFd)>, String> {
        Ok(Vec::new())
    }
    /// Before clone: a cgroup v2 directory (path for the narration, and an fd) to start the child
    /// in, with clone3(CLONE_INTO_CGROUP): a process born in its cgroup is never migrated.
    fn clone_into(&mut self) -> Result<Option<(String, OwnedFd)>, String> {
        Ok(None)
    }
    /// After the child was released, while it builds its root: housekeeping off the start path.
    fn meanwhile(&mut self) {}
    /// Between clone and start: placement the parent does for the child, unless the child was
    /// `born_inside` its cgroup (clone3 with CLONE_INTO_CGROUP worked).
    fn before_start(&mut self, pid: Pid, born_inside: bool) -> Result<(), String>;
}

pub struct Outcome {
    /// Exit status docker-style: code, or 128+signal.
    pub status: i32,
    /// Set when the child failed before execve (rcrun's own message, exit code 125/126/127).
    pub failure: Option<String>,
    pub signaled: Option<Signal>,
}

fn sys(step: &'static str) -> impl Fn(Errno) -> LaunchError {
    move |source| LaunchError::Sys { step, source }
}

/// Starts the container and waits for it. rcrun must be single-threaded here: the child is a
/// fork-like clone that keeps running Rust code (allocations included) until execve.
pub fn start_and_wait(
    plan: &StartupPlan,
    ex: &Explain,
    hooks: &mut dyn BeforeStart,
) -> Result<Outcome, LaunchError> {
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(s);
    }
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGWINCH);
    let old_mask = mask
        .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
        .map_err(sys("block signals"))?;
    let (go_read, go_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    let (err_read, err_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    let console = if plan.tty {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        Some(
            socketpair(
                AddressFamily::Unix,
                SockType::Stream,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .map_err(sys("socketpair"))?,
        )
    } else {
        None
    };
    let flags = plan.clone_flags();
    let userns_ready = if plan.mapping.enters_late() {
        Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?)
    } else {
        None
    };
    let report = if ex.enabled {
        Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?)
    } else {
        None
    };

    let net_by_parent = plan.net_setup() == super::NetSetup::ParentWhileMounting;
    // Captured before clone: in the child, which is PID 1 of its own namespace, getpid() says 1.
    let rcrun_pid = std::process::id();
    let net_ready = if net_by_parent {
        Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?)
    } else {
        None
    };
    let placement = hooks
        .self_join_files()
        .and_then(|files| Ok((files, hooks.clone_into()?)));
    let (cgroup_tasks, clone_into) = match placement {
        Ok(p) => p,
        Err(e) => {
            let _ = old_mask.thread_set_mask();
            return Err(LaunchError::Child(e));
        }
    };

    let t = std::time::Instant::now();
    let mut born_inside = None;
    let forked = match &clone_into {
        Some((path, dir)) => match fork_into_cgroup(flags, dir.as_fd()) {
            // clone3 is Linux >= 5.3 and CLONE_INTO_CGROUP >= 5.7: older kernels say so this way,
            // and the parent moves the child instead.
            Err(Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL) => fork_into_namespaces(flags),
            r => {
                born_inside = Some(path.as_str());
                r.map_err(|source| LaunchError::Sys {
                    step: "clone3(CLONE_INTO_CGROUP)",
                    source,
                })
            }
        },
        None => fork_into_namespaces(flags),
    };
    let child = match forked {
        Ok(c) => c,
        Err(e) => {
            let _ = old_mask.thread_set_mask();
            return Err(e);
        }
    };
    let Some(pid) = child else {
        // Child. Restore the signal mask the command should start with.
        let _ = old_mask.thread_set_mask();
        drop(go_write);
        drop(err_read);
        let console = console.map(|(ours, theirs)| {
            drop(ours);
            theirs
        });
        child::child_main(
            plan,
            ChildPipes {
                go_read,
                err_write,
                console,
                report: report.map(|(_, w)| w),
                userns_ready: userns_ready.map(|(_, w)| w),
                cgroup_tasks,
                net_ready: net_ready.map(|(r, _)| (r, rcrun_pid)),
            },
            ex,
        );
    };
    ex.step(
        "namespaces",
        &match born_inside {
            None => format!(
                "clone({}|SIGCHLD) → pid {pid}",
                super::describe_flags(flags)
            ),
            Some(cg) => format!(
                "clone3({}|CLONE_INTO_CGROUP, cgroup = {cg}) → pid {pid}, born inside its cgroup",
                super::describe_flags(flags)
            ),
        },
        t.elapsed(),
    );
    let born_inside = born_inside.is_some();
    drop(clone_into);
    drop(go_read);
    drop(err_write);
    drop(cgroup_tasks);
    let console = console.map(|(ours, theirs)| {
        drop(theirs);
        ours
    });

    let setup = (|| -> Result<(), LaunchError> {
        if !plan.mapping.enters_late() {
            write_id_maps(pid, &plan.mapping, ex)?;
        }
        hooks
            .before_start(pid, born_inside)
            .map_err(LaunchError::Child)?;
        Ok(())
    })();
    if let Err(e) = setup {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        let _ = old_mask.thread_set_mask();
        return Err(e);
    }
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(sys("signalfd"))?;
    let _ = nix::unistd::write(&go_write, b"1");
    if let Some((r, w)) = net_ready {
        drop(r);
        // The child mounts meanwhile, and joins this namespace before /sys (see NetSetup). rcrun
        // itself has no use for the host network from here on.
        // Narrated but not counted in the closing per-stage shares: it overlaps the child's steps.
        let t = std::time::Instant::now();
        let made =
            crate::sys::net::new_namespace_with_loopback().map_err(sys("new network namespace"));
        ex.detail(
            "net",
            &format!(
                "{}unshare(CLONE_NEWNET); ioctl(SIOCSIFFLAGS, lo, IFF_UP) — in rcrun, while the child mounts (overlaps it: not in the shares)",
                if made.is_err() { "FAILED: " } else { "" }
            ),
            t.elapsed(),
        );
        if let Err(e) = made {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            let _ = old_mask.thread_set_mask();
            return Err(e);
        }
        let _ = nix::unistd::write(&w, b"1");
    }
    hooks.meanwhile();
    if let Some((ready, w)) = userns_ready {
        // --userns as root: the child unshares its user namespace once the root file system is
        // built; map it and let it go on. EOF means it failed before (the error pipe says why).
        drop(w);
        let mut b = [0u8; 1];
        if matches!(nix::unistd::read(&ready, &mut b), Ok(1)) {
            if let Err(e) = write_id_maps(pid, &plan.mapping, ex) {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                let _ = old_mask.thread_set_mask();
                return Err(e);
            }
            let _ = nix::unistd::write(&go_write, b"1");
        }
    }
    drop(go_write);
    let master = console.and_then(|sock| receive_master(&sock));
    if let (Some(m), Some(ws)) = (&master, winsize()) {
        // SAFETY: TIOCSWINSZ with a valid winsize on our pty master.
        unsafe { libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }

    // The error pipe closes on execve (close-on-exec) or carries the child's failure.
    let mut failure = Vec::new();
    let _ = std::fs::File::from(err_read).read_to_end(&mut failure);
    if let Some((r, w)) = report {
        drop(w);
        let mut text = String::new();
        let _ = std::fs::File::from(r).read_to_string(&mut text);
        ex.absorb_totals(&text);
    }
    let failure = (!failure.is_empty()).then(|| {
        (
            failure[0] as i32,
            String::from_utf8_lossy(&failure[1..]).into_owned(),
        )
    });

    let raw = match (&master, plan.interactive) {
        (Some(_), true) => RawMode::enter(),
        _ => None,
    };
    let result = wait_loop(pid, &sfd, master.as_ref(), plan.interactive);
    drop(raw);
    let _ = old_mask.thread_set_mask();
    let (status, signaled) = result?;
    Ok(match failure {
        Some((code, msg)) => Outcome {
            status: code,
            failure: Some(msg),
            signaled: None,
        },
        None => Outcome {
            status,
            failure: None,
            signaled,
        },
    })
}

/// Receives the pty master the child opened (None if it failed before sending one).
fn receive_master(sock: &OwnedFd) -> Option<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed this fd in our table for us.
            return fds.first().map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    None
}

/// clone(2) with new namespaces and no CLONE_VM: fork-like, the child gets a copy of our
/// address space and continues after the call. `None` in the child, the child's pid in the
/// parent. rcrun must be single-threaded here, since the child keeps running Rust code.
fn fork_into_namespaces(flags: nix::sched::CloneFlags) -> Result<Option<Pid>, LaunchError> {
    // SAFETY: raw clone(2) without CLONE_VM and with a null stack behaves like fork(2) in a
    // single-threaded process; no memory is shared with the child.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags.bits() as libc::c_long) | libc::SIGCHLD as libc::c_long,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match rc {
        0 => Ok(None),
        pid if pid > 0 => Ok(Some(Pid::from_raw(pid as i32))),
        _ => {
            let e = Errno::last();
            Err(LaunchError::Sys {
                step: clone_step(e),
                source: e,
            })
        }
    }
}

/// clone3(2) with CLONE_INTO_CGROUP: like [`fork_into_namespaces`], and the child starts as a
/// member of the cgroup v2 directory `cgroup` (Linux >= 5.7). The raw errno is returned so the
/// caller can fall back on kernels without it.
fn fork_into_cgroup(
    flags: nix::sched::CloneFlags,
    cgroup: std::os::fd::BorrowedFd<'_>,
) -> Result<Option<Pid>, Errno> {
    /// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2, include/uapi/linux/sched.h).
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs {
        flags: flags.bits() as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: as for fork_into_namespaces: no CLONE_VM and no stack, so the child runs on a copy
    // of our address space; `args` is a valid clone_args of the size we pass.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match rc {
        0 => Ok(None),
        pid if pid > 0 => Ok(Some(Pid::from_raw(pid as i32))),
        _ => Err(Errno::last()),
    }
}

fn clone_step(e: Errno) -> &'static str {
    match e {
        Errno::EPERM | Errno::ENOSPC | Errno::EUSERS => "clone: cannot create namespaces (are unprivileged user namespaces enabled? sysctl kernel.unprivileged_userns_clone / user.max_user_namespaces)",
        _ => "clone",
    }
}

fn winsize() -> Option<nix::pty::Winsize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize struct we own; failure (not a tty) is handled.
    let rc = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0).then_some(ws)
}

/// user_namespaces(7): writing "deny" to setgroups must precede an unprivileged gid_map write.
fn write_id_maps(pid: Pid, mapping: &IdMapping, ex: &Explain) -> Result<(), LaunchError> {
    let proc = format!("/proc/{pid}");
    let write = |file: &str, text: &str| -> Result<(), LaunchError> {
        std::fs::write(format!("{proc}/{file}"), text).map_err(|e| LaunchError::IdMap {
            step: "write id map",
            detail: format!("{proc}/{file} ← {:?}: {e}", text.trim()),
        })
    };
    match mapping {
        IdMapping::None => Ok(()),
        IdMapping::Privileged { uid, gid } => ex.timed(
            "idmap",
            &format!(
                "{proc}/uid_map ← \"{}\"; gid_map ← \"{}\" (written by real root)",
                map_text(&[*uid]).trim(),
                map_text(&[*gid]).trim()
            ),
            || {
                write("uid_map", &map_text(&[*uid]))?;
                write("gid_map", &map_text(&[*gid]))
            },
        ),
        IdMapping::Single { uid, gid } => {
            ex.timed(
                "idmap",
                &format!("{proc}/uid_map ← \"{}\"", map_text(&[*uid]).trim()),
                || write("uid_map", &map_text(&[*uid])),
            )?;
            ex.timed(
                "idmap",
                &format!(
                    "{proc}/setgroups ← \"deny\"; gid_map ← \"{}\"",
                    map_text(&[*gid]).trim()
                ),
                || {
                    write("setgroups", "deny")?;
                    write("gid_map", &map_text(&[*gid]))
                },
            )
        }
        IdMapping::Helpers {
            uids,
            gids,
            newuidmap,
            newgidmap,
        } => {
            // Both setuid helpers start at once: each costs an exec of a setuid binary, and
            // the two maps are independent.
            let command = |tool: &std::path::Path, ranges: &[super::plan::IdRange]| {
                let mut args = vec![pid.to_string()];
                for r in ranges {
                    args.extend([
                        r.inside.to_string(),
                        r.outside.to_string(),
                        r.count.to_string(),
                    ]);
                }
                (tool.to_path_buf(), args)
            };
            let jobs = [command(newuidmap, uids), command(newgidmap, gids)];
            let what = jobs
                .iter()
                .map(|(t, a)| format!("{} {}", t.display(), a.join(" ")))
                .collect::<Vec<_>>()
                .join(" & ");
            ex.timed("idmap", &what, || {
                let spawned: Vec<_> = jobs
                    .iter()
                    .map(|(tool, args)| {
                        std::process::Command::new(tool)
                            .args(args)
                            .stdout(std::process::Stdio::null())
                            .stderr(std::process::Stdio::piped())
                            .spawn()
                            .map_err(|e| LaunchError::IdMap {
                                step: "run id-map helper",
                                detail: format!("{}: {e}", tool.display()),
                            })
                    })
                    .collect();
                for ((tool, args), child) in jobs.iter().zip(spawned) {
                    let out = child?.wait_with_output().map_err(|e| LaunchError::IdMap {
                        step: "run id-map helper",
                        detail: format!("{}: {e}", tool.display()),
                    })?;
                    if !out.status.success() {
                        return Err(LaunchError::IdMap {
                            step: "id-map helper failed",
                            detail: format!(
                                "{} {}: {}",
                                tool.display(),
                                args.join(" "),
                                String::from_utf8_lossy(&out.stderr).trim()
                            ),
                        });
                    }
                }
                Ok(())
            })
        }
    }
}

/// A process running as PID 1 ignores signals it has no handler for (pid_namespaces(7)), so a
/// plain `sleep` would shrug off SIGTERM. rcrun applies the default action for it: the container
/// is killed and reported as killed by the forwarded signal (128+N), as it would be outside.
fn forward(pid: Pid, sig: Signal) -> Option<Signal> {
    let _ = nix::sys::signal::kill(pid, sig);
    // Caught, or blocked (then it stays queued for a signalfd reader, as --init's PID 1 does:
    // signal(7)); only a signal PID 1 neither catches nor blocks is dropped by the kernel.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let handled = (mask("SigCgt:") | mask("SigBlk:")) & (1u64 << (sig as i32 - 1)) != 0;
    if handled {
        return None;
    }
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    Some(sig)
}

fn wait_loop(
    pid: Pid,
    sfd: &SignalFd,
    master: Option<&OwnedFd>,
    interactive: bool,
) -> Result<(i32, Option<Signal>), LaunchError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut emulated: Option<Signal> = None;
    let mut stdin_open = interactive && master.is_some();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Reap first: the child may already be gone.
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => {
                drain_master(master, &mut buf);
                return Ok((code, None));
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                drain_master(master, &mut buf);
                let reported = match (sig, emulated) {
                    (Signal::SIGKILL, Some(s)) => s,
                    (s, _) => s,
                };
                return Ok((128 + reported as i32, Some(reported)));
            }
            Ok(_) => {}
            Err(Errno::ECHILD) => return Ok((super::failure::EXIT_RCRUN_FAILED, None)),
            Err(Errno::EINTR) => continue,
            Err(e) => {
                return Err(LaunchError::Sys {
                    step: "waitpid",
                    source: e,
                })
            }
        }
        let stdin = std::io::stdin();
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(m) = master {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                return Err(LaunchError::Sys {
                    step: "poll",
                    source: e,
                })
            }
        }
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        if !revents[0].is_empty() {
            while let Ok(Some(info)) = sfd.read_signal() {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                match sig {
                    Signal::SIGCHLD => {}
                    Signal::SIGWINCH => {
                        if let (Some(m), Some(ws)) = (master, winsize()) {
                            // SAFETY: TIOCSWINSZ with a valid winsize on our pty master.
                            unsafe { libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
                        }
                    }
                    s => {
                        if let Some(e) = forward(pid, s) {
                            emulated = Some(e);
                        }
                    }
                }
            }
        }
        if let Some(m) = master {
            if revents.len() > 1 && !revents[1].is_empty() {
                match nix::unistd::read(m, &mut buf) {
                    Ok(n) if n > 0 => {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&buf[..n]);
                        let _ = out.flush();
                    }
                    // EIO: the slave side closed (the container exited); wait for the reap.
                    _ => std::thread::sleep(std::time::Duration::from_millis(1)),
                }
            }
            if stdin_open && revents.len() > 2 && !revents[2].is_empty() {
                match nix::unistd::read(std::io::stdin().as_fd(), &mut buf) {
                    Ok(n) if n > 0 => {
                        let _ = nix::unistd::write(m, &buf[..n]);
                    }
                    _ => stdin_open = false,
                }
            }
        }
    }
}

fn drain_master(master: Option<&OwnedFd>, buf: &mut [u8]) {
    let Some(m) = master else { return };
    let _ = nix::fcntl::fcntl(
        m,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut out = std::io::stdout().lock();
    while let Ok(n) = nix::unistd::read(m, buf) {
        if n == 0 {
            break;
        }
        let _ = out.write_all(&buf[..n]);
    }
    let _ = out.flush();
}

/// The caller's terminal in raw mode for the duration of a `-ti` session.
struct RawMode(nix::sys::termios::Termios);

impl RawMode {
    fn enter() -> Option<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let orig = tcgetattr(&stdin).ok()?;
        let mut raw = orig.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.0,
        );
    }
}

/// Runs `f` in a child process inside a new user namespace with `mapping` (as its root), and
/// waits for it. Used to extract layers with subordinate ids, so that image owners survive:
/// only inside the namespace can ids 1..N be given to files. rcrun must be single-threaded here.
pub fn run_in_userns(
    mapping: &IdMapping,
    f: impl FnOnce() -> Result<(), String>,
) -> Result<(), LaunchError> {
    let (go_read, go_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    let (res_read, res_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    let child = fork_into_namespaces(nix::sched::CloneFlags::CLONE_NEWUSER)?;
    let Some(pid) = child else {
        drop(go_write);
        drop(res_read);
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        let mut b = [0u8; 1];
        let ok = matches!(nix::unistd::read(&go_read, &mut b), Ok(1));
        let result = if !ok {
            Err("parent went away".to_string())
        } else {
            nix::unistd::setresgid(
                nix::unistd::Gid::from_raw(0),
                nix::unistd::Gid::from_raw(0),
                nix::unistd::Gid::from_raw(0),
            )
            .and_then(|_| {
                nix::unistd::setresuid(
                    nix::unistd::Uid::from_raw(0),
                    nix::unistd::Uid::from_raw(0),
                    nix::unistd::Uid::from_raw(0),
                )
            })
            .map_err(|e| format!("become root in the user namespace: {e}"))
            .and_then(|_| f())
        };
        let code = match result {
            Ok(()) => 0,
            Err(msg) => {
                let _ = nix::unistd::write(&res_write, msg.as_bytes());
                1
            }
        };
        // SAFETY: leave the forked copy without running the parent's destructors.
        unsafe { libc::_exit(code) };
    };
    drop(go_read);
    drop(res_write);
    let quiet = Explain::new(false);
    if let Err(e) = write_id_maps(pid, mapping, &quiet) {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        return Err(e);
    }
    let _ = nix::unistd::write(&go_write, b"1");
    drop(go_write);
    let mut msg = String::new();
    let _ = std::fs::File::from(res_read).read_to_string(&mut msg);
    let status = loop {
        match waitpid(pid, None) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    match status {
        Ok(WaitStatus::Exited(_, 0)) => Ok(()),
        _ if !msg.is_empty() => Err(LaunchError::Child(msg)),
        other => Err(LaunchError::Child(format!(
            "helper in the user namespace ended with {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cgroup v2 mount of this machine: /sys/fs/cgroup on a v2 host, /sys/fs/cgroup/unified
    /// on a hybrid one.
    fn cgroup2_mount() -> Option<std::path::PathBuf> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
        mounts
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 2 && f[2] == "cgroup2")
            .map(|f| std::path::PathBuf::from(f[1]))
    }

    /// The child of clone3(CLONE_INTO_CGROUP) is a member of the cgroup from its first
    /// instruction: it reads its own /proc/self/cgroup (raw syscalls only: the test harness is
    /// multi-threaded) and exits 0 only if the v2 line names the new cgroup.
    #[test]
    fn clone3_starts_the_child_inside_a_v2_cgroup() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "\n*** SKIPPED clone3 CLONE_INTO_CGROUP test: needs root to create a cgroup ***"
            );
            return;
        }
        let Some(mount) = cgroup2_mount() else {
            eprintln!("\n*** SKIPPED clone3 CLONE_INTO_CGROUP test: no cgroup2 mount ***");
            return;
        };
        let name = format!("rcrun-clone3-test-{}", std::process::id());
        let dir = mount.join(&name);
        std::fs::create_dir(&dir).unwrap();
        let want = std::ffi::CString::new(format!("0::/{name}\n")).unwrap();
        let fd = nix::fcntl::open(
            &dir,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let forked = fork_into_cgroup(nix::sched::CloneFlags::empty(), fd.as_fd());
        let pid = match forked {
            Ok(None) => {
                // Child: only async-signal-safe calls from here to _exit.
                let mut buf = [0u8; 4096];
                // SAFETY: plain syscalls on a stack buffer; _exit never returns.
                unsafe {
                    let f = libc::open(c"/proc/self/cgroup".as_ptr(), libc::O_RDONLY);
                    let n = libc::read(f, buf.as_mut_ptr().cast(), buf.len());
                    let hay = &buf[..n.max(0) as usize];
                    let needle = want.as_bytes();
                    let found = hay.windows(needle.len()).any(|w| w == needle);
                    libc::_exit(if found { 0 } else { 1 });
                }
            }
            Ok(Some(pid)) => pid,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                if matches!(e, Errno::ENOSYS | Errno::E2BIG) {
                    eprintln!(
                        "\n*** SKIPPED clone3 CLONE_INTO_CGROUP test: kernel lacks it ({e}) ***"
                    );
                    return;
                }
                panic!("clone3(CLONE_INTO_CGROUP) into {}: {e}", dir.display());
            }
        };
        let status = waitpid(pid, None).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(pid, 0),
            "the child did not see itself in {name}"
        );
    }
}
