//! The **id holder**: one sleeping process per store, root of a user namespace that newuidmap
//! and newgidmap mapped *once* to the user's own id and subordinate ids. A rootless start with
//! subordinate ids then enters that namespace (setns(2)) and writes its child's maps itself,
//! instead of exec'ing the two setuid helpers on every start (~3 ms of a ~6 ms start here).
//!
//! Why this is safe, and what it is not:
//! - Every container still gets a user namespace of its own, a *child* of the holder's, mapped
//!   onto the same host ids as before (`0 0 1` + `1 1 65536` in the holder's ids are the user
//!   and the subordinate range). A container's root holds capabilities in its own namespace only:
//!   none in the holder's, so none over its siblings. (podman instead puts every container *in*
//!   its pause process's namespace; rcrun does not share a namespace between containers.)
//! - rcrun may write a multi-line map for the child because, inside the holder's namespace, it
//!   holds CAP_SETUID/CAP_SETGID over the child's parent namespace (user_namespaces(7), "Defining
//!   user and group ID mappings": the ids must be mapped in the parent, which the holder's are).
//!   Each line must fall within one line of the holder's map (the kernel maps a range through a
//!   single extent), which [`translate`] ensures.
//! - The holder is exec'd inside its namespace and then made non-dumpable, so ptrace of it, and
//!   opening its /proc/PID/ns files, need CAP_SYS_PTRACE in *that* namespace (ptrace(2),
//!   "Ptrace access mode checking"): rcrun, the namespace's owner one level up, has it; a
//!   container's root, one level down, does not. It holds no descriptors, sits in the host's
//!   mount namespace with "/" as its directory, drops its capabilities and sets no_new_privs.
//! - It is found through a record in the store (`holder`: pid and start time) and checked every
//!   time before use: a pidfd pins the process, its start time must match, its user namespace
//!   must be a child of rcrun's own and owned by rcrun's uid, and its maps must cover the ids the
//!   run asks for. Anything else, or any failure, and the start falls back to newuidmap.
//! - It is the one process rcrun leaves running by design: `rcrun gc` stops it, it exits by
//!   itself after [`IDLE_EXIT`] without a start (each start touches the record), and
//!   `RCRUN_NO_HOLDER=1` keeps rcrun from making or using one.

use super::explain::Explain;
use super::plan::{map_text, IdMapping, IdRange};
use crate::sys::userns;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The record's file name in the store root: "PID START_TIME\n".
pub const RECORD_FILE: &str = "holder";
const LOCK_FILE: &str = "holder.lock";
/// Set (to anything but "0") to start without the holder: newuidmap/newgidmap every time.
pub const DISABLE_ENV: &str = "RCRUN_NO_HOLDER";
/// The argument that makes an rcrun process the holder (main.rs, before the command line is
/// parsed; not a command anyone types).
pub const HOLDER_ARG: &str = "__holder";
/// The holder exits when no start has used it for this long.
pub const IDLE_EXIT: Duration = Duration::from_secs(600);
const CHECK_EVERY: Duration = Duration::from_secs(20);

/// Whether this run may use the holder (not disabled by [`DISABLE_ENV`]).
pub fn wanted() -> bool {
    !matches!(std::env::var(DISABLE_ENV), Ok(v) if v != "0")
}

/// A start inside the holder's user namespace: rcrun has entered it, and these are the child's
/// maps in the holder's ids, for rcrun to write directly.
#[derive(Debug)]
pub struct Joined {
    pub pid: i32,
    pub created: bool,
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
}

/// One /proc/PID/uid_map or gid_map ("inside outside count" per line).
pub fn parse_map(text: &str) -> Option<Vec<IdRange>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split_whitespace().map(|n| n.parse::<u32>().ok());
            let r = IdRange {
                inside: f.next()??,
                outside: f.next()??,
                count: f.next()??,
            };
            f.next().is_none().then_some(r)
        })
        .collect()
}

/// `want`'s ranges (inside → outside in rcrun's ids) rewritten as inside → the holder's ids,
/// through the holder's map `holder` (its inside → the same outside ids). A range is split where
/// it crosses from one line of the holder's map to the next, since the kernel maps each line of
/// a child's map through a single line of its parent's. None if an id is not in the holder's map.
pub fn translate(want: &[IdRange], holder: &[IdRange]) -> Option<Vec<IdRange>> {
    let mut out = Vec::new();
    for w in want {
        let (mut inside, mut outside, mut left) =
            (w.inside as u64, w.outside as u64, w.count as u64);
        while left > 0 {
            let h = holder.iter().find(|h| {
                (h.outside as u64) <= outside && outside < h.outside as u64 + h.count as u64
            })?;
            let n = left.min(h.outside as u64 + h.count as u64 - outside);
            out.push(IdRange {
                inside: inside as u32,
                outside: (h.inside as u64 + (outside - h.outside as u64)) as u32,
                count: n as u32,
            });
            inside += n;
            outside += n;
            left -= n;
        }
    }
    Some(out)
}

/// "PID START_TIME" of the record.
fn parse_record(text: &str) -> Option<(i32, u64)> {
    let mut f = text.split_whitespace();
    let pid = f.next()?.parse().ok().filter(|&p: &i32| p > 0)?;
    let start = f.next()?.parse().ok()?;
    f.next().is_none().then_some((pid, start))
}

/// A holder checked for use: its user namespace, open, and its maps.
struct Found {
    pid: i32,
    ns: OwnedFd,
    uids: Vec<IdRange>,
    gids: Vec<IdRange>,
}

/// The holder the record names, if it is one (see the module's checks); else why not.
fn find(record: &Path) -> Result<Found, String> {
    let text = std::fs::read_to_string(record).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "none yet".to_string(),
        _ => format!("{}: {e}", record.display()),
    })?;
    let (pid, start) =
        parse_record(&text).ok_or_else(|| format!("{}: not \"PID START\"", record.display()))?;
    let pidfd = userns::pidfd_open(pid).map_err(|e| format!("pid {pid}: {e}"))?;
    if userns::start_time(pid).ok() != Some(start) {
        return Err(format!("pid {pid} is another process now"));
    }
    let ns = crate::sys::process::open_namespace_of(pid, "user")
        .map_err(|e| format!("/proc/{pid}/ns/user: {e}"))?;
    let parent = userns::parent_user_namespace(ns.as_fd())
        .map_err(|e| format!("pid {pid}: NS_GET_PARENT: {e}"))?;
    if !crate::sys::process::is_own_namespace(parent.as_fd(), "user").unwrap_or(false) {
        return Err(format!(
            "pid {pid}: its user namespace is not a child of rcrun's"
        ));
    }
    let owner = userns::user_namespace_owner(ns.as_fd())
        .map_err(|e| format!("pid {pid}: NS_GET_OWNER_UID: {e}"))?;
    if owner != nix::unistd::geteuid().as_raw() {
        return Err(format!(
            "pid {pid}: its user namespace belongs to uid {owner}"
        ));
    }
    let map = |file: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .ok()
            .and_then(|t| parse_map(&t))
            .ok_or_else(|| format!("/proc/{pid}/{file}: unreadable"))
    };
    let (uids, gids) = (map("uid_map")?, map("gid_map")?);
    // Everything above was read through the pid: it was about this process only if the process
    // still lives now (its number cannot have been reused meanwhile).
    if userns::pidfd_send_signal(pidfd.as_fd(), 0).is_err() {
        return Err(format!("pid {pid} exited"));
    }
    Ok(Found {
        pid,
        ns,
        uids,
        gids,
    })
}

/// Enters the holder's user namespace for a start with `mapping` (newuidmap's kind), making the
/// holder first if there is none (under a lock, so concurrent first starts make one). On Err
/// (the reason) rcrun is still in its own namespace and maps with newuidmap as before.
pub fn join(store_root: &Path, mapping: &IdMapping) -> Result<Joined, String> {
    let IdMapping::Helpers { uids, gids, .. } = mapping else {
        return Err("only subordinate-id maps go through the holder".into());
    };
    // The holder resolves its record from "/" (its working directory): the path must be absolute
    // (`--root store` is relative to the caller's).
    let store_root =
        &std::path::absolute(store_root).map_err(|e| format!("{}: {e}", store_root.display()))?;
    let record = store_root.join(RECORD_FILE);
    let (found, created) = match find(&record) {
        Ok(f) => (f, false),
        Err(_) => {
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(store_root.join(LOCK_FILE))
                .map_err(|e| format!("{}: {e}", store_root.join(LOCK_FILE).display()))?;
            crate::unpack::store::try_lock(&lock, true)
                .map_err(|e| format!("lock the holder: {e}"))?;
            match find(&record) {
                Ok(f) => (f, false),
                Err(_) => {
                    create(&record, mapping)?;
                    (
                        find(&record).map_err(|e| format!("the new holder: {e}"))?,
                        true,
                    )
                }
            }
        }
    };
    let child_uids = translate(uids, &found.uids).ok_or_else(|| {
        format!(
            "its uid map {:?} lacks ids asked for",
            map_text(&found.uids)
        )
    })?;
    let child_gids = translate(gids, &found.gids).ok_or_else(|| {
        format!(
            "its gid map {:?} lacks ids asked for",
            map_text(&found.gids)
        )
    })?;
    crate::sys::process::join_namespace(found.ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(|e| format!("setns(holder's user namespace): {e}"))?;
    // A start is a use: the idle clock starts again (the holder reads the record's mtime).
    let _ = nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &record,
        &nix::sys::time::TimeSpec::UTIME_NOW,
        &nix::sys::time::TimeSpec::UTIME_NOW,
        nix::sys::stat::UtimensatFlags::FollowSymlink,
    );
    Ok(Joined {
        pid: found.pid,
        created,
        uids: child_uids,
        gids: child_gids,
    })
}

/// Writes the maps of `pid`, a child namespace of the holder's, from inside the holder's
/// namespace. No "deny" to setgroups first: that is only needed without CAP_SETGID over the
/// parent namespace (user_namespaces(7)), and the container may call setgroups as it may today.
pub(super) fn write_child_maps(
    pid: nix::unistd::Pid,
    joined: &Joined,
    ex: &Explain,
) -> Result<(), super::LaunchError> {
    let proc = format!("/proc/{pid}");
    let (u, g) = (map_text(&joined.uids), map_text(&joined.gids));
    ex.timed(
        "idmap",
        &format!(
            "{proc}/uid_map ← \"{}\"; gid_map ← \"{}\": written by rcrun itself, in the holder's ids (no newuidmap)",
            u.trim().replace('\n', ", "),
            g.trim().replace('\n', ", ")
        ),
        || {
            super::idmap::write_proc_file(pid, "uid_map", &u)?;
            super::idmap::write_proc_file(pid, "gid_map", &g)
        },
    )
}

/// Makes the holder: a forked copy of rcrun forks the holder into a new user namespace and
/// leaves (so the holder is nobody's child here, and init or the nearest subreaper reaps it);
/// rcrun maps it with newuidmap/newgidmap as it would a container; the holder execs
/// `rcrun __holder RECORD` inside its namespace (so its memory belongs to that namespace, see
/// the module doc); then the record is written, atomically.
fn create(record: &Path, mapping: &IdMapping) -> Result<i32, String> {
    use nix::fcntl::OFlag;
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
    let (pid_read, pid_write) = pipe()?;
    let (go_read, go_write) = pipe()?;
    let (exec_read, exec_write) = pipe()?;
    // Everything the holder needs, allocated before the forks.
    let exe = c"/proc/self/exe";
    let argv: Vec<CString> = ["rcrun-holder", HOLDER_ARG]
        .iter()
        .map(|s| CString::new(*s).expect("no NUL"))
        .chain(std::iter::once(
            CString::new(record.as_os_str().as_encoded_bytes()).map_err(|_| "NUL in path")?,
        ))
        .collect();
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;

    let middle = crate::sys::clone::fork_into_namespaces(nix::sched::CloneFlags::empty())
        .map_err(|e| format!("fork: {e}"))?;
    let Some(middle) = middle else {
        // The forked copy: make the holder, say its pid, leave.
        drop((pid_read, go_write, exec_read));
        match crate::sys::clone::fork_into_namespaces(nix::sched::CloneFlags::CLONE_NEWUSER) {
            Ok(Some(holder)) => crate::sys::process::write_and_exit(
                Some(pid_write.as_fd()),
                &holder.as_raw().to_ne_bytes(),
                0,
            ),
            Ok(None) => {}
            Err(_) => crate::sys::process::write_and_exit(None, &[], 1),
        }
        // The holder: wait until mapped, then exec.
        drop(pid_write);
        let mut b = [0u8; 1];
        if !matches!(nix::unistd::read(&go_read, &mut b), Ok(1)) {
            crate::sys::process::write_and_exit(None, &[], 1);
        }
        let why = crate::sys::process::exec_holder(exe, &argv, null.as_fd());
        crate::sys::process::write_and_exit(Some(exec_write.as_fd()), why.as_bytes(), 127);
    };
    drop((pid_write, go_read, exec_write, null));
    let _ = nix::sys::wait::waitpid(middle, None);
    let mut buf = [0u8; 4];
    let got = nix::unistd::read(&pid_read, &mut buf).map_err(|e| format!("read: {e}"))?;
    if got != 4 {
        return Err("the holder was not made (fork into a new user namespace failed)".into());
    }
    let holder = nix::unistd::Pid::from_raw(i32::from_ne_bytes(buf));
    let kill = |why: String| {
        let _ = nix::sys::signal::kill(holder, nix::sys::signal::Signal::SIGKILL);
        why
    };
    super::idmap::write_id_maps(holder, mapping, &Explain::new(false))
        .map_err(|e| kill(format!("map the holder: {e}")))?;
    let _ = nix::unistd::write(&go_write, b"1");
    drop(go_write);
    // EOF: execve succeeded (the pipe is close-on-exec); bytes: why it failed.
    let mut why = String::new();
    let _ = std::io::Read::read_to_string(&mut std::fs::File::from(exec_read), &mut why);
    if !why.is_empty() {
        return Err(kill(format!("exec the holder: {why}")));
    }
    let start = userns::start_time(holder.as_raw())
        .map_err(|e| kill(format!("the holder's start time: {e}")))?;
    let tmp = record.with_extension(format!("new-{}", std::process::id()));
    std::fs::write(&tmp, format!("{holder} {start}\n"))
        .and_then(|_| std::fs::rename(&tmp, record))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            kill(format!("{}: {e}", record.display()))
        })?;
    Ok(holder.as_raw())
}

/// `rcrun gc`: stops the store's holder, if one runs, and removes its record. Containers already
/// started keep their namespaces (each holds its parent's alive).
pub fn stop(store_root: &Path) -> Option<i32> {
    let record = store_root.join(RECORD_FILE);
    let found = find(&record).ok();
    let _ = std::fs::remove_file(&record);
    let found = found?;
    let pidfd = userns::pidfd_open(found.pid).ok()?;
    userns::pidfd_send_signal(pidfd.as_fd(), libc::SIGTERM).ok()?;
    Some(found.pid)
}

/// The holder's life (`rcrun __holder RECORD`, exec'd by [`create`] inside its namespace):
/// non-dumpable, no capabilities, no_new_privs, then asleep, waking to check that the record
/// still names it and was used within [`IDLE_EXIT`]; it leaves otherwise (or on SIGTERM).
pub fn holder_main(record: PathBuf) -> ! {
    let _ = crate::sys::process::set_dumpable(false);
    let _ = userns::set_process_name(c"rcrun-holder");
    let _ = crate::sys::process::set_no_new_privs();
    for set in [
        caps::CapSet::Ambient,
        caps::CapSet::Inheritable,
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
    ] {
        let _ = caps::clear(None, set);
    }
    let me = std::process::id() as i32;
    loop {
        std::thread::sleep(CHECK_EVERY);
        let ours = std::fs::read_to_string(&record)
            .ok()
            .and_then(|t| parse_record(&t))
            .is_some_and(|(pid, _)| pid == me);
        let idle = std::fs::metadata(&record)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age > IDLE_EXIT);
        if !ours {
            std::process::exit(0);
        }
        if idle {
            let _ = std::fs::remove_file(&record);
            std::process::exit(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(inside: u32, outside: u32, count: u32) -> IdRange {
        IdRange {
            inside,
            outside,
            count,
        }
    }

    #[test]
    fn maps_parse_as_proc_prints_them() {
        let text = "         0       1001          1\n         1     100000      65536\n";
        assert_eq!(
            parse_map(text),
            Some(vec![r(0, 1001, 1), r(1, 100000, 65536)])
        );
        assert_eq!(parse_map("0 1001\n"), None);
        assert_eq!(parse_map("0 1 2 3\n"), None);
        assert_eq!(parse_map("0 x 1\n"), None);
    }

    #[test]
    fn the_usual_run_becomes_the_holders_identity() {
        let holder = [r(0, 1001, 1), r(1, 100000, 65536)];
        assert_eq!(
            translate(&holder, &holder),
            Some(vec![r(0, 0, 1), r(1, 1, 65536)])
        );
    }

    #[test]
    fn a_range_crossing_two_holder_lines_is_split() {
        let holder = [r(0, 1001, 1), r(1, 100000, 100), r(101, 100100, 50)];
        assert_eq!(
            translate(&[r(5, 100090, 20)], &holder),
            Some(vec![r(5, 91, 10), r(15, 101, 10)])
        );
    }

    #[test]
    fn ids_the_holder_lacks_are_refused() {
        let holder = [r(0, 1001, 1), r(1, 100000, 65536)];
        assert_eq!(translate(&[r(0, 1002, 1)], &holder), None);
        assert_eq!(translate(&[r(1, 100000, 65537)], &holder), None);
        assert_eq!(translate(&[r(0, 0, 1)], &holder), None);
    }

    #[test]
    fn records_are_pid_and_start_time() {
        assert_eq!(parse_record("42 123456\n"), Some((42, 123456)));
        assert_eq!(parse_record("0 1"), None);
        assert_eq!(parse_record("-3 1"), None);
        assert_eq!(parse_record("42"), None);
        assert_eq!(parse_record("42 1 extra"), None);
    }

    #[test]
    fn a_record_of_a_living_non_holder_is_refused() {
        // Our own test process: alive, right start time, but in rcrun's own user namespace.
        let dir = std::env::temp_dir().join(format!("rcrun-holder-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let me = std::process::id() as i32;
        let start = userns::start_time(me).unwrap();
        std::fs::write(dir.join(RECORD_FILE), format!("{me} {start}\n")).unwrap();
        let why = find(&dir.join(RECORD_FILE)).err().unwrap();
        assert!(
            why.contains("not a child") || why.contains("NS_GET_PARENT"),
            "{why}"
        );
        std::fs::write(dir.join(RECORD_FILE), format!("{me} {}\n", start + 1)).unwrap();
        assert!(find(&dir.join(RECORD_FILE))
            .err()
            .unwrap()
            .contains("another process"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
