//! The container's first process. It starts as a clone of rcrun already inside the new
//! namespaces, waits for the parent to write its id maps, builds the root file system, drops
//! privileges and execs the command. It reads like a table of contents: one call per step, in the
//! order the reference runtimes converge on (see each comment).

use super::explain::Explain;
use super::mounts::{Mnt, MountStep};
use super::{NetSetup, StartupPlan};
use crate::sys::mount::{self as sm, Create};
use crate::sys::net;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{Gid, Uid};
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub use super::failure::Failure;
use super::failure::{fail, EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, EXIT_RCRUN_FAILED};

pub struct ChildPipes {
    /// Parent → child: one byte once the id maps and cgroup are in place.
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
    /// As root ([`NetSetup::ParentWhileMounting`]): one byte once rcrun, pid `.1` on the host,
    /// is in the new network namespace the child then joins.
    pub net_ready: Option<(OwnedFd, u32)>,
}

/// Entry point of the cloned child. Never returns.
pub fn child_main(plan: &StartupPlan, pipes: ChildPipes, ex: &Explain) -> ! {
    // The parent keeps the totals of everything before the fork; ours start from zero.
    ex.reset_totals();
    // Our own handle on the error pipe: `run` consumes `pipes`, and dropping them when it returns
    // closes `err_write` — the failure message would then be lost (write → EBADF).
    let err_write = pipes.err_write.try_clone().ok();
    let err_fd = err_write.as_ref().map_or(-1, |f| f.as_raw_fd());
    let failure = match run(plan, pipes, ex) {
        Ok(never) => match never {},
        Err(f) => f,
    };
    let mut msg = vec![failure.code as u8];
    msg.extend_from_slice(failure.message.as_bytes());
    // SAFETY: writing our own message to the still-open error pipe, then exiting without
    // running destructors or atexit handlers of the parent's image (we are a forked copy).
    unsafe {
        libc::write(err_fd, msg.as_ptr().cast(), msg.len());
        libc::_exit(failure.code);
    }
}

enum Never {}

fn run(plan: &StartupPlan, pipes: ChildPipes, ex: &Explain) -> Result<Never, Failure> {
    // If rcrun dies, the container dies with it (prctl(2) PR_SET_PDEATHSIG); re-armed after the
    // credential change below, which clears it.
    set_pdeathsig()?;
    if plan.net_setup() == NetSetup::ChildWhileMapping {
        // We hold every capability in our new user namespace from the start, maps or not
        // (user_namespaces(7)), and the namespace costs ~1 ms: made while rcrun maps our ids.
        ex.timed(
            "net",
            "unshare(CLONE_NEWNET); ioctl(SIOCSIFFLAGS, lo, IFF_UP) — while rcrun writes the id maps",
            || net::new_namespace_with_loopback().map_err(|e| fail("new network namespace", e)),
        )?;
    }
    wait_for_parent(&pipes.go_read)?;
    become_namespace_root(plan)?;
    join_cgroup(&pipes.cgroup_tasks, ex)?;
    // The cgroup namespace is rooted at the cgroups current when it is created
    // (cgroup_namespaces(7)), so it is unshared after joining rather than at clone: the container
    // then sees its own cgroup as "/".
    ex.timed(
        "namespaces",
        "unshare(CLONE_NEWCGROUP) — after joining, so the container's cgroup is its \"/\"",
        || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
                .map_err(|e| fail("unshare(CLONE_NEWCGROUP)", e))
        },
    )?;
    // Mount propagation first (mount_namespaces(7)): nothing we mount may leak back to the host.
    ex.timed(
        "mount",
        "mount(NULL, \"/\", NULL, MS_REC|MS_SLAVE) — stop propagation to the host",
        || {
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_SLAVE,
                None::<&str>,
            )
            .map_err(|e| fail("make / rslave", e))
        },
    )?;
    let (newroot, etc_in_upper) = mount_rootfs(plan, ex)?;
    let root_fd = open_root(&newroot)?;
    let mut net_ready = pipes.net_ready;
    for m in &plan.mounts {
        if etc_in_upper && matches!(m.what, Mnt::HostFile { .. }) {
            continue;
        }
        if m.target.starts_with("/sys") {
            join_parent_netns(net_ready.take(), ex)?;
        }
        ex.timed("mount", &m.describe(), || {
            apply_mount(plan, root_fd.as_fd(), m)
        })?;
    }
    join_parent_netns(net_ready.take(), ex)?;
    drop(root_fd);
    ex.timed(
        "pivot_root",
        &format!(
            "chdir({0}); pivot_root(\".\", \".\"); umount2(\".\", MNT_DETACH)",
            newroot.display()
        ),
        || pivot_into(&newroot),
    )?;
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
            nix::unistd::sethostname(&plan.hostname).map_err(|e| fail("sethostname", e))
        })?;
    }
    if let Some(ready) = &pipes.userns_ready {
        // The hostname was the last thing needing the initial namespace's privilege.
        ex.timed("namespaces", "unshare(CLONE_NEWUSER) after the root file system is built; rcrun writes the maps; setresuid/setresgid(0)", || {
            enter_user_namespace_late(ready, &pipes.go_read)
        })?;
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
            nix::sys::prctl::set_dumpable(false).map_err(|e| fail("prctl(PR_SET_DUMPABLE, 0)", e))
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
        "close_range(3, ~0U, CLOSE_RANGE_CLOEXEC)",
        close_fds_on_exec,
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
    super::security_steps::apply(plan, ex)?;
    exit_if_rcrun_died(&pipes.err_write)?;
    exec(plan, ex, pipes.report.as_ref(), init_image)
}

fn set_pdeathsig() -> Result<(), Failure> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| fail("prctl(PR_SET_PDEATHSIG)", e))?;
    Ok(())
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
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .map_err(|e| fail("setresgid(0) in the user namespace", e))?;
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .map_err(|e| fail("setresuid(0) in the user namespace", e))?;
    }
    Ok(())
}

/// As root: waits for rcrun to have made the network namespace (in parallel with our mounts so
/// far) and joins it. `None`: nothing to join, or already joined.
fn join_parent_netns(ready: Option<(OwnedFd, u32)>, ex: &Explain) -> Result<(), Failure> {
    let Some((ready, rcrun_pid)) = ready else {
        return Ok(());
    };
    wait_for_parent(&ready)?;
    ex.timed(
        "net",
        &format!("setns(/proc/{rcrun_pid}/ns/net, CLONE_NEWNET) — join the namespace rcrun made"),
        || net::join_namespace_of(rcrun_pid).map_err(|e| fail("join the network namespace", e)),
    )
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
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(|e| fail("unshare(CLONE_NEWUSER)", e))?;
    nix::unistd::write(ready, b"u").map_err(|e| fail("tell rcrun to write the id maps", e))?;
    wait_for_parent(go)?;
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(|e| fail("setresgid(0) in the user namespace", e))?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(|e| fail("setresuid(0) in the user namespace", e))
}

/// tmpfs scratch (upper, work, merged) on the store's run dir, visible only in this mount
/// namespace, then the overlay on `merged`. The tmpfs dies with the namespace: no cleanup.
fn mount_rootfs(plan: &StartupPlan, ex: &Explain) -> Result<(PathBuf, bool), Failure> {
    let scratch = &plan.scratch;
    ex.timed("mount", &format!("mount(\"tmpfs\", {}, \"tmpfs\", \"mode=0700\") — scratch for upper/work, private to this mount namespace", scratch.display()), || {
        mount(Some("tmpfs"), scratch, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0700")).map_err(|e| fail("mount scratch tmpfs", e))
    })?;
    let upper = scratch.join("upper");
    let work = scratch.join("work");
    let merged = scratch.join("merged");
    for d in [&upper, &work, &merged] {
        std::fs::create_dir(d).map_err(|e| fail(&format!("mkdir {}", d.display()), e))?;
    }
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755));
    if let super::plan::IdMapping::Privileged { uid, gid } = &plan.mapping {
        // The root directory of the container comes from the upper dir: owned by container root.
        nix::unistd::chown(
            &upper,
            Some(Uid::from_raw(uid.outside)),
            Some(Gid::from_raw(gid.outside)),
        )
        .map_err(|e| fail("chown upper dir to the container's root", e))?;
    }
    if let Some(rootfs) = &plan.rootfs_dir {
        // An OCI bundle: its rootfs is the root, bound (with its submounts) onto `merged` so that
        // pivot_root(2) gets the mount point it requires.
        ex.timed(
            "mount",
            &format!(
                "mount({}, {}, MS_BIND|MS_REC) — the bundle's rootfs is the root",
                rootfs.display(),
                merged.display()
            ),
            || {
                mount(
                    Some(rootfs.as_path()),
                    &merged,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| fail(&format!("bind the bundle's rootfs {}", rootfs.display()), e))
            },
        )?;
        return Ok((merged, false));
    }
    let etc_in_upper = write_etc_files_into_upper(plan, &upper, ex)?;
    // Test hook (tests/errors.rs): act like a kernel before 5.11, whose overlayfs answers EPERM
    // to a mount from a user namespace, so that message is checked without such a kernel.
    let simulate_old_kernel =
        plan.mapping.user_namespace() && std::env::var_os("RCRUN_TEST_NO_USERNS_OVERLAY").is_some();
    let t = std::time::Instant::now();
    let method = if simulate_old_kernel {
        Err(Errno::EPERM)
    } else {
        sm::mount_overlay(&plan.lowers_top_first, &upper, &work, &merged)
    };
    let how = match &method {
        Ok(sm::OverlayMethod::NewApi) => {
            "fsopen(\"overlay\") + fsconfig(\"lowerdir+\") per layer + fsmount + move_mount"
        }
        Ok(sm::OverlayMethod::Classic) => "mount(\"overlay\") with an option string",
        Err(_) => "FAILED: mount overlay",
    };
    ex.step(
        "mount",
        &format!(
            "{how} → {}: lowerdir (top first) = {}, upperdir={}, workdir={}, userxattr,index=off,metacopy=off",
            merged.display(),
            describe_lowers(&plan.lowers_top_first),
            upper.display(),
            work.display(),
        ),
        t.elapsed(),
    );
    method.map_err(|e| fail("mount overlay root file system", overlay_hint(e)))?;
    Ok((merged, etc_in_upper))
}

/// /etc/hostname, /etc/hosts and /etc/resolv.conf written straight into the (still empty) upper
/// dir: the overlay then shows them over the image's, as the container's own writable files
/// (Docker's are writable bind mounts), with no mount and no copy-up of /etc. Only when the image's
/// /etc is a directory (or absent): a symlink or file there keeps the bind-mount way, whose
/// targets are resolved inside the root. Returns whether it wrote them.
fn write_etc_files_into_upper(
    plan: &StartupPlan,
    upper: &Path,
    ex: &Explain,
) -> Result<bool, Failure> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
    let files: Vec<(&str, &str)> = plan
        .mounts
        .iter()
        .filter_map(|m| match &m.what {
            Mnt::HostFile { contents } => Some((m.target.as_str(), contents.as_str())),
            _ => None,
        })
        .collect();
    if files.is_empty()
        || files
            .iter()
            .any(|(t, _)| Path::new(t).parent() != Some(Path::new("/etc")))
    {
        return Ok(false);
    }
    // The topmost layer that says anything about /etc decides: a directory lends its mode and
    // owner to ours (the overlay shows the upper dir's), a whiteout or no entry means none.
    // The topmost layer with an /etc entry decides (found once when planning): a directory lends
    // its mode and owner to ours (the overlay shows the upper dir's), a whiteout or no entry
    // means none. Stat'ed here, so owners are seen through our own user namespace.
    let like: Option<std::fs::Metadata> = match plan.etc_layer {
        None => None,
        Some(i) => match std::fs::symlink_metadata(plan.lowers_top_first[i].join("etc")) {
            Ok(m) if m.is_dir() => Some(m),
            Ok(m) if m.file_type().is_char_device() && m.rdev() == 0 => None,
            _ => return Ok(false),
        },
    };
    let f = |e: std::io::Error| fail("write /etc files into the upper dir", e);
    let etc = upper.join("etc");
    std::fs::DirBuilder::new()
        .mode(like.as_ref().map_or(0o755, |m| m.mode() & 0o7777))
        .create(&etc)
        .map_err(f)?;
    let owner = |path: &Path, uid: u32, gid: u32| {
        nix::unistd::chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|e| fail(&format!("chown {}", path.display()), e))
    };
    // Container root, as seen from here: with --userns as root the child is still outside the
    // user namespace, so that is the mapped id.
    let (root_uid, root_gid) = match &plan.mapping {
        super::plan::IdMapping::Privileged { uid, gid } => (uid.outside, gid.outside),
        _ => (0, 0),
    };
    match &like {
        Some(m) => owner(&etc, m.uid(), m.gid())?,
        None => owner(&etc, root_uid, root_gid)?,
    }
    for (target, contents) in files {
        ex.timed(
            "mount",
            &format!(
                "write {target} ({} bytes) into the upper dir — the overlay shows it over the image's, no mount needed",
                contents.len()
            ),
            || {
                let path = upper.join(target.trim_start_matches('/'));
                std::fs::write(&path, contents).map_err(f)?;
                owner(&path, root_uid, root_gid)?;
                std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                    .map_err(f)
            },
        )?;
    }
    Ok(true)
}

/// `<store>/layers/<owners>/{8e1ca14706c1,a364fd49e5aa}/fs`: every lower dir, compactly (the
/// full digests are in the `layer` lines above).
fn describe_lowers(lowers: &[PathBuf]) -> String {
    let parent = lowers
        .first()
        .and_then(|l| l.parent())
        .and_then(|l| l.parent());
    let short: Option<Vec<String>> = lowers
        .iter()
        .map(|l| {
            let digest_dir = l.parent()?;
            (digest_dir.parent() == parent).then(|| {
                digest_dir
                    .file_name()?
                    .to_str()
                    .map(|h| h.chars().take(12).collect())
            })?
        })
        .collect();
    match (parent, short) {
        (Some(p), Some(s)) => format!("{}/{{{}}}/fs", p.display(), s.join(",")),
        _ => lowers
            .iter()
            .map(|l| l.display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
    }
}

fn overlay_hint(e: Errno) -> String {
    match e {
        Errno::EPERM | Errno::EINVAL => format!(
            "{e}: this kernel ({}) does not allow overlayfs in a user namespace (needs Linux 5.11+ for `userxattr`): upgrade the kernel, or run rcrun as root",
            std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|r| r.trim().to_string()).unwrap_or_else(|_| "?".into())
        ),
        Errno::E2BIG => "too many layers for the mount(2) option string and the kernel lacks fsconfig lowerdir+ (Linux 6.8+)".into(),
        other => other.to_string(),
    }
}

fn open_root(root: &Path) -> Result<OwnedFd, Failure> {
    nix::fcntl::open(
        root,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| fail("open new root", e))
}

fn apply_mount(
    plan: &StartupPlan,
    root: std::os::fd::BorrowedFd<'_>,
    m: &MountStep,
) -> Result<(), Failure> {
    let what = format!("mount {}", m.target);
    let f = |e: Errno| fail(&what, e);
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // The kernel's own file systems go on a real directory only: an image whose /proc is a
    // symlink (to "/", to /etc, …) would otherwise have proc mounted wherever it points, over
    // the root itself or where the masks below cannot find it (runc refuses the same,
    // CVE-2019-16884/19921 class). User-chosen targets (--tmpfs, -v) follow symlinks, inside the
    // root.
    if m.what.is_kernel_fs() || m.target == "/dev" {
        sm::refuse_non_directory(root, &m.target).map_err(|found| {
            fail(
                &what,
                format!("the image's {} is {found}, not a directory: rcrun mounts {} only on a directory of the image (fix the image)", m.target, m.what.fs_name()),
            )
        })?;
    }
    // A fresh instance of a pseudo file system on a directory created inside the root.
    let new_fs = |fstype: &str, flags: MsFlags, data: Option<&str>| {
        let t = sm::mountpoint(root, &m.target, Create::Dir)
            .map_err(f)?
            .expect("created");
        sm::mount_at(
            Some(Path::new(fstype)),
            t.as_fd(),
            Some(fstype),
            flags,
            data,
        )
        .map_err(f)
    };
    match &m.what {
        Mnt::Proc => new_fs("proc", nodev, None),
        Mnt::Sysfs => new_fs("sysfs", nodev | MsFlags::MS_RDONLY, None),
        Mnt::Tmpfs { data, flags } => {
            new_fs("tmpfs", MsFlags::from_bits_truncate(*flags), Some(data))
        }
        Mnt::Devpts => new_fs(
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        ),
        Mnt::Mqueue => new_fs("mqueue", nodev, None),
        Mnt::Bind {
            source,
            recursive,
            read_only,
        } => {
            let is_dir = std::fs::metadata(source)
                .map(|m| m.is_dir())
                .map_err(|e| fail(&format!("bind source {}", source.display()), e))?;
            let t = sm::mountpoint(
                root,
                &m.target,
                if is_dir { Create::Dir } else { Create::File },
            )
            .map_err(f)?
            .expect("created");
            let mut flags = MsFlags::MS_BIND;
            if *recursive {
                flags |= MsFlags::MS_REC;
            }
            sm::mount_at(Some(source), t.as_fd(), None, flags, None).map_err(f)?;
            if *read_only {
                // Re-resolve: the fd still refers to the covered mount point.
                let t = sm::mountpoint(root, &m.target, Create::Nothing)
                    .map_err(f)?
                    .expect("exists");
                if *recursive {
                    sm::make_tree_readonly(t.as_fd()).map_err(f)?;
                } else {
                    sm::remount_readonly(t.as_fd()).map_err(f)?;
                }
            }
            Ok(())
        }
        Mnt::Device {
            block,
            major,
            minor,
            mode,
        } => {
            let (dir, name) = parent_dir_in_root(root, &m.target).map_err(f)?;
            crate::sys::fs::mknod_at(
                dir.as_fd(),
                Path::new(&name),
                if *block {
                    nix::sys::stat::SFlag::S_IFBLK
                } else {
                    nix::sys::stat::SFlag::S_IFCHR
                },
                *mode,
                *major,
                *minor,
            )
            .map_err(f)?;
            // mknod applied the umask; the node gets exactly the mode asked for (the name was
            // just created as a device node by us: mknodat fails on an existing name).
            nix::sys::stat::fchmodat(
                dir.as_fd(),
                name.as_os_str(),
                nix::sys::stat::Mode::from_bits_truncate(*mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(f)
        }
        Mnt::Symlink { to } => {
            let (dir, name) = parent_dir_in_root(root, &m.target).map_err(f)?;
            match nix::unistd::symlinkat(to.as_str(), dir.as_fd(), name.as_os_str()) {
                Ok(()) | Err(Errno::EEXIST) => Ok(()),
                Err(e) => Err(f(e)),
            }
        }
        Mnt::Mask => {
            let Some(t) = sm::mountpoint(root, &m.target, Create::Nothing).map_err(f)? else {
                return Ok(());
            };
            let st = nix::sys::stat::fstat(t.as_fd()).map_err(f)?;
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                sm::mount_at(
                    Some(Path::new("tmpfs")),
                    t.as_fd(),
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY | nodev,
                    Some("size=0"),
                )
                .map_err(f)
            } else {
                // Only the real /dev/null (char 1:3) may be used as the mask, and the node
                // checked is the node bound: opened once (O_PATH), checked with fstat, bound
                // through its fd, so nothing can swap it in between (CVE-2025-31133 class). It
                // is the host's: this runs before pivot_root, and the image's /dev is hidden
                // under rcrun's tmpfs anyway.
                let null = nix::fcntl::open(
                    "/dev/null",
                    nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| fail("open /dev/null", e))?;
                let st =
                    nix::sys::stat::fstat(null.as_fd()).map_err(|e| fail("stat /dev/null", e))?;
                if st.st_mode & libc::S_IFMT != libc::S_IFCHR
                    || st.st_rdev != nix::sys::stat::makedev(1, 3)
                {
                    return Err(fail(
                        &what,
                        "host /dev/null is not the 1:3 character device",
                    ));
                }
                sm::mount_at(
                    Some(&sm::fd_path(null.as_fd())),
                    t.as_fd(),
                    None,
                    MsFlags::MS_BIND,
                    None,
                )
                .map_err(f)
            }
        }
        Mnt::ReadOnly => {
            let Some(t) = sm::mountpoint(root, &m.target, Create::Nothing).map_err(f)? else {
                return Ok(());
            };
            let p = sm::fd_path(t.as_fd());
            mount(
                Some(&p),
                &p,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(f)?;
            let t = sm::mountpoint(root, &m.target, Create::Nothing)
                .map_err(f)?
                .expect("exists");
            sm::make_tree_readonly(t.as_fd()).map_err(f)
        }
        Mnt::HostFile { contents } => {
            let name = m.target.trim_start_matches('/').replace('/', "_");
            let src = plan.scratch.join(name);
            std::fs::write(&src, contents)
                .map_err(|e| fail(&format!("write {}", src.display()), e))?;
            let t = sm::mountpoint(root, &m.target, Create::File)
                .map_err(f)?
                .expect("created");
            sm::mount_at(Some(&src), t.as_fd(), None, MsFlags::MS_BIND, None).map_err(f)?;
            let t = sm::mountpoint(root, &m.target, Create::Nothing)
                .map_err(f)?
                .expect("exists");
            sm::remount_readonly(t.as_fd()).map_err(f)
        }
    }
}

/// The parent directory of `target` (created inside the root if missing), opened for `*at`
/// calls, and the last component.
fn parent_dir_in_root(
    root: std::os::fd::BorrowedFd<'_>,
    target: &str,
) -> nix::Result<(OwnedFd, std::ffi::OsString)> {
    let p = Path::new(target);
    let name = p.file_name().ok_or(Errno::EINVAL)?.to_owned();
    let parent = p.parent().ok_or(Errno::EINVAL)?.display().to_string();
    let parent = sm::mountpoint(root, &parent, Create::Dir)?.ok_or(Errno::ENOENT)?;
    let dir = nix::fcntl::openat(
        parent.as_fd(),
        ".",
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    Ok((dir, name))
}

/// pivot_root(2) NOTES: `pivot_root(".", ".")` stacks the old root on top of the new one at
/// "/", and the detaching unmount then removes it — no temporary directory needed.
fn pivot_into(newroot: &Path) -> Result<(), Failure> {
    nix::unistd::chdir(newroot).map_err(|e| fail("chdir new root", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| fail("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| fail("detach old root", e))?;
    nix::unistd::chdir("/").map_err(|e| fail("chdir /", e))
}

/// The terminal must come from the container's own devpts instance (a host pty would be
/// invisible in /dev/pts inside, so `tty` would fail); the master goes back to rcrun, which
/// proxies it, like runc's console socket.
fn open_console(sock: &OwnedFd) -> Result<(), Failure> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| fail("posix_openpt", e))?;
    nix::pty::grantpt(&master).map_err(|e| fail("grantpt", e))?;
    nix::pty::unlockpt(&master).map_err(|e| fail("unlockpt", e))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| fail("ptsname", e))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| fail(&format!("open {name}"), e))?;
    let fds = [master.as_raw_fd()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(b"t")];
    nix::sys::socket::sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &cmsg,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .map_err(|e| fail("send pty master", e))?;
    drop(master);
    attach_terminal(&slave)
}

fn attach_terminal(slave: &OwnedFd) -> Result<(), Failure> {
    nix::unistd::setsid().map_err(|e| fail("setsid", e))?;
    // SAFETY: TIOCSCTTY on our pty slave fd, argument 0 (do not steal).
    Errno::result(unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) })
        .map_err(|e| fail("ioctl(TIOCSCTTY)", e))?;
    for target in 0..3 {
        // SAFETY: dup2 onto stdio fds 0-2 from our slave fd.
        Errno::result(unsafe { libc::dup2(slave.as_raw_fd(), target) })
            .map_err(|e| fail("dup2 pty", e))?;
    }
    Ok(())
}

/// The working directory is looked up beneath the container root with `openat2`
/// (`RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS`) and entered with fchdir: a `WorkingDir` of
/// `/proc/self/fd/N` names one of rcrun's own descriptors, which could be a host directory
/// (CVE-2024-21626), and is refused rather than followed; an image symlink resolves inside the
/// root.
fn enter_workdir(plan: &StartupPlan) -> Result<(), Failure> {
    let cwd = &plan.cwd;
    if !cwd.starts_with('/') {
        return Err(fail("workdir", format!("{cwd:?} is not absolute")));
    }
    let root = open_root(Path::new("/"))?;
    let found = match sm::mountpoint(root.as_fd(), cwd, Create::Nothing) {
        Ok(found) => found,
        Err(Errno::ELOOP) => {
            return Err(fail(
                &format!("working directory {cwd}"),
                "it goes through a /proc magic link (such as /proc/self/fd/N), which could lead outside the container: refused",
            ))
        }
        Err(e) => return Err(fail(&format!("working directory {cwd}"), e)),
    };
    let dir = match found {
        Some(d) => d,
        None => {
            // docker creates a missing WorkingDir (as root, before switching user).
            let d = sm::mountpoint(root.as_fd(), cwd, Create::Dir)
                .map_err(|e| {
                    fail(
                        &format!("working directory {cwd} does not exist and cannot be created"),
                        format!("{e}: create it in the image, choose another with -w, or mount --tmpfs {cwd}"),
                    )
                })?
                .ok_or_else(|| fail("workdir", "vanished after creation"))?;
            if plan.user.uid != 0 {
                let _ = nix::unistd::fchownat(
                    d.as_fd(),
                    "",
                    Some(Uid::from_raw(plan.user.uid)),
                    Some(Gid::from_raw(plan.user.gid)),
                    nix::fcntl::AtFlags::AT_EMPTY_PATH,
                );
            }
            d
        }
    };
    nix::unistd::fchdir(&dir).map_err(|e| fail(&format!("chdir workdir {cwd}"), e))?;
    // A cwd outside the root shows as "(unreachable)/..." (getcwd(3)); after pivot_root and the
    // lookup above nothing can point outside, but check instead of trusting.
    let here = nix::unistd::getcwd().map_err(|e| fail("getcwd", e))?;
    if !here.starts_with("/") {
        return Err(fail(
            "workdir",
            format!("resolves outside the container root: {}", here.display()),
        ));
    }
    Ok(())
}

fn close_fds_on_exec() -> Result<(), Failure> {
    // SAFETY: close_range(2) with the CLOEXEC flag only changes fd flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // Pre-5.11 kernels: walk /proc/self/fd.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| fail("list fds", e))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: setting FD_CLOEXEC on fds we may not own is harmless (EBADF ignored).
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// execve with a `$PATH` search in the container's environment (execvpe semantics): 127 when the
/// program is not found, 126 when it exists but cannot be executed.
fn exec(
    plan: &StartupPlan,
    ex: &Explain,
    report: Option<&OwnedFd>,
    init_image: Option<super::init::SealedInit>,
) -> Result<Never, Failure> {
    let argv: Vec<CString> = plan
        .argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| fail("argv", "contains a NUL byte"))?;
    let envp: Vec<CString> = plan
        .env
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| fail("env", "contains a NUL byte"))?;
    let prog = &plan.argv[0];
    let candidates: Vec<String> = if prog.contains('/') {
        vec![prog.clone()]
    } else {
        let path = plan
            .env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(super::plan::DEFAULT_PATH);
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{d}/{prog}"))
            .collect()
    };
    ex.step(
        "exec",
        &format!(
            "execve({:?}, {:?}, {} env vars)",
            candidates
                .iter()
                .find(|c| Path::new(c).is_file())
                .or(candidates.first())
                .map(String::as_str)
                .unwrap_or(prog),
            plan.argv,
            plan.env.len()
        ),
        std::time::Duration::ZERO,
    );
    ex.flush();
    if let Some(fd) = report {
        let _ = nix::unistd::write(fd, ex.export_totals().as_bytes());
    }
    if let Some(image) = init_image {
        super::init::fork_and_become_init(&image)?;
    }
    let mut denied: Option<Errno> = None;
    for c in &candidates {
        let Ok(path) = CString::new(c.as_bytes()) else {
            continue;
        };
        let e = nix::unistd::execve(&path, &argv, &envp).unwrap_err();
        match e {
            Errno::ENOENT | Errno::ENOTDIR => continue,
            other => {
                denied = Some(other);
                if !prog.contains('/') && other == Errno::EACCES {
                    continue;
                }
                break;
            }
        }
    }
    Err(match denied {
        Some(Errno::E2BIG) => Failure {
            code: EXIT_CANNOT_EXECUTE,
            message: format!(
                "cannot execute {prog:?}: argument list too long (E2BIG): {} argument bytes and {} environment bytes exceed what execve(2) accepts (each string at most 128 KiB, all together a quarter of the stack limit)",
                plan.argv.iter().map(|a| a.len() + 1).sum::<usize>(),
                plan.env.iter().map(|e| e.len() + 1).sum::<usize>()
            ),
        },
        Some(e) => Failure {
            code: EXIT_CANNOT_EXECUTE,
            message: format!("cannot execute {prog:?}: {e} (it must be a regular file with execute permission in the image)"),
        },
        None if prog.contains('/') => Failure {
            code: EXIT_NOT_FOUND,
            message: format!("{prog:?}: no such file or directory in the image (list its files with `rcrun inspect --layers IMAGE`)"),
        },
        None => Failure {
            code: EXIT_NOT_FOUND,
            message: format!(
                "{prog:?}: executable file not found in $PATH ({}): give its full path or set PATH with -e",
                plan.env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(super::plan::DEFAULT_PATH)
            ),
        },
    })
}
