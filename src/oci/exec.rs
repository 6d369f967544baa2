//! `rcrun exec`: a new process in a running container, as runc's `exec` (which engines call for
//! `podman exec`, `kubectl exec` and health checks).
//!
//! The process is compiled from the container's saved config.json with its `process` replaced
//! (by `--process FILE`, or the container's own with the flags applied), so it gets the same
//! capabilities, no_new_privs, seccomp filter, rlimits and environment rules as the container's
//! first process. The launcher then runs it with [`crate::launch::StartupPlan::enter_running`]:
//! instead of making namespaces and a root it joins every namespace of the container's first
//! process (the user namespace first, entered by rcrun itself; the pid namespace entered by
//! rcrun for the clone, since setns(2) into a pid namespace only places later children there),
//! joins its cgroup, and goes through the same security steps and start gate. Until its execve
//! the process is a non-dumpable copy of rcrun, so a container process cannot open its
//! /proc/PID/exe, the host's binary (CVE-2019-5736); see `launch::child`.

use super::lifecycle::{saved_spec, send_console, write_pid_file};
use super::state::{ContainerDir, Status};
use crate::cli::ExecArgs;
use crate::launch::explain::Explain;
use crate::launch::StartGate;
use crate::Ctx;
use anyhow::{bail, Context, Result};

/// `-u NAME[:GROUP]`: the user and its groups from /etc/passwd and /etc/group of the container
/// whose first process is `pid`, read inside its root ([`crate::sys::fs::read_in_container`]).
fn user_in_container(pid: i32, spec: &str) -> Result<crate::launch::user::ResolvedUser> {
    // As the image's tables are read for `run -u`: bounded, whatever the container wrote there.
    const MAX_TABLE: u64 = 16 << 20;
    let read = |path: &str| -> Result<String> {
        let bytes = crate::sys::fs::read_in_container(pid, path, MAX_TABLE)
            .with_context(|| format!("--user {spec}: read {path} in the container"))?;
        Ok(String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned())
    };
    let (passwd, group) = (read("/etc/passwd")?, read("/etc/group")?);
    fn table(t: &str) -> crate::launch::user::Table<'_> {
        if t.is_empty() {
            crate::launch::user::Table::Absent
        } else {
            crate::launch::user::Table::Text(t)
        }
    }
    Ok(crate::launch::user::resolve_user(
        spec,
        &table(&passwd),
        &table(&group),
    )?)
}

/// The `process` of an exec: `--process FILE`, or the container's with the flags applied.
fn exec_process(
    a: &ExecArgs,
    spec: &oci_spec::runtime::Spec,
    pid: i32,
) -> Result<oci_spec::runtime::Process> {
    if let Some(file) = &a.process {
        if !a.command.is_empty() {
            bail!(
                "--process {}: give the command in the file, not after the ID",
                file.display()
            );
        }
        let bytes = std::fs::read(file).with_context(|| format!("--process {}", file.display()))?;
        return serde_json::from_slice(&bytes)
            .with_context(|| format!("--process {}: not an OCI process object", file.display()));
    }
    if a.command.is_empty() {
        bail!(
            "exec {}: no command (give one after the ID, or --process FILE)",
            a.id
        );
    }
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.into());
    }
    if !a.env.is_empty() {
        let mut env = p.env().clone().unwrap_or_default();
        for kv in &a.env {
            let key = kv.split('=').next().unwrap_or_default();
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        p.set_env(Some(env));
    }
    // As docker exec -t: a terminal with no TERM in the container's environment gets xterm's.
    if a.tty {
        let mut env = p.env().clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
            p.set_env(Some(env));
        }
    }
    let mut user = p.user().clone();
    let numeric = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if let Some(u) = a.user.as_ref().filter(|u| !u.split(':').all(numeric)) {
        // A name, as docker exec takes it: resolved in the running container's own /etc.
        let resolved = user_in_container(pid, u)?;
        user.set_uid(resolved.uid);
        user.set_gid(resolved.gid);
        user.set_additional_gids(Some(resolved.groups));
    } else if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (u.as_str(), None),
        };
        let num = |s: &str, what: &str| -> Result<u32> {
            s.parse().with_context(|| {
                format!("--user {u}: the {what} must be a number (as in config.json)")
            })
        };
        user.set_uid(num(uid, "uid")?);
        if let Some(g) = gid {
            user.set_gid(num(g, "gid")?);
        }
    }
    if !a.additional_gids.is_empty() {
        user.set_additional_gids(Some(a.additional_gids.clone()));
    }
    p.set_user(user);
    if !a.caps.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &a.caps {
            let full = if name.to_ascii_uppercase().starts_with("CAP_") {
                name.to_ascii_uppercase()
            } else {
                format!("CAP_{}", name.to_ascii_uppercase())
            };
            crate::security::parse_cap(&full).with_context(|| format!("--cap {name}"))?;
            let cap: oci_spec::runtime::Capability = full
                .parse()
                .map_err(|e| anyhow::anyhow!("--cap {name}: {e}"))?;
            let add = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut set = set.clone().unwrap_or_default();
                set.insert(cap);
                Some(set)
            };
            let (b, e, p, i, amb) = (
                add(caps.bounding()),
                add(caps.effective()),
                add(caps.permitted()),
                add(caps.inheritable()),
                add(caps.ambient()),
            );
            caps.set_bounding(b)
                .set_effective(e)
                .set_permitted(p)
                .set_inheritable(i)
                .set_ambient(amb);
        }
        p.set_capabilities(Some(caps));
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}

/// `rcrun exec ID CMD...` / `rcrun exec --process FILE ID`.
pub fn cmd_exec(ctx: &Ctx, a: &ExecArgs) -> Result<i32> {
    let ex = Explain::new(a.explain);
    ex.phase("exec", &format!("a new process in container {}", a.id));
    let id = crate::commands::containers::resolve(&ctx.state_root, &a.id)?;
    let cd = ContainerDir::open(&ctx.state_root, &id)?;
    let (record, status) = cd.status()?;
    match status {
        Status::Running | Status::Created => {}
        Status::Paused => bail!("cannot exec in a paused container (container {})", a.id),
        _ => bail!("cannot exec in a stopped container (container {})", a.id),
    }
    let spec = saved_spec(&cd).with_context(|| {
        format!(
            "container {}: its config.json is missing from {}",
            a.id,
            cd.dir.display()
        )
    })?;
    let process = exec_process(a, &spec, record.pid)?;
    if process.terminal() == Some(true) && a.detach && a.console_socket.is_none() {
        bail!("exec --tty --detach needs --console-socket: nobody would hold the terminal");
    }
    let mut exec_spec = spec.clone();
    exec_spec.set_process(Some(process));
    // Hooks belong to the container's lifecycle, not to its exec'd processes.
    exec_spec.set_hooks(None);
    let scratch = cd.scratch();
    // A container of `run -d` keeps its image run's Spec, whose root is the overlay its
    // monitor's mount namespace holds: no root.path to check here (exec builds no root).
    let extras = if record
        .annotations
        .contains_key(crate::commands::containers::MONITOR)
    {
        crate::launch::plan::Extras {
            layers: Some(crate::launch::plan::ImageLayers {
                lowers_top_first: Vec::new(),
                etc_layer: None,
            }),
            ..Default::default()
        }
    } else {
        crate::launch::plan::Extras::default()
    };
    let compiled = crate::launch::plan::compile(
        &exec_spec,
        &extras,
        &crate::launch::plan::HostFacts {
            privilege: &ctx.privilege,
            bundle: &record.bundle,
            id: &a.id,
            scratch: &scratch,
        },
    )?;
    let mut plan = compiled.plan;
    plan.enter_running = true;
    plan.joins = super::namespaces_of(record.pid).with_context(|| {
        format!(
            "the namespaces of the container's process {} (exec must run where the container \
             was made: as its owner, in the user namespace rcrun create ran in)",
            record.pid
        )
    })?;
    plan.inherit = Vec::new();
    plan.new_netns = false;
    // setgroups(2) works in the container's user namespace only if its maps were written by a
    // privileged helper ("allow" in /proc/PID/setgroups), as for its first process.
    plan.mapping = crate::launch::plan::IdMapping::Entered {
        setgroups: std::fs::read_to_string(format!("/proc/{}/setgroups", record.pid))
            .map(|s| s.trim() != "deny")
            .unwrap_or(true),
    };
    plan.hooks_point = false;
    plan.mounts = Vec::new();
    plan.sysctls = Vec::new();
    plan.root_propagation = None;
    plan.init = false;
    plan.start_gate = StartGate::Pipe;
    let (passed, listen) = super::passed_fds(a.preserve_fds)?;
    plan.preserve_fds = passed;
    if listen > 0 {
        plan.env.push(format!("LISTEN_FDS={listen}"));
    }
    plan.die_with_rcrun = !a.detach;
    plan.interactive = plan.tty && !a.detach && a.console_socket.is_none();
    // The container's cgroup, as its first process's (v1: one directory per hierarchy).
    if ctx.privilege.is_real_root() {
        if let Some(cg) = record.adopt_cgroup() {
            plan.cgroup = cg.join();
            // Still the container's: its `delete` removes it.
            cg.keep();
        }
    }
    plan.seccomp = crate::commands::parts::load_seccomp(
        &ctx.state_root.join(".cache"),
        compiled.seccomp.as_ref(),
        &plan,
        &ex,
    )?;
    ex.step(
        "exec",
        &format!(
            "join {} of pid {}; user {}:{}, argv {:?}",
            plan.joins
                .iter()
                .map(|(k, _)| k.proc_name())
                .collect::<Vec<_>>()
                .join(", "),
            record.pid,
            plan.user.uid,
            plan.user.gid,
            plan.argv
        ),
        std::time::Duration::ZERO,
    );
    // Other commands (state, kill, delete) must not wait for this process's lifetime.
    drop(cd);
    let mut spawned = crate::launch::spawn(&plan, &ex)
        .map_err(|e| anyhow::Error::new(e).context(format!("exec in container {}", a.id)))?;
    if let Some(sock) = &a.console_socket {
        spawned.until_created()?;
        if let Some(master) = spawned.take_master() {
            send_console(sock, &master)?;
        }
    }
    let pid = spawned.pid();
    let running = crate::launch::start(spawned, &ex)
        .map_err(|e| anyhow::Error::new(e).context(format!("exec in container {}", a.id)))?;
    if let Some(p) = &a.pid_file {
        write_pid_file(p, pid.as_raw())?;
    }
    if a.detach {
        if let Some((code, msg)) = running.failure() {
            return Err(anyhow::Error::new(crate::ProcessFailed {
                code,
                message: msg.to_string(),
            })
            .context(format!("exec in container {}", a.id)));
        }
        // The process runs on without us: rcrun's signal mask goes back, nobody waits for it.
        running.detach();
        ex.summary();
        return Ok(0);
    }
    let outcome = crate::launch::wait(running, &ex)?;
    if let Some(msg) = &outcome.failure {
        eprintln!("rcrun: error: {msg}");
    }
    ex.summary();
    Ok(outcome.status)
}
