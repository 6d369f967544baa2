//! `rcrun ps` (the listing), `logs`, `wait`, `stop` and `rm`: docker's verbs, on every container
//! under `--root` (those of `run -d` by ID, name or ID prefix; OCI ones by their ID).

use super::{
    describe_status, exit_of, resolve, wait_finished, Exit, COMMAND, IMAGE, LOG_FILE, NAME,
};
use crate::cli::{LogsArgs, PsArgs, RmArgs, StopArgs, WaitArgs};
use crate::oci::state::{self, ContainerDir, Record, Status};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Opens the container `given` names (ID, name or ID prefix).
fn open(ctx: &Ctx, given: &str) -> Result<ContainerDir> {
    let id = resolve(&ctx.state_root, given)?;
    ContainerDir::open(&ctx.state_root, &id).map_err(|e| match e {
        state::StateError::NotFound(_) => anyhow::anyhow!(
            "no such container: {given} (under {}; `rcrun ps -a` lists them)",
            ctx.state_root.display()
        ),
        e => e.into(),
    })
}

/// One row of `rcrun ps`.
#[derive(serde::Serialize)]
struct Row {
    id: String,
    name: String,
    image: String,
    command: String,
    status: String,
    state: Status,
    created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    pid: i32,
}

/// `rcrun ps [-a] [--format table|json]`: the containers under --root, newest first.
pub fn cmd_ps_list(ctx: &Ctx, a: &PsArgs) -> Result<i32> {
    let mut rows = Vec::new();
    for id in state::list_ids(&ctx.state_root) {
        let Ok(cd) = ContainerDir::open(&ctx.state_root, &id) else {
            continue;
        };
        let Ok((r, status)) = cd.status() else {
            continue;
        };
        if status == Status::Stopped && !a.all {
            continue;
        }
        let exit = exit_of(&cd);
        rows.push(row(&r, status, exit.as_ref()));
    }
    rows.sort_by(|x, y| y.created.cmp(&x.created));
    if ctx.quiet {
        for r in &rows {
            println!("{}", r.id);
        }
        return Ok(0);
    }
    if a.format == "json" {
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(0);
    }
    println!(
        "{:<14}{:<16}{:<28}{:<24}{:<36}CREATED",
        "CONTAINER ID", "NAME", "IMAGE", "COMMAND", "STATUS"
    );
    let cut = |s: &str, n: usize| -> String {
        let s = crate::printable(s);
        if s.chars().count() > n - 2 {
            format!("{}…", s.chars().take(n - 3).collect::<String>())
        } else {
            s
        }
    };
    for r in &rows {
        println!(
            "{:<14}{:<16}{:<28}{:<24}{:<36}{} ago",
            cut(&r.id, 14),
            cut(&r.name, 16),
            cut(&r.image, 28),
            cut(&format!("\"{}\"", r.command), 24),
            r.status,
            super::ago(&r.created).unwrap_or_default()
        );
    }
    Ok(0)
}

fn row(r: &Record, status: Status, exit: Option<&Exit>) -> Row {
    let get = |k: &str| r.annotations.get(k).cloned();
    Row {
        id: r.id.chars().take(12).collect(),
        name: get(NAME).unwrap_or_default(),
        // An OCI container's image is its bundle.
        image: get(IMAGE).unwrap_or_else(|| r.bundle.display().to_string()),
        command: get(COMMAND).unwrap_or_default(),
        status: describe_status(status, exit, &r.created),
        state: status,
        created: r.created.clone(),
        exit_code: exit.map(|e| e.status),
        pid: if status == Status::Stopped { 0 } else { r.pid },
    }
}

/// `rcrun logs [-f] CONTAINER`: its log file; with -f, new output as it comes until it exits.
pub fn cmd_logs(ctx: &Ctx, a: &LogsArgs) -> Result<i32> {
    let cd = open(ctx, &a.id)?;
    let record = cd.read()?;
    let path = cd.dir.join(LOG_FILE);
    let mut file = std::fs::File::open(&path).with_context(|| {
        format!(
            "container {}: no log at {} (only a container of `rcrun run -d` has one)",
            a.id,
            path.display()
        )
    })?;
    // Other commands (stop, rm) must not wait for this one to end.
    drop(cd);
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n > 0 {
            out.write_all(&buf[..n])?;
            continue;
        }
        out.flush()?;
        let exited = state::process_seen(record.pid, record.start_time) == state::ProcessSeen::Gone
            && !super::monitor_alive(&record);
        if !a.follow || exited {
            // One last read: what was written between the read above and the exit.
            std::io::copy(&mut file, &mut out)?;
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `rcrun wait CONTAINER...`: blocks until each exits, prints each one's exit status.
pub fn cmd_wait(ctx: &Ctx, a: &WaitArgs) -> Result<i32> {
    for given in &a.ids {
        let cd = open(ctx, given)?;
        let record = cd.read()?;
        drop(cd);
        let cd = ContainerDir::open(&ctx.state_root, &record.id);
        let exit = loop {
            match &cd {
                Ok(cd) => {
                    if let Some(e) = wait_finished(cd, &record, Duration::from_secs(3600)) {
                        break Some(e);
                    }
                    if state::process_seen(record.pid, record.start_time)
                        == state::ProcessSeen::Gone
                    {
                        break None;
                    }
                }
                Err(_) => break None,
            }
        };
        match exit {
            Some(e) => println!("{}", e.status),
            None => bail!(
                "container {given} ended without an exit status (its monitor was killed, or it \
                 is not a container of `rcrun run -d`)"
            ),
        }
    }
    Ok(0)
}

/// Sends `sig` to the container's first process and waits up to `timeout` for it to be gone.
fn signal_and_wait(r: &Record, sig: Signal, timeout: Duration) -> bool {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(r.pid), sig);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if state::process_seen(r.pid, r.start_time) == state::ProcessSeen::Gone {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    state::process_seen(r.pid, r.start_time) == state::ProcessSeen::Gone
}

/// `rcrun stop [-t SECONDS] CONTAINER...`: SIGTERM, then SIGKILL after the grace time (PID 1
/// of a pid namespace ignores a signal it has no handler for, pid_namespaces(7): a shell as
/// PID 1 only goes with the SIGKILL).
pub fn cmd_stop(ctx: &Ctx, a: &StopArgs) -> Result<i32> {
    for given in &a.ids {
        let cd = open(ctx, given)?;
        let (record, status) = cd.status()?;
        if status == Status::Paused {
            crate::oci::control::thaw(&record);
        }
        if status != Status::Stopped
            && !signal_and_wait(&record, Signal::SIGTERM, Duration::from_secs(a.time))
            && !signal_and_wait(&record, Signal::SIGKILL, Duration::from_secs(10))
        {
            bail!(
                "container {given}: its process {} did not die after SIGKILL",
                record.pid
            );
        }
        // Let the monitor record the exit and clean up before saying it stopped.
        drop(cd);
        if let Ok(cd) = ContainerDir::open(&ctx.state_root, &record.id) {
            let _ = wait_finished(&cd, &record, Duration::from_secs(10));
        }
        println!("{given}");
    }
    Ok(0)
}

/// `rcrun rm [-f] CONTAINER...`: removes stopped containers (-f: kills running ones first): the
/// state, log and name, and a cgroup a killed monitor left.
pub fn cmd_rm(ctx: &Ctx, a: &RmArgs) -> Result<i32> {
    let mut failed = Vec::new();
    for given in &a.ids {
        if let Err(e) = rm_one(ctx, given, a.force) {
            eprintln!("rcrun: error: {}", crate::error_message(&e));
            failed.push(given.as_str());
            continue;
        }
        println!("{given}");
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} containers not removed: {}",
            failed.len(),
            a.ids.len(),
            failed.join(", ")
        );
    }
    Ok(0)
}

fn rm_one(ctx: &Ctx, given: &str, force: bool) -> Result<()> {
    let cd = open(ctx, given)?;
    let (record, status) = cd.status()?;
    if status != Status::Stopped {
        if !force {
            bail!("cannot remove container {given}: it is {status}; stop it first (`rcrun stop {given}`) or remove it with `rcrun rm -f {given}`");
        }
        crate::oci::control::thaw(&record);
        if !signal_and_wait(&record, Signal::SIGKILL, Duration::from_secs(10)) {
            bail!(
                "container {given}: its process {} did not die after SIGKILL",
                record.pid
            );
        }
    }
    let _ = wait_finished(&cd, &record, Duration::from_secs(10));
    super::release_name(&ctx.state_root, &record);
    if let Some(cg) = record.adopt_cgroup() {
        // Left only when the monitor was killed: it removes the cgroup when the container exits.
        cg.remove()
            .with_context(|| format!("removing the cgroup of container {given}"))?;
    }
    cd.remove()?;
    Ok(())
}

/// `rcrun gc`'s part: containers of `run -d` whose monitor was killed before it recorded an exit
/// (their process killed too, their cgroup and state removed), and names whose container is gone.
pub fn gc_orphans(ctx: &Ctx) -> Vec<std::path::PathBuf> {
    let mut removed = Vec::new();
    for id in state::list_ids(&ctx.state_root) {
        let Ok(cd) = ContainerDir::open(&ctx.state_root, &id) else {
            continue;
        };
        let Ok(record) = cd.read() else { continue };
        if !record.annotations.contains_key(super::MONITOR)
            || super::monitor_alive(&record)
            || exit_of(&cd).is_some()
        {
            continue;
        }
        let _ = signal_and_wait(&record, Signal::SIGKILL, Duration::from_secs(5));
        super::release_name(&ctx.state_root, &record);
        if let Some(cg) = record.adopt_cgroup() {
            let _ = cg.remove();
        }
        let dir = cd.dir.clone();
        if cd.remove().is_ok() {
            removed.push(dir);
        }
    }
    if let Ok(names) = std::fs::read_dir(ctx.state_root.join(".names")) {
        for n in names.flatten() {
            let gone = std::fs::read_link(n.path())
                // A target dir without state.json is a run starting right now: kept.
                .map(|t| !ctx.state_root.join(t).exists())
                .unwrap_or(true);
            if gone && std::fs::remove_file(n.path()).is_ok() {
                removed.push(n.path());
            }
        }
    }
    removed
}
