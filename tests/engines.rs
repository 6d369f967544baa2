//! Real engines driving rcrun unchanged (issue 24): `integration/engines/podman.sh` runs
//! podman's everyday scenarios with `--runtime rcrun` and throwaway storage, as root and as the
//! plain user rcrun-test (podman's own rootless setup). Skipped loudly where podman is not
//! installed (`.ci/run` installs it); containerd likewise, with its runc shim running rcrun.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

fn podman_installed() -> bool {
    Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run_podman_scenarios(wrapper: &[&str], who: &str) {
    let dir = staging();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/engines/podman.sh");
    // Copied where rcrun-test can read them, with the helpers they source.
    let script_copy = dir.join(format!("podman-{who}.sh"));
    std::fs::copy(&script, &script_copy).unwrap();
    std::fs::copy(script.with_file_name("tap.sh"), dir.join("tap.sh")).unwrap();
    // Short: podman refuses a --runroot longer than 50 characters.
    let work = std::env::temp_dir().join(format!("rcrun-pm-{}-{who}", std::process::id()));
    let mut cmd = Command::new(wrapper[0]);
    cmd.args(&wrapper[1..])
        .arg("bash")
        .arg(&script_copy)
        .arg(rcrun_bin())
        .arg(busybox_image())
        .arg(&work)
        .current_dir(dir);
    let out = cmd.output().expect("run podman.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains("ok - "),
        "podman with --runtime rcrun failed as {who}:\n{stdout}"
    );
}

#[test]
fn podman_drives_rcrun_as_root() {
    if !podman_installed() {
        skip("podman scenarios: podman is not installed (apt-get install podman)");
        return;
    }
    if !is_root() {
        skip("podman scenarios as root: not running as root");
        return;
    }
    run_podman_scenarios(&["env"], "root");
}

#[test]
fn podman_drives_rcrun_rootless() {
    if !podman_installed() {
        skip("podman scenarios: podman is not installed (apt-get install podman)");
        return;
    }
    if !is_root() || test_user().is_none() {
        skip(&format!(
            "podman scenarios rootless: needs root to become {TEST_USER}"
        ));
        return;
    }
    run_podman_scenarios(&["runuser", "-u", TEST_USER, "--"], "rootless");
}

/// containerd 1.6 with its runc shim running rcrun (`integration/engines/containerd.sh`): a
/// containerd of its own, as root.
#[test]
fn containerd_drives_rcrun() {
    let installed = Command::new("containerd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        skip("containerd scenarios: containerd is not installed (apt-get install containerd)");
        return;
    }
    if !is_root() {
        skip("containerd scenarios: containerd runs as root");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/engines/containerd.sh");
    let work = std::env::temp_dir().join(format!("rcrun-ctd-{}", std::process::id()));
    let out = Command::new("bash")
        .arg(&script)
        .arg(rcrun_bin())
        .arg(busybox_image())
        .arg(&work)
        .output()
        .expect("run containerd.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains("ok - "),
        "containerd with rcrun as its runc binary failed:\n{stdout}"
    );
}
