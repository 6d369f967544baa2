//! The OCI runtime commands as an engine drives them: `create`, `state`, `start`, `kill`,
//! `delete`, `list`, with runc's flags (--root, --pid-file), as root, as the plain user
//! rcrun-test and under `unshare -Ur`. Every case ends by checking that no state directory, no
//! process and (as root) no cgroup is left.

mod common;
use common::*;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// One container's world: a bundle, the state root (--root), and the file its stdout and
/// stderr go to (an engine hands `create` such descriptors; the container keeps them).
struct Case {
    mode: Mode,
    name: &'static str,
    dir: PathBuf,
    bundle: PathBuf,
    state: PathBuf,
    out: PathBuf,
}

impl Case {
    fn new(test: &str, mode: Mode, name: &'static str, args: serde_json::Value) -> Case {
        let dir = case_dir(&format!("oci-{test}-{name}"), mode.who());
        let bundle = dir.join("b");
        std::fs::create_dir(&bundle).unwrap();
        if mode.who() == Who::User && is_root() {
            let u = test_user().unwrap();
            nix::unistd::chown(&bundle, Some(u.uid), Some(u.gid)).unwrap();
        }
        starter_bundle(mode, &bundle, &dir.join("store"), args);
        Case {
            mode,
            name,
            state: dir.join("state"),
            out: dir.join("out"),
            bundle,
            dir,
        }
    }

    /// `rcrun --root STATE ARGS...`, its output captured (for commands that return at once).
    fn rcrun(&self, args: &[&str]) -> Output {
        let mut all = vec![os("--root"), self.state.as_os_str()];
        all.extend(args.iter().map(|a| os(a)));
        rcrun_as(self.mode, &all)
    }

    /// `rcrun create`: stdin from /dev/null, stdout and stderr into the case's file (captured
    /// pipes would stay open as long as the container, as they do for an engine).
    fn create(&self, id: &str, extra: &[&str]) -> (Option<i32>, String) {
        self.create_into(&self.out, id, extra)
    }

    /// `create` with its output into another file (a second create must not truncate the
    /// first container's output).
    fn create_into(&self, out: &Path, id: &str, extra: &[&str]) -> (Option<i32>, String) {
        let out_file = File::create(out).unwrap();
        let mut all = vec![os("--root"), self.state.as_os_str(), os("create")];
        all.extend(extra.iter().map(|a| os(a)));
        all.extend([os("-b"), self.bundle.as_os_str(), os(id)]);
        let status = rcrun_as_cmd(self.mode, &all)
            .stdin(Stdio::null())
            .stdout(out_file.try_clone().unwrap())
            .stderr(out_file)
            .status()
            .expect("rcrun create");
        (
            status.code(),
            std::fs::read_to_string(out).unwrap_or_default(),
        )
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The `status` field of `rcrun state ID`, or the error.
    fn status(&self, id: &str) -> Result<(String, i64), String> {
        let o = self.rcrun(&["state", id]);
        if !o.status.success() {
            return Err(text(&o));
        }
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("state is not JSON ({e}): {}", text(&o)));
        assert_eq!(v["id"], id, "{v}");
        assert_eq!(v["ociVersion"], "1.1.0", "{v}");
        Ok((
            v["status"].as_str().unwrap_or("?").to_string(),
            v["pid"].as_i64().unwrap_or(-1),
        ))
    }

    /// Polls `state` until it says `want` (a killed process takes a moment to be reaped).
    fn wait_status(&self, id: &str, want: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.status(id)?;
            if got.0 == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{id}: status {got:?}, waited for {want}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_output(&self, needle: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.output().contains(needle) {
            if Instant::now() > deadline {
                return Err(format!("no {needle:?} in the output: {:?}", self.output()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The cgroup directories recorded for `id` (root only: rootless runs have none here).
    fn cgroups(&self, id: &str) -> Vec<PathBuf> {
        let Ok(bytes) = std::fs::read(self.state.join(id).join("state.json")) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["cgroup_paths"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| PathBuf::from(p.as_str().unwrap()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Nothing of `id` left: no state directory, no cgroup directory.
    fn assert_gone(&self, id: &str, cgroups: &[PathBuf]) -> Result<(), String> {
        let dir = self.state.join(id);
        if dir.exists() {
            return Err(format!("state left in {}: {:?}", dir.display(), list(&dir)));
        }
        for c in cgroups {
            if c.exists() {
                return Err(format!("cgroup left: {}", c.display()));
            }
        }
        match self.status(id) {
            Err(e) if e.contains("does not exist") && e.contains("status Some(1)") => Ok(()),
            other => Err(format!("state of a deleted container: {other:?}")),
        }
    }

    fn cleanup(self) {
        for id in list(&self.state) {
            let _ = self.rcrun(&["delete", "--force", &id]);
        }
        let _ = rcrun::sys::fs::remove_tree(&self.dir);
    }
}

fn check(failures: &mut Vec<String>, name: &str, r: Result<(), String>) {
    if let Err(e) = r {
        failures.push(format!("[{name}] {e}"));
    }
}

fn expect_ok(o: &Output, what: &str) -> Result<(), String> {
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("{what}: {}", text(o)))
    }
}

/// An OCI command's failure: exit status 1 (runc's), with `needle` in the message.
fn expect_fail(o: &Output, what: &str, needle: &str) -> Result<(), String> {
    let e = String::from_utf8_lossy(&o.stderr);
    if o.status.code() == Some(1) && e.contains(needle) && !e.contains("panicked") {
        Ok(())
    } else {
        Err(format!(
            "{what}: wanted exit status 1 and {needle:?}: {}",
            text(o)
        ))
    }
}

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
    let mut failures = Vec::new();
    for (mode, name) in bundle_modes("oci lifecycle") {
        let c = Case::new(
            "life",
            mode,
            name,
            serde_json::json!(["sh", "-c", LIFECYCLE]),
        );
        let r = lifecycle(&c);
        check(&mut failures, name, r);
        c.cleanup();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
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
    let mut failures = Vec::new();
    for (mode, name) in bundle_modes("oci run -d") {
        let c = Case::new(
            "rund",
            mode,
            name,
            serde_json::json!(["sh", "-c", "echo started; exec sleep 300"]),
        );
        let r = run_detached(&c);
        check(&mut failures, name, r);
        c.cleanup();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
