//! How the container's first process enters its cgroup, the three ways `spawn` carries out
//! ([`crate::cgroup::Join`], decided before clone):
//!
//! - cgroup v2: born inside it, clone3(CLONE_INTO_CGROUP) with the directory opened here
//!   ([`open_placement`]); kernels without it: rcrun writes its pid into `cgroup.procs`.
//! - cgroup v1: the `tasks` files opened here before clone, and the child writes "0" into each
//!   first thing ([`join_cgroup`]): a thread moving itself takes the fast path
//!   (`Cgroup::self_join_files`).
//! - cgroup v1 as root with only the device policy (no limits, no `--stats`): made after clone
//!   ([`hand_over`], [`join_when_made`]).
//!
//! Why the last: creating the cgroup (mkdir in the devices hierarchy, the device policy's 13
//! writes, the owner's /proc/self/cgroup) took 0.2–0.3 ms of rcrun's time before clone, while the
//! child then spends ~2 ms on its mounts with rcrun idle. So when the child can join late (see
//! [`super::StartupPlan::can_join_cgroup_late`] and the caller's conditions), rcrun clones first,
//! then creates the cgroup and sends the child the `tasks` files of its hierarchies on a pipe; the
//! child reads them where it joins the network namespace (before /sys, at the latest at the end
//! of its mounts), writes "0" into each and only then unshares its cgroup namespace (rooted at
//! the cgroup current then, cgroup_namespaces(7)).
//!
//! What does not change: the container's command (and everything it starts) runs under the
//! device policy — the child joins long before its start gate, and a child that cannot join
//! fails there. Until it joins, the child is rcrun's own code and is charged to rcrun's cgroup;
//! a run with resource limits (or `--stats`) makes its cgroup before clone as before, so all of
//! the container is counted.

use super::explain::Explain;
use super::failure::{fail, Failure, LaunchError, EXIT_RCRUN_FAILED};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The cgroup placement of the plan, opened before clone.
pub(super) struct Placement {
    /// cgroup v1 `tasks` files the child writes "0" into.
    pub(super) self_join: Vec<(PathBuf, OwnedFd)>,
    /// cgroup v2: (path for the narration, directory fd) for clone3(CLONE_INTO_CGROUP).
    pub(super) clone_into: Option<(String, OwnedFd)>,
}

pub(super) fn open_placement(join: &crate::cgroup::Join) -> Result<Placement, LaunchError> {
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

/// Moves this process (still single-threaded: a fork-like clone) into its cgroup v1 hierarchies
/// by writing "0" to each `tasks` file: a thread moving itself skips the global threadgroup lock
/// whose write side waits for an RCU grace period (see `Cgroup::self_join_files`). Done before
/// anything forks or allocates much, so all of the container is charged to its cgroup.
pub(super) fn join_cgroup(tasks: &[(PathBuf, OwnedFd)], ex: &Explain) -> Result<(), Failure> {
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

// ---- made after clone -------------------------------------------------------------

/// The message rcrun writes, whole, then closes the pipe: `c` and each `tasks` path ended by a
/// NUL (paths hold no NUL), or `n` alone when no cgroup was made (no devices hierarchy).
pub(super) fn encode(tasks: Option<&[PathBuf]>) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    match tasks {
        None => b"n".to_vec(),
        Some(paths) => {
            let mut m = b"c".to_vec();
            for p in paths {
                m.extend_from_slice(p.as_os_str().as_bytes());
                m.push(0);
            }
            m
        }
    }
}

/// The child's reading of [`encode`]'s message. Anything else (EOF first: rcrun failed or died
/// before it made the cgroup) is an error: the child must not go on outside its cgroup.
pub(super) fn decode(message: &[u8]) -> Result<Option<Vec<PathBuf>>, String> {
    use std::os::unix::ffi::OsStrExt;
    match message.split_first() {
        Some((b'n', [])) => Ok(None),
        Some((b'c', rest)) if rest.is_empty() || rest.ends_with(&[0]) => Ok(Some(
            rest.split(|b| *b == 0)
                .filter(|p| !p.is_empty())
                .map(|p| PathBuf::from(std::ffi::OsStr::from_bytes(p)))
                .collect(),
        )),
        None => Err("rcrun closed the cgroup pipe without making the cgroup".into()),
        Some(_) => Err(format!(
            "unreadable cgroup message from rcrun ({} bytes)",
            message.len()
        )),
    }
}

/// rcrun's side: sends the `tasks` files of the cgroup just made (None: none made) and closes
/// the pipe. A child that is gone already (EPIPE; Rust ignores SIGPIPE) is not an error here:
/// it reported its failure on the error pipe, which `start` reads.
pub(super) fn hand_over(pipe: OwnedFd, tasks: Option<&[PathBuf]>) -> Result<(), LaunchError> {
    let mut f = std::fs::File::from(pipe);
    match f.write_all(&encode(tasks)) {
        Err(e) if e.raw_os_error() != Some(libc::EPIPE) => Err(LaunchError::Child(format!(
            "send the child its cgroup: {e}"
        ))),
        _ => Ok(()),
    }
}

/// The child's side: waits for rcrun's message, then moves itself into each hierarchy.
pub(super) fn join_when_made(pipe: OwnedFd, ex: &Explain) -> Result<(), Failure> {
    let waiting = std::time::Instant::now();
    let mut message = Vec::new();
    let read = std::fs::File::from(pipe).read_to_end(&mut message);
    let waited = waiting.elapsed();
    let tasks = read
        .map_err(|e| e.to_string())
        .and_then(|_| decode(&message))
        .map_err(|message| Failure {
            code: EXIT_RCRUN_FAILED,
            message,
        })?;
    let Some(tasks) = tasks else {
        return Ok(());
    };
    let names: Vec<String> = tasks.iter().map(|p| p.display().to_string()).collect();
    ex.timed(
        "cgroup",
        &format!(
            "write 0 (this process) to {} — the cgroup rcrun made after clone (waited {:.3} ms for it)",
            names.join(", "),
            waited.as_secs_f64() * 1e3
        ),
        || tasks.iter().try_for_each(|t| write_zero(t)),
    )
}

/// Opens a `tasks` file by path (still in the host's view: before pivot_root, and no user
/// namespace, see the module comment) and writes "0": this thread moves itself.
fn write_zero(tasks: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let joined = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(tasks)
        .and_then(|mut f| f.write_all(b"0"));
    joined.map_err(|e| Failure {
        code: EXIT_RCRUN_FAILED,
        message: format!("join cgroup: write 0 to {}: {e}", tasks.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_carries_every_path_or_none() {
        let paths = vec![
            PathBuf::from("/sys/fs/cgroup/devices/rcrun/a-1-2/tasks"),
            PathBuf::from("/sys/fs/cgroup/pids/rcrun/a-1-2/tasks"),
        ];
        assert_eq!(decode(&encode(Some(&paths))).unwrap(), Some(paths));
        assert_eq!(decode(&encode(Some(&[]))).unwrap(), Some(vec![]));
        assert_eq!(decode(&encode(None)).unwrap(), None);
    }

    /// EOF before a message (rcrun failed between clone and the cgroup), a cut message or noise:
    /// the child fails rather than run on outside its cgroup.
    #[test]
    fn a_missing_or_cut_message_is_an_error() {
        assert!(decode(b"")
            .unwrap_err()
            .contains("without making the cgroup"));
        assert!(decode(b"c/sys/fs/cgroup/devices/x/ta").is_err());
        assert!(decode(b"n/extra").is_err());
        assert!(decode(b"x").is_err());
    }

    /// Over a real pipe: rcrun's whole message reaches the child, which reads until rcrun closes.
    #[test]
    fn hand_over_writes_the_whole_message_and_closes() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let long: Vec<PathBuf> = (0..200)
            .map(|i| PathBuf::from(format!("/sys/fs/cgroup/h{i}/rcrun/c/tasks")))
            .collect();
        let reader = std::thread::spawn(move || {
            let mut m = Vec::new();
            std::fs::File::from(r).read_to_end(&mut m).unwrap();
            m
        });
        hand_over(w, Some(&long)).unwrap();
        assert_eq!(decode(&reader.join().unwrap()).unwrap(), Some(long));
    }

    /// The child gone before rcrun made the cgroup: the hand-over is no error of its own.
    #[test]
    fn hand_over_to_a_gone_child_is_not_an_error() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        drop(r);
        hand_over(w, None).unwrap();
    }
}
