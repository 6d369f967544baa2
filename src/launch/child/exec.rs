//! The last steps of the first process: enter the working directory, close rcrun's descriptors
//! on exec, and execve the command (or report 126/127 as docker does).

use super::rootfs::open_root;
use crate::launch::explain::Explain;
use crate::launch::failure::{fail, Failure, Never, EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND};
use crate::launch::StartupPlan;
use crate::sys::mount::{self as sm, Create};
use nix::errno::Errno;
use nix::unistd::{Gid, Uid};
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// The working directory is looked up beneath the container root with `openat2`
/// (`RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS`) and entered with fchdir: a `WorkingDir` of
/// `/proc/self/fd/N` names one of rcrun's own descriptors, which could be a host directory
/// (CVE-2024-21626), and is refused rather than followed; an image symlink resolves inside the
/// root.
pub(super) fn enter_workdir(plan: &StartupPlan) -> Result<(), Failure> {
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

pub(super) fn close_fds_on_exec(preserve: u32) -> Result<(), Failure> {
    // `--preserve-fds N` (and LISTEN_FDS): 3 .. 3+N-1 go on to the command, as runc passes them;
    // rcrun checked at its start that they are open, so none of its own descriptors is among
    // them.
    for fd in 3..3 + preserve as i32 {
        crate::sys::process::keep_on_exec(fd)
            .map_err(|e| fail(&format!("keep fd {fd} open"), e))?;
    }
    crate::sys::process::cloexec_from(3 + preserve).map_err(|e| fail("mark fds close-on-exec", e))
}

/// execve with a `$PATH` search in the container's environment (execvpe semantics): 127 when the
/// program is not found, 126 when it exists but cannot be executed.
pub(super) fn exec(
    plan: &StartupPlan,
    ex: &Explain,
    report: Option<&OwnedFd>,
    init_image: Option<crate::launch::init::SealedInit>,
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
    let candidates = exec_candidates(plan);
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
        crate::launch::init::fork_and_become_init(&image)?;
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
        None => not_found(plan),
    })
}

/// Where execve is tried for argv[0]: the path itself when it has a '/', else each $PATH entry
/// (the container's PATH, or the default).
pub(super) fn exec_candidates(plan: &StartupPlan) -> Vec<String> {
    let prog = &plan.argv[0];
    if prog.contains('/') {
        return vec![prog.clone()];
    }
    let path = plan
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(crate::launch::plan::DEFAULT_PATH);
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| format!("{d}/{prog}"))
        .collect()
}

/// The command is nowhere: 127, with what to do about it.
pub(super) fn not_found(plan: &StartupPlan) -> Failure {
    let prog = &plan.argv[0];
    if prog.contains('/') {
        Failure {
            code: EXIT_NOT_FOUND,
            message: format!("{prog:?}: no such file or directory in the image (list its files with `rcrun inspect --layers IMAGE`)"),
        }
    } else {
        Failure {
            code: EXIT_NOT_FOUND,
            message: format!(
                "{prog:?}: executable file not found in $PATH ({}): give its full path or set PATH with -e",
                plan.env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(crate::launch::plan::DEFAULT_PATH)
            ),
        }
    }
}

/// The command starts with every signal at its default and none blocked, whatever rcrun and
/// whoever started it had: an ignored signal stays ignored across execve and the mask is kept
/// (signal(7), "Signal mask and pending signals"; execve(2)). Rust ignores SIGPIPE, engines and
/// `nohup` may ignore others: inherited, `yes | head` would never end with SIGPIPE.
pub(super) fn reset_signals() -> Result<(), Failure> {
    crate::sys::process::default_signal_dispositions()
        .map_err(|e| fail("sigprocmask(SIG_SETMASK, {})", e))
}
