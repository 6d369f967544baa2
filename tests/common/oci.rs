//! The OCI commands' test harness: one case is a bundle, a state root and an output file, driven
//! as root, as rcrun-test and under `unshare -Ur`.
#![allow(dead_code)]

use super::*;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// One container's world: a bundle, the state root (--root), and the file its stdout and
/// stderr go to (an engine hands `create` such descriptors; the container keeps them).
pub struct Case {
    pub mode: Mode,
    pub name: &'static str,
    pub dir: PathBuf,
    pub bundle: PathBuf,
    pub state: PathBuf,
    pub out: PathBuf,
}

impl Case {
    pub fn new(test: &str, mode: Mode, name: &'static str, args: serde_json::Value) -> Case {
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
    pub fn rcrun(&self, args: &[&str]) -> Output {
        let mut all = vec![os("--root"), self.state.as_os_str()];
        all.extend(args.iter().map(|a| os(a)));
        rcrun_as(self.mode, &all)
    }

    /// `rcrun create`: stdin from /dev/null, stdout and stderr into the case's file (captured
    /// pipes would stay open as long as the container, as they do for an engine).
    pub fn create(&self, id: &str, extra: &[&str]) -> (Option<i32>, String) {
        self.create_into(&self.out, id, extra)
    }

    /// `create` with its output into another file (a second create must not truncate the
    /// first container's output).
    pub fn create_into(&self, out: &Path, id: &str, extra: &[&str]) -> (Option<i32>, String) {
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

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The `status` field of `rcrun state ID`, or the error.
    pub fn status(&self, id: &str) -> Result<(String, i64), String> {
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
    pub fn wait_status(&self, id: &str, want: &str) -> Result<(), String> {
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

    pub fn wait_output(&self, needle: &str) -> Result<(), String> {
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
    pub fn cgroups(&self, id: &str) -> Vec<PathBuf> {
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
    pub fn assert_gone(&self, id: &str, cgroups: &[PathBuf]) -> Result<(), String> {
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

    pub fn cleanup(self) {
        for id in list(&self.state) {
            let _ = self.rcrun(&["delete", "--force", &id]);
        }
        let _ = rcrun::sys::fs::remove_tree(&self.dir);
    }
}

pub fn check(failures: &mut Vec<String>, name: &str, r: Result<(), String>) {
    if let Err(e) = r {
        failures.push(format!("[{name}] {e}"));
    }
}

pub fn expect_ok(o: &Output, what: &str) -> Result<(), String> {
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("{what}: {}", text(o)))
    }
}

/// An OCI command's failure: exit status 1 (runc's), with `needle` in the message.
pub fn expect_fail(o: &Output, what: &str, needle: &str) -> Result<(), String> {
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

/// Why a test cannot run a mode's commands one by one under `unshare -Ur`.
pub const SIBLING_USERNS: &str =
    "the harness runs every rcrun command in a fresh `unshare -Ur`, a \
    sibling of the user namespace the container was made in, with no privilege over it \
    (oci_exec.rs exec_in_one_unshare_session runs them all in one)";

/// Runs `f` on a fresh case (a bundle whose process runs `args`) in every mode `bundle_modes`
/// offers, Unshare skipped loudly with `skip_unshare`'s reason when given; cleans each case up
/// and fails with every mode's failure at once.
pub fn each_mode(
    tag: &str,
    args: serde_json::Value,
    skip_unshare: Option<&str>,
    f: impl Fn(&Case) -> Result<(), String>,
) {
    let mut failures = Vec::new();
    for (mode, name) in bundle_modes(&format!("oci {tag}")) {
        if let (Mode::Unshare, Some(why)) = (mode, skip_unshare) {
            skip(&format!("oci {tag} [unshare]: {why}"));
            continue;
        }
        let c = Case::new(tag, mode, name, args.clone());
        let r = f(&c);
        check(&mut failures, name, r);
        c.cleanup();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Polls until process `pid` is gone (or a zombie), for up to 5 s.
pub fn process_gone(pid: i64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("process {pid} lives on: {stat}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
