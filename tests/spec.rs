//! `rcrun run --print-spec`: the OCI runtime config.json a run amounts to. The proof that it is a
//! faithful translation: hand it, with the image unpacked as the bundle's rootfs, to crun (an
//! independent OCI runtime) and compare what the container sees with what `rcrun run` shows
//! for the same flags — hostname, ids, capability sets, no_new_privs, seccomp mode, /dev,
//! read-only and masked paths, the device policy, volumes.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

/// What the container reports about its own confinement, one fact per line.
const PROBE: &str = r#"
hostname; id
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status
ls /dev | tr '\n' ' '; echo
for f in /proc/sys/kernel/domainname /sys/kernel/uevent_helper /data/x /x; do (echo x > $f) 2>&1 | sed 's/.*: //'; done
wc -c < /proc/timer_list
rm -f /tmp/kmsg; (mknod /tmp/kmsg c 1 11 && cat /tmp/kmsg) 2>&1 | sed 's/.*: //'
cat /proc/self/uid_map | tr -s ' '
"#;

fn rcrun_as_root(store: &Path, args: &[&str]) -> std::process::Output {
    let mut a: Vec<&std::ffi::OsStr> = vec![os("--root"), store.as_os_str()];
    a.extend(args.iter().map(|s| os(s)));
    rcrun(Who::Root, &a)
}

/// The printed spec, made into a bundle: root.path pointed at the unpacked image, and the
/// binds of the files rcrun writes itself (hostname, hosts, resolv.conf: their source is the
/// run's private scratch tmpfs, which exists only inside rcrun's mount namespace) left out.
fn bundle_from_spec(spec: &str, bundle: &Path) {
    let mut doc: serde_json::Value = serde_json::from_str(spec).expect("--print-spec prints JSON");
    doc["root"]["path"] = "rootfs".into();
    let mounts = doc["mounts"].as_array_mut().unwrap();
    mounts.retain(|m| m["type"] != "bind" || Path::new(m["source"].as_str().unwrap()).exists());
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&doc).unwrap(),
    )
    .unwrap();
}

#[test]
fn printed_spec_run_by_crun_confines_like_rcrun() {
    if !is_root() {
        skip("spec: crun needs real root here (its rootless mode needs a cgroup v2 host)");
        return;
    }
    if Command::new("crun").arg("--version").output().is_err() {
        skip("spec: crun is not installed (.ci/run installs it): the printed spec was not checked against another runtime");
        return;
    }
    let case = case_dir("spec-crun", Who::Root);
    let store = case.join("store");
    let image = busybox_image();
    let volume = case.join("volume");
    std::fs::create_dir(&volume).unwrap();
    let vol_arg = format!("{}:/data:ro", volume.display());
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("defaults", vec!["--hostname", "specbox"]),
        (
            "hardened",
            vec![
                "--hostname",
                "hard",
                "--read-only",
                "-v",
                &vol_arg,
                "--tmpfs",
                "/tmp",
                "--cap-drop",
                "ALL",
                "--cap-add",
                "MKNOD",
                "--cap-add",
                "NET_BIND_SERVICE",
                "--memory",
                "64m",
                "--pids-limit",
                "50",
                "--network",
                "host",
            ],
        ),
        (
            "unconfined seccomp, extra caps",
            vec![
                "--hostname",
                "loose",
                "--security-opt",
                "seccomp=unconfined",
                "--cap-add",
                "SYS_PTRACE",
            ],
        ),
    ];
    let crun_state = case.join("crun-state");
    let mut failures = Vec::new();
    for (i, (name, flags)) in cases.iter().enumerate() {
        // A fresh rootfs per case: crun writes into the bundle's (mount points it creates, files
        // the probe writes), where rcrun's writes go to an upper dir discarded at exit.
        let bundle = case.join(format!("bundle-{i}"));
        let unpacked = rcrun_as_root(
            &store,
            &[
                "unpack",
                image.to_str().unwrap(),
                bundle.join("rootfs").to_str().unwrap(),
            ],
        );
        assert!(unpacked.status.success(), "{}", text(&unpacked));
        let mut run_args = vec!["run"];
        run_args.extend(flags.iter().copied());
        run_args.extend([image.to_str().unwrap(), "sh", "-c", PROBE]);
        let ours = rcrun_as_root(&store, &run_args);
        assert!(ours.status.success(), "{name}: rcrun run: {}", text(&ours));

        let mut print = vec!["run", "--print-spec"];
        print.extend(flags.iter().copied());
        print.extend([image.to_str().unwrap(), "sh", "-c", PROBE]);
        let spec = rcrun_as_root(&store, &print);
        assert!(
            spec.status.success(),
            "{name}: --print-spec: {}",
            text(&spec)
        );
        let spec = String::from_utf8(spec.stdout).unwrap();
        serde_json::from_str::<oci_spec::runtime::Spec>(&spec)
            .unwrap_or_else(|e| panic!("{name}: not an OCI Spec: {e}"));
        bundle_from_spec(&spec, &bundle);
        // crun 1.8 refuses a hybrid cgroup host (v1 controllers plus cgroup2 at
        // /sys/fs/cgroup/unified): it runs in a mount namespace of its own without the latter,
        // as integration/bench.sh runs it.
        let theirs = Command::new("unshare")
            .args(["-m", "sh", "-c", r#"if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi; exec crun --root "$1" run -b "$2" "$3""#, "sh"])
            .arg(&crun_state)
            .arg(&bundle)
            .arg(format!("rcrun-spec-{}-{i}", std::process::id()))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run crun");
        let (a, b) = (
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout),
        );
        if !theirs.status.success() || a != b {
            failures.push(format!(
                "{name}: rcrun and crun differ\n--- rcrun run\n{a}--- crun run (the printed spec)\n{b}--- crun stderr\n{}",
                String::from_utf8_lossy(&theirs.stderr)
            ));
        } else {
            eprintln!(
                "{name}: crun on the printed spec saw exactly what rcrun's container saw:\n{a}"
            );
        }
    }
    let _ = rcrun::sys::fs::remove_tree(&case);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn print_spec_starts_nothing_and_explains_rootless_maps() {
    if is_root() && test_user().is_none() {
        skip(&format!(
            "spec: rootless --print-spec: the user {TEST_USER} does not exist"
        ));
        return;
    }
    let who = Who::User;
    let case = case_dir("spec-rootless", who);
    let store = case.join("store");
    let image = busybox_image();
    let o = rcrun(
        who,
        &[
            os("--root"),
            store.as_os_str(),
            os("run"),
            os("--print-spec"),
            image.as_os_str(),
            os("touch"),
            os("/should-not-run"),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let spec: oci_spec::runtime::Spec = serde_json::from_slice(&o.stdout).expect("an OCI Spec");
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User));
    let maps = linux.uid_mappings().as_ref().expect("uid maps");
    assert_eq!(maps[0].container_id(), 0);
    assert!(
        linux
            .resources()
            .as_ref()
            .is_none_or(|r| r.devices().is_none()),
        "no device cgroup rootless"
    );
    // Nothing ran: no container, no scratch left.
    assert!(
        list(&store.join("run")).is_empty(),
        "{:?}",
        list(&store.join("run"))
    );
    let _ = rcrun::sys::fs::remove_tree(&case);
}
