//! The container's first process. It starts as a clone of rcrun already inside the new
//! namespaces, waits for the parent to write its id maps, builds the root file system, drops
//! privileges and execs the command. It reads like a table of contents: one call per step, in the
//! order the reference runtimes converge on (see each comment).

use super::explain::Explain;
use super::mounts::Mnt;
use super::{NsKind, StartupPlan};
use crate::sys::mount::{self as sm};
use crate::sys::{self, net};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

pub use super::failure::Failure;

mod cgroupfs;
mod console;
mod exec;
mod rootfs;
use super::failure::{fail, Never, EXIT_RCRUN_FAILED};
use console::open_console;
use exec::{close_fds_on_exec, enter_workdir, exec};
use rootfs::{apply_mount, mount_rootfs, open_root, pivot_into};

pub struct ChildPipes {
    /// Parent → child: one byte once the id maps and cgroup are in place; with `--userns` as
    /// root one more once the late maps are written; and the last one opens the start gate.
    pub go_read: OwnedFd,
    /// Child → parent (close-on-exec): empty at EOF means execve succeeded; otherwise a failure.
    pub err_write: OwnedFd,
    /// With -t: the socket on which the child sends the pty master it opens in its own devpts.
    pub console: Option<OwnedFd>,
    /// `--userns` as root: one byte once the child has called unshare(CLONE_NEWUSER), so the
    /// parent writes the maps (and then a second byte on the go pipe).
    pub userns_ready: Option<OwnedFd>,
    /// With --explain: the child's step timings go back to rcrun for the closing summary.
    pub report: Option<OwnedFd>,
    /// cgroup v1 `tasks` files (opened by rcrun) the child moves itself into.
    pub cgroup_tasks: Vec<(PathBuf, OwnedFd)>,
    /// [`super::NetSetup::ParentWhileMounting`] and [`super::NetSetup::HelperWhileMounting`]: the pid (4
    /// bytes) of the process in the new network namespace the child then joins: rcrun itself
    /// as root, else rcrun's helper in the child's user namespace.
    pub net_ready: Option<OwnedFd>,
    /// [`super::NetSetup::HelperWhileMounting`]: closed once the child joined; the helper leaves then.
    pub net_release: Option<OwnedFd>,
    /// [`super::StartGate::ExecFifo`]: the fifo, opened O_PATH by rcrun before clone.
    pub exec_fifo: Option<OwnedFd>,
    /// Namespaces joined by path (all but pid, which rcrun entered for the clone), opened and
    /// checked by rcrun, in join order.
    pub joins: Vec<(NsKind, OwnedFd)>,
    /// [`super::StartupPlan::hooks_point`]: one byte to rcrun once the root is built.
    pub hooks_ready: Option<OwnedFd>,
}

/// Entry point of the cloned child. Never returns.
pub fn child_main(plan: &StartupPlan, pipes: ChildPipes, ex: &Explain) -> ! {
    // The parent keeps the totals of everything before the fork; ours start from zero.
    ex.reset_totals();
    // Our own handle on the error pipe: `run` consumes `pipes`, and dropping them when it returns
    // closes `err_write` — the failure message would then be lost (write → EBADF).
    let err_write = pipes.err_write.try_clone().ok();
    let failure = match run(plan, pipes, ex) {
        Ok(never) => match never {},
        Err(f) => f,
    };
    if CREATED.load(std::sync::atomic::Ordering::Relaxed) {
        let line = format!("rcrun: error: {}\n", failure.message);
        sys::process::write_and_exit(
            Some(std::io::stderr().as_fd()),
            line.as_bytes(),
            failure.code,
        )
    }
    let mut msg = vec![failure.code as u8];
    msg.extend_from_slice(failure.message.as_bytes());
    sys::process::write_and_exit(err_write.as_ref().map(|f| f.as_fd()), &msg, failure.code)
}

fn run(plan: &StartupPlan, pipes: ChildPipes, ex: &Explain) -> Result<Never, Failure> {
    // If rcrun dies, the container dies with it (prctl(2) PR_SET_PDEATHSIG); re-armed after the
    // credential change below, which clears it.
    if plan.die_with_rcrun {
        set_pdeathsig()?;
    }
    wait_for_parent(&pipes.go_read)?;
    become_namespace_root(plan)?;
    join_cgroup(&pipes.cgroup_tasks, ex)?;
    // Namespaces by path, before any mount: /sys shows the network namespace current when it is
    // mounted, and after the mount namespace paths resolve in it (so it comes last).
    for (kind, fd) in &pipes.joins {
        ex.timed(
            "namespaces",
            &format!("setns({} namespace)", kind.proc_name()),
            || {
                sys::process::join_namespace(fd.as_fd(), kind.clone_flag())
                    .map_err(|e| fail(&format!("setns into the {} namespace", kind.proc_name()), e))
            },
        )?;
    }
    drop(pipes.joins);
    // The cgroup namespace is rooted at the cgroups current when it is created
    // (cgroup_namespaces(7)), so it is unshared after joining rather than at clone: the container
    // then sees its own cgroup as "/".
    if plan.makes(NsKind::Cgroup) {
        ex.timed(
            "namespaces",
            "unshare(CLONE_NEWCGROUP) — after joining, so the container's cgroup is its \"/\"",
            || {
                sys::process::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
                    .map_err(|e| fail("unshare(CLONE_NEWCGROUP)", e))
            },
        )?;
    }
    // `rcrun exec` enters a running container: its root, hostname and user namespace are made.
    if !plan.enter_running {
        // Mount propagation first (mount_namespaces(7)): nothing we mount may leak back to the host.
        ex.timed(
            "mount",
            "mount(NULL, \"/\", NULL, MS_REC|MS_SLAVE) — stop propagation to the host",
            || sm::stop_propagation().map_err(|e| fail("make / rslave", e)),
        )?;
        let (newroot, etc_in_upper) = mount_rootfs(plan, ex)?;
        let root_fd = open_root(&newroot)?;
        let mut net_ready = pipes.net_ready.map(|r| (r, pipes.net_release));
        let mut sysctls_written = plan.sysctls.is_empty();
        let mut node_dir = rootfs::NodeDir::default();
        for m in &plan.mounts {
            if etc_in_upper && matches!(m.what, Mnt::HostFile { .. }) {
                continue;
            }
            if !sysctls_written && matches!(m.what, Mnt::Mask | Mnt::ReadOnly) {
                // Before /proc/sys becomes read-only, in the final network namespace.
                join_parent_netns(net_ready.take(), ex)?;
                write_sysctls(plan, &newroot, ex)?;
                sysctls_written = true;
            }
            if std::path::Path::new(&m.target).starts_with("/sys") {
                join_parent_netns(net_ready.take(), ex)?;
            }
            ex.timed("mount", &m.describe(), || {
                apply_mount(plan, root_fd.as_fd(), m, &mut node_dir)
            })?;
        }
        drop(node_dir);
        join_parent_netns(net_ready.take(), ex)?;
        if !sysctls_written {
            write_sysctls(plan, &newroot, ex)?;
        }
        drop(root_fd);
        if let Some(ready) = &pipes.hooks_ready {
            // runtime-spec config.md: prestart and createRuntime hooks run "after the runtime
            // environment has been created ... but before the pivot_root", createContainer after
            // them; rcrun runs them while this process waits (runc's procHooks sync).
            ex.timed(
            "hooks",
            "root built: stop before pivot_root while rcrun runs the prestart, createRuntime and createContainer hooks",
            || {
                nix::unistd::write(ready, b"1").map_err(|e| fail("tell rcrun the hooks may run", e))?;
                wait_for_parent(&pipes.go_read)
            },
        )?;
        }
        ex.timed(
            "pivot_root",
            &format!(
                "chdir({0}); pivot_root(\".\", \".\"); umount2(\".\", MNT_DETACH)",
                newroot.display()
            ),
            || pivot_into(&newroot),
        )?;
        if let Some(flags) = plan.root_propagation {
            // After pivot_root, which refuses a shared root, and before the read-only remount: the
            // container's "/" gets the propagation the spec asks for (a shared root lets the
            // container's own bind mounts of "/" see later mounts, crun does the same). It stays a
            // slave of nothing on the host: the host's mounts were cut off before the mounts.
            let flags = nix::mount::MsFlags::from_bits_truncate(flags as _);
            ex.timed(
                "mount",
                &format!("mount(NULL, \"/\", NULL, {flags:?}) — linux.rootfsPropagation"),
                || sm::set_root_propagation(flags).map_err(|e| fail("set the propagation of /", e)),
            )?;
        }
        if plan.read_only {
            ex.timed(
                "mount",
                "mount(NULL, \"/\", NULL, MS_REMOUNT|MS_BIND|MS_RDONLY)",
                || {
                    let root = nix::fcntl::open(
                        "/",
                        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                        nix::sys::stat::Mode::empty(),
                    )
                    .map_err(|e| fail("open /", e))?;
                    sm::remount_readonly(root.as_fd()).map_err(|e| fail("remount / read-only", e))
                },
            )?;
        }
        if !plan.hostname.is_empty() {
            ex.timed("uts", &format!("sethostname({:?})", plan.hostname), || {
                sys::process::set_hostname(&plan.hostname).map_err(|e| fail("sethostname", e))
            })?;
        }
        if let Some(ready) = &pipes.userns_ready {
            // The hostname was the last thing needing the initial namespace's privilege.
            ex.timed("namespaces", "unshare(CLONE_NEWUSER) after the root file system is built; rcrun writes the maps; setresuid/setresgid(0)", || {
            enter_user_namespace_late(ready, &pipes.go_read)
        })?;
        }
    }
    if let Some(sock) = &pipes.console {
        ex.timed("tty", "open /dev/ptmx in the container's devpts, send the master to rcrun (SCM_RIGHTS), make the slave our controlling terminal", || open_console(sock))?;
    }
    drop(pipes.console);
    // Until its execve this process is a copy of the host's rcrun: make it non-dumpable, as
    // runc's nsexec does, so that /proc/PID/exe, mem and fd of it cannot be opened by anyone
    // without CAP_SYS_PTRACE in the namespace that owns its memory (the host's: the mm was
    // copied at clone; ptrace(2), "Ptrace access mode checking"), whatever a container process
    // that joins later may hold. Only now: a non-dumpable process's /proc files belong to root
    // (proc(5)), so a rootless rcrun or newuidmap could no longer write our id maps, which is
    // done by here. execve(2) makes the command dumpable again (unless its credentials change).
    ex.timed(
        "dumpable",
        "prctl(PR_SET_DUMPABLE, 0) until execve: /proc/PID/exe of this rcrun copy stays closed (CVE-2019-5736)",
        || {
            sys::process::set_dumpable(false).map_err(|e| fail("prctl(PR_SET_DUMPABLE, 0)", e))
        },
    )?;
    ex.timed(
        "cwd",
        &format!(
            "mkdir -p + chdir({:?}), then verify getcwd() is inside the root",
            plan.cwd
        ),
        || enter_workdir(plan),
    )?;
    // No fd of rcrun's may reach the container (CVE-2024-21626): everything above stdio is
    // marked close-on-exec (the error pipe must survive until execve itself).
    ex.timed(
        "fds",
        &if plan.preserve_fds > 0 {
            format!(
                "keep fds 3..{} (--preserve-fds/LISTEN_FDS); close_range({}, ~0U, CLOSE_RANGE_CLOEXEC)",
                2 + plan.preserve_fds,
                3 + plan.preserve_fds
            )
        } else {
            "close_range(3, ~0U, CLOSE_RANGE_CLOEXEC)".to_string()
        },
        || close_fds_on_exec(plan.preserve_fds),
    )?;
    // --init: the copy of rcrun that becomes PID 1 is made while we can still read the binary.
    let init_image = if plan.init {
        Some(ex.timed(
            "init",
            "memfd_create + write the embedded static init + F_ADD_SEALS: what --init runs as PID 1 (never the host's rcrun binary: CVE-2019-5736)",
            super::init::SealedInit::create,
        )?)
    } else {
        None
    };
    for r in &plan.rlimits {
        ex.timed(
            "rlimit",
            &format!(
                "setrlimit({:?}, soft {}, hard {})",
                r.resource, r.soft, r.hard
            ),
            || {
                nix::sys::resource::setrlimit(r.resource, r.soft, r.hard)
                    .map_err(|e| fail(&format!("setrlimit {:?}", r.resource), e))
            },
        )?;
    }
    super::security_steps::apply(plan, ex, &mut || {
        match &pipes.exec_fifo {
            None => wait_at_start_gate(&pipes.err_write, &pipes.go_read, ex)?,
            Some(fifo) => wait_at_exec_fifo(plan, &pipes.err_write, fifo, ex)?,
        }
        exec::reset_signals()
    })?;
    if pipes.exec_fifo.is_none() {
        exit_if_rcrun_died(&pipes.err_write)?;
    }
    exec(plan, ex, pipes.report.as_ref(), init_image)
}

/// The start gate: everything but seccomp and execve is done. Tells rcrun so (a 0 byte on the
/// error pipe, which otherwise carries only failures, whose codes are never 0) and blocks until
/// rcrun's `start` writes one more byte on the go pipe. EOF there means rcrun went away: the
/// command never runs without it.
fn wait_at_start_gate(err_write: &OwnedFd, go: &OwnedFd, ex: &Explain) -> Result<(), Failure> {
    ex.detail(
        "gate",
        "write 0 on the error pipe (\"created\"), then read the go pipe: blocks until rcrun starts the container",
        std::time::Duration::ZERO,
    );
    ex.flush();
    nix::unistd::write(err_write, &[0u8]).map_err(|e| fail("report the start gate to rcrun", e))?;
    wait_for_parent(go)
}

/// Set once an OCI `create` was told the container is created: that rcrun has exited, so a later
/// failure (an execve error after `start`) goes to the container's stderr, as runc's does.
static CREATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The start gate of an OCI `create` ([`super::StartGate::ExecFifo`]): checks that the command
/// exists (so that `create` fails for a missing binary, as runc's does), reports "created" to
/// rcrun, which then exits, and blocks opening the fifo for writing until `rcrun start` opens it
/// for reading (fifo(7)); then writes one byte, which `start` waits for.
fn wait_at_exec_fifo(
    plan: &StartupPlan,
    err_write: &OwnedFd,
    fifo: &OwnedFd,
    ex: &Explain,
) -> Result<(), Failure> {
    if !exec::exec_candidates(plan)
        .iter()
        .any(|c| std::path::Path::new(c).exists())
    {
        return Err(exec::not_found(plan));
    }
    // If rcrun died before we report, it wrote no state, and no one could ever start or delete
    // us: stop instead.
    exit_if_rcrun_died(err_write)?;
    ex.detail(
        "gate",
        "created: write 0 on the error pipe, then open(exec.fifo, O_WRONLY): blocks until `rcrun start` opens it",
        std::time::Duration::ZERO,
    );
    ex.flush();
    nix::unistd::write(err_write, &[0u8]).map_err(|e| fail("report created to rcrun", e))?;
    CREATED.store(true, std::sync::atomic::Ordering::Relaxed);
    // Through /proc/self/fd: the fifo's directory is not reachable from the container's root,
    // and a process may always reopen its own descriptors' magic links (proc(5)). The fifo is
    // mode 0622, so this works after the switch to any container user.
    let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    let w = loop {
        match nix::fcntl::open(
            path.as_str(),
            nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r.map_err(|e| fail("open exec.fifo for writing", e))?,
        }
    };
    nix::unistd::write(&w, b"0").map_err(|e| fail("write exec.fifo", e))?;
    Ok(())
}

/// `linux.sysctl`, written through the container's own /proc (mounted by now at
/// `newroot/proc`, a fresh procfs of its pid namespace: nothing in it is the image's).
fn write_sysctls(
    plan: &StartupPlan,
    newroot: &std::path::Path,
    ex: &Explain,
) -> Result<(), Failure> {
    for (key, value) in &plan.sysctls {
        let path = newroot.join("proc/sys").join(key.replace('.', "/"));
        ex.timed(
            "sysctl",
            &format!("write {value:?} to {}", path.display()),
            || std::fs::write(&path, value).map_err(|e| fail(&format!("sysctl {key}"), e)),
        )?;
    }
    Ok(())
}

fn set_pdeathsig() -> Result<(), Failure> {
    sys::process::die_with_parent().map_err(|e| fail("prctl(PR_SET_PDEATHSIG)", e))
}

/// The credential change clears the parent-death signal and `security_steps` arms it again; if
/// rcrun was killed in between, no signal will ever come. rcrun holds the only read end of the
/// error pipe, so a write end reporting POLLERR (poll(2): "read end closed") means it is gone:
/// the container must not start without it (and without the cleanup it would do).
fn exit_if_rcrun_died(err_write: &OwnedFd) -> Result<(), Failure> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(err_write.as_fd(), PollFlags::POLLOUT)];
    let dead = poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP));
    if dead {
        return Err(Failure {
            code: EXIT_RCRUN_FAILED,
            message: "rcrun went away while the container was starting".into(),
        });
    }
    Ok(())
}

fn wait_for_parent(go: &OwnedFd) -> Result<(), Failure> {
    let mut f = std::fs::File::from(go.try_clone().map_err(|e| fail("dup sync pipe", e))?);
    let mut b = [0u8; 1];
    match f.read(&mut b) {
        Ok(1) => Ok(()),
        // The parent died or gave up before starting us.
        _ => Err(Failure {
            code: EXIT_RCRUN_FAILED,
            message: "parent went away before the container started".into(),
        }),
    }
}

/// With a user namespace, the child is "root" only once the maps exist; switching to uid/gid 0
/// makes files it creates owned by the mapped root.
fn become_namespace_root(plan: &StartupPlan) -> Result<(), Failure> {
    if plan.mapping.user_namespace() && !plan.mapping.enters_late() {
        sys::process::become_root()
            .map_err(|e| fail("setresgid/setresuid(0) in the user namespace", e))?;
    }
    Ok(())
}

/// Waits for the network namespace made in parallel with our mounts so far (by rcrun as root,
/// by rcrun's helper in our user namespace otherwise), joins it, and lets the helper go.
/// `None`: nothing to join, or already joined.
fn join_parent_netns(
    ready: Option<(OwnedFd, Option<OwnedFd>)>,
    ex: &Explain,
) -> Result<(), Failure> {
    let Some((ready, release)) = ready else {
        return Ok(());
    };
    let mut pid = [0u8; 4];
    let mut f = std::fs::File::from(ready);
    // The namespace is made beside the child; how long the child waited for it is narrated.
    let waiting = std::time::Instant::now();
    let got = f.read_exact(&mut pid);
    let waited = waiting.elapsed();
    if got.is_err() {
        return Err(Failure {
            code: EXIT_RCRUN_FAILED,
            message: "the network namespace was not made (rcrun or its helper failed first)".into(),
        });
    }
    let pid = u32::from_ne_bytes(pid);
    let maker = if release.is_some() {
        "rcrun's helper made in our user namespace"
    } else {
        "rcrun made"
    };
    let joined = ex.timed(
        "net",
        &format!(
            "setns(/proc/{pid}/ns/net, CLONE_NEWNET) — join the namespace {maker} (waited {:.3} ms for it)",
            waited.as_secs_f64() * 1e3
        ),
        || net::join_namespace_of(pid).map_err(|e| fail("join the network namespace", e)),
    );
    drop(release);
    joined
}

/// Moves this process (still single-threaded: a fork-like clone) into its cgroup v1 hierarchies
/// by writing "0" to each `tasks` file: a thread moving itself skips the global threadgroup lock
/// whose write side waits for an RCU grace period (see `Cgroup::self_join_files`). Done before
/// anything forks or allocates much, so all of the container is charged to its cgroup.
fn join_cgroup(tasks: &[(PathBuf, OwnedFd)], ex: &Explain) -> Result<(), Failure> {
    if tasks.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = tasks.iter().map(|(p, _)| p.display().to_string()).collect();
    ex.timed(
        "cgroup",
        &format!("write 0 (this process) to {}", names.join(", ")),
        || {
            for (path, fd) in tasks {
                nix::unistd::write(fd, b"0")
                    .map_err(|e| fail(&format!("join cgroup: write 0 to {}", path.display()), e))?;
            }
            Ok(())
        },
    )
}

fn enter_user_namespace_late(ready: &OwnedFd, go: &OwnedFd) -> Result<(), Failure> {
    sys::process::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(|e| fail("unshare(CLONE_NEWUSER)", e))?;
    nix::unistd::write(ready, b"u").map_err(|e| fail("tell rcrun to write the id maps", e))?;
    wait_for_parent(go)?;
    sys::process::become_root().map_err(|e| fail("setresgid/setresuid(0) in the user namespace", e))
}
