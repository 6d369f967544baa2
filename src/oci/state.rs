//! The state directory of the OCI runtime commands: one directory per container under the
//! `--root` the engine passes (runc: /run/runc), holding `state.json` and, between `create` and
//! `start`, the `exec.fifo` the container's first process is blocked on.
//!
//! ```text
//! <root>/<id>/state.json   the OCI state (ociVersion, id, status, pid, bundle, annotations) plus
//!                          what rcrun needs later: the process's start time, cgroup dirs, config
//! <root>/<id>/exec.fifo    exists from create until start (its presence is the "created" status)
//! <root>/<id>/mnt/         the empty mount point of the container's private scratch tmpfs
//! ```
//!
//! Two rcrun processes acting on one ID are serialized by a record lock on `<id>/.lock`; `create` claims the ID with mkdir(2), which is atomic.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container ID {0:?}: use 1 to 1024 of A-Z a-z 0-9 _ + - . (not starting with .)")]
    BadId(String),
    #[error("container {id} already exists (state in {dir})")]
    Exists { id: String, dir: PathBuf },
    #[error("container \"{0}\" does not exist")]
    NotFound(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path} is not rcrun state: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// runc's rule for IDs (libcontainer's `validateID`): no path separators, nothing a state path
/// could escape with.
pub fn validate_id(id: &str) -> Result<(), StateError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(StateError::BadId(id.to_string()))
    }
}

/// The default state root: /run/rcrun as root (tmpfs: state must not outlive a reboot, as the
/// containers do not), else $XDG_RUNTIME_DIR/rcrun, else /tmp/rcrun-<uid>.
pub fn default_root(real_root: bool) -> PathBuf {
    if real_root {
        return PathBuf::from("/run/rcrun");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("rcrun"),
        _ => PathBuf::from(format!("/tmp/rcrun-{}", nix::unistd::geteuid())),
    }
}

/// The OCI `status` of a container (runtime-spec, "State").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What rcrun records at create and reads in every later command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// Host pid of the container's first process.
    pub pid: i32,
    /// Its start time (field 22 of /proc/PID/stat): a recycled pid is not our container.
    pub start_time: u64,
    pub bundle: PathBuf,
    /// The root file system, absolute.
    pub rootfs: PathBuf,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339, UTC.
    pub created: String,
    /// Who made it (runc's `owner`): a plain user sees and may act on only their own.
    pub owner: u32,
    /// cgroup directories, in creation order ("v1" or "v2" in `cgroup_version`).
    #[serde(default)]
    pub cgroup_paths: Vec<PathBuf>,
    #[serde(default)]
    pub cgroup_version: Option<String>,
    /// What `delete` removes of them, in order (a `cgroupsPath` leaf that existed before is
    /// joined, not removed; parents made on the way are): [`crate::cgroup::Cgroup::removable`].
    /// Absent in records of older versions: every path.
    #[serde(default)]
    pub cgroup_removable: Option<Vec<PathBuf>>,
    /// The container has a user namespace of its own (exec must join it first).
    #[serde(default)]
    pub userns: bool,
    /// The pid namespace is the container's own: killing its first process kills them all.
    #[serde(default = "yes")]
    pub own_pid_namespace: bool,
}

fn yes() -> bool {
    true
}

/// The state document `rcrun state` prints: the OCI fields first, then runc's extras.
#[derive(Debug, Serialize)]
pub struct OciState<'a> {
    #[serde(rename = "ociVersion")]
    pub oci_version: &'static str,
    pub id: &'a str,
    pub status: Status,
    /// 0 once stopped, as runc prints it.
    pub pid: i32,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub created: &'a str,
    pub owner: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: &'a BTreeMap<String, String>,
}

impl Record {
    /// The container's cgroup, taken over from the `create` that made it (None without one):
    /// `delete` removes it, `update` writes into it, `exec` joins it. Whoever takes it calls
    /// `remove` or `keep` (dropped, it would be torn down).
    pub fn adopt_cgroup(&self) -> Option<crate::cgroup::Cgroup> {
        if self.cgroup_paths.is_empty() {
            return None;
        }
        let version = match self.cgroup_version.as_deref() {
            Some("v2") => crate::cgroup::Version::V2,
            _ => crate::cgroup::Version::V1,
        };
        Some(crate::cgroup::Cgroup::adopt(
            version,
            &self.id,
            self.cgroup_paths.clone(),
            self.cgroup_removable.clone(),
        ))
    }

    /// The record with the container's cgroup in it (none: no cgroup).
    pub fn with_cgroup(mut self, cg: Option<&crate::cgroup::Cgroup>) -> Record {
        self.cgroup_paths = cg
            .map(|c| c.paths().iter().map(|p| p.to_path_buf()).collect())
            .unwrap_or_default();
        self.cgroup_removable = cg.map(|c| c.removable());
        self.cgroup_version = cg.map(|c| match c.version() {
            crate::cgroup::Version::V1 => "v1".into(),
            crate::cgroup::Version::V2 => "v2".into(),
        });
        self
    }

    pub fn oci_state(&self, status: Status) -> OciState<'_> {
        OciState {
            oci_version: crate::spec::OCI_VERSION,
            id: &self.id,
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            bundle: &self.bundle,
            rootfs: &self.rootfs,
            created: &self.created,
            // runc's: the owner's user name, else the number.
            owner: nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(self.owner))
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| self.owner.to_string()),
            annotations: &self.annotations,
        }
    }
}

/// A container's freezer among its cgroup directories: (file, frozen value, thawed value), v1
/// `freezer.state` or v2 `cgroup.freeze`.
pub fn freezer_of(paths: &[PathBuf]) -> Option<(PathBuf, &'static str, &'static str)> {
    paths.iter().find_map(|p| {
        if p.join("freezer.state").exists() {
            Some((p.join("freezer.state"), "FROZEN", "THAWED"))
        } else if p.join("cgroup.freeze").exists() {
            Some((p.join("cgroup.freeze"), "1", "0"))
        } else {
            None
        }
    })
}

/// What /proc says of the recorded process, for [`status_of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessSeen {
    /// No such pid, a different process under a recycled pid, or a zombie.
    Gone,
    Alive,
}

/// The OCI status from the facts (pure): a dead process is stopped; a live one blocked on the
/// exec fifo is created; otherwise running, or paused when its freezer says FROZEN.
pub fn status_of(process: ProcessSeen, fifo_exists: bool, frozen: bool) -> Status {
    match process {
        ProcessSeen::Gone => Status::Stopped,
        ProcessSeen::Alive if fifo_exists => Status::Created,
        ProcessSeen::Alive if frozen => Status::Paused,
        ProcessSeen::Alive => Status::Running,
    }
}

/// Reads /proc/PID/stat: alive only with the same start time and not a zombie (a zombie has
/// exited; only its parent's wait is missing — the engine's shim reaps it).
pub fn process_seen(pid: i32, start_time: u64) -> ProcessSeen {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return ProcessSeen::Gone;
    };
    parse_seen(&stat, start_time)
}

/// [`process_seen`] on a /proc/PID/stat line (proc_pid_stat(5): fields after the last ')').
pub fn parse_seen(stat: &str, start_time: u64) -> ProcessSeen {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return ProcessSeen::Gone;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first().copied().unwrap_or("X");
    let start: Option<u64> = fields.get(19).and_then(|s| s.parse().ok());
    if matches!(state, "Z" | "X" | "x") || start != Some(start_time) {
        ProcessSeen::Gone
    } else {
        ProcessSeen::Alive
    }
}

/// The parent pid of a /proc/PID/stat line (field 4).
pub fn parent_of(stat: &str) -> Option<i32> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The start time of a live process (field 22 of /proc/PID/stat).
pub fn start_time_of(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// One container's directory, locked for as long as this value lives.
pub struct ContainerDir {
    pub id: String,
    pub dir: PathBuf,
    lock: std::cell::Cell<Option<OwnedFd>>,
}

impl ContainerDir {
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn fifo(&self) -> PathBuf {
        self.dir.join("exec.fifo")
    }
    pub fn scratch(&self) -> PathBuf {
        self.dir.join("mnt")
    }

    /// Claims `id` under `root` (create): mkdir is atomic, so of two creates one gets EEXIST.
    pub fn claim(root: &Path, id: &str) -> Result<ContainerDir, StateError> {
        validate_id(id)?;
        ensure_root(root)?;
        let dir = root.join(id);
        // 0700: config.json holds the container's environment (secrets, often), and a
        // container's log its output; no other user has business there (runc's are 0711 with
        // 0600 files).
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StateError::Exists {
                    id: id.to_string(),
                    dir,
                })
            }
            Err(e) => return Err(io_err("mkdir", &dir)(e)),
        }
        let lock = lock_dir(&dir)?;
        Ok(ContainerDir {
            id: id.to_string(),
            dir,
            lock: std::cell::Cell::new(Some(lock)),
        })
    }

    /// Opens and locks an existing container's directory; NotFound when there is no state (also
    /// when a concurrent delete removed it while we waited for the lock).
    pub fn open(root: &Path, id: &str) -> Result<ContainerDir, StateError> {
        validate_id(id)?;
        let dir = root.join(id);
        let lock = match lock_dir(&dir) {
            Ok(l) => l,
            Err(StateError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(id.to_string()))
            }
            Err(e) => return Err(e),
        };
        let cd = ContainerDir {
            id: id.to_string(),
            dir,
            lock: std::cell::Cell::new(Some(lock)),
        };
        if !cd.state_file().exists() {
            return Err(StateError::NotFound(id.to_string()));
        }
        Ok(cd)
    }

    /// Lets other commands in while a foreground `run -b` waits for its container (state, kill
    /// and ps must not block for the container's lifetime).
    pub fn unlock(&self) {
        drop(self.lock.take());
    }

    /// Takes the lock again (a foreground run, before it tears down).
    pub fn relock(&self) -> Result<(), StateError> {
        self.lock.set(Some(lock_dir(&self.dir)?));
        Ok(())
    }

    pub fn read(&self) -> Result<Record, StateError> {
        let path = self.state_file();
        let bytes = std::fs::read(&path).map_err(io_err("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| StateError::Parse { path, source })
    }

    /// Writes state.json whole or not at all (a temp file renamed over it).
    pub fn write(&self, record: &Record) -> Result<(), StateError> {
        let path = self.state_file();
        let tmp = self.dir.join(".state.json.tmp");
        let bytes = serde_json::to_vec_pretty(record).expect("state serializes");
        std::fs::write(&tmp, bytes).map_err(io_err("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err("rename", &path))
    }

    /// The record and its live status.
    pub fn status(&self) -> Result<(Record, Status), StateError> {
        let r = self.read()?;
        let seen = process_seen(r.pid, r.start_time);
        let frozen = freezer_of(&r.cgroup_paths).is_some_and(|(file, on, _)| {
            std::fs::read_to_string(file).is_ok_and(|s| s.trim() == on)
        });
        let fifo = self.fifo().exists();
        Ok((r.clone(), status_of(seen, fifo, frozen)))
    }

    /// Removes the directory and everything in it (delete, or a failed create).
    pub fn remove(self) -> Result<(), StateError> {
        let dir = self.dir.clone();
        crate::sys::fs::remove_tree(&dir).map_err(io_err("remove", &dir))
    }
}

fn ensure_root(root: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(root)
        .map_err(io_err("mkdir", root))
}

/// Takes the container's lock: a POSIX record lock (fcntl F_SETLKW) on `<dir>/.lock`. Not
/// flock(2): a flock belongs to the open file description, which the container's first process
/// inherits across clone and would hold, blocking every later command, until it execs. A record
/// lock belongs to the process and "is not inherited by a child created via fork" (fcntl(2)).
fn lock_dir(dir: &Path) -> Result<OwnedFd, StateError> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("open", &path))?;
    let fd: OwnedFd = file.into();
    // SAFETY: flock struct zeroed then filled; F_SETLKW on an fd we own blocks until a
    // concurrent command on this ID is done.
    let r = unsafe {
        let mut fl: libc::flock = std::mem::zeroed();
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        libc::fcntl(fd.as_raw_fd(), libc::F_SETLKW, &fl)
    };
    if r != 0 {
        return Err(io_err("lock", &path)(io::Error::last_os_error()));
    }
    Ok(fd)
}

/// The IDs under `root` that have a state.json, sorted.
pub fn list_ids(root: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("state.json").is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| validate_id(n).is_ok())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Now as RFC 3339 UTC with nanoseconds (what runc's `created` looks like), without a date crate:
/// days-to-civil after Howard Hinnant's algorithm.
pub fn rfc3339_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_nanos())
}

pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_runc_rules() {
        for ok in ["a", "abc-123", "x.y_z+1", &"a".repeat(1024)] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "ü",
            &"a".repeat(1025),
            "a\0",
        ] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn status_follows_process_and_fifo() {
        assert_eq!(status_of(ProcessSeen::Gone, true, false), Status::Stopped);
        assert_eq!(status_of(ProcessSeen::Alive, true, false), Status::Created);
        assert_eq!(status_of(ProcessSeen::Alive, false, false), Status::Running);
        assert_eq!(status_of(ProcessSeen::Alive, false, true), Status::Paused);
    }

    #[test]
    fn stat_lines_tell_recycled_pids_and_zombies() {
        // comm with a space and a ')' of its own: fields count from the last ')'.
        let line = |state: &str, start: u64| {
            format!("42 (a b) c) {state} 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0")
        };
        assert_eq!(parse_seen(&line("S", 777), 777), ProcessSeen::Alive);
        assert_eq!(parse_seen(&line("R", 777), 777), ProcessSeen::Alive);
        assert_eq!(parse_seen(&line("S", 778), 777), ProcessSeen::Gone);
        assert_eq!(parse_seen(&line("Z", 777), 777), ProcessSeen::Gone);
        assert_eq!(parse_seen("garbage", 777), ProcessSeen::Gone);
        assert_eq!(parent_of(&line("S", 777)), Some(1));
        let me = std::process::id() as i32;
        let t = start_time_of(me).unwrap();
        assert_eq!(process_seen(me, t), ProcessSeen::Alive);
        assert_eq!(process_seen(me, t + 1), ProcessSeen::Gone);
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(rfc3339(1_796_515_200, 0), "2026-12-06T00:00:00.000000000Z");
    }

    #[test]
    fn claim_is_exclusive_and_open_needs_state() {
        let root = std::env::temp_dir().join(format!("rcrun-state-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let c = ContainerDir::claim(&root, "one").unwrap();
        assert!(matches!(
            ContainerDir::claim(&root, "one"),
            Err(StateError::Exists { .. })
        ));
        // Claimed but no state yet: not a container to the other commands.
        drop(c);
        assert!(matches!(
            ContainerDir::open(&root, "one"),
            Err(StateError::NotFound(_))
        ));
        assert!(matches!(
            ContainerDir::open(&root, "../etc"),
            Err(StateError::BadId(_))
        ));
        assert!(list_ids(&root).is_empty());
        let _ = std::fs::remove_dir_all(&root);
    }
}
