//! The OCI runtime commands (issue 22), with runc's command line, so that engines (podman
//! through conmon, containerd through its runc v2 shim) can drive rcrun:
//!
//! ```text
//! create ─▶ created ──start──▶ running ──(process exits)──▶ stopped ──delete──▶ (gone)
//!   │  launch::spawn with StartGate::ExecFifo; the first process builds the root, drops
//!   │  privileges and blocks opening exec.fifo; Spawned::detach: `create` returns
//!   └─ start opens exec.fifo for reading: the process writes one byte and execs its command
//! ```
//!
//! Landed so far: the launcher's exec-fifo gate (`launch::StartGate`, tested in
//! tests/launch_phases.rs) and the state directory ([`state`]). Next: the commands themselves
//! (create, start, state, kill, delete, list, features) on top of them.

pub mod control;
pub mod exec;
pub mod hooks;
pub mod info;
pub mod lifecycle;
pub mod state;
pub mod update;

/// The descriptors an OCI command passes on to the container's process: `--preserve-fds N`
/// plus, with socket activation, the LISTEN_FDS that systemd gave rcrun (LISTEN_PID ours), all
/// from 3 up, as runc passes them. Returns (all, of which LISTEN_FDS). Every one must be open:
/// a gap would let a descriptor rcrun opens itself (a lock, a pipe) take that number and leak
/// into the container, so it is checked before rcrun opens anything.
pub fn passed_fds(preserve: u32) -> anyhow::Result<(u32, u32)> {
    let ours = std::env::var("LISTEN_PID")
        .map(|p| p == std::process::id().to_string())
        .unwrap_or(true);
    let listen = match std::env::var("LISTEN_FDS") {
        Ok(n) if ours => n
            .parse::<u32>()
            .map_err(|_| anyhow::anyhow!("LISTEN_FDS={n:?}: not a number of descriptors"))?,
        _ => 0,
    };
    let total = preserve.saturating_add(listen);
    if total > 1024 {
        anyhow::bail!("--preserve-fds {preserve} (+ LISTEN_FDS {listen}): too many descriptors");
    }
    for fd in 3..3 + total as i32 {
        if !crate::sys::process::fd_is_open(fd) {
            anyhow::bail!(
                "--preserve-fds {preserve}{}: descriptor {fd} is not open (rcrun passes 3 .. {} as they are)",
                if listen > 0 { format!(" + LISTEN_FDS {listen}") } else { String::new() },
                2 + total
            );
        }
    }
    Ok((total, listen))
}

/// The namespaces of process `pid` that are not rcrun's own, as /proc/PID/ns paths, in the
/// order [`crate::launch::NsKind`] joins them (mount last, user after it: whoever enters them
/// takes the user namespace first itself). `exec` joins them all; hooks enter them.
pub fn namespaces_of(
    pid: i32,
) -> std::io::Result<Vec<(crate::launch::NsKind, std::path::PathBuf)>> {
    use crate::launch::NsKind;
    let mut v = Vec::new();
    for kind in [
        NsKind::Ipc,
        NsKind::Uts,
        NsKind::Net,
        NsKind::Cgroup,
        NsKind::Pid,
        NsKind::Mount,
        NsKind::User,
    ] {
        let theirs = std::path::PathBuf::from(format!("/proc/{pid}/ns/{}", kind.proc_name()));
        let ours = format!("/proc/self/ns/{}", kind.proc_name());
        if std::fs::read_link(&theirs)? != std::fs::read_link(ours)? {
            v.push((kind, theirs));
        }
    }
    Ok(v)
}
