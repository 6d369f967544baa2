//! OCI lifecycle hooks (runtime-spec config.md, "POSIX-platform Hooks"): programs named in
//! config.json, run at fixed points with the container's state JSON on their stdin.
//!
//! | hook            | when (rcrun)                                              | where                      | a failure          |
//! |-----------------|-----------------------------------------------------------|----------------------------|--------------------|
//! | prestart        | `create`: the container's root is built, before pivot_root | rcrun's namespaces         | fails `create`     |
//! | createRuntime   | right after the prestart hooks                             | rcrun's namespaces         | fails `create`     |
//! | createContainer | right after the createRuntime hooks                        | the container's namespaces | fails `create`     |
//! | startContainer  | `start`, before the gate opens                             | the container's namespaces | fails `start`      |
//! | poststart       | `start`, once the process was let go                       | rcrun's namespaces         | a warning          |
//! | poststop        | `delete`, once the container is gone                       | rcrun's namespaces         | a warning          |
//!
//! The child stops before pivot_root for the first three ([`crate::launch::Spawned::until_hooks_point`]),
//! as runc's init waits for its parent's `procHooks`. "The container's namespaces" are entered
//! with setns(2) on the container process's /proc/PID/ns files (user first) in the hook's
//! process between fork and exec: its path resolves there (before pivot_root that mount
//! namespace still sees the host's tree, after it the container's root).

use oci_spec::runtime::Hook;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The six points of the runtime spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Prestart => "prestart",
            Kind::CreateRuntime => "createRuntime",
            Kind::CreateContainer => "createContainer",
            Kind::StartContainer => "startContainer",
            Kind::Poststart => "poststart",
            Kind::Poststop => "poststop",
        }
    }

    /// poststart and poststop failures are logged and the lifecycle goes on (config.md: "the
    /// runtime MUST log a warning, but the remaining hooks and lifecycle continue").
    pub fn warns_only(self) -> bool {
        matches!(self, Kind::Poststart | Kind::Poststop)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{kind} hook {path}: {reason}")]
    Failed {
        kind: &'static str,
        path: String,
        reason: String,
    },
}

/// The hooks of `kind` that `spec` lists, in order.
pub fn of(spec: &oci_spec::runtime::Spec, kind: Kind) -> Vec<Hook> {
    let Some(h) = spec.hooks() else {
        return Vec::new();
    };
    #[allow(deprecated)] // prestart: deprecated by the spec, still what engines send
    let list = match kind {
        Kind::Prestart => h.prestart(),
        Kind::CreateRuntime => h.create_runtime(),
        Kind::CreateContainer => h.create_container(),
        Kind::StartContainer => h.start_container(),
        Kind::Poststart => h.poststart(),
        Kind::Poststop => h.poststop(),
    };
    list.clone().unwrap_or_default()
}

/// Whether the container's first process must stop before pivot_root for the runtime.
pub fn needs_hooks_point(spec: &oci_spec::runtime::Spec) -> bool {
    [Kind::Prestart, Kind::CreateRuntime, Kind::CreateContainer]
        .into_iter()
        .any(|k| !of(spec, k).is_empty())
}

/// The namespaces of process `pid` a hook enters, opened now (user first, then ipc, uts, net,
/// cgroup, mnt last: after it paths resolve in the container), skipping those it shares with
/// rcrun (setns into one's own user namespace is EINVAL).
pub fn container_namespaces(pid: i32) -> std::io::Result<Vec<(nix::sched::CloneFlags, OwnedFd)>> {
    use crate::launch::NsKind;
    // Not the pid namespace: setns into it would place only the hook's children there.
    let mut kinds: Vec<_> = super::namespaces_of(pid)?
        .into_iter()
        .filter(|(k, _)| *k != NsKind::Pid)
        .collect();
    kinds.sort_by_key(|(k, _)| *k != NsKind::User);
    kinds
        .into_iter()
        .map(|(k, path)| Ok((k.clone_flag(), OwnedFd::from(std::fs::File::open(path)?))))
        .collect()
}

/// Runs the hooks of `kind` in order with `state` on stdin, in rcrun's namespaces or, with
/// `enter`, in the container's. The first failure stops the rest and is returned, except for
/// poststart and poststop, whose failures are written to stderr as warnings.
pub fn run(
    kind: Kind,
    hooks: &[Hook],
    state: &[u8],
    enter: Option<&[(nix::sched::CloneFlags, OwnedFd)]>,
) -> Result<(), HookError> {
    for h in hooks {
        if let Err(e) = run_one(kind, h, state, enter) {
            if kind.warns_only() {
                tracing::warn!("{e}");
                eprintln!("rcrun: warning: {e}");
                continue;
            }
            return Err(e);
        }
    }
    Ok(())
}

fn run_one(
    kind: Kind,
    h: &Hook,
    state: &[u8],
    enter: Option<&[(nix::sched::CloneFlags, OwnedFd)]>,
) -> Result<(), HookError> {
    let path = h.path().display().to_string();
    let failed = |reason: String| HookError::Failed {
        kind: kind.name(),
        path: path.clone(),
        reason,
    };
    let mut cmd = Command::new(h.path());
    // args[0] is the hook's argv[0] (as execve's), which may differ from its path.
    if let Some((first, rest)) = h.args().as_deref().and_then(|a| a.split_first()) {
        cmd.arg0(first);
        cmd.args(rest);
    }
    // The hook's environment is what the spec gives, nothing of rcrun's.
    cmd.env_clear();
    for kv in h.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(ns) = enter {
        let fds: Vec<(nix::sched::CloneFlags, std::os::fd::RawFd)> = ns
            .iter()
            .map(|(f, fd)| (*f, std::os::fd::AsRawFd::as_raw_fd(fd)))
            .collect();
        // SAFETY: between fork and exec the closure makes only setns(2) calls on descriptors
        // opened before the fork, and allocates nothing (the Vec was built before).
        unsafe {
            cmd.pre_exec(move || {
                for (flag, fd) in &fds {
                    let fd = std::os::fd::BorrowedFd::borrow_raw(*fd);
                    crate::sys::process::join_namespace(fd.as_fd(), *flag)
                        .map_err(std::io::Error::from)?;
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| failed(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin may close it early: EPIPE is not its failure.
        let _ = stdin.write_all(state);
    }
    let timeout = h
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => return Err(failed(e.to_string())),
        }
        if let Some(t) = timeout.filter(|t| started.elapsed() >= *t) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!(
                "timed out after {} s (killed)",
                t.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let err = err.trim();
    Err(failed(format!(
        "{status}{}",
        if err.is_empty() {
            String::new()
        } else {
            format!(": {err}")
        }
    )))
}

/// The hooks of a foreground `run --bundle`, which keeps no state directory: the state JSON is
/// made from the spec, the ID and the bundle each time.
pub struct Foreground<'a> {
    pub spec: &'a oci_spec::runtime::Spec,
    pub id: &'a str,
    pub bundle: &'a std::path::Path,
}

impl Foreground<'_> {
    fn state(&self, status: &str, pid: Option<i32>) -> Vec<u8> {
        let mut v = serde_json::json!({
            "ociVersion": crate::spec::OCI_VERSION,
            "id": self.id,
            "status": status,
            "bundle": self.bundle,
            "annotations": self.spec.annotations().clone().unwrap_or_default(),
        });
        if let Some(pid) = pid {
            v["pid"] = pid.into();
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }

    fn run_kind(
        &self,
        kind: Kind,
        status: &str,
        pid: Option<i32>,
        inside: bool,
    ) -> anyhow::Result<()> {
        let list = of(self.spec, kind);
        if list.is_empty() {
            return Ok(());
        }
        let ns = match (inside, pid) {
            (true, Some(pid)) => Some(container_namespaces(pid).map_err(|e| {
                anyhow::anyhow!(
                    "open the namespaces of pid {pid} for the {} hooks: {e}",
                    kind.name()
                )
            })?),
            _ => None,
        };
        run(kind, &list, &self.state(status, pid), ns.as_deref())?;
        Ok(())
    }

    /// prestart, createRuntime (rcrun's namespaces), createContainer (the container's): at the
    /// child's hooks point, before pivot_root.
    pub fn create(&self, pid: i32) -> anyhow::Result<()> {
        self.run_kind(Kind::Prestart, "created", Some(pid), false)?;
        self.run_kind(Kind::CreateRuntime, "created", Some(pid), false)?;
        self.run_kind(Kind::CreateContainer, "created", Some(pid), true)
    }

    /// startContainer, in the container's namespaces, before the start gate opens.
    pub fn start_container(&self, pid: i32) -> anyhow::Result<()> {
        self.run_kind(Kind::StartContainer, "created", Some(pid), true)
    }

    pub fn has_start_container(&self) -> bool {
        !of(self.spec, Kind::StartContainer).is_empty()
    }

    /// poststart once the command runs; poststop once the container is gone (warnings only).
    pub fn poststart(&self, pid: i32) {
        let _ = self.run_kind(Kind::Poststart, "running", Some(pid), false);
    }

    pub fn poststop(&self) {
        let _ = self.run_kind(Kind::Poststop, "stopped", None, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: &str) -> Hook {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_hook_gets_the_state_on_stdin_and_its_args_and_env() {
        let out = std::env::temp_dir().join(format!("rcrun-hook-{}", std::process::id()));
        let h = hook(&format!(
            r#"{{"path":"/bin/sh","args":["sh","-c","cat > {0}; echo \"$0 $1 $X\" >> {0}","name","one"],"env":["X=y"]}}"#,
            out.display()
        ));
        run(Kind::Prestart, &[h], b"{\"id\":\"c\"}\n", None).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"id\":\"c\"}\nname one y\n"
        );
        let _ = std::fs::remove_file(&out);
    }

    #[test]
    fn failures_and_timeouts_name_the_hook() {
        let e = run(
            Kind::CreateRuntime,
            &[hook(
                r#"{"path":"/bin/sh","args":["sh","-c","echo nope >&2; exit 3"]}"#,
            )],
            b"{}",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("createRuntime hook /bin/sh") && e.contains('3') && e.contains("nope"),
            "{e}"
        );
        let e = run(
            Kind::Prestart,
            &[hook(
                r#"{"path":"/bin/sleep","args":["sleep","10"],"timeout":1}"#,
            )],
            b"{}",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("timed out after 1 s"), "{e}");
        let e = run(
            Kind::Prestart,
            &[hook(r#"{"path":"/nonexistent/hook"}"#)],
            b"{}",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/hook"), "{e}");
    }

    #[test]
    fn poststart_and_poststop_failures_only_warn_and_the_rest_run() {
        let out = std::env::temp_dir().join(format!("rcrun-hook-warn-{}", std::process::id()));
        let hooks = [
            hook(r#"{"path":"/bin/false"}"#),
            hook(&format!(
                r#"{{"path":"/bin/sh","args":["sh","-c","echo ran > {}"]}}"#,
                out.display()
            )),
        ];
        run(Kind::Poststop, &hooks, b"{}", None).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "ran\n");
        let _ = std::fs::remove_file(&out);
        assert!(run(Kind::Prestart, &hooks, b"{}", None).is_err());
    }
}
