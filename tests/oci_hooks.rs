//! OCI lifecycle hooks (runtime-spec config.md, "POSIX-platform Hooks") as an engine uses them:
//! prestart, createRuntime and createContainer during `create`, startContainer and poststart
//! during `start`, poststop during `delete`, each with the container's state JSON on stdin, in
//! the listed order, with its own argv[0] and exactly its own environment; failures fail
//! `create` and `start` (and leave nothing), except poststart's and poststop's, which only warn.
//! As root, as the plain user rcrun-test and under `unshare -Ur`.
//!
//! The hooks are `/bin/sh` scripts that write into the case directory (owned by whoever runs
//! rcrun, so the hooks create their files themselves). Those in the container's namespaces
//! cannot all reach it: startContainer runs after pivot_root, so its hooks write to the
//! container's /dev/shm, and the container's command prints what they wrote.

mod common;
use common::oci::*;
use common::*;

use serde_json::{json, Value};
use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The argv[0] of the logging hooks: not their path, and ending in `sh` (busybox picks its
/// applet by argv[0]'s basename, should /bin/sh be busybox's).
const ARGV0: &str = "/hook-argv0/sh";
/// Put in `create`'s environment: a hook, whose environment is its `env`, must not see it.
const LEAK: &str = "RCRUN_HOOKS_LEAK";
const PATH: &str = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
const READY: &str = "echo ready; exec sleep 300";
type R = Result<(), String>;

/// A hook that saves its stdin (the state) as DIR/NAME.json and appends
/// `NAME $0 $HOOK_NAME $RCRUN_HOOKS_LEAK <its mount namespace>` to DIR/hooks.log.
fn logging_hook(c: &Case, name: &str) -> Value {
    let d = c.dir.display();
    json!({
        "path": "/bin/sh",
        "args": [ARGV0, "-c", format!(
            "cat > '{d}/{name}.json'; echo \"{name} $0 ${{HOOK_NAME-unset}} \
             ${{{LEAK}-unset}} $(readlink /proc/self/ns/mnt)\" >> '{d}/hooks.log'"
        )],
        "env": [PATH, format!("HOOK_NAME={name}")],
    })
}

/// A startContainer hook (busybox's sh, in the container's root): it appends its name to the
/// container's /dev/shm/hooks.
fn start_hook(name: &str) -> Value {
    json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} >> /dev/shm/hooks")]})
}

/// `rcrun create` as [`Case::create`], with [`LEAK`] in rcrun's environment.
fn create(c: &Case, id: &str) -> (Option<i32>, String) {
    let out_file = File::create(&c.out).unwrap();
    let (s, b) = (c.state.as_os_str(), c.bundle.as_os_str());
    let all = [os("--root"), s, os("create"), os("-b"), b, os(id)];
    let status = rcrun_as_cmd(c.mode, &all)
        .env(LEAK, "leaked")
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().unwrap())
        .stderr(out_file)
        .status()
        .expect("rcrun create");
    (status.code(), c.output())
}

fn log_lines(c: &Case) -> Vec<String> {
    let log = std::fs::read_to_string(c.dir.join("hooks.log")).unwrap_or_default();
    log.lines().map(str::to_string).collect()
}

/// The hooks that ran, in order (the first word of each line of hooks.log).
fn ran(c: &Case) -> Vec<String> {
    let first = |l: &String| l.split(' ').next().unwrap().to_string();
    log_lines(c).iter().map(first).collect()
}

fn ns_of(pid: i64, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|l| l.display().to_string())
        .unwrap_or_default()
}

/// hooks.log is exactly `want`, each line with its argv[0], its own env and not rcrun's, and
/// in the container's mount namespace (`container_mnt`) if and only if it is createContainer.
fn check_log(c: &Case, want: &[String], container_mnt: &str) -> R {
    let lines = log_lines(c);
    if ran(c) != want {
        return Err(format!("hooks.log {lines:#?}, want the hooks {want:?}"));
    }
    for l in &lines {
        let f: Vec<&str> = l.split(' ').collect();
        if f.len() != 5 || f[1] != ARGV0 || f[2] != f[0] || f[3] != "unset" {
            return Err(format!(
                "{l:?}: want `{0} {ARGV0} {0} unset mnt:[…]` (argv[0], HOOK_NAME from the \
                 hook's env, no {LEAK} from rcrun's)",
                f[0]
            ));
        }
        let inside = f[0].starts_with("createContainer");
        if !f[4].starts_with("mnt:")
            || (!container_mnt.is_empty() && (f[4] == container_mnt) != inside)
        {
            return Err(format!(
                "{l:?}: in the mount namespace {}, the container's is {container_mnt}",
                f[4]
            ));
        }
    }
    Ok(())
}

fn read_state(c: &Case, name: &str) -> Result<Value, String> {
    let p = c.dir.join(format!("{name}.json"));
    let bytes = std::fs::read(&p).map_err(|e| format!("{name} hook: {}: {e}", p.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{name} hook: its stdin is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    })
}

/// The state hook NAME read on its stdin: the container's id, bundle and annotations, one of
/// `statuses`, and the pid `pid` (None: no pid or 0, as for a stopped container).
fn check_state(c: &Case, name: &str, id: &str, statuses: &[&str], pid: Option<i64>) -> R {
    let v = read_state(c, name)?;
    let bundle = v["bundle"].as_str().map(|b| Path::new(b).canonicalize());
    let pid_ok = match pid {
        Some(p) => v["pid"].as_i64() == Some(p),
        None => v["pid"].is_null() || v["pid"] == 0,
    };
    if v["ociVersion"].as_str().is_none_or(str::is_empty)
        || v["id"] != id
        || !statuses.iter().any(|s| v["status"] == *s)
        || !pid_ok
        || !matches!(bundle, Some(Ok(b)) if b == c.bundle.canonicalize().unwrap())
        || v["annotations"]["org.rcrun.test.hooks"] != "yes"
    {
        return Err(format!(
            "{name} hook: state {v}, want id {id}, status in {statuses:?}, pid {pid:?}, bundle \
             {}, annotation org.rcrun.test.hooks=yes",
            c.bundle.display()
        ));
    }
    Ok(())
}

/// The two hooks of a kind in hooks_in_order.
fn two(kind: &str) -> [String; 2] {
    [format!("{kind}-1"), format!("{kind}-2")]
}

fn hooks_in_order(c: &Case) -> R {
    let id = format!("order-{}", c.name);
    // startContainer hooks need real root (rootless, rcrun refuses them at create: see
    // start_container_failure).
    let real_root = c.mode == Mode::Root;
    let mut hooks = if real_root {
        json!({
            "startContainer": [start_hook("startContainer-1"), start_hook("startContainer-2")],
        })
    } else {
        json!({})
    };
    for k in "prestart createRuntime createContainer poststart poststop".split(' ') {
        hooks[k] = two(k).iter().map(|n| logging_hook(c, n)).collect();
    }
    edit_config(&c.bundle, |d| {
        d["annotations"]["org.rcrun.test.hooks"] = "yes".into();
        d["hooks"] = hooks;
    });

    let (code, out) = create(c, &id);
    if code != Some(0) {
        return Err(format!("create: {code:?}: {out}"));
    }
    let cgroups = c.cgroups(&id);
    let (status, pid) = c.status(&id)?;
    if status != "created" || pid <= 1 {
        return Err(format!("after create: {status} pid {pid}"));
    }
    let mnt = ns_of(pid, "mnt");
    if mnt.is_empty() {
        skip(&format!(
            "oci hooks [{}]: /proc/{pid}/ns/mnt unreadable, namespaces not compared",
            c.name
        ));
    }
    // All three kinds of `create` ran before it returned, in order, with the state.
    let mut want = [two("prestart"), two("createRuntime")].concat();
    want.extend(two("createContainer"));
    check_log(c, &want, &mnt).map_err(|e| format!("after create: {e}"))?;
    for name in &want {
        check_state(c, name, &id, &["creating", "created"], Some(pid))?;
    }

    expect_ok(&c.rcrun(&["start", &id]), "start")?;
    want.extend(two("poststart"));
    check_log(c, &want, &mnt).map_err(|e| format!("after start: {e}"))?;
    for name in two("poststart") {
        check_state(c, &name, &id, &["running"], Some(pid))?;
    }
    // The startContainer hooks ran in the container, in order, before the command.
    c.wait_output("ready")?;
    let out = c.output();
    if real_root && !out.contains("startContainer-1\nstartContainer-2\nready") {
        return Err(format!(
            "the container's /dev/shm/hooks before `ready`: want startContainer-1 and -2: {out:?}"
        ));
    }

    expect_ok(&c.rcrun(&["kill", &id, "KILL"]), "kill KILL")?;
    c.wait_status(&id, "stopped")?;
    check_log(c, &want, &mnt).map_err(|e| format!("stopped, before delete: {e}"))?;
    expect_ok(&c.rcrun(&["delete", &id]), "delete")?;
    want.extend(two("poststop"));
    check_log(c, &want, &mnt).map_err(|e| format!("after delete: {e}"))?;
    for name in two("poststop") {
        check_state(c, &name, &id, &["stopped"], None)?;
    }
    c.assert_gone(&id, &cgroups)
}

/// A failing (or timed out) prestart or createRuntime hook fails `create` with exit status 1
/// and a message naming its kind and path, and leaves no state, process or cgroup.
fn failing_create_hooks(c: &Case) -> R {
    let false_hook = json!({"path": "/bin/false"});
    let slow_hook = json!({
        "path": "/bin/sh", "args": ["sh", "-c", "exec sleep 10"], "env": [PATH], "timeout": 1,
    });
    // (The ids do not name the kind: the message must.)
    for (short, what, kind, bad, path) in [
        ("pre", "fails", "prestart", &false_hook, "/bin/false"),
        ("rt", "fails", "createRuntime", &false_hook, "/bin/false"),
        ("slow", "times out", "prestart", &slow_hook, "/bin/sh"),
    ] {
        let id = format!("{short}-{}", c.name);
        let first = format!("{id}-first");
        let hooks = json!({ kind: [logging_hook(c, &first), bad] });
        edit_config(&c.bundle, |d| d["hooks"] = hooks);
        let t0 = Instant::now();
        let (code, out) = create(c, &id);
        let took = t0.elapsed();
        if code != Some(1) || !out.contains(kind) || !out.contains(path) || out.contains("panicked")
        {
            return Err(format!(
                "a {kind} hook that {what}: wanted exit status 1 naming {kind} and {path}, got \
                 {code:?}: {out}"
            ));
        }
        if took > Duration::from_secs(9) {
            return Err(format!(
                "a {kind} hook with timeout 1 that sleeps 10: create took {took:?}"
            ));
        }
        // The hook before it ran, with the pid of the container's process, now gone.
        let pid = read_state(c, &first)?["pid"].as_i64().unwrap_or(0);
        if pid <= 1 {
            return Err(format!(
                "{first}: no pid in its state: {:?}",
                read_state(c, &first)
            ));
        }
        process_gone(pid).map_err(|e| format!("a {kind} hook that {what}: {e}"))?;
        c.assert_gone(&id, &[])
            .map_err(|e| format!("a {kind} hook that {what}: {e}"))?;
        if c.mode == Mode::Root {
            let stray: Vec<String> = ["", "memory", "pids", "devices", "cpuacct"]
                .iter()
                .flat_map(|ctl| list(&Path::new("/sys/fs/cgroup").join(ctl).join("rcrun")))
                .filter(|n| n.starts_with(&format!("{id}-")))
                .collect();
            if !stray.is_empty() {
                return Err(format!(
                    "a {kind} hook that {what}: cgroups left: {stray:?}"
                ));
            }
        }
    }
    Ok(())
}

/// Failing poststart and poststop hooks are warnings: `start` and `delete` succeed, the
/// container runs, the next hook of the kind still runs, and nothing is left.
fn post_failures_warn(c: &Case) -> R {
    let id = format!("warn-{}", c.name);
    edit_config(&c.bundle, |d| {
        d["annotations"]["org.rcrun.test.hooks"] = "yes".into();
        d["hooks"] = json!({
            "poststart": [{"path": "/bin/false"}, logging_hook(c, "poststart-after")],
            "poststop": [{"path": "/bin/false"}, logging_hook(c, "poststop-after")],
        });
    });
    let (code, out) = create(c, &id);
    if code != Some(0) {
        return Err(format!("create: {code:?}: {out}"));
    }
    let cgroups = c.cgroups(&id);
    let o = c.rcrun(&["start", &id]);
    expect_ok(&o, "start with a failing poststart hook")?;
    if !String::from_utf8_lossy(&o.stderr).contains("poststart") {
        return Err(format!("start: no warning naming poststart: {}", text(&o)));
    }
    c.wait_output("ready")?;
    let (status, pid) = c.status(&id)?;
    if status != "running" || ran(c) != ["poststart-after"] {
        return Err(format!(
            "after start: {status}, hooks ran: {:?}",
            log_lines(c)
        ));
    }
    check_state(c, "poststart-after", &id, &["running"], Some(pid))?;
    let o = c.rcrun(&["delete", "--force", &id]);
    expect_ok(&o, "delete --force with a failing poststop hook")?;
    if !String::from_utf8_lossy(&o.stderr).contains("poststop") {
        return Err(format!("delete: no warning naming poststop: {}", text(&o)));
    }
    c.assert_gone(&id, &cgroups)?;
    if ran(c) != ["poststart-after", "poststop-after"] {
        return Err(format!("after delete, hooks ran: {:?}", log_lines(c)));
    }
    check_state(c, "poststop-after", &id, &["stopped"], None)
}

/// A failing startContainer hook fails `start` (exit status 1), and the command never runs.
fn start_container_failure(c: &Case) -> R {
    let id = format!("sc-{}", c.name);
    let failing = json!({"path": "/bin/sh", "args": ["sh", "-c", "exit 1"]});
    edit_config(&c.bundle, |d| {
        d["hooks"] = json!({ "startContainer": [failing] })
    });
    let (code, out) = create(c, &id);
    if c.mode != Mode::Root {
        // The container's process is non-dumpable until execve: a rootless `start` could not
        // enter its namespaces, so `create` refuses the hook by name and leaves nothing.
        if code != Some(1) || !out.contains("startContainer hooks without real root") {
            return Err(format!(
                "rootless create with a startContainer hook: {code:?}: {out}"
            ));
        }
        return c.assert_gone(&id, &[]);
    }
    if code != Some(0) {
        return Err(format!("create: {code:?}: {out}"));
    }
    let cgroups = c.cgroups(&id);
    expect_fail(
        &c.rcrun(&["start", &id]),
        "start with a failing startContainer hook",
        "startContainer",
    )?;
    std::thread::sleep(Duration::from_millis(300));
    if c.output().contains("ready") {
        return Err(format!("the command ran: {:?}", c.output()));
    }
    expect_ok(&c.rcrun(&["delete", "--force", &id]), "delete --force")?;
    c.assert_gone(&id, &cgroups)
}

fn in_every_mode(test: &str, script: &str, f: fn(&Case) -> R) {
    each_mode(test, json!(["sh", "-c", script]), None, f);
}

#[test]
fn hooks_run_in_order_with_the_state() {
    in_every_mode(
        "hooks-order",
        &format!("cat /dev/shm/hooks; {READY}"),
        hooks_in_order,
    );
}

#[test]
fn a_failing_prestart_fails_create_and_leaves_nothing() {
    in_every_mode("hooks-create-fail", READY, failing_create_hooks);
}

#[test]
fn poststart_and_poststop_failures_only_warn() {
    in_every_mode("hooks-warn", READY, post_failures_warn);
}

#[test]
fn start_container_hook_failure_fails_start() {
    in_every_mode("hooks-start-fail", READY, start_container_failure);
}

/// A foreground `run --bundle` runs the same hooks at the same points (it keeps no state
/// directory: the state on stdin is made from the spec), and passes the command's status on.
fn foreground_run(c: &Case) -> R {
    let id = format!("fg-{}", c.name);
    let kinds = "prestart createRuntime createContainer poststart poststop";
    let mut hooks = json!({});
    for k in kinds.split(' ') {
        hooks[k] = json!([logging_hook(c, k)]);
    }
    if c.mode == Mode::Root {
        hooks["startContainer"] = json!([start_hook("startContainer")]);
    }
    edit_config(&c.bundle, |d| {
        d["hooks"] = hooks;
        d["process"]["args"] = json!(["sh", "-c", "cat /dev/shm/hooks 2>/dev/null; exit 3"]);
    });
    let o = c.rcrun(&["run", "-b", c.bundle.to_str().unwrap(), &id]);
    if o.status.code() != Some(3) {
        return Err(format!("run -b: wanted status 3: {}", text(&o)));
    }
    let want: Vec<String> = kinds.split(' ').map(str::to_string).collect();
    if ran(c) != want {
        return Err(format!("hooks ran {:?}, wanted {want:?}", ran(c)));
    }
    if c.mode == Mode::Root && !String::from_utf8_lossy(&o.stdout).contains("startContainer") {
        return Err(format!(
            "startContainer did not run before the command: {}",
            text(&o)
        ));
    }
    for (name, status) in [
        ("prestart", "created"),
        ("poststart", "running"),
        ("poststop", "stopped"),
    ] {
        let st = read_state(c, name)?;
        if st["status"] != status || st["id"] != id.as_str() {
            return Err(format!("{name}: state {st}"));
        }
    }
    Ok(())
}

#[test]
fn foreground_run_bundle_runs_the_hooks() {
    in_every_mode("hooks-fg", READY, foreground_run);
}
