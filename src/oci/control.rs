//! Commands that act on a container's processes: `kill` (one signal to the first process, or
//! to every process with `--all`), `pause` and `resume` (the cgroup freezer: v1
//! `freezer.state`, v2 `cgroup.freeze`), and `ps` (the pids of the container).

use super::state::{self, ContainerDir, Record, Status};
use crate::cli::KillArgs;
use crate::Ctx;
use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

/// A signal by name (TERM, SIGTERM, term) or number.
pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n)
            .map_err(|_| anyhow::anyhow!("signal {s}: no such signal number"));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| {
        anyhow::anyhow!("signal {s:?}: unknown (use a name like TERM or KILL, or a number)")
    })
}

/// Every process of the container: its cgroup's; without a cgroup (rootless), every process in
/// its pid namespace, found by the namespace link of /proc/PID/ns/pid; and where that link is
/// closed to us (EACCES: reading it needs CAP_SYS_PTRACE over the container's user namespace,
/// which a command run in a sibling namespace, such as another `unshare -Ur`, lacks), the first
/// process and its descendants, which in a pid namespace of its own are all of it but what
/// `exec` put in.
pub(crate) fn container_pids(r: &Record) -> Vec<i32> {
    let mut pids: Vec<i32> = Vec::new();
    let proc_pids = || {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
    };
    if !r.cgroup_paths.is_empty() {
        for p in &r.cgroup_paths {
            if let Ok(s) = std::fs::read_to_string(p.join("cgroup.procs")) {
                pids.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
    } else if state::process_seen(r.pid, r.start_time) == state::ProcessSeen::Gone {
        // The recorded pid may now be someone else's.
    } else if let Ok(ns) = std::fs::read_link(format!("/proc/{}/ns/pid", r.pid)) {
        pids.extend(proc_pids().filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/pid"))
                .ok()
                .as_ref()
                == Some(&ns)
        }));
    } else {
        let parents: Vec<(i32, i32)> = proc_pids()
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                Some((pid, state::parent_of(&stat)?))
            })
            .collect();
        pids = descendants(r.pid, &parents);
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// `root` and every process below it, from (pid, parent pid) pairs.
fn descendants(root: i32, parents: &[(i32, i32)]) -> Vec<i32> {
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found
}

/// `rcrun kill ID [SIGNAL]`.
pub fn cmd_kill(ctx: &Ctx, a: &KillArgs) -> Result<i32> {
    let id = crate::commands::containers::resolve(&ctx.state_root, &a.id)?;
    let cd = ContainerDir::open(&ctx.state_root, &id)?;
    let (record, status) = cd.status()?;
    let detached_run = record
        .annotations
        .contains_key(crate::commands::containers::MONITOR);
    let sig = match (&a.signal_flag, &a.signal) {
        (Some(_), Some(_)) => bail!("give the signal once: -s SIGNAL or after the ID"),
        (Some(s), None) | (None, Some(s)) => parse_signal(s)?,
        // runc's default for engines; docker's for the containers of `run -d`.
        (None, None) if detached_run => Signal::SIGKILL,
        (None, None) => Signal::SIGTERM,
    };
    if status == Status::Stopped {
        bail!("container not running (container {} is stopped)", a.id);
    }
    let pid = nix::unistd::Pid::from_raw(record.pid);
    if a.all {
        for p in container_pids(&record) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig);
        }
    } else {
        nix::sys::signal::kill(pid, sig)
            .with_context(|| format!("kill({}, {sig}) of container {}", record.pid, a.id))?;
    }
    Ok(0)
}

/// The container's freezer ([`state::freezer_of`]), or why it has none.
fn freezer_of(r: &Record) -> Result<(std::path::PathBuf, &'static str, &'static str)> {
    state::freezer_of(&r.cgroup_paths).with_context(|| {
        format!(
            "container {} has no cgroup freezer (rootless without a delegated cgroup, or a cgroup \
             made before rcrun joined the freezer): it cannot be paused",
            r.id
        )
    })
}

/// Writes the freezer and waits until the kernel reports the state reached (v1 passes through
/// FREEZING while tasks stop; Documentation/admin-guide/cgroup-v1/freezer-subsystem.rst).
fn set_frozen(r: &Record, frozen: bool) -> Result<()> {
    let (file, on, off) = freezer_of(r)?;
    let want = if frozen { on } else { off };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        std::fs::write(&file, want)
            .with_context(|| format!("write {want} to {}", file.display()))?;
        let now = std::fs::read_to_string(&file).unwrap_or_default();
        // v2: cgroup.freeze holds what was asked; cgroup.events says when it is reached.
        let reached = match file.file_name().and_then(|n| n.to_str()) {
            Some("cgroup.freeze") => std::fs::read_to_string(file.with_file_name("cgroup.events"))
                .map(|e| {
                    e.lines()
                        .any(|l| l == format!("frozen {}", u8::from(frozen)))
                })
                .unwrap_or(true),
            _ => now.trim() == want,
        };
        if reached {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("{}: still {:?} after 10 s", file.display(), now.trim());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Thaws a paused container's cgroup (best effort): a frozen task takes a SIGKILL only once
/// thawed, so `delete --force` of a paused container kills, then thaws, as runc does.
pub(crate) fn thaw(r: &Record) {
    if let Ok((file, on, off)) = freezer_of(r) {
        if std::fs::read_to_string(&file).is_ok_and(|s| s.trim() == on || s.trim() == "FREEZING") {
            let _ = std::fs::write(&file, off);
        }
    }
}

/// `rcrun pause ID`: freezes every process of the container (runc's words when it is not
/// running).
pub fn cmd_pause(ctx: &Ctx, id: &str) -> Result<i32> {
    let cd = ContainerDir::open(&ctx.state_root, id)?;
    let (record, status) = cd.status()?;
    if status != Status::Running {
        bail!("container not running (container {id} is {status})");
    }
    set_frozen(&record, true)?;
    Ok(0)
}

/// `rcrun resume ID`.
pub fn cmd_resume(ctx: &Ctx, id: &str) -> Result<i32> {
    let cd = ContainerDir::open(&ctx.state_root, id)?;
    let (record, status) = cd.status()?;
    if status != Status::Paused {
        bail!("container not paused (container {id} is {status})");
    }
    set_frozen(&record, false)?;
    Ok(0)
}

/// `rcrun ps [--format table|json] ID`: the container's processes (json: their host pids, as
/// runc prints them for containerd's shim; table: pid and command line).
pub fn cmd_ps(ctx: &Ctx, a: &crate::cli::PsArgs) -> Result<i32> {
    let given = a.id.as_deref().unwrap_or_default();
    let id = crate::commands::containers::resolve(&ctx.state_root, given)?;
    let cd = ContainerDir::open(&ctx.state_root, &id)?;
    let (record, status) = cd.status()?;
    let pids = if status == Status::Stopped {
        Vec::new()
    } else {
        container_pids(&record)
    };
    if a.format == "json" {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(0);
    }
    println!("{:>8}  CMD", "PID");
    for pid in pids {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        println!("{pid:>8}  {}", crate::printable(&cmd));
    }
    Ok(0)
}
