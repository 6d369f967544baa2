//! The id maps of a new user namespace (user_namespaces(7)), written by rcrun for its child:
//! directly (as real root, or one id of our own) or through the setuid helpers newuidmap and
//! newgidmap (subordinate ids). Also `run_in_userns`, which runs a closure as root of such a
//! namespace (layer extraction with subordinate ids).

use super::explain::Explain;
use super::failure::LaunchError;
use super::plan::{map_text, IdMapping};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::io::Read;
use std::os::fd::AsFd;

/// Writes `text` into /proc/PID/`file` (uid_map, gid_map, setgroups), the error naming both.
pub(super) fn write_proc_file(pid: Pid, file: &str, text: &str) -> Result<(), LaunchError> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, text).map_err(|e| LaunchError::IdMap {
        step: "write id map",
        detail: format!("{path} ← {:?}: {e}", text.trim()),
    })
}

/// user_namespaces(7): writing "deny" to setgroups must precede an unprivileged gid_map write.
pub(super) fn write_id_maps(
    pid: Pid,
    mapping: &IdMapping,
    ex: &Explain,
) -> Result<(), LaunchError> {
    let proc = format!("/proc/{pid}");
    let write = |file: &str, text: &str| write_proc_file(pid, file, text);
    match mapping {
        IdMapping::None | IdMapping::Entered { .. } => Ok(()),
        IdMapping::Privileged { uid, gid } => ex.timed(
            "idmap",
            &format!(
                "{proc}/uid_map ← \"{}\"; gid_map ← \"{}\" (written by real root)",
                map_text(&[*uid]).trim(),
                map_text(&[*gid]).trim()
            ),
            || {
                write("uid_map", &map_text(&[*uid]))?;
                write("gid_map", &map_text(&[*gid]))
            },
        ),
        IdMapping::Single { uid, gid } => {
            ex.timed(
                "idmap",
                &format!("{proc}/uid_map ← \"{}\"", map_text(&[*uid]).trim()),
                || write("uid_map", &map_text(&[*uid])),
            )?;
            ex.timed(
                "idmap",
                &format!(
                    "{proc}/setgroups ← \"deny\"; gid_map ← \"{}\"",
                    map_text(&[*gid]).trim()
                ),
                || {
                    write("setgroups", "deny")?;
                    write("gid_map", &map_text(&[*gid]))
                },
            )
        }
        IdMapping::Helpers {
            uids,
            gids,
            newuidmap,
            newgidmap,
        } => {
            // Both setuid helpers start at once: each costs an exec of a setuid binary, and
            // the two maps are independent.
            let command = |tool: &std::path::Path, ranges: &[super::plan::IdRange]| {
                let mut args = vec![pid.to_string()];
                for r in ranges {
                    args.extend([
                        r.inside.to_string(),
                        r.outside.to_string(),
                        r.count.to_string(),
                    ]);
                }
                (tool.to_path_buf(), args)
            };
            let jobs = [command(newuidmap, uids), command(newgidmap, gids)];
            let what = jobs
                .iter()
                .map(|(t, a)| format!("{} {}", t.display(), a.join(" ")))
                .collect::<Vec<_>>()
                .join(" & ");
            ex.timed("idmap", &what, || {
                let spawned: Vec<_> = jobs
                    .iter()
                    .map(|(tool, args)| {
                        std::process::Command::new(tool)
                            .args(args)
                            .stdout(std::process::Stdio::null())
                            .stderr(std::process::Stdio::piped())
                            .spawn()
                            .map_err(|e| LaunchError::IdMap {
                                step: "run id-map helper",
                                detail: format!("{}: {e}", tool.display()),
                            })
                    })
                    .collect();
                for ((tool, args), child) in jobs.iter().zip(spawned) {
                    let out = child?.wait_with_output().map_err(|e| LaunchError::IdMap {
                        step: "run id-map helper",
                        detail: format!("{}: {e}", tool.display()),
                    })?;
                    if !out.status.success() {
                        return Err(LaunchError::IdMap {
                            step: "id-map helper failed",
                            detail: format!(
                                "{} {}: {}",
                                tool.display(),
                                args.join(" "),
                                String::from_utf8_lossy(&out.stderr).trim()
                            ),
                        });
                    }
                }
                Ok(())
            })
        }
    }
}

/// Runs `f` in a child process inside a new user namespace with `mapping` (as its root), and
/// waits for it. Used to extract layers with subordinate ids, so that image owners survive:
/// only inside the namespace can ids 1..N be given to files. rcrun must be single-threaded here.
pub fn run_in_userns(
    mapping: &IdMapping,
    f: impl FnOnce() -> Result<(), String>,
) -> Result<(), LaunchError> {
    let (go_read, go_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| LaunchError::Sys {
            step: "pipe",
            source,
        })?;
    let (res_read, res_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| LaunchError::Sys {
            step: "pipe",
            source,
        })?;
    let child = crate::sys::clone::fork_into_namespaces(nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(|source| LaunchError::Sys {
            step: super::failure::clone_step(source),
            source,
        })?;
    let Some(pid) = child else {
        drop(go_write);
        drop(res_read);
        let _ = crate::sys::process::die_with_parent();
        let mut b = [0u8; 1];
        let ok = matches!(nix::unistd::read(&go_read, &mut b), Ok(1));
        let result = if !ok {
            Err("parent went away".to_string())
        } else {
            crate::sys::process::become_root()
                .map_err(|e| format!("become root in the user namespace: {e}"))
                .and_then(|_| f())
        };
        match result {
            Ok(()) => crate::sys::process::write_and_exit(None, &[], 0),
            Err(msg) => {
                crate::sys::process::write_and_exit(Some(res_write.as_fd()), msg.as_bytes(), 1)
            }
        }
    };
    drop(go_read);
    drop(res_write);
    let quiet = Explain::new(false);
    if let Err(e) = write_id_maps(pid, mapping, &quiet) {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        return Err(e);
    }
    let _ = nix::unistd::write(&go_write, b"1");
    drop(go_write);
    let mut msg = String::new();
    let _ = std::fs::File::from(res_read).read_to_string(&mut msg);
    let status = loop {
        match waitpid(pid, None) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    match status {
        Ok(WaitStatus::Exited(_, 0)) => Ok(()),
        _ if !msg.is_empty() => Err(LaunchError::Child(msg)),
        other => Err(LaunchError::Child(format!(
            "helper in the user namespace ended with {other:?}"
        ))),
    }
}
