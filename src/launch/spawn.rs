//! *spawn*, the launcher's first call: the container's first process is cloned into its new
//! namespaces, its id maps are written, it is placed in its cgroup, and it is released to build
//! the container up to its start gate, where it waits for [`super::start::start`]. Nothing of
//! the command has run yet: the process is still a copy of rcrun (non-dumpable from the id maps
//! on).
//!
//! spawn returns as soon as the child is released; it is building the root file system then
//! (the caller may do housekeeping meanwhile). [`Spawned::until_created`] waits until it sits at
//! the gate.

use super::child::{self, ChildPipes};
use super::explain::Explain;
use super::failure::{clone_step, LaunchError, FORWARDED};
use super::idmap::write_id_maps;
use super::{NsKind, StartupPlan};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

fn sys(step: &'static str) -> impl Fn(Errno) -> LaunchError {
    move |source| LaunchError::Sys { step, source }
}

/// The container's first process, built (or being built) up to its start gate.
pub struct Spawned {
    pid: Option<Pid>,
    /// The write end of the child's go pipe: one more byte opens the start gate.
    pub(super) gate: Option<OwnedFd>,
    /// Child → rcrun, close-on-exec: a 0 byte when the child reached the gate, then EOF at
    /// execve, or a failure (exit code byte + message) at any point.
    pub(super) err_read: Option<std::fs::File>,
    /// With --explain: the child's stage totals, written just before execve.
    pub(super) report: Option<(OwnedFd, OwnedFd)>,
    /// With -t: the socket on which the child sends the pty master.
    console: Option<OwnedFd>,
    pub(super) master: Option<OwnedFd>,
    pub(super) sfd: Option<SignalFd>,
    pub(super) old_mask: SigSet,
    pub(super) interactive: bool,
    /// With hooks: the child writes one byte here once it stopped before pivot_root.
    hooks_ready: Option<OwnedFd>,
    /// With hooks and `--userns` as root: the child enters its user namespace after pivot_root,
    /// i.e. after the hooks point, so its maps are written once the hooks ran
    /// ([`Spawned::resume_after_hooks`]), not in [`spawn`], which would wait for it forever.
    late_userns: Option<(OwnedFd, super::plan::IdMapping)>,
    /// Set by [`Spawned::until_created`]: None while not asked yet, Some(None) at the gate,
    /// Some(Some(failure)) when the child failed before it.
    pub(super) created: Option<Option<(i32, String)>>,
    /// [`super::NetSetup::HelperWhileMounting`]: rcrun's helper, reaped once the child is past
    /// the point where it joins the helper's network namespace (the helper leaves then).
    net_helper: Option<Pid>,
}

impl Spawned {
    /// The container's first process (its pid on the host).
    pub fn pid(&self) -> Pid {
        self.pid
            .expect("a Spawned always holds its child until start takes it")
    }

    /// Waits until the child sits at its start gate, everything but seccomp and execve done
    /// (its terminal's master, if any, is ours then), or has failed on its way there (the
    /// failure is kept for `start`, which then does not open the gate, and for `wait`).
    pub fn until_created(&mut self) -> Result<(), LaunchError> {
        if self.created.is_some() {
            return Ok(());
        }
        self.receive_console();
        let pipe = self.err_read.as_mut().expect("err pipe held until start");
        let mut first = [0u8; 1];
        let got = loop {
            match pipe.read(&mut first) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        self.created = Some(match got {
            Ok(1) if first[0] == 0 => None,
            Ok(1) => {
                let mut rest = Vec::new();
                let _ = pipe.read_to_end(&mut rest);
                Some((first[0] as i32, String::from_utf8_lossy(&rest).into_owned()))
            }
            // EOF without a word: the child was killed; `wait` reports how.
            _ => None,
        });
        self.reap_net_helper();
        Ok(())
    }

    /// Waits for the network namespace helper, if any: it leaves as soon as the child joined its
    /// namespace or died, both of which happened before the gate or the hooks point.
    fn reap_net_helper(&mut self) {
        if let Some(h) = self.net_helper.take() {
            while let Err(Errno::EINTR) = waitpid(h, None) {}
        }
    }

    /// With hooks ([`super::StartupPlan::hooks_point`]): waits until the child has built the
    /// root and stopped before pivot_root, for the runtime's hooks. False: it failed before
    /// ([`Spawned::until_created`] then says why).
    pub fn until_hooks_point(&mut self) -> bool {
        let Some(ready) = self.hooks_ready.take() else {
            return false;
        };
        let mut b = [0u8; 1];
        let reached = loop {
            match nix::unistd::read(&ready, &mut b) {
                Err(Errno::EINTR) => continue,
                r => break matches!(r, Ok(1)),
            }
        };
        self.reap_net_helper();
        reached
    }

    /// Lets the child go on from its hooks point (to pivot_root and its start gate); with
    /// `--userns` as root, maps the user namespace it enters on the way.
    pub fn resume_after_hooks(&mut self, ex: &Explain) -> Result<(), LaunchError> {
        if let Some(go) = &self.gate {
            let _ = nix::unistd::write(go, b"1");
        }
        match self.late_userns.take() {
            Some((ready, mapping)) => self.map_late_user_namespace(ready, &mapping, ex),
            None => Ok(()),
        }
    }

    /// `--userns` as root: the child unshares its user namespace once the root file system is
    /// built; map it and let it go on. EOF means it failed before (the error pipe says why).
    fn map_late_user_namespace(
        &self,
        ready: OwnedFd,
        mapping: &super::plan::IdMapping,
        ex: &Explain,
    ) -> Result<(), LaunchError> {
        let mut b = [0u8; 1];
        if matches!(nix::unistd::read(&ready, &mut b), Ok(1)) {
            write_id_maps(self.pid(), mapping, ex)?;
            if let Some(go) = &self.gate {
                let _ = nix::unistd::write(go, b"1");
            }
        }
        Ok(())
    }

    /// With -t: takes the pty master the child sends once it opened its terminal (None if it
    /// failed before), sized like rcrun's own terminal.
    pub(super) fn receive_console(&mut self) {
        if let Some(sock) = self.console.take() {
            self.master = receive_master(&sock);
            if let (Some(m), Some(ws)) = (
                &self.master,
                crate::sys::terminal::window_size(std::io::stdin().as_fd()),
            ) {
                crate::sys::terminal::set_window_size(m.as_fd(), &ws);
            }
        }
    }

    /// The child's own report of a failed step before its gate (exit code 125/126/127,
    /// message), once [`Spawned::until_created`] has returned.
    pub fn failure(&self) -> Option<(i32, &str)> {
        match &self.created {
            Some(Some((code, msg))) => Some((*code, msg.as_str())),
            _ => None,
        }
    }

    /// With -t: the pty master the child sent (after [`Spawned::until_created`]).
    pub fn take_master(&mut self) -> Option<OwnedFd> {
        self.master.take()
    }

    /// An OCI `create`: leaves the child (created, blocked on its exec fifo) to outlive this
    /// process, and restores rcrun's signal mask. Its pid, for the state file.
    pub fn detach(mut self) -> Pid {
        let pid = self.take_pid();
        let _ = self.old_mask.thread_set_mask();
        pid
    }

    /// Hands the child over to `start`: this Spawned no longer kills it when dropped.
    pub(super) fn take_pid(&mut self) -> Pid {
        self.pid.take().expect("start takes the child once")
    }
}

impl Drop for Spawned {
    /// A container spawned but never started (rcrun failed in between): killed and reaped, and
    /// rcrun's signal mask restored, so nothing is left behind.
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            let _ = self.old_mask.thread_set_mask();
        }
        // The child is gone (or past joining): the helper has its EOF.
        self.reap_net_helper();
    }
}

/// The cgroup placement of the plan, opened before clone.
struct Placement {
    /// cgroup v1 `tasks` files the child writes "0" into.
    self_join: Vec<(PathBuf, OwnedFd)>,
    /// cgroup v2: (path for the narration, directory fd) for clone3(CLONE_INTO_CGROUP).
    clone_into: Option<(String, OwnedFd)>,
}

fn open_placement(join: &crate::cgroup::Join) -> Result<Placement, LaunchError> {
    let opened: Result<Vec<_>, std::io::Error> = join
        .self_join_tasks
        .iter()
        .map(|p| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .map(|f| (p.clone(), OwnedFd::from(f)))
        })
        .collect();
    let self_join = match opened {
        Ok(files) => files,
        // A delegation that chowned cgroup.procs but not tasks: rcrun moves the child then.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Vec::new(),
        Err(e) => {
            return Err(LaunchError::Child(format!(
                "open the cgroup's tasks files for writing: {e}"
            )))
        }
    };
    let clone_into = match &join.clone_into {
        None => None,
        Some(dir) => {
            let fd = nix::fcntl::open(
                dir,
                nix::fcntl::OFlag::O_RDONLY
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| LaunchError::Child(format!("open {}: {e}", dir.display())))?;
            Some((dir.display().to_string(), fd))
        }
    };
    Ok(Placement {
        self_join,
        clone_into,
    })
}

/// Clones the container's first process into its namespaces (and cgroup), maps its ids, and
/// releases it to build the container up to its start gate. rcrun must be single-threaded here:
/// the child is a fork-like clone that keeps running Rust code (allocations included) until
/// execve. From here until `wait` ends, the signals rcrun forwards are blocked and queued.
pub fn spawn(plan: &StartupPlan, ex: &Explain) -> Result<Spawned, LaunchError> {
    spawn_with(plan, ex, None)
}

/// [`spawn`], joining a network namespace made ahead ([`super::EarlyNetns`]) where it would
/// otherwise make one ([`super::NetSetup::ParentWhileMounting`]; unused otherwise).
pub fn spawn_with(
    plan: &StartupPlan,
    ex: &Explain,
    early_net: Option<super::EarlyNetns>,
) -> Result<Spawned, LaunchError> {
    ex.phase(
        "spawn",
        "namespaces, id maps, cgroup; the child builds the container up to its start gate",
    );
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(s);
    }
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGWINCH);
    let old_mask = mask
        .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
        .map_err(sys("block signals"))?;
    let prepared = prepare(plan, ex);
    let (pipes, placement) = match prepared {
        Ok(p) => p,
        Err(e) => {
            let _ = old_mask.thread_set_mask();
            return Err(e);
        }
    };
    let Parts {
        go_read,
        go_write,
        err_read,
        err_write,
        console,
        userns_ready,
        report,
        net_ready,
        net_release,
        exec_fifo,
        joins,
        hooks_ready,
    } = pipes;
    let (net_release_read, net_release_write) = net_release.unzip();
    let flags = plan.clone_flags();
    let in_holder = enter_id_holder(plan, &joins, ex);
    if let Err(e) = enter_user_namespace(&joins, ex) {
        let _ = old_mask.thread_set_mask();
        return Err(e);
    }
    let back_to_own_pid_ns = match enter_pid_namespace(&joins, ex) {
        Ok(b) => b,
        Err(e) => {
            let _ = old_mask.thread_set_mask();
            return Err(e);
        }
    };
    let t = std::time::Instant::now();
    let mut born_inside = None;
    let forked = match &placement.clone_into {
        Some((path, dir)) => match crate::sys::clone::fork_into_cgroup(flags, dir.as_fd()) {
            // clone3 is Linux >= 5.3 and CLONE_INTO_CGROUP >= 5.7: older kernels say so this way,
            // and the parent moves the child instead.
            Err(Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL) => {
                crate::sys::clone::fork_into_namespaces(flags).map_err(|source| LaunchError::Sys {
                    step: clone_step(source),
                    source,
                })
            }
            r => {
                born_inside = Some(path.as_str());
                r.map_err(|source| LaunchError::Sys {
                    step: "clone3(CLONE_INTO_CGROUP)",
                    source,
                })
            }
        },
        None => crate::sys::clone::fork_into_namespaces(flags).map_err(|source| LaunchError::Sys {
            step: clone_step(source),
            source,
        }),
    };
    if let (Some(own), false) = (&back_to_own_pid_ns, matches!(forked, Ok(None))) {
        // rcrun's later children (the child has its namespace already) are born in rcrun's own
        // pid namespace again: re-entering one's active pid namespace is allowed (setns(2)).
        let _ =
            crate::sys::process::join_namespace(own.as_fd(), nix::sched::CloneFlags::CLONE_NEWPID);
    }
    drop(back_to_own_pid_ns);
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
        drop(net_release_read);
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
                cgroup_tasks: placement.self_join,
                net_ready: net_ready.map(|(r, _)| r),
                net_release: net_release_write,
                exec_fifo,
                joins: joins
                    .into_iter()
                    .filter(|(k, _)| *k != NsKind::Pid && *k != NsKind::User)
                    .collect(),
                hooks_ready: hooks_ready.map(|(_, w)| w),
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
    let child_joins = !placement.self_join.is_empty();
    drop(placement);
    drop(go_read);
    drop(err_write);
    drop(net_release_write);
    // From here on, a failure kills and reaps the child (Spawned's Drop).
    let mut spawned = Spawned {
        pid: Some(pid),
        gate: None,
        err_read: Some(std::fs::File::from(err_read)),
        report,
        console: console.map(|(ours, theirs)| {
            drop(theirs);
            ours
        }),
        master: None,
        sfd: None,
        old_mask,
        interactive: plan.interactive,
        hooks_ready: hooks_ready.map(|(r, _)| r),
        late_userns: None,
        created: None,
        net_helper: None,
    };

    // Rootless: a helper makes the network namespace in the child's user namespace, forked now
    // and put on another CPU, before the go byte wakes the child: the woken child takes rcrun's
    // CPU at once (a woken sleeper preempts its waker), so a helper forked after it started ~1 ms
    // late and the child waited for it (a tracepoint timeline of `rcrun run` as a plain user).
    let net_ready = match (net_ready, net_release_read) {
        (Some((r, w)), Some(release)) => {
            // rcrun keeps no end of the ready pipe: if the helper fails, the child reads EOF.
            drop(r);
            let t = std::time::Instant::now();
            let userns = crate::sys::process::open_namespace_of(pid, "user")
                .map_err(sys("open the child's user namespace"))?;
            let helper = crate::sys::net::fork_namespace_maker(userns.as_fd(), w, release)
                .map_err(sys("fork the network namespace helper"))?;
            spawned.net_helper = Some(helper);
            let moved = if crate::sys::sched::place_elsewhere(helper) {
                "; sched_setaffinity(helper, another CPU than the child's)"
            } else {
                ""
            };
            ex.detail(
                "net",
                &format!("fork{moved}: a helper enters the child's user namespace (setns), unshare(CLONE_NEWNET) there and ioctl(SIOCSIFFLAGS, lo, IFF_UP), while the child mounts (overlaps it: not in the shares)"),
                t.elapsed(),
            );
            None
        }
        (net_ready, _) => net_ready,
    };
    match &in_holder {
        Some(joined) => super::holder::write_child_maps(pid, joined, ex)?,
        None if !plan.mapping.enters_late() => write_id_maps(pid, &plan.mapping, ex)?,
        None => {}
    }
    if !born_inside && !child_joins && !plan.cgroup.procs.is_empty() {
        ex.timed(
            "cgroup",
            &format!(
                "write {pid} to {}",
                plan.cgroup
                    .procs
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            || crate::cgroup::move_process(&plan.cgroup.procs, pid.as_raw()),
        )
        .map_err(|e| LaunchError::Child(e.to_string()))?;
    }
    spawned.sfd = Some(
        SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(sys("signalfd"))?,
    );
    let _ = nix::unistd::write(&go_write, b"1");
    // As root the network namespace is made by rcrun itself beside the child's mounts: rcrun
    // moves to another CPU than the one the child was forked on and now runs on (sys::sched). Not
    // before the go byte: the move waits for the other CPU to wake from idle (up to a few ms on
    // these VMs), and the child would wait with it; made after, only the namespace waits, and the
    // child needs it late. A namespace made ahead (EarlyNetns) is joined instead, and rcrun then
    // needs no other CPU.
    let joined_early = match (&net_ready, early_net) {
        (Some(_), Some(early)) => {
            let (joined, holder) = early.join_narrated(ex);
            spawned.net_helper = Some(holder);
            joined
        }
        _ => false,
    };
    let aside = match net_ready {
        Some(_) if !joined_early => crate::sys::sched::step_aside(),
        _ => None,
    };
    let moved = if aside.is_some() {
        "sched_setaffinity(another CPU than the child's); "
    } else {
        ""
    };
    if let Some((r, w)) = net_ready {
        drop(r);
        // The child mounts meanwhile, and joins this namespace before /sys (see NetSetup). rcrun
        // itself has no use for the host network from here on.
        // Narrated but not counted in the closing per-stage shares: it overlaps the child's steps.
        if !joined_early {
            let t = std::time::Instant::now();
            let made = crate::sys::net::new_namespace_with_loopback()
                .map_err(sys("new network namespace"));
            ex.detail(
                "net",
                &format!(
                    "{}{}unshare(CLONE_NEWNET); ioctl(SIOCSIFFLAGS, lo, IFF_UP) — in rcrun, while the child mounts (overlaps it: not in the shares)",
                    if made.is_err() { "FAILED: " } else { "" },
                    moved
                ),
                t.elapsed(),
            );
            made?;
        }
        let _ = nix::unistd::write(&w, &std::process::id().to_ne_bytes());
    }
    drop(aside);
    spawned.gate = Some(go_write);
    if let Some((ready, w)) = userns_ready {
        drop(w);
        if spawned.hooks_ready.is_some() {
            spawned.late_userns = Some((ready, plan.mapping.clone()));
        } else {
            spawned.map_late_user_namespace(ready, &plan.mapping, ex)?;
        }
    }
    Ok(spawned)
}

/// The pipes and sockets between rcrun and its child, made before clone.
struct Parts {
    /// rcrun → child: one byte per release (id maps and cgroup done; with `--userns` as root,
    /// the late maps written; the start gate opened).
    go_read: OwnedFd,
    go_write: OwnedFd,
    err_read: OwnedFd,
    err_write: OwnedFd,
    console: Option<(OwnedFd, OwnedFd)>,
    userns_ready: Option<(OwnedFd, OwnedFd)>,
    report: Option<(OwnedFd, OwnedFd)>,
    net_ready: Option<(OwnedFd, OwnedFd)>,
    /// [`super::NetSetup::HelperWhileMounting`]: the helper reads, the child holds the write end.
    net_release: Option<(OwnedFd, OwnedFd)>,
    /// [`super::StartGate::ExecFifo`], opened O_PATH.
    exec_fifo: Option<OwnedFd>,
    /// `plan.joins`, opened and checked; the pid namespace is rcrun's to enter around clone,
    /// the others the child's.
    joins: Vec<(NsKind, OwnedFd)>,
    /// [`super::StartupPlan::hooks_point`]: child → rcrun, one byte before pivot_root.
    hooks_ready: Option<(OwnedFd, OwnedFd)>,
}

fn prepare(plan: &StartupPlan, ex: &Explain) -> Result<(Parts, Placement), LaunchError> {
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"));
    let (go_read, go_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
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
    let userns_ready = if plan.mapping.enters_late() {
        Some(pipe()?)
    } else {
        None
    };
    let report = if ex.enabled { Some(pipe()?) } else { None };
    let (net_ready, net_release) = match plan.net_setup() {
        super::NetSetup::ParentWhileMounting => (Some(pipe()?), None),
        super::NetSetup::HelperWhileMounting => (Some(pipe()?), Some(pipe()?)),
        super::NetSetup::Host => (None, None),
    };
    let exec_fifo = match &plan.start_gate {
        super::StartGate::Pipe => None,
        super::StartGate::ExecFifo(path) => Some(
            nix::fcntl::open(
                path,
                nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| LaunchError::Child(format!("open {}: {e}", path.display())))?,
        ),
    };
    let placement = open_placement(&plan.cgroup)?;
    let joins = open_joins(plan, ex)?;
    let hooks_ready = if plan.hooks_point {
        Some(pipe()?)
    } else {
        None
    };
    Ok((
        Parts {
            go_read,
            go_write,
            err_read,
            err_write,
            console,
            userns_ready,
            report,
            net_ready,
            net_release,
            exec_fifo,
            joins,
            hooks_ready,
        },
        placement,
    ))
}

/// Opens the namespaces the plan joins by path, before clone (paths resolve in rcrun's mount
/// namespace, as the spec's author saw them), and checks each is of the kind the spec says:
/// setns(2) would refuse another kind only after the child has started.
fn open_joins(plan: &StartupPlan, ex: &Explain) -> Result<Vec<(NsKind, OwnedFd)>, LaunchError> {
    let mut joins = Vec::new();
    for (kind, path) in &plan.joins {
        let what = |e: String| {
            LaunchError::Child(format!(
                "linux.namespaces: the {} namespace at {}: {e}",
                kind.proc_name(),
                path.display()
            ))
        };
        let fd = nix::fcntl::open(
            path,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| what(e.to_string()))?;
        match crate::sys::process::namespace_type(fd.as_fd()) {
            Ok(t) if t == kind.clone_flag() => {}
            Ok(t) => {
                return Err(what(format!(
                    "this is a {} namespace",
                    super::describe_flags(t)
                )))
            }
            Err(e) => return Err(what(format!("not a namespace file ({e})"))),
        }
        if *kind == NsKind::Mount {
            // pivot_root(2) moves the root of every process of the namespace whose root was the
            // old one: in rcrun's own mount namespace that is the host's.
            if crate::sys::process::is_own_namespace(fd.as_fd(), "mnt")
                .map_err(|e| what(e.to_string()))?
            {
                return Err(what(
                    "it is rcrun's own mount namespace; building the container's root there \
                     would pivot the host's"
                        .into(),
                ));
            }
        }
        ex.step(
            "namespaces",
            &format!(
                "open {} (a {} namespace, checked with ioctl(NS_GET_NSTYPE))",
                path.display(),
                kind.proc_name()
            ),
            std::time::Duration::ZERO,
        );
        joins.push((*kind, fd));
    }
    Ok(joins)
}

/// A start with subordinate ids enters the store's id holder (launch/holder.rs), so that rcrun
/// writes the child's maps itself instead of running newuidmap and newgidmap. Any reason the
/// holder cannot be used is narrated, and the start maps with the helpers as before.
fn enter_id_holder(
    plan: &StartupPlan,
    joins: &[(NsKind, OwnedFd)],
    ex: &Explain,
) -> Option<super::holder::Joined> {
    let store = plan.id_holder.as_deref()?;
    if !matches!(plan.mapping, super::plan::IdMapping::Helpers { .. })
        || joins.iter().any(|(k, _)| *k == NsKind::User)
    {
        return None;
    }
    let t = std::time::Instant::now();
    match super::holder::join(store, &plan.mapping) {
        Ok(joined) => {
            ex.step(
                "idmap",
                &format!(
                    "{} id holder pid {} (one user namespace per store, mapped once by newuidmap/newgidmap): setns(its user namespace) in rcrun, so rcrun may map its child itself",
                    if joined.created { "made the" } else { "entered the" },
                    joined.pid
                ),
                t.elapsed(),
            );
            Some(joined)
        }
        Err(why) => {
            ex.step(
                "idmap",
                &format!("no id holder ({why}): newuidmap/newgidmap map this start"),
                t.elapsed(),
            );
            None
        }
    }
}

/// `rcrun exec` into a container with a user namespace: rcrun itself enters it first, so that it
/// holds the capabilities there that setns(2) into the container's other namespaces needs
/// (CAP_SYS_ADMIN in the namespace's owner *and* in the caller's own user namespace), the pid
/// namespace included, which only a later clone can be born in. rcrun stays there until it
/// exits (a process cannot leave a user namespace); it is made non-dumpable first, so that the
/// container's root, which holds every capability in that namespace, can neither ptrace it nor
/// open its /proc/PID/exe, the host's rcrun binary (CVE-2019-5736): the check then needs
/// CAP_SYS_PTRACE where rcrun's memory was made, the host's user namespace (ptrace(2)).
fn enter_user_namespace(joins: &[(NsKind, OwnedFd)], ex: &Explain) -> Result<(), LaunchError> {
    let Some((_, fd)) = joins.iter().find(|(k, _)| *k == NsKind::User) else {
        return Ok(());
    };
    crate::sys::process::set_dumpable(false).map_err(sys("prctl(PR_SET_DUMPABLE, 0)"))?;
    ex.timed(
        "namespaces",
        "prctl(PR_SET_DUMPABLE, 0); setns(user namespace) in rcrun: the container's capabilities for the joins that follow",
        || crate::sys::process::join_namespace(fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWUSER),
    )
    .map_err(sys("setns(CLONE_NEWUSER)"))
}

/// Enters the pid namespace the container joins for the clone that follows (setns(2) with
/// CLONE_NEWPID changes only where children are born), returning how to come back.
fn enter_pid_namespace(
    joins: &[(NsKind, OwnedFd)],
    ex: &Explain,
) -> Result<Option<OwnedFd>, LaunchError> {
    let Some((_, fd)) = joins.iter().find(|(k, _)| *k == NsKind::Pid) else {
        return Ok(None);
    };
    let own = nix::fcntl::open(
        "/proc/self/ns/pid",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(sys("open /proc/self/ns/pid"))?;
    ex.timed(
        "namespaces",
        "setns(pid namespace, CLONE_NEWPID) in rcrun: the clone is born in it",
        || crate::sys::process::join_namespace(fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWPID),
    )
    .map_err(sys("setns(CLONE_NEWPID)"))?;
    Ok(Some(own))
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
