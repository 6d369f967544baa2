//! Runs `integration/scenarios.sh` (the end-to-end `rcrun run` scenarios) as root, as a plain
//! user, and as a plain user under `unshare -Ur`. Needs root (to switch users) and the plain user
//! `rcrun-test` that `.ci/run` creates; without them each test says loudly why it skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
mod common;
use common::{is_root, skip, TEST_USER};

fn user_exists(name: &str) -> bool {
    nix::unistd::User::from_name(name).ok().flatten().is_some()
}

/// A world-readable directory holding the rcrun binary and the images, so a plain user can use
/// them wherever the checkout lives.
fn staging() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(build_staging).clone()
}

fn build_staging() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = common::process_temp_dir("rcrun-scenarios");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_rcrun"), dir.join("rcrun")).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    for f in [
        "busybox.docker-save.tar",
        "layered.oci-archive.tar",
        "docker-default-seccomp.json",
    ] {
        std::fs::copy(fixtures.join(f), dir.join(f)).unwrap_or_else(|e| panic!("fixture {f}: {e}"));
    }
    if let Some(mk) = option_env!("CARGO_BIN_EXE_rcrun-mkimage") {
        let st = Command::new(mk)
            .args([
                "--busybox",
                "--many-layers",
                "200",
                "--tag",
                "many:200",
                "-o",
            ])
            .arg(dir.join("many-layers.tar"))
            .status()
            .expect("run rcrun-mkimage");
        assert!(st.success(), "rcrun-mkimage failed");
    }
    // The static probe that reports capabilities, no_new_privs, seccomp and denied calls.
    let probe_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe/probe.c");
    std::fs::create_dir_all(dir.join("probe")).unwrap();
    let built = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.join("probe/probe"))
        .arg(&probe_src)
        .status();
    if !matches!(built, Ok(s) if s.success()) {
        skip("gcc -static could not build tests/probe/probe.c: confinement checks will be skipped");
    }
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// Whether the shared fixtures (`../shared/fixtures`, beside the checkout) are here; if not,
/// the test says so loudly and skips.
fn fixtures_present(test: &str) -> bool {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    let present = fixtures.join("busybox.docker-save.tar").is_file();
    if !present {
        skip(&format!(
            "{test}: needs the shared fixtures at {} (beside the checkout, as on the project's machines and in CI)",
            fixtures.display()
        ));
    }
    present
}

fn run_scenarios(mode: &str, wrapper: &[&str]) {
    run_script("scenarios", mode, wrapper, None);
}

/// `integration/docker-habits.sh`: a docker user's routine (run -d --name, ps, exec, logs,
/// stop, wait, rm, kill, gc) in one shell of the mode.
fn run_docker_habits(mode: &str, wrapper: &[&str]) {
    run_script(
        "docker-habits",
        mode,
        wrapper,
        Some("busybox.docker-save.tar"),
    );
}

/// Runs `integration/NAME.sh RCRUN ARG MODE [EXTRA…]` (ARG: the staging dir, or one image in it).
fn run_script(name: &str, mode: &str, wrapper: &[&str], image: Option<&str>) {
    run_script_with(name, mode, wrapper, image, &[])
}

fn run_script_with(name: &str, mode: &str, wrapper: &[&str], image: Option<&str>, extra: &[&str]) {
    if !fixtures_present(&format!("{name} as {mode}")) {
        return;
    }
    let dir = staging();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("integration/{name}.sh"));
    let script_copy = dir.join(format!("{name}-{mode}{}.sh", extra.join("-")));
    std::fs::copy(&script, &script_copy).unwrap();
    // The TAP helpers every script sources from its own directory.
    let tap = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/tap.sh");
    std::fs::copy(tap, dir.join("tap.sh")).unwrap();
    if name == "network" {
        // Its UDP receiver, built by the script (the test images' busybox has none).
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/udp-recv.c");
        std::fs::copy(src, dir.join("udp-recv.c")).unwrap();
    }
    let mut cmd = Command::new(wrapper[0]);
    cmd.args(&wrapper[1..])
        .arg("bash")
        .arg(&script_copy)
        .arg(dir.join("rcrun"))
        .arg(image.map_or(dir.clone(), |i| dir.join(i)))
        .arg(mode)
        .args(extra)
        .current_dir(&dir);
    let out = cmd.output().expect("run the script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name} failed as {mode}:\n{stdout}");
}

#[test]
fn scenarios_as_root() {
    if !is_root() {
        return skip("scenarios as root need real root");
    }
    run_scenarios("root", &["env"]);
    // After, not beside: both check that no cgroup under rcrun/ is left.
    run_docker_habits("root", &["env"]);
    run_network("root", &["env"]);
}

/// `integration/network.sh`: --network pasta and slirp4netns, -p, --dns, --add-host, the
/// helper's end, one helper after the other.
fn run_network(mode: &str, wrapper: &[&str]) {
    for helper in ["slirp4netns", "pasta"] {
        run_script_with(
            "network",
            mode,
            wrapper,
            Some("busybox.docker-save.tar"),
            &[helper],
        );
    }
}

/// The two ways a plain user runs rcrun: (mode, command wrapper).
const PLAIN_USER: (&str, &[&str]) = ("rootless", &["runuser", "-u", TEST_USER, "--"]);
const UNDER_UNSHARE_UR: (&str, &[&str]) = (
    "unshare",
    &["runuser", "-u", TEST_USER, "--", "unshare", "-Ur"],
);

/// Runs `script` in the mode `(mode, wrapper)`, or says loudly why it cannot here.
fn as_plain_user(what: &str, (mode, wrapper): (&str, &[&str]), script: fn(&str, &[&str])) {
    if !is_root() || !user_exists(TEST_USER) {
        return skip(&format!(
            "{what} as {mode} needs root (to switch user) and the user {TEST_USER} (.ci/run creates it)"
        ));
    }
    script(mode, wrapper)
}

#[test]
fn network_as_plain_user() {
    as_plain_user("--network pasta and slirp4netns", PLAIN_USER, run_network)
}

#[test]
fn network_under_unshare_ur() {
    as_plain_user(
        "--network pasta and slirp4netns",
        UNDER_UNSHARE_UR,
        run_network,
    )
}

#[test]
fn docker_habits_as_plain_user() {
    as_plain_user("the docker routine", PLAIN_USER, run_docker_habits)
}

#[test]
fn docker_habits_under_unshare_ur() {
    as_plain_user("the docker routine", UNDER_UNSHARE_UR, run_docker_habits)
}

/// `integration/holder.sh`: the id holder of subordinate-id starts (made, entered, confined,
/// checked, replaced, stopped by gc, gone when idle).
fn run_holder(mode: &str, wrapper: &[&str]) {
    run_script("holder", mode, wrapper, Some("busybox.docker-save.tar"));
}

#[test]
fn id_holder_as_plain_user() {
    as_plain_user("the id holder", PLAIN_USER, run_holder)
}

#[test]
fn scenarios_as_plain_user() {
    as_plain_user("the scenarios", PLAIN_USER, run_scenarios)
}

#[test]
fn scenarios_as_plain_user_without_subids() {
    as_plain_user(
        "the scenarios with a single-id map",
        (
            "rootless-single-map",
            &["runuser", "-u", TEST_USER, "--", "env", "RCRUN_NO_SUBIDS=1"],
        ),
        run_scenarios,
    )
}

#[test]
fn scenarios_under_unshare_ur() {
    as_plain_user("the scenarios", UNDER_UNSHARE_UR, run_scenarios)
}

/// Rootless with a delegated cgroup v1 subtree (`rcrun-<uid>` in each controller, chowned to the
/// user as the NoDelegation message tells a root user to do): limits are enforced. Runs as
/// `nobody` so the delegation cannot leak into the other rootless tests running in parallel as
/// rcrun-test (single-id map: nobody has no subordinate ids).
#[test]
fn rootless_limits_with_delegated_cgroup() {
    const DELEGATED_USER: &str = "nobody";
    if !is_root() || !user_exists(DELEGATED_USER) {
        return skip("delegation test needs root (to chown the subtree) and the user nobody");
    }
    if !Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        return skip("delegation test is written for cgroup v1 controllers (this host has none at /sys/fs/cgroup/memory)");
    }
    if !fixtures_present("delegation test") {
        return;
    }
    let uid = nix::unistd::User::from_name(DELEGATED_USER)
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    let dirs: Vec<PathBuf> = ["memory", "pids", "cpu", "cpuacct"]
        .iter()
        .map(|c| PathBuf::from(format!("/sys/fs/cgroup/{c}/rcrun-{uid}")))
        .collect();
    for d in &dirs {
        let _ = std::fs::create_dir(d);
        let st = Command::new("chown")
            .arg("-R")
            .arg(uid.to_string())
            .arg(d)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let dir = staging();
    let store = dir.join(format!("store-delegated-{uid}"));
    std::fs::create_dir_all(&store).unwrap();
    nix::unistd::chown(&store, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
    let run = |args: &[&str]| {
        Command::new("runuser")
            .args(["-u", DELEGATED_USER, "--"])
            .arg(dir.join("rcrun"))
            .args(["--root"])
            .arg(&store)
            .arg("run")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    let bb = dir.join("busybox.docker-save.tar");
    let bb = bb.to_str().unwrap();
    let hog = run(&[
        "--memory",
        "64m",
        bb,
        "sh",
        "-c",
        "head -c 300m /dev/zero | tail > /dev/null",
    ]);
    // v1 in a user namespace cannot mount cgroup: the container's own directories are bound.
    let inside = run(&[
        "--memory",
        "64m",
        bb,
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]);
    let pids = run(&[
        "--pids-limit",
        "20",
        bb,
        "sh",
        "-c",
        "(for i in $(seq 40); do sleep 5 & done) 2>/dev/null; set -- /proc/[0-9]*; echo $#",
    ]);
    for d in dirs.iter().rev() {
        for _ in 0..50 {
            if std::fs::remove_dir(d).is_ok() || !d.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&inside.stdout).trim(),
        "67108864",
        "/sys/fs/cgroup inside shows the container's limit: {}",
        String::from_utf8_lossy(&inside.stderr)
    );
    let hog_err = String::from_utf8_lossy(&hog.stderr);
    assert_eq!(hog.status.code(), Some(137), "memory hog: {hog_err}");
    assert!(hog_err.contains("exceeded its memory limit"), "{hog_err}");
    let n: usize = String::from_utf8_lossy(&pids.stdout)
        .trim()
        .parse()
        .unwrap_or(999);
    assert!(
        n <= 20,
        "pids limit not enforced: {n} processes; {}",
        String::from_utf8_lossy(&pids.stderr)
    );
}
