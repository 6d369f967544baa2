//! `rcrun spec` + `rcrun run --bundle DIR ID`: an OCI bundle through the same launcher as an
//! image, as root, as the plain user rcrun-test and under `unshare -Ur`; as root the same bundle
//! under crun must show the same container. Bad bundles get a one-line error and exit 125.

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Output};

const PROBE: &str = r#"hostname; id -u; id -g
grep -E '^(CapBnd|CapEff|NoNewPrivs):' /proc/self/status
ls /dev | tr '\n' ' '; echo
ulimit -n
touch /x 2>&1 | sed 's/.*: //'
(echo x > /proc/sys/kernel/domainname) 2>&1 | sed 's/.*: //'
wc -c < /proc/timer_list
exit 7"#;

/// `rcrun spec` into DIR (as the mode's user), then the probe as process.args, no terminal; a
/// second `rcrun spec` must refuse to overwrite.
fn make_bundle(mode: Mode, dir: &Path, store: &Path) {
    starter_bundle(mode, dir, store, serde_json::json!(["sh", "-c", PROBE]));
    let mut args = vec![os("spec"), os("-b"), dir.as_os_str()];
    if mode != Mode::Root {
        args.push(os("--rootless"));
    }
    let again = rcrun_as(mode, &args);
    assert_eq!(
        again.status.code(),
        Some(125),
        "a second rcrun spec must not overwrite: {}",
        text(&again)
    );
}

#[test]
fn starter_bundle_runs_in_every_mode() {
    let mut failures = Vec::new();
    for (mode, name) in bundle_modes("bundle") {
        let who = if mode == Mode::Root {
            Who::Root
        } else {
            Who::User
        };
        let case = case_dir(&format!("bundle-{name}"), who);
        let store = case.join("store");
        let dir = case.join("b");
        std::fs::create_dir(&dir).unwrap();
        if who == Who::User && is_root() {
            let u = test_user().unwrap();
            nix::unistd::chown(&dir, Some(u.uid), Some(u.gid)).unwrap();
        }
        make_bundle(mode, &dir, &store);
        let o = rcrun_as(
            mode,
            &[
                os("--root"),
                store.as_os_str(),
                os("run"),
                os("-b"),
                dir.as_os_str(),
                os(&format!("c-{name}")),
            ],
        );
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let lines: Vec<&str> = out.lines().collect();
        let ok = o.status.code() == Some(7)
            && lines.first() == Some(&"rcrun")
            && lines.get(1) == Some(&"0")
            && lines.iter().any(|l| l.starts_with("NoNewPrivs:\t1"))
            && lines
                .iter()
                .any(|l| l.contains("null") && l.contains("urandom") && l.contains("ptmx"))
            && lines.contains(&"1024")
            && lines
                .iter()
                .filter(|l| **l == "Read-only file system")
                .count()
                == 2
            && lines.contains(&"0");
        if !ok {
            failures.push(format!(
                "[{name}] {:?}\n{out}{}",
                o.status.code(),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        // --root is the state root of `run -b`: the container's directory is gone after it.
        let state = store.join(format!("c-{name}"));
        if state.exists() {
            failures.push(format!("[{name}] state left: {:?}", list(&state)));
        }
        // The rootfs is the bundle's own: the container's root was read-only, so nothing new.
        if dir.join("rootfs/x").exists() {
            failures.push(format!("[{name}] wrote into a read-only root"));
        }
        let _ = rcrun::sys::fs::remove_tree(&case);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_same_bundle_under_crun_shows_the_same_container() {
    if !is_root() {
        skip("bundle: crun comparison needs root here (crun's rootless mode needs cgroup v2)");
        return;
    }
    if Command::new("crun").arg("--version").output().is_err() {
        skip("bundle: crun is not installed (.ci/run installs it): no comparison with another runtime");
        return;
    }
    let case = case_dir("bundle-crun", Who::Root);
    let store = case.join("store");
    let dir = case.join("b");
    std::fs::create_dir(&dir).unwrap();
    make_bundle(Mode::Root, &dir, &store);
    // Writable root and a limit, so that both runtimes do more than the example.
    edit_config(&dir, |d| {
        d["root"]["readonly"] = false.into();
        d["linux"]["resources"] = serde_json::json!({"pids": {"limit": 30}, "devices": [{"allow": false, "access": "rwm"}]});
        d["process"]["args"] = serde_json::json!(["sh", "-c", format!("{}\nrm -f /x; mknod /tmp/kmsg c 1 11 2>&1; cat /tmp/kmsg 2>&1 | sed 's/.*: //'; rm -f /tmp/kmsg; exit 5", PROBE.trim_end_matches("exit 7"))]);
    });
    let ours = rcrun(
        Who::Root,
        &[
            os("--root"),
            store.as_os_str(),
            os("run"),
            os("-b"),
            dir.as_os_str(),
            os("c-crun"),
        ],
    );
    let theirs = Command::new("unshare")
        .args(["-m", "sh", "-c", r#"if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi; exec crun --root "$1" run -b "$2" "$3""#, "sh"])
        .arg(case.join("crun-state"))
        .arg(&dir)
        .arg(format!("rcrun-bundle-{}", std::process::id()))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("crun");
    let (a, b) = (
        String::from_utf8_lossy(&ours.stdout),
        String::from_utf8_lossy(&theirs.stdout),
    );
    assert!(
        ours.status.code() == Some(5) && theirs.status.code() == Some(5) && a == b,
        "rcrun {:?} / crun {:?}\n--- rcrun\n{a}{}--- crun\n{b}{}",
        ours.status.code(),
        theirs.status.code(),
        String::from_utf8_lossy(&ours.stderr),
        String::from_utf8_lossy(&theirs.stderr)
    );
    eprintln!("rcrun and crun ran the same bundle alike:\n{a}");
    let _ = rcrun::sys::fs::remove_tree(&case);
}

#[test]
fn bad_bundles_get_one_line_and_125() {
    let who = if is_root() { Who::Root } else { Who::User };
    let mode = if is_root() { Mode::Root } else { Mode::User };
    let case = case_dir("bundle-bad", who);
    let store = case.join("store");
    let dir = case.join("b");
    std::fs::create_dir(&dir).unwrap();
    let run = |id: &str| {
        rcrun_as(
            mode,
            &[
                os("--root"),
                store.as_os_str(),
                os("run"),
                os("-b"),
                dir.as_os_str(),
                os(id),
            ],
        )
    };
    let expect = |o: Output, needle: &str| {
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(125), "{needle}: {e}");
        assert!(e.contains(needle), "error should name {needle:?}: {e}");
        assert!(!e.contains("panicked"), "{e}");
    };
    expect(run("c1"), "config.json");
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    expect(run("c1"), "is not an OCI runtime config");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    make_bundle(mode, &dir, &store);
    expect(run("bad/id"), "container ID");
    edit_config(&dir, |d| {
        d["hooks"] = serde_json::json!({"prestart": [{"path": "/nonexistent/hook"}]})
    });
    // A failing prestart hook fails the run (and the container never starts).
    expect(run("c1"), "prestart hook /nonexistent/hook");
    edit_config(&dir, |d| {
        d.as_object_mut().unwrap().remove("hooks");
        d["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"destination": "/x", "type": "nfs", "source": "h:/x"}));
    });
    expect(run("c1"), "\"nfs\"");
    assert!(!store.join("c1").exists(), "state left: {:?}", list(&store));
    let _ = rcrun::sys::fs::remove_tree(&case);
}
