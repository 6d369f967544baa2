//! `rcrun run -d`: the container is started by a monitor, a forked copy of rcrun that stays its
//! parent (as conmon is podman's): the same launcher as a foreground run, with its output going
//! to `container.log`. The monitor writes the container's record once its command runs, its
//! exit status when it exits (after the cleanup every run does), and with `--rm` removes it all.
//! The `rcrun run -d` the user typed waits only until the command ran (or failed to), prints the
//! ID and returns.
//!
//! ```text
//! rcrun run -d ──claim <root>/<id>, .names/NAME, config.json──fork──▶ monitor (setsid, stdio → log)
//!      │                                                              │ launch: spawn, start
//!      │◀──────────── "started" / "failed CODE\nMESSAGE" (pipe) ──────┤ state.json
//!   print ID, exit                                                    │ wait … exit.json, cleanup
//! ```

use super::{Exit, AUTO_REMOVE, COMMAND, EXIT_FILE, IMAGE, LOG_FILE, MONITOR, NAME};
use crate::oci::state::{self, ContainerDir, Record};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

/// What a detached run records besides what the launcher knows.
pub struct Detached<'a> {
    pub id: &'a str,
    pub name: Option<&'a str>,
    pub image: String,
    pub argv: &'a [String],
    pub auto_remove: bool,
    /// The run's OCI config (what `--print-spec` prints): `exec` compiles its process from it.
    pub config: serde_json::Value,
    pub userns: bool,
}

/// Called by the launcher once the container's command ran (or failed to, with docker's code and
/// the message): its host pid and cgroup.
pub type OnStarted<'a> = dyn Fn(i32, Option<&crate::cgroup::Cgroup>, Option<(i32, &str)>) + 'a;

/// Starts the container in the background through `launch`, which gets the callback to call
/// once its command ran and returns its exit status. Returns in the calling rcrun once that
/// happened: 0 and the ID printed, or the command's failure.
pub fn run(
    ctx: &Ctx,
    d: &Detached<'_>,
    launch: impl FnOnce(&OnStarted<'_>) -> Result<i32>,
) -> Result<i32> {
    let cd = claim(ctx, d)?;
    let log = std::fs::OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(cd.dir.join(LOG_FILE))
        .with_context(|| format!("create {}", cd.dir.join(LOG_FILE).display()));
    let log = match log {
        Ok(log) => log,
        Err(e) => {
            release(&ctx.state_root, d);
            let _ = cd.remove();
            return Err(e);
        }
    };
    let (report_rx, report_tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .context("pipe for the monitor's report")?;
    let forked = crate::sys::process::fork_monitor().context("fork the container's monitor")?;
    match forked {
        Some(_monitor) => {
            drop(report_tx);
            drop(log);
            let mut report = String::new();
            let _ = std::fs::File::from(report_rx).read_to_string(&mut report);
            parent(ctx, &cd, d, &report)
        }
        None => {
            drop(report_rx);
            monitor(ctx, cd, d, log, report_tx, launch)
        }
    }
}

/// A foreground run with `--name`: registered like a container of `run -d` while it runs (so
/// `exec`, `ps`, `stop` and `kill` find it by name from another terminal), with the terminal
/// kept, and removed when it exits (a foreground run is always removed).
pub fn run_named_foreground(
    ctx: &Ctx,
    d: &Detached<'_>,
    launch: impl FnOnce(&OnStarted<'_>) -> Result<i32>,
) -> Result<i32> {
    let root = &ctx.state_root;
    let cd = claim(ctx, d)?;
    // Other commands (exec, stop, ps) must not wait for the container's lifetime.
    cd.unlock();
    let monitor_id = this_monitor();
    let on_started =
        |pid: i32, cg: Option<&crate::cgroup::Cgroup>, failure: Option<(i32, &str)>| {
            if failure.is_none() {
                if let Err(e) = cd.write(&record(d, pid, cg, &monitor_id)) {
                    eprintln!("rcrun: warning: container {}: {e}", d.id);
                }
            }
        };
    let outcome = launch(&on_started);
    release(root, d);
    let _ = cd.relock();
    let _ = cd.remove();
    outcome
}

/// Claims the container's directory under --root, its name, and writes its config.json; on a
/// failure leaves none of them.
fn claim(ctx: &Ctx, d: &Detached<'_>) -> Result<ContainerDir> {
    let root = &ctx.state_root;
    let cd = ContainerDir::claim(root, d.id)?;
    let prepared = (|| -> Result<()> {
        if let Some(name) = d.name {
            super::reserve_name(root, name, d.id)?;
        }
        let config = cd.dir.join("config.json");
        std::fs::write(&config, serde_json::to_vec_pretty(&d.config)?)
            .with_context(|| format!("write {}", config.display()))
    })();
    match prepared {
        Ok(()) => Ok(cd),
        Err(e) => {
            release(root, d);
            let _ = cd.remove();
            Err(e)
        }
    }
}

/// This process as the record's monitor: `PID:START_TIME`.
fn this_monitor() -> String {
    let pid = std::process::id();
    format!("{pid}:{}", state::start_time_of(pid as i32).unwrap_or(0))
}

/// The `rcrun run -d` the user typed: the monitor's report decides what it says.
fn parent(ctx: &Ctx, cd: &ContainerDir, d: &Detached<'_>, report: &str) -> Result<i32> {
    if report.starts_with("started") {
        println!("{}", d.id);
        return Ok(0);
    }
    // The command did not run: say why, in the words a foreground run would have used, and
    // leave nothing behind (the monitor cleans its own part up and exits).
    let log = std::fs::read_to_string(cd.dir.join(LOG_FILE)).unwrap_or_default();
    release(&ctx.state_root, d);
    let _ = crate::sys::fs::remove_tree(&cd.dir);
    match report.split_once('\n') {
        Some((first, message)) if first.starts_with("failed ") => {
            let code: i32 = first["failed ".len()..].trim().parse().unwrap_or(125);
            Err(anyhow::Error::new(crate::ProcessFailed {
                code,
                message: message.trim().to_string(),
            }))
        }
        _ => bail!(
            "the container's monitor ended before its command ran{}",
            if log.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", log.trim())
            }
        ),
    }
}

fn release(root: &std::path::Path, d: &Detached<'_>) {
    if let Some(name) = d.name {
        super::release_name_of(root, name, d.id);
    }
}

/// The monitor: never returns into rcrun's main (it leaves with exit(2) once it is done).
fn monitor(
    ctx: &Ctx,
    cd: ContainerDir,
    d: &Detached<'_>,
    log: std::fs::File,
    report_tx: OwnedFd,
    launch: impl FnOnce(&OnStarted<'_>) -> Result<i32>,
) -> ! {
    if let Err(e) = crate::sys::process::redirect_stdio(log.as_fd()) {
        let _ = report(
            &report_tx,
            &format!("failed 125\nredirect the monitor's output: {e}"),
        );
        std::process::exit(125);
    }
    drop(log);
    let report_tx = RefCell::new(Some(report_tx));
    let monitor_id = this_monitor();
    let on_started =
        |pid: i32, cg: Option<&crate::cgroup::Cgroup>, failure: Option<(i32, &str)>| {
            let Some(tx) = report_tx.borrow_mut().take() else {
                return;
            };
            if let Some((code, message)) = failure {
                let _ = report(&tx, &format!("failed {code}\n{message}"));
                return;
            }
            let record = record(d, pid, cg, &monitor_id);
            let line = match cd.write(&record) {
                Ok(()) => "started".to_string(),
                Err(e) => format!("failed 125\n{e}"),
            };
            let _ = report(&tx, &line);
        };
    let outcome = launch(&on_started);
    let failed_before_start = report_tx.borrow().is_some();
    match outcome {
        Ok(status) => {
            let exit = Exit {
                status,
                finished: state::rfc3339_now(),
            };
            let path = cd.dir.join(EXIT_FILE);
            let tmp = cd.dir.join(".exit.json.tmp");
            if std::fs::write(&tmp, serde_json::to_vec(&exit).unwrap_or_default()).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
        Err(e) => {
            let message = crate::error_message(&e);
            eprintln!("rcrun: error: {message}");
            if let Some(tx) = report_tx.borrow_mut().take() {
                let _ = report(
                    &tx,
                    &format!("failed {}\n{message}", crate::exit_code_for(&e)),
                );
            }
        }
    }
    if d.auto_remove && !failed_before_start {
        release(&ctx.state_root, d);
        let _ = cd.remove();
    }
    std::process::exit(0)
}

fn report(tx: &OwnedFd, line: &str) -> std::io::Result<()> {
    std::fs::File::from(tx.try_clone()?).write_all(line.as_bytes())
}

fn record(d: &Detached<'_>, pid: i32, cg: Option<&crate::cgroup::Cgroup>, monitor: &str) -> Record {
    let mut annotations = std::collections::BTreeMap::new();
    if let Some(name) = d.name {
        annotations.insert(NAME.to_string(), name.to_string());
    }
    annotations.insert(IMAGE.to_string(), d.image.clone());
    annotations.insert(COMMAND.to_string(), shell_words(d.argv));
    annotations.insert(MONITOR.to_string(), monitor.to_string());
    if d.auto_remove {
        annotations.insert(AUTO_REMOVE.to_string(), "true".into());
    }
    Record {
        id: d.id.to_string(),
        pid,
        start_time: state::start_time_of(pid).unwrap_or(0),
        bundle: std::path::PathBuf::from("/"),
        rootfs: std::path::PathBuf::from(format!("/proc/{pid}/root")),
        annotations,
        created: state::rfc3339_now(),
        owner: nix::unistd::geteuid().as_raw(),
        cgroup_paths: Vec::new(),
        cgroup_removable: None,
        cgroup_version: None,
        userns: d.userns,
        own_pid_namespace: true,
    }
    .with_cgroup(cg)
}

/// The command as one line, words with spaces quoted (docker ps's COMMAND column).
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|w| {
            if w.is_empty() || w.contains(|c: char| c.is_whitespace() || "\"'\\$`".contains(c)) {
                if w.contains('\'') {
                    format!("{w:?}")
                } else {
                    format!("'{w}'")
                }
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
