//! The container lifecycle commands (runtime-spec "Operations"), with runc's command line:
//! `create`, `start`, `state`, `kill`, `delete`, `list`, `features`. A bundle's config.json goes
//! through the same compiler and launcher as an image run; what is particular here is the state
//! directory ([`super::state`]) and the split at the exec fifo: `create` spawns the container
//! up to its start gate ([`crate::launch::StartGate::ExecFifo`]) and detaches from it; `start`,
//! a later process, opens the fifo.

use super::control::container_pids;
use super::hooks;
use super::state::{self, ContainerDir, Record, Status};
use crate::cli::{CreateArgs, CreateOptions, DeleteArgs};
use crate::launch::explain::Explain;
use crate::launch::{StartGate, StartupPlan};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A bundle read and compiled: the spec (kept in the state directory), the plan and limits.
pub(crate) struct Prepared {
    pub spec: oci_spec::runtime::Spec,
    pub plan: StartupPlan,
    pub limits: crate::cgroup::Limits,
    /// `linux.cgroupsPath`, if the spec gives one.
    pub cgroups_path: Option<String>,
    pub bundle: PathBuf,
}

/// Reads `bundle/config.json` and compiles it, the seccomp filter from `seccomp_cache` (or
/// compiled into it), narrated: the one way a bundle becomes a plan, for `run --bundle` and
/// `create`.
pub(crate) fn prepare(
    ctx: &Ctx,
    ex: &Explain,
    bundle: &Path,
    id: &str,
    scratch: &Path,
    seccomp_cache: &Path,
) -> Result<Prepared> {
    let bundle =
        std::fs::canonicalize(bundle).with_context(|| format!("--bundle {}", bundle.display()))?;
    let spec = ex.timed(
        "spec",
        &format!("read and parse {}/config.json", bundle.display()),
        || crate::spec::bundle::load(&bundle),
    )?;
    let compiled = crate::launch::plan::compile(
        &spec,
        &crate::launch::plan::Extras::default(),
        &crate::launch::plan::HostFacts {
            privilege: &ctx.privilege,
            bundle: &bundle,
            id,
            scratch,
        },
    )?;
    let mut plan = compiled.plan;
    ex.step(
        "spec",
        &format!(
            "bundle {}: root {}{}, user {}:{}, argv {:?}, {} mount steps",
            bundle.display(),
            plan.rootfs_dir
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            if plan.read_only { " (read-only)" } else { "" },
            plan.user.uid,
            plan.user.gid,
            plan.argv,
            plan.mounts.len()
        ),
        Duration::ZERO,
    );
    plan.seccomp =
        crate::commands::parts::load_seccomp(seccomp_cache, compiled.seccomp.as_ref(), &plan, ex)?;
    if let Some(rules) = &compiled.limits.devices {
        ex.step(
            "devices",
            &format!(
                "device policy from linux.resources.devices (and the default devices): {}",
                rules
                    .iter()
                    .map(|r| r.describe())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Duration::ZERO,
        );
    }
    Ok(Prepared {
        spec,
        plan,
        limits: compiled.limits,
        cgroups_path: compiled.cgroups_path,
        bundle,
    })
}

/// The record of a container whose first process is `pid`.
fn record_for(
    prepared: &Prepared,
    id: &str,
    pid: i32,
    cgroup: Option<&crate::cgroup::Cgroup>,
) -> Record {
    Record {
        id: id.to_string(),
        pid,
        start_time: state::start_time_of(pid).unwrap_or(0),
        bundle: prepared.bundle.clone(),
        rootfs: prepared
            .plan
            .rootfs_dir
            .clone()
            .unwrap_or_else(|| prepared.bundle.join("rootfs")),
        annotations: prepared
            .spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        created: state::rfc3339_now(),
        owner: nix::unistd::geteuid().as_raw(),
        cgroup_paths: Vec::new(),
        cgroup_removable: None,
        cgroup_version: None,
        userns: prepared.plan.mapping.user_namespace(),
        own_pid_namespace: prepared.plan.makes(crate::launch::NsKind::Pid),
    }
    .with_cgroup(cgroup)
}

fn check_options(o: &CreateOptions) -> Result<()> {
    if o.no_pivot {
        bail!("--no-pivot: rcrun always enters the root with pivot_root(2); a chroot(2) root can be escaped by a process with CAP_SYS_CHROOT");
    }
    Ok(())
}

/// Removes a failed or finished container's traces: its cgroup (any process left is killed)
/// and its state directory.
fn teardown(cd: ContainerDir, record: Option<&Record>) -> Result<()> {
    if let Some(r) = record {
        remove_cgroup(r)?;
    }
    cd.remove()?;
    Ok(())
}

fn remove_cgroup(r: &Record) -> Result<()> {
    match r.adopt_cgroup() {
        None => Ok(()),
        Some(cg) => cg
            .remove()
            .with_context(|| format!("removing the cgroup of container {}", r.id)),
    }
}

/// `rcrun create [--bundle DIR] ID`.
pub fn cmd_create(ctx: &Ctx, a: &CreateArgs) -> Result<i32> {
    let ex = Explain::new(a.explain);
    ex.phase(
        "create",
        &format!(
            "container {}: the bundle compiled, its process spawned up to the start gate, the state recorded; `rcrun start` does the rest",
            a.id
        ),
    );
    create(ctx, &ex, &a.bundle, &a.id, &a.options)?;
    ex.summary();
    Ok(0)
}

/// Creates container `id`: state claimed, bundle compiled, cgroup made, first process spawned up
/// to its exec fifo and detached, state recorded, console and pid file handed over. A failure
/// on the way kills what was started and removes what was made.
fn create(ctx: &Ctx, ex: &Explain, bundle: &Path, id: &str, o: &CreateOptions) -> Result<()> {
    check_options(o)?;
    let cd = ContainerDir::claim(&ctx.state_root, id)?;
    let mut recorded: Option<Record> = None;
    let made = create_in(ctx, ex, &cd, bundle, id, o, &mut recorded);
    if let Err(e) = made {
        if let Some(r) = &recorded {
            kill_and_wait(r, Duration::from_secs(5));
        }
        let _ = teardown(cd, recorded.as_ref());
        return Err(e);
    }
    Ok(())
}

fn create_in(
    ctx: &Ctx,
    ex: &Explain,
    cd: &ContainerDir,
    bundle: &Path,
    id: &str,
    o: &CreateOptions,
    recorded: &mut Option<Record>,
) -> Result<()> {
    let scratch = cd.scratch();
    std::fs::create_dir(&scratch).with_context(|| format!("mkdir {}", scratch.display()))?;
    let mut prepared = prepare(
        ctx,
        ex,
        bundle,
        id,
        &scratch,
        &ctx.state_root.join(".cache"),
    )?;
    if prepared.plan.tty && o.console_socket.is_none() {
        bail!("config.json: process.terminal is true: --console-socket is needed, since rcrun create does not stay to relay a terminal");
    }
    let (passed, listen) = super::passed_fds(o.preserve_fds)?;
    prepared.plan.preserve_fds = passed;
    if listen > 0 {
        // Socket activation (sd_listen_fds(3)): the command is PID 1 of its namespace.
        prepared.plan.env.push(format!("LISTEN_FDS={listen}"));
        prepared.plan.env.push("LISTEN_PID=1".into());
    }
    // Nobody relays stdin after create, and the container outlives this process.
    prepared.plan.interactive = false;
    prepared.plan.die_with_rcrun = false;
    ex.timed(
        "state",
        &format!(
            "mkfifo {} (mode 0622): the start gate; the process blocks opening it for writing",
            cd.fifo().display()
        ),
        || make_fifo(&cd.fifo()),
    )?;
    prepared.plan.start_gate = StartGate::ExecFifo(cd.fifo());
    let cg_fs = crate::cgroup::CgroupFs::host();
    // An OCI container may be paused: its v1 cgroup joins the freezer hierarchy too.
    prepared.limits.freezer = true;
    let mut cgroup = crate::commands::parts::make_cgroup(
        ctx,
        ex,
        &cg_fs,
        id,
        prepared.cgroups_path.as_deref(),
        &prepared.limits,
        false,
    )?;
    if let Some(cg) = &cgroup {
        prepared.plan.cgroup = cg.join();
    }
    let mut spawned = crate::launch::spawn(&prepared.plan, ex)
        .map_err(|e| anyhow::Error::new(e).context(format!("creating container {id}")))?;
    if prepared.plan.hooks_point && spawned.until_hooks_point() {
        // A failing hook drops `spawned` (the child is killed) and `create` removes the rest.
        let record = record_for(&prepared, id, spawned.pid().as_raw(), cgroup.as_ref());
        create_hooks(&prepared.spec, &record, ex)
            .with_context(|| format!("creating container {id}"))?;
        spawned.resume_after_hooks(ex)?;
    }
    spawned.until_created()?;
    if let Some((code, message)) = spawned.failure() {
        let failed = crate::ProcessFailed {
            code,
            message: message.to_string(),
        };
        drop(spawned);
        return Err(anyhow::Error::new(failed).context(format!("creating container {id}")));
    }
    let master = spawned.take_master();
    let pid = spawned.detach();
    // Recorded before anything else can fail: from here on `delete` (or the cleanup above)
    // finds the process and its cgroup.
    let record = record_for(&prepared, id, pid.as_raw(), cgroup.as_ref());
    *recorded = Some(record.clone());
    ex.timed(
        "state",
        &format!(
            "write {}/state.json (pid {}, its start time {}, cgroup, bundle): status \"created\" while {} exists",
            cd.dir.display(),
            record.pid,
            record.start_time,
            cd.fifo().display()
        ),
        || cd.write(&record),
    )?;
    // The cgroup now outlives this process: `delete` removes it.
    if let Some(cg) = cgroup.take() {
        cg.keep();
    }
    if let (Some(sock), Some(master)) = (&o.console_socket, &master) {
        ex.timed(
            "tty",
            &format!("send the pty master over {} (SCM_RIGHTS)", sock.display()),
            || send_console(sock, master),
        )?;
    }
    drop(master);
    if let Some(p) = &o.pid_file {
        ex.timed(
            "state",
            &format!(
                "write pid {} to {} (a temporary file renamed over it)",
                record.pid,
                p.display()
            ),
            || write_pid_file(p, record.pid),
        )?;
    }
    std::fs::write(
        cd.dir.join("config.json"),
        serde_json::to_vec(&prepared.spec).context("config.json")?,
    )
    .with_context(|| format!("write {}/config.json", cd.dir.display()))?;
    Ok(())
}

/// The hooks of `create` (see [`hooks`]): prestart and createRuntime in rcrun's namespaces,
/// createContainer in the container's, while its first process waits before pivot_root.
fn create_hooks(spec: &oci_spec::runtime::Spec, record: &Record, ex: &Explain) -> Result<()> {
    let state = serde_json::to_vec(&record.oci_state(Status::Created))?;
    for kind in [hooks::Kind::Prestart, hooks::Kind::CreateRuntime] {
        let list = hooks::of(spec, kind);
        if !list.is_empty() {
            ex.timed(
                "hooks",
                &format!(
                    "{} {} hook(s) in rcrun's namespaces, the state on stdin",
                    list.len(),
                    kind.name()
                ),
                || hooks::run(kind, &list, &state, None),
            )?;
        }
    }
    let list = hooks::of(spec, hooks::Kind::CreateContainer);
    if !list.is_empty() {
        let ns = hooks::container_namespaces(record.pid)
            .with_context(|| format!("open the namespaces of pid {}", record.pid))?;
        ex.timed(
            "hooks",
            &format!("{} createContainer hook(s) in the container's namespaces (setns), the state on stdin", list.len()),
            || hooks::run(hooks::Kind::CreateContainer, &list, &state, Some(&ns)),
        )?;
    }
    Ok(())
}

/// The exec fifo, mode 0622 whatever the umask: written by the container's process under any
/// uid it switched to, read only by rcrun.
fn make_fifo(path: &Path) -> Result<()> {
    use nix::sys::stat::Mode;
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o622))
        .with_context(|| format!("mkfifo {}", path.display()))?;
    // mkfifo honours the umask; the mode must not.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o622))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(())
}

/// runc's console protocol: connect to the engine's unix socket and send the pty master as
/// SCM_RIGHTS, with its name as the message (conmon and containerd's shim read both).
pub(crate) fn send_console(sock: &Path, master: &OwnedFd) -> Result<()> {
    use nix::sys::socket::{
        connect, sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
        UnixAddr,
    };
    let s = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("socket(AF_UNIX)")?;
    let addr =
        UnixAddr::new(sock).with_context(|| format!("--console-socket {}", sock.display()))?;
    connect(s.as_raw_fd(), &addr)
        .with_context(|| format!("connect to --console-socket {}", sock.display()))?;
    let fds = [master.as_raw_fd()];
    let name = b"/dev/ptmx";
    sendmsg::<()>(
        s.as_raw_fd(),
        &[std::io::IoSlice::new(name)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .with_context(|| format!("send the pty master to {}", sock.display()))?;
    Ok(())
}

/// The pid, written whole or not at all (engines poll for this file).
pub(crate) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, pid.to_string()).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("--pid-file {}", path.display()))?;
    Ok(())
}

/// `rcrun run --bundle DIR -d ID`: create + start, then return (as `runc run -d`). A start that
/// fails takes the created container down again.
pub fn run_detached(
    ctx: &Ctx,
    bundle: &Path,
    id: &str,
    o: &CreateOptions,
    explain: bool,
) -> Result<i32> {
    let ex = Explain::new(explain);
    ex.phase("create", &format!("container {id}"));
    create(ctx, &ex, bundle, id, o)?;
    let cd = ContainerDir::open(&ctx.state_root, id)?;
    ex.phase("start", &format!("container {id}"));
    let started = start(&cd, &ex);
    ex.summary();
    if let Err(e) = started {
        if let Ok(r) = cd.read() {
            kill_and_wait(&r, Duration::from_secs(5));
            let _ = teardown(cd, Some(&r));
        }
        return Err(e);
    }
    Ok(0)
}

/// `rcrun start ID`.
pub fn cmd_start(ctx: &Ctx, a: &crate::cli::StartArgs) -> Result<i32> {
    let ex = Explain::new(a.explain);
    ex.phase(
        "start",
        &format!(
            "container {}: open its start gate; its process installs seccomp and execs",
            a.id
        ),
    );
    let cd = ContainerDir::open(&ctx.state_root, &a.id)?;
    start(&cd, &ex)?;
    ex.summary();
    Ok(0)
}

fn start(cd: &ContainerDir, ex: &Explain) -> Result<()> {
    let (record, status) = cd.status()?;
    ex.step(
        "state",
        &format!(
            "read {}/state.json: status {status}, pid {}",
            cd.dir.display(),
            record.pid
        ),
        Duration::ZERO,
    );
    match status {
        Status::Created => {}
        Status::Stopped => bail!(
            "cannot start a container that has stopped (container {}: delete it and create it again)",
            cd.id
        ),
        s => bail!(
            "cannot start an already {s} container (container {}: only a created container can be started)",
            cd.id
        ),
    }
    let spec = saved_spec(cd);
    let hooks_of = |kind| {
        spec.as_ref()
            .map(|s| hooks::of(s, kind))
            .unwrap_or_default()
    };
    let start_container = hooks_of(hooks::Kind::StartContainer);
    if !start_container.is_empty() {
        let state = serde_json::to_vec(&record.oci_state(Status::Created))?;
        let ran = hooks::container_namespaces(record.pid)
            .with_context(|| format!("open the namespaces of pid {}", record.pid))
            .and_then(|ns| {
                ex.timed(
                    "hooks",
                    &format!("{} startContainer hook(s) in the container's namespaces (setns), the state on stdin", start_container.len()),
                    || hooks::run(hooks::Kind::StartContainer, &start_container, &state, Some(&ns)),
                )
                .map_err(anyhow::Error::from)
            });
        if let Err(e) = ran {
            // runtime-spec: a failing startContainer hook stops the container; `delete` follows.
            kill_and_wait(&record, Duration::from_secs(5));
            return Err(e.context(format!("starting container {}", cd.id)));
        }
    }
    let fifo = cd.fifo();
    ex.timed(
        "start",
        &format!(
            "open {} O_RDONLY|O_NONBLOCK, read its byte: the container's process, blocked opening it for writing, goes on to seccomp and execve",
            fifo.display()
        ),
        || open_gate(cd, &record, &fifo),
    )?;
    // Its absence is the "running" status from now on.
    ex.timed(
        "state",
        &format!("remove {}: status \"running\" from now on", fifo.display()),
        || std::fs::remove_file(&fifo).with_context(|| format!("remove {}", fifo.display())),
    )?;
    let poststart = hooks_of(hooks::Kind::Poststart);
    if !poststart.is_empty() {
        let state = serde_json::to_vec(&record.oci_state(Status::Running))?;
        // Failures are warnings (hooks::run), and `start` succeeds.
        ex.timed(
            "hooks",
            &format!(
                "{} poststart hook(s) in rcrun's namespaces, the state on stdin",
                poststart.len()
            ),
            || hooks::run(hooks::Kind::Poststart, &poststart, &state, None),
        )?;
    }
    Ok(())
}

/// Opens the exec fifo for reading and takes the byte the container's process writes.
fn open_gate(cd: &ContainerDir, record: &Record, fifo: &Path) -> Result<()> {
    // O_NONBLOCK: the open returns at once, and the container's open for writing completes
    // (fifo(7)); if the container died meanwhile no writer comes, which the loop notices.
    let f = nix::fcntl::open(
        fifo,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("open {}", fifo.display()))?;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut byte = [0u8; 1];
    loop {
        let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(&f), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(100u16));
        match nix::unistd::read(&f, &mut byte) {
            Ok(1) => break,
            Ok(_) | Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => bail!("read {}: {e}", fifo.display()),
        }
        if state::process_seen(record.pid, record.start_time) == state::ProcessSeen::Gone {
            bail!(
                "container {}: its process (pid {}) exited before it could be started",
                cd.id,
                record.pid
            );
        }
    }
    Ok(())
}

/// SIGKILL to the first process (in its own pid namespace that ends every process of it,
/// pid_namespaces(7)) and to any left in its cgroup, then waits until it is gone.
fn kill_and_wait(r: &Record, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if state::process_seen(r.pid, r.start_time) == state::ProcessSeen::Gone {
            return true;
        }
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(r.pid), Signal::SIGKILL);
        for p in container_pids(r) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
        }
        super::control::thaw(r);
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `rcrun delete [--force] ID`.
pub fn cmd_delete(ctx: &Ctx, a: &DeleteArgs) -> Result<i32> {
    let cd = match ContainerDir::open(&ctx.state_root, &a.id) {
        // runc: deleting what is not there is an error, except with --force.
        Err(state::StateError::NotFound(_)) if a.force => return Ok(0),
        r => r?,
    };
    let (record, status) = cd.status()?;
    // runtime-spec, "Delete": deleting a container that is not stopped MUST generate an error
    // and have no effect, a created one included (its process exists, waiting for start).
    match status {
        Status::Stopped => {}
        _ if a.force => {}
        s => bail!(
            "container {} is {s}: stop it first, or use delete --force",
            a.id
        ),
    }
    if !kill_and_wait(&record, Duration::from_secs(10)) {
        bail!(
            "container {}: its process {} did not die after SIGKILL",
            a.id,
            record.pid
        );
    }
    // The spec is read before the state directory goes: poststop runs after it.
    let spec = saved_spec(&cd);
    teardown(cd, Some(&record))?;
    if let Some(spec) = spec {
        let list = hooks::of(&spec, hooks::Kind::Poststop);
        if !list.is_empty() {
            let state = serde_json::to_vec(&record.oci_state(Status::Stopped))?;
            // Failures are warnings (hooks::run): the container is gone either way.
            let _ = hooks::run(hooks::Kind::Poststop, &list, &state, None);
        }
    }
    Ok(0)
}

/// The config.json `create` kept in the state directory (None for a container whose create
/// did not get that far).
pub(crate) fn saved_spec(cd: &ContainerDir) -> Option<oci_spec::runtime::Spec> {
    let bytes = std::fs::read(cd.dir.join("config.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}
