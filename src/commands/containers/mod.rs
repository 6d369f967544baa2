//! docker's everyday verbs on containers started with `rcrun run -d`: they live in the OCI state
//! directory (`--root`) like `create`'s, so `state`, `exec`, `kill`, `ps` and `delete` work on
//! them too. What they add to the OCI record:
//!
//! * a name, reserved by a symlink `.names/NAME → ID` (symlink(2) is atomic: of two runs asking
//!   for one name, one gets EEXIST), and found again by it or by an ID prefix ([`resolve`]);
//! * annotations naming the image, the command and the monitor: the rcrun process that started
//!   the container and stays its parent, to collect its exit status into `exit.json` and clean up
//!   (cgroup, mounts) when it exits ([`detach`]);
//! * `container.log`, its stdout and stderr.

use crate::oci::state::{self, ContainerDir, Record, Status};
use anyhow::{bail, Context, Result};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub mod detach;
pub mod verbs;

/// Annotation keys of a container of `run -d`.
pub const NAME: &str = "run.rcrun.name";
pub const IMAGE: &str = "run.rcrun.image";
pub const COMMAND: &str = "run.rcrun.command";
/// `PID:START_TIME` of the monitor (a recycled pid is not our monitor).
pub const MONITOR: &str = "run.rcrun.monitor";
/// "true": the monitor removes the container when it exits (`run -d --rm`).
pub const AUTO_REMOVE: &str = "run.rcrun.rm";

pub const LOG_FILE: &str = "container.log";
pub const EXIT_FILE: &str = "exit.json";

/// How a container of `run -d` ended, as its monitor wrote it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Exit {
    pub status: i32,
    /// RFC 3339, UTC.
    pub finished: String,
}

fn names_dir(root: &Path) -> PathBuf {
    root.join(".names")
}

/// A name as docker allows one (and as an ID would be: it names a file).
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        bail!(
            "--name {name:?}: use 1 to 128 of A-Z a-z 0-9 _ - ., starting with a letter or digit"
        );
    }
    Ok(())
}

/// Reserves `name` for `id`; the error names the container that has it.
pub fn reserve_name(root: &Path, name: &str, id: &str) -> Result<()> {
    validate_name(name)?;
    let dir = names_dir(root);
    // 0700: the names are the owner's business (the state root itself is 0711).
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("mkdir {}", dir.display()))?;
    let link = dir.join(name);
    for _ in 0..2 {
        match std::os::unix::fs::symlink(id, &link) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = std::fs::read_link(&link).unwrap_or_default();
                if root.join(&holder).join("state.json").exists() || root.join(&holder).exists() {
                    bail!(
                        "the name {name:?} is already used by container {} (under {}): remove it \
                         with `rcrun rm {name}`, or choose another name",
                        holder.display(),
                        root.display()
                    );
                }
                // A name left by a container removed without `rm` (`delete`, or a reboot).
                let _ = std::fs::remove_file(&link);
            }
            Err(e) => return Err(e).with_context(|| format!("symlink {}", link.display())),
        }
    }
    bail!("the name {name:?} is being taken by another run right now")
}

/// Releases the name of a container of `run -d` (see [`release_name_of`]).
pub fn release_name(root: &Path, record: &Record) {
    if let Some(name) = record.annotations.get(NAME) {
        release_name_of(root, name, &record.id);
    }
}

/// Releases `name` if it still points at `id` (another container may have taken it over).
pub fn release_name_of(root: &Path, name: &str, id: &str) {
    let link = names_dir(root).join(name);
    if std::fs::read_link(&link).is_ok_and(|t| t.as_os_str() == id) {
        let _ = std::fs::remove_file(link);
    }
}

/// The container ID `given` means: an ID that exists, else the name of a container of
/// `run -d`, else a unique prefix of the ID of one (docker's order). Engines always pass whole
/// IDs, and an ID that does not exist stays itself (so their "does not exist" stays true).
pub fn resolve(root: &Path, given: &str) -> Result<String> {
    if root.join(given).join("state.json").exists() || given.is_empty() || given.contains('/') {
        return Ok(given.to_string());
    }
    if let Ok(target) = std::fs::read_link(names_dir(root).join(given)) {
        let id = target.to_string_lossy().into_owned();
        if root.join(&id).join("state.json").exists() {
            return Ok(id);
        }
    }
    let matches: Vec<String> = state::list_ids(root)
        .into_iter()
        .filter(|id| id.starts_with(given) && is_detached_run(root, id))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => Ok(given.to_string()),
        many => bail!(
            "{given:?} matches {} containers ({}): give more of the ID",
            many.len(),
            many.join(", ")
        ),
    }
}

fn is_detached_run(root: &Path, id: &str) -> bool {
    std::fs::read(root.join(id).join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
        .is_some_and(|r| r.annotations.contains_key(MONITOR))
}

/// The exit a container's monitor recorded.
pub fn exit_of(cd: &ContainerDir) -> Option<Exit> {
    let bytes = std::fs::read(cd.dir.join(EXIT_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether the monitor of a container of `run -d` still runs (false for other containers).
pub fn monitor_alive(record: &Record) -> bool {
    let Some((pid, start)) = record
        .annotations
        .get(MONITOR)
        .and_then(|m| m.split_once(':'))
        .and_then(|(p, s)| Some((p.parse().ok()?, s.parse().ok()?)))
    else {
        return false;
    };
    state::process_seen(pid, start) != state::ProcessSeen::Gone
}

/// Waits until a container of `run -d` has exited and its monitor is done with it (exit.json
/// written, cgroup removed), up to `timeout`. Returns its exit, if the monitor recorded one.
pub fn wait_finished(
    cd: &ContainerDir,
    record: &Record,
    timeout: std::time::Duration,
) -> Option<Exit> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(e) = exit_of(cd) {
            return Some(e);
        }
        let container_gone =
            state::process_seen(record.pid, record.start_time) == state::ProcessSeen::Gone;
        if (container_gone && !monitor_alive(record)) || std::time::Instant::now() >= deadline {
            return exit_of(cd);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// docker's status column: "Up 3 minutes", "Exited (0) 2 seconds ago", "Created".
pub fn describe_status(status: Status, exit: Option<&Exit>, created: &str) -> String {
    match (status, exit) {
        (Status::Running, _) => format!("Up {}", ago(created).unwrap_or_default()),
        (Status::Paused, _) => format!("Up {} (Paused)", ago(created).unwrap_or_default()),
        (Status::Created | Status::Creating, _) => "Created".into(),
        (Status::Stopped, Some(e)) => format!(
            "Exited ({}) {} ago",
            e.status,
            ago(&e.finished).unwrap_or_default()
        ),
        (Status::Stopped, None) => "Exited (unknown)".into(),
    }
}

/// How long ago an RFC 3339 UTC time was, as docker says it.
pub fn ago(rfc3339: &str) -> Option<String> {
    let then = parse_rfc3339(rfc3339)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some(human_duration((now - then).max(0) as u64))
}

/// docker's (go-units HumanDuration) wording, coarsened.
pub fn human_duration(secs: u64) -> String {
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{secs} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", secs / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", secs / 3600),
        _ => format!("{} days", secs / 86400),
    }
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.frac]Z` (what [`state::rfc3339`] writes).
fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.trim_end_matches('Z');
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // days_from_civil (Howard Hinnant), the inverse of what state::rfc3339 uses.
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        for secs in [0i64, 86_399, 951_782_400, 1_796_601_600] {
            assert_eq!(parse_rfc3339(&state::rfc3339(secs, 5)), Some(secs));
        }
    }

    #[test]
    fn durations_read_as_docker_s() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(10_000), "2 hours");
    }

    #[test]
    fn names_are_reserved_once_and_resolve() {
        let root = std::env::temp_dir().join(format!("rcrun-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("abc123/")).unwrap();
        std::fs::write(
            root.join("abc123/state.json"),
            serde_json::json!({"id": "abc123", "pid": 1, "start_time": 0, "bundle": "/",
                "rootfs": "/", "created": "x", "owner": 0,
                "annotations": {MONITOR: "1:0"}})
            .to_string(),
        )
        .unwrap();
        reserve_name(&root, "web", "abc123").unwrap();
        let e = reserve_name(&root, "web", "def456")
            .unwrap_err()
            .to_string();
        assert!(e.contains("already used by container abc123"), "{e}");
        assert_eq!(resolve(&root, "web").unwrap(), "abc123");
        assert_eq!(resolve(&root, "abc").unwrap(), "abc123");
        assert_eq!(resolve(&root, "abc123").unwrap(), "abc123");
        assert_eq!(resolve(&root, "zzz").unwrap(), "zzz");
        assert!(validate_name("../x").is_err());
        assert!(validate_name(".hidden").is_err());
        // A name whose container is gone is taken over.
        std::fs::remove_dir_all(root.join("abc123")).unwrap();
        reserve_name(&root, "web", "def456").unwrap();
        let _ = std::fs::remove_dir_all(&root);
    }
}
