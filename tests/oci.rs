//! The OCI runtime commands as an engine drives them: `create`, `state`, `start`, `kill`,
//! `delete`, `list`, with runc's flags (--root, --pid-file), as root, as the plain user
//! rcrun-test and under `unshare -Ur`. Every case ends by checking that no state directory, no
//! process and (as root) no cgroup is left.

mod common;
use common::oci::*;
use common::*;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

/// The container's command reports its signal dispositions: rcrun ignores SIGPIPE (as every
/// Rust program), and an ignored signal stays ignored across execve, so the command must be
/// given the default back.
const LIFECYCLE: &str = "echo started; grep -E '^SigIgn' /proc/self/status; exec sleep 300";

fn lifecycle(c: &Case) -> Result<(), String> {
    let id = format!("life-{}", c.name);
    let pid_file = c.dir.join("pid");
    let (code, out) = c.create(&id, &["--pid-file", pid_file.to_str().unwrap()]);
    if code != Some(0) {
        return Err(format!("create: {code:?}: {out}"));
    }
    let cgroups = c.cgroups(&id);
    // As root the container has a cgroup (the device policy at least); rootless, none here.
    if (c.mode == Mode::Root) == cgroups.is_empty() {
        return Err(format!("cgroups recorded: {cgroups:?}"));
    }
    // Created: the process exists and waits; the command has not run.
    let (status, pid) = c.status(&id)?;
    let recorded: i64 = std::fs::read_to_string(&pid_file)
        .map_err(|e| format!("--pid-file: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("--pid-file: {e}"))?;
    if status != "created" || pid != recorded || pid <= 1 {
        return Err(format!(
            "after create: {status} pid {pid}, pid file {recorded}"
        ));
    }
    std::thread::sleep(Duration::from_millis(200));
    if c.output().contains("started") {
        return Err("the command ran before start".into());
    }
    expect_fail(
        &c.create_into(&c.dir.join("out2"), &id, &[]).into_output(),
        "a second create of the same ID",
        "already exists",
    )?;
    expect_fail(
        &c.rcrun(&["kill", &id, "NOSUCH"]),
        "kill with a bad signal",
        "NOSUCH",
    )?;
    let listed = c.rcrun(&["list", "-q"]);
    if String::from_utf8_lossy(&listed.stdout).trim() != id {
        return Err(format!("list -q: {}", text(&listed)));
    }

    expect_ok(&c.rcrun(&["start", &id]), "start")?;
    c.wait_output("SigIgn")?;
    if !c.output().contains("SigIgn:\t0000000000000000") {
        return Err(format!(
            "the command inherited ignored signals: {}",
            c.output()
        ));
    }
    let (status, pid_now) = c.status(&id)?;
    if status != "running" || pid_now != pid {
        return Err(format!("after start: {status} pid {pid_now}"));
    }
    expect_fail(
        &c.rcrun(&["start", &id]),
        "a second start",
        "cannot start an already running container",
    )?;
    expect_fail(
        &c.rcrun(&["delete", &id]),
        "delete of a running container",
        "delete --force",
    )?;

    expect_ok(&c.rcrun(&["kill", &id, "KILL"]), "kill KILL")?;
    c.wait_status(&id, "stopped")?;
    let (_, pid_stopped) = c.status(&id)?;
    if pid_stopped != 0 {
        return Err(format!(
            "a stopped container's pid is {pid_stopped}, runc says 0"
        ));
    }
    expect_fail(
        &c.rcrun(&["kill", &id, "TERM"]),
        "kill of a stopped container",
        "not running",
    )?;
    expect_ok(&c.rcrun(&["delete", &id]), "delete")?;
    c.assert_gone(&id, &cgroups)?;
    expect_fail(
        &c.rcrun(&["delete", &id]),
        "a second delete",
        "does not exist",
    )?;
    expect_ok(
        &c.rcrun(&["delete", "--force", &id]),
        "delete --force of nothing",
    )?;
    Ok(())
}

trait IntoOutput {
    fn into_output(self) -> Output;
}

/// `create`'s (status, combined output) as an Output, for [`expect_fail`].
impl IntoOutput for (Option<i32>, String) {
    fn into_output(self) -> Output {
        use std::os::unix::process::ExitStatusExt;
        Output {
            status: std::process::ExitStatus::from_raw(self.0.unwrap_or(1) << 8),
            stdout: Vec::new(),
            stderr: self.1.into_bytes(),
        }
    }
}

#[test]
fn create_start_kill_delete_in_every_mode() {
    each_mode(
        "life",
        serde_json::json!(["sh", "-c", LIFECYCLE]),
        None,
        lifecycle,
    );
}

/// PID 1 of a pid namespace ignores signals it has no handler for (pid_namespaces(7)): `kill`
/// TERM leaves `sh` running; `kill --all` reaches its children, and `delete --force` ends it.
fn kill_all_and_force(c: &Case) -> Result<(), String> {
    let id = format!("all-{}", c.name);
    let (code, out) = c.create(&id, &[]);
    if code != Some(0) {
        return Err(format!("create: {code:?}: {out}"));
    }
    let cgroups = c.cgroups(&id);
    expect_ok(&c.rcrun(&["start", &id]), "start")?;
    c.wait_output("ready")?;
    let pid = c.status(&id)?.1;
    expect_ok(&c.rcrun(&["kill", &id, "TERM"]), "kill TERM")?;
    std::thread::sleep(Duration::from_millis(300));
    if c.status(&id)?.0 != "running" {
        return Err("PID 1 died of a TERM it has no handler for".into());
    }
    expect_ok(&c.rcrun(&["kill", "--all", &id, "TERM"]), "kill --all TERM")?;
    c.wait_output("children gone")?;
    if c.status(&id)?.0 != "running" {
        return Err("kill --all TERM ended PID 1 too (it has no handler for TERM)".into());
    }
    expect_ok(&c.rcrun(&["delete", "--force", &id]), "delete --force")?;
    c.assert_gone(&id, &cgroups)?;
    if Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        return Err(format!("pid {pid} lives on after delete --force"));
    }
    Ok(())
}

#[test]
fn kill_all_and_delete_force() {
    let mut failures = Vec::new();
    // sh stays PID 1 (no exec) while it waits for its children, then says so and becomes a
    // sleep (the same pid, still PID 1).
    let script = "sleep 300 & sleep 300 & echo ready; wait; echo children gone; exec sleep 300";
    for (mode, name) in bundle_modes("oci kill --all") {
        let c = Case::new("all", mode, name, serde_json::json!(["sh", "-c", script]));
        let r = kill_all_and_force(&c);
        check(&mut failures, name, r);
        c.cleanup();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Engines retry; two creates of one ID at once must give one container, not two half ones.
#[test]
fn concurrent_creates_of_one_id_make_one_container() {
    let mode = if is_root() { Mode::Root } else { Mode::User };
    let c = Case::new("race", mode, "race", serde_json::json!(["sleep", "300"]));
    let children: Vec<_> = (0..4)
        .map(|i| {
            let mut all = vec![os("--root"), c.state.as_os_str(), os("create")];
            all.extend([os("-b"), c.bundle.as_os_str(), os("same")]);
            let err = c.dir.join(format!("err{i}"));
            rcrun_as_cmd(mode, &all)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&err).unwrap())
                .spawn()
                .expect("spawn create")
        })
        .collect();
    let codes: Vec<Option<i32>> = children
        .into_iter()
        .map(|mut ch| ch.wait().unwrap().code())
        .collect();
    let errors: Vec<String> = (0..4)
        .map(|i| std::fs::read_to_string(c.dir.join(format!("err{i}"))).unwrap())
        .collect();
    let won = codes.iter().filter(|c| **c == Some(0)).count();
    let lost_cleanly = codes
        .iter()
        .zip(&errors)
        .filter(|(c, e)| **c == Some(1) && e.contains("already exists"))
        .count();
    let status = c.status("same");
    let cgroups = c.cgroups("same");
    let deleted = c.rcrun(&["delete", "--force", "same"]);
    let gone = c.assert_gone("same", &cgroups);
    c.cleanup();
    assert!(
        won == 1 && lost_cleanly == 3,
        "codes {codes:?}, errors {errors:?}"
    );
    assert_eq!(status.map(|s| s.0), Ok("created".to_string()));
    assert!(deleted.status.success(), "{}", text(&deleted));
    gone.unwrap();
}

/// A create that fails leaves nothing: no state directory, no cgroup, no process.
#[test]
fn failed_creates_leave_nothing() {
    let mode = if is_root() { Mode::Root } else { Mode::User };
    let c = Case::new(
        "fail",
        mode,
        "fail",
        serde_json::json!(["/no/such/command"]),
    );
    let mut failures = Vec::new();
    let (code, out) = c.create("missing-cmd", &[]);
    if code != Some(1) || !out.contains("/no/such/command") {
        failures.push(format!("missing command: {code:?} {out}"));
    }
    check(
        &mut failures,
        "missing command",
        c.assert_gone("missing-cmd", &[]),
    );
    for (id, needle) in [("bad/id", "container ID"), (".hidden", "container ID")] {
        let (code, out) = c.create(id, &[]);
        if code != Some(1) || !out.contains(needle) {
            failures.push(format!("{id}: {code:?} {out}"));
        }
    }
    edit_config(&c.bundle, |d| {
        d["process"]["args"] = serde_json::json!(["true"]);
        d["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"destination": "/x", "type": "nfs", "source": "h:/x"}));
    });
    let (code, out) = c.create("bad-mount", &[]);
    if code != Some(1) || !out.contains("\"nfs\"") {
        failures.push(format!("nfs mount: {code:?} {out}"));
    }
    check(&mut failures, "bad mount", c.assert_gone("bad-mount", &[]));
    std::fs::remove_file(c.bundle.join("config.json")).unwrap();
    let (code, out) = c.create("no-config", &[]);
    if code != Some(1) || !out.contains("config.json") {
        failures.push(format!("no config.json: {code:?} {out}"));
    }
    check(&mut failures, "no config", c.assert_gone("no-config", &[]));
    // --log: engines read the error from this file (runc's JSON lines).
    let log = c.dir.join("log.json");
    let o = c.rcrun(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "state",
        "nope",
    ]);
    let line = std::fs::read_to_string(&log).unwrap_or_default();
    let parsed: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_default();
    if o.status.code() != Some(1)
        || parsed["level"] != "error"
        || parsed["msg"] != "container \"nope\" does not exist"
        || !parsed["time"].as_str().is_some_and(|t| t.ends_with('Z'))
    {
        failures.push(format!("--log: {line:?} {}", text(&o)));
    }
    // containerd's shim reads the file after every command: a command that succeeds makes it
    // too (else the shim reports "open …/log.json: no such file or directory").
    let quiet_log = c.dir.join("ok-log.json");
    let o = c.rcrun(&[
        "--log",
        quiet_log.to_str().unwrap(),
        "--log-format",
        "json",
        "list",
    ]);
    if !o.status.success() || !quiet_log.is_file() {
        failures.push(format!(
            "--log with a successful command: no {}: {}",
            quiet_log.display(),
            text(&o)
        ));
    }
    let left = list(&c.state);
    if !left.is_empty() {
        failures.push(format!("state root not empty: {left:?}"));
    }
    c.cleanup();
    if is_root() {
        let stray: Vec<_> = ["memory", "pids", "devices", "cpuacct"]
            .iter()
            .flat_map(|ctl| list(&Path::new("/sys/fs/cgroup").join(ctl).join("rcrun")))
            .filter(|n| n.starts_with("missing-cmd-") || n.starts_with("bad-mount-"))
            .collect();
        assert!(stray.is_empty(), "cgroups left: {stray:?}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `run --bundle -d` is create + start in one call (as `runc run -d`), and the container is left
/// to state/kill/delete; create options without -d are refused.
fn run_detached(c: &Case) -> Result<(), String> {
    let id = format!("rund-{}", c.name);
    let pid_file = c.dir.join("rund.pid");
    let out_file = File::create(&c.out).unwrap();
    let mut all = vec![os("--root"), c.state.as_os_str(), os("run"), os("-d")];
    all.extend([os("--pid-file"), pid_file.as_os_str()]);
    all.extend([os("-b"), c.bundle.as_os_str(), os(&id)]);
    let status = rcrun_as_cmd(c.mode, &all)
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().unwrap())
        .stderr(out_file)
        .status()
        .expect("rcrun run -d");
    if status.code() != Some(0) {
        return Err(format!("run -d: {:?}: {}", status.code(), c.output()));
    }
    let cgroups = c.cgroups(&id);
    c.wait_output("started")?;
    let (state, pid) = c.status(&id)?;
    let recorded: i64 = std::fs::read_to_string(&pid_file)
        .map_err(|e| format!("--pid-file: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("--pid-file: {e}"))?;
    if state != "running" || pid != recorded {
        return Err(format!(
            "after run -d: {state} pid {pid}, pid file {recorded}"
        ));
    }
    expect_ok(&c.rcrun(&["kill", &id, "KILL"]), "kill KILL")?;
    c.wait_status(&id, "stopped")?;
    expect_ok(&c.rcrun(&["delete", &id]), "delete")?;
    c.assert_gone(&id, &cgroups)?;
    // `run` keeps docker's exit codes: 125 when rcrun refuses.
    let o = c.rcrun(&[
        "run",
        "--pid-file",
        pid_file.to_str().unwrap(),
        "-b",
        c.bundle.to_str().unwrap(),
        "fg",
    ]);
    if o.status.code() != Some(125) || !text(&o).contains("need -d") {
        return Err(format!("run --bundle --pid-file without -d: {}", text(&o)));
    }
    Ok(())
}

#[test]
fn run_bundle_detached_is_create_and_start() {
    each_mode(
        "rund",
        serde_json::json!(["sh", "-c", "echo started; exec sleep 300"]),
        None,
        run_detached,
    );
}

/// `linux.cgroupsPath` (absolute: below each hierarchy's mount point). As root the container's
/// cgroup is exactly there with the spec's values, and `delete` removes it and the parent it
/// made. Rootless without delegation (this host) and without limits the path is skipped, as
/// runc does, and the container runs.
fn cgroups_path(c: &Case) -> Result<(), String> {
    let id = format!("cgp-{}", c.name);
    let parent = format!("rcrun-test-cgp-{}", std::process::id());
    let root = c.mode == Mode::Root;
    edit_config(&c.bundle, |d| {
        d["linux"]["cgroupsPath"] = format!("/{parent}/{id}").into();
        if root {
            let r = &mut d["linux"]["resources"];
            r["memory"] = serde_json::json!({"limit": 50593792});
            r["cpu"] = serde_json::json!({"period": 500000, "quota": 200000});
            r["pids"] = serde_json::json!({"limit": 17});
        }
    });
    let (code, out) = c.create(&id, &[]);
    if code != Some(0) {
        return Err(format!("create: {code:?}: {out}"));
    }
    let pid = c.status(&id)?.1;
    let cg = Path::new("/sys/fs/cgroup");
    let v2 = cg.join("cgroup.controllers").exists();
    let mut made = Vec::new();
    if root {
        let (files, dirs): (Vec<(PathBuf, &str)>, Vec<PathBuf>) = if v2 {
            let d = cg.join(&parent).join(&id);
            (
                vec![
                    (d.join("memory.max"), "50593792"),
                    (d.join("cpu.max"), "200000 500000"),
                    (d.join("pids.max"), "17"),
                ],
                vec![d, cg.join(&parent)],
            )
        } else {
            let d = |c: &str| cg.join(c).join(&parent).join(&id);
            (
                vec![
                    (d("memory").join("memory.limit_in_bytes"), "50593792"),
                    (d("cpu").join("cpu.cfs_period_us"), "500000"),
                    (d("cpu").join("cpu.cfs_quota_us"), "200000"),
                    (d("pids").join("pids.max"), "17"),
                ],
                vec![d("memory"), cg.join("memory").join(&parent)],
            )
        };
        for (f, want) in files {
            let got = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
            if got.trim() != want {
                return Err(format!("{}: {:?}, want {want}", f.display(), got.trim()));
            }
        }
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if !own.contains(&format!("/{parent}/{id}")) {
            return Err(format!(
                "the container's process is not in /{parent}/{id}: {own}"
            ));
        }
        made = dirs;
    }
    expect_ok(&c.rcrun(&["start", &id]), "start")?;
    c.wait_output("ready")?;
    expect_ok(&c.rcrun(&["delete", "--force", &id]), "delete --force")?;
    c.assert_gone(&id, &made)
}

#[test]
fn cgroups_path_places_the_cgroup_and_delete_removes_it() {
    each_mode(
        "cgp",
        serde_json::json!(["sh", "-c", "echo ready; exec sleep 300"]),
        None,
        cgroups_path,
    );
}

/// `--explain` on `create` and `start` narrates each half on stderr (and only there: stdout
/// stays the container's).
fn explain_halves(c: &Case) -> Result<(), String> {
    let id = format!("ex-{}", c.name);
    let (code, out) = c.create(&id, &["--explain"]);
    if code != Some(0) {
        return Err(format!("create --explain: {code:?}: {out}"));
    }
    for needle in [
        "══ create",
        "══ spawn",
        "pivot_root",
        "state.json",
        "exec.fifo",
    ] {
        if !out.contains(needle) {
            return Err(format!("create --explain: no {needle:?} in {out}"));
        }
    }
    let o = c.rcrun(&["start", "--explain", &id]);
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() || !err.contains("══ start") || !err.contains("running") {
        return Err(format!("start --explain: {}", text(&o)));
    }
    if !o.stdout.is_empty() {
        return Err(format!("start --explain wrote to stdout: {}", text(&o)));
    }
    c.wait_output("execve(")?;
    c.wait_output("ready")?;
    expect_ok(&c.rcrun(&["delete", "--force", &id]), "delete --force")?;
    c.assert_gone(&id, &[])
}

#[test]
fn create_and_start_explain_their_halves() {
    each_mode(
        "explain",
        serde_json::json!(["sh", "-c", "echo ready; exec sleep 300"]),
        None,
        explain_halves,
    );
}
