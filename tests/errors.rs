//! Errors a person can act on: a table of bad inputs and bad invocations, each with the message
//! rcrun must print (substrings of its one- or two-line stderr: what is wrong, and what to do) and
//! its exit code (125 rcrun failed, 126 cannot execute, 127 not found). No backtrace unless -v,
//! even with RUST_BACKTRACE=1.
//!
//! Cases that need root (a tmpfs store) or the plain user `rcrun-test` (rootless, `unshare -Ur`)
//! are skipped LOUDLY, with the reason, when those are not available.

use rcrun_imagebuild::{
    busybox_entries, layer_tar, write_archive_to_file, ConfigSpec, Format, ImageSpec, LayerSpec,
    WriteOptions, BUSYBOX_PATH,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
mod common;
use common::{is_root, skip, test_user, TEST_USER};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Who {
    /// Whoever runs the test (root in CI).
    Me,
    /// The plain user rcrun-test (needs root to switch to it).
    Plain,
    /// rcrun-test inside `unshare -Ur`.
    Unshare,
    /// Root, with the store on a 1 MiB tmpfs (mounted in a private mount namespace).
    SmallTmpfs,
}

struct Case {
    name: &'static str,
    who: Who,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    code: i32,
    expect: Vec<&'static str>,
}

/// A world-readable directory with the rcrun binary and the images, so rcrun-test can use them.
struct Staging {
    dir: PathBuf,
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn busybox_layer() -> LayerSpec {
    let entries = busybox_entries(Path::new(BUSYBOX_PATH))
        .unwrap_or_else(|e| panic!("{e} (install busybox-static: .ci/run does)"));
    LayerSpec::bytes(layer_tar(&entries).unwrap(), "busybox")
}

fn image(tag: &str, cmd: Option<&[&str]>) -> ImageSpec {
    ImageSpec {
        tags: vec![tag.into()],
        config: ConfigSpec {
            cmd: cmd.map(|c| c.iter().map(|s| s.to_string()).collect()),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            ..Default::default()
        },
        layers: vec![busybox_layer()],
        ..Default::default()
    }
}

fn staging() -> Staging {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("rcrun-errors-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let w = |name: &str, data: &[u8]| std::fs::write(dir.join(name), data).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_rcrun"), dir.join("rcrun")).unwrap();
    let opts = WriteOptions::default();
    write_archive_to_file(
        &dir.join("bb.tar"),
        &[image("busybox:latest", Some(&["/bin/sh"]))],
        Format::DockerLegacy,
        &opts,
    )
    .unwrap();
    write_archive_to_file(
        &dir.join("nocmd.tar"),
        &[image("nocmd:latest", None)],
        Format::DockerLegacy,
        &opts,
    )
    .unwrap();
    write_archive_to_file(
        &dir.join("two.tar"),
        &[
            image("first:1", Some(&["/bin/sh"])),
            image("second:2", Some(&["/bin/sh"])),
        ],
        Format::DockerLegacy,
        &opts,
    )
    .unwrap();
    w("notes.txt", b"this is not a tar archive\n");
    w("empty.tar", b"");
    w("not-json.seccomp", b"{ this is not JSON");
    // A tar that holds no image: neither manifest.json nor index.json + oci-layout.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(6);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "hello.txt", &b"hello\n"[..]).unwrap();
    w("plain.tar", &b.into_inner().unwrap());
    std::fs::create_dir_all(dir.join("full/out")).unwrap();
    std::fs::write(dir.join("full/out/keep"), b"x").unwrap();
    std::fs::create_dir_all(dir.join("small")).unwrap();
    // Stores: one per kind of caller; "user" belongs to rcrun-test, "root-owned" does not.
    std::fs::create_dir_all(dir.join("user")).unwrap();
    std::fs::create_dir_all(dir.join("root-owned")).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    if let (true, Some(u)) = (is_root(), test_user()) {
        nix::unistd::chown(&dir.join("user"), Some(u.uid), Some(u.gid)).unwrap();
    }
    Staging { dir }
}

fn cases(d: &Path) -> Vec<Case> {
    let p = |name: &str| d.join(name).display().to_string();
    let bb = p("bb.tar");
    let c = |name, who, args: &[&str], code, expect: &[&'static str]| Case {
        name,
        who,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        code,
        expect: expect.to_vec(),
    };
    let mut v = vec![
        // ── the image archive ──
        c("missing file", Who::Me, &["inspect", "/nonexistent/image.tar"], 125,
          &["cannot open image archive /nonexistent/image.tar: No such file or directory", "hint: IMAGE is the tar file that `docker save"]),
        c("not a tar", Who::Me, &["inspect", &p("notes.txt")], 125,
          &["notes.txt: not a tar archive", "hint: IMAGE is the tar file"]),
        c("empty file", Who::Me, &["inspect", &p("empty.tar")], 125,
          &["empty.tar: not a tar archive (the file is empty)"]),
        c("unknown format", Who::Me, &["inspect", &p("plain.tar")], 125,
          &["plain.tar: not an image archive: it has neither manifest.json (docker save) nor index.json + oci-layout (OCI)"]),
        c("ambiguous image without --ref", Who::Me, &["run", &p("two.tar"), "true"], 125,
          &["two.tar holds 2 images; choose one with --ref", "first:1", "second:2"]),
        c("unknown --ref", Who::Me, &["inspect", "--ref", "third:3", &p("two.tar")], 125,
          &["no image matches --ref third:3; available: @0 first:1"]),
        c("unpack into a non-empty dir", Who::Me, &["unpack", &bb, &p("full/out")], 125,
          &["exists and is not empty (it must be empty or absent)"]),
        // ── the command line (clap) ──
        c("unknown flag value", Who::Me, &["run", "--network", "bogus", &bb, "true"], 125,
          &["--network bogus: use none (the default: only lo), host, pasta[:allow_host_loopback=true] or slirp4netns"]),
        c("docker's default network, named", Who::Me, &["run", "--network", "bridge", &bb, "true"], 125,
          &["--network bridge: rcrun has no bridge network", "--network pasta (or slirp4netns)"]),
        c("-p without a network helper", Who::Me, &["run", "-p", "8080:80", &bb, "true"], 125,
          &["-p 8080:80: publishing a port needs --network pasta or slirp4netns"]),
        c("-p with a bad port", Who::Me, &["run", "--network", "slirp4netns", "-p", "8080:99999", &bb, "true"], 125,
          &["-p 8080:99999: container port \"99999\" is not a number from 1 to 65535"]),
        c("unknown flag", Who::Me, &["run", "--bogus", &bb], 125,
          &["rcrun run has no flag --bogus", "`rcrun run --help` lists its flags"]),
        c("a docker flag rcrun lacks, in docker's terms", Who::Me, &["run", "--rm", "-P", &bb], 125,
          &["-P: rcrun publishes only the ports you name"]),
        c("docker's --restart, refused", Who::Me, &["run", "--restart=always", &bb], 125,
          &["--restart: rcrun has no restart policy"]),
        c("--ulimit with the soft limit above the hard", Who::Me, &["run", "--ulimit", "nofile=10:5", &bb, "true"], 125,
          &["--ulimit \"nofile=10:5\": the soft limit 10 is above the hard limit 5"]),
        c("unknown subcommand", Who::Me, &["begin", &bb], 125,
          &["unrecognized subcommand 'begin'"]),
        c("an image path as a container ID (an OCI command: runc's exit status 1)", Who::Me, &["start", &bb], 1,
          &["container ID", "use 1 to 1024 of A-Z a-z 0-9 _ + - ."]),
        c("missing IMAGE", Who::Me, &["run"], 125,
          &["the following required arguments were not provided", "<IMAGE>"]),
        c("--pids-limit not a number", Who::Me, &["run", "--pids-limit", "many", &bb, "true"], 125,
          &["invalid value 'many' for '--pids-limit <N>'"]),
        c("unknown completion shell", Who::Me, &["completions", "tcsh"], 125,
          &["invalid value 'tcsh' for '<SHELL>'", "bash"]),
        // ── run flags rcrun validates ──
        c("bad --memory size", Who::Me, &["run", "--memory", "12x", &bb, "true"], 125,
          &["--memory 12x: invalid size \"12x\": unknown unit (use b, k, m, g or t)"]),
        c("bad --memory-swap size", Who::Me, &["run", "--memory", "64m", "--memory-swap", "lots", &bb, "true"], 125,
          &["--memory-swap lots: invalid size"]),
        c("bad --cpus", Who::Me, &["run", "--cpus", "half", &bb, "true"], 125,
          &["invalid --cpus value \"half\": expected a positive decimal number such as 0.5 or 2"]),
        c("bad --cpuset-cpus", Who::Me, &["run", "--cpuset-cpus", "first", &bb, "true"], 125,
          &["invalid --cpuset-cpus value \"first\": expected CPU numbers or ranges like 0-1,3"]),
        c("unknown capability", Who::Me, &["run", "--cap-add", "FLY", &bb, "true"], 125,
          &["unknown capability \"FLY\": use a name from capabilities(7) such as NET_ADMIN"]),
        c("unreadable seccomp profile", Who::Me, &["run", "--security-opt", "seccomp=/nonexistent/profile.json", &bb, "true"], 125,
          &["--security-opt seccomp=/nonexistent/profile.json: cannot read the profile: No such file or directory"]),
        c("seccomp profile not JSON", Who::Me, &["run", "--security-opt", &format!("seccomp={}", p("not-json.seccomp")), &bb, "true"], 125,
          &["seccomp profile", "not-json.seccomp: cannot parse seccomp profile"]),
        c("unknown --security-opt", Who::Me, &["run", "--security-opt", "apparmor=x", &bb, "true"], 125,
          &["--security-opt \"apparmor=x\": unknown option (use seccomp=PATH, seccomp=unconfined, no-new-privileges=false)"]),
        c("malformed --volume", Who::Me, &["run", "-v", "data", &bb, "true"], 125,
          &["--volume \"data\": expected SRC:DST or SRC:DST:ro"]),
        c("relative --workdir", Who::Me, &["run", "-w", "app", &bb, "true"], 125,
          &["--workdir \"app\": must be an absolute path inside the container"]),
        c("relative --tmpfs", Who::Me, &["run", "--tmpfs", "tmp", &bb, "true"], 125,
          &["--tmpfs \"tmp\": must be an absolute path inside the container"]),
        c("missing --env-file", Who::Me, &["run", "--env-file", "/nonexistent/env", &bb, "true"], 125,
          &["--env-file /nonexistent/env: No such file or directory"]),
        c("no command at all", Who::Me, &["run", &p("nocmd.tar")], 125,
          &["no command: the image has no Entrypoint or Cmd; give one after the image"]),
        c("-u names a user the image lacks", Who::Me, &["run", "-u", "alice", &bb, "true"], 125,
          &["no user named \"alice\" in the image's /etc/passwd"]),
        // ── the container's command ──
        c("command not found (path)", Who::Me, &["run", &bb, "/bin/nonexistent"], 127,
          &["\"/bin/nonexistent\": no such file or directory in the image (list its files with `rcrun inspect --layers IMAGE`)"]),
        c("command not found ($PATH)", Who::Me, &["run", &bb, "nonexistent"], 127,
          &["\"nonexistent\": executable file not found in $PATH (/usr/local/sbin:", "give its full path or set PATH with -e"]),
        c("command not executable", Who::Me, &["run", &bb, "/etc/passwd"], 126,
          &["cannot execute \"/etc/passwd\": EACCES", "execute permission"]),
        c("missing workdir on a read-only root", Who::Me, &["run", "--read-only", "-u", "1000", "-w", "/srv/app", &bb, "true"], 125,
          &["working directory /srv/app does not exist and cannot be created", "Read-only file system", "mount --tmpfs /srv/app"]),
        // ── rootless ──
        c("rootless limit without delegation", Who::Plain, &["run", "--memory", "64m", &bb, "true"], 125,
          &["resource limits need a cgroup subtree delegated to uid", "To delegate, run once as root", "(or run without resource limits)"]),
        c("rootless -u without subordinate ids", Who::Plain, &["run", "-u", "1000", &bb, "true"], 125,
          &["does not exist in this user namespace", "add a range for your user to /etc/subuid and /etc/subgid"]),
        c("store not writable", Who::Plain, &["--root", &p("root-owned/store"), "inspect", &bb], 125,
          &["layer store", "root-owned/store", "Permission denied", "hint: choose a store you can write with --root DIR or RCRUN_ROOT=DIR"]),
        c("kernel without overlayfs in user namespaces (simulated)", Who::Plain, &["run", &bb, "true"], 125,
          &["mount overlay root file system: EPERM", "does not allow overlayfs in a user namespace (needs Linux 5.11+", "upgrade the kernel, or run rcrun as root"]),
        c("limit under unshare -Ur", Who::Unshare, &["run", "--pids-limit", "10", &bb, "true"], 125,
          &["cgroup", "hint: uid 0 inside `unshare -Ur` owns no cgroup: run without resource limits"]),
        // ── the disk ──
        c("disk full while unpacking", Who::SmallTmpfs, &["unpack", &bb, &p("small/out")], 125,
          &["No space left on device", "hint: the disk is full: free space on the file system holding the store"]),
    ];
    for case in &mut v {
        match case.name {
            "rootless -u without subordinate ids" => case.env.push(("RCRUN_NO_SUBIDS", "1".into())),
            "kernel without overlayfs in user namespaces (simulated)" => {
                case.env.push(("RCRUN_TEST_NO_USERNS_OVERLAY", "1".into()))
            }
            _ => {}
        }
    }
    v
}

/// Runs one case; Err(reason) when it must be skipped.
fn run(d: &Path, case: &Case, extra: &[&str]) -> Result<std::process::Output, String> {
    let rcrun = d.join("rcrun");
    let store = match case.who {
        Who::Me => d.join("store"),
        Who::Plain | Who::Unshare => d.join("user/store"),
        Who::SmallTmpfs => d.join("small"),
    };
    let mut env: Vec<String> = vec![
        format!("RCRUN_ROOT={}", store.display()),
        "RUST_BACKTRACE=1".into(),
    ];
    env.extend(case.env.iter().map(|(k, v)| format!("{k}={v}")));
    let mut cmd = match case.who {
        Who::Me => Command::new("env"),
        Who::Plain | Who::Unshare => {
            if !is_root() || test_user().is_none() {
                return Err(format!(
                    "{}: needs root and the user {TEST_USER} (.ci/run creates it)",
                    case.name
                ));
            }
            let mut c = Command::new("runuser");
            c.args(["-u", TEST_USER, "--", "env"]);
            c
        }
        Who::SmallTmpfs => {
            if !is_root() {
                return Err(format!("{}: needs root to mount a 1 MiB tmpfs", case.name));
            }
            let mut c = Command::new("unshare");
            c.args([
                "-m",
                "sh",
                "-c",
                "mount -t tmpfs -o size=1m tmpfs \"$0\" && exec env \"$@\"",
            ])
            .arg(&store);
            c
        }
    };
    cmd.args(&env);
    if case.who == Who::Unshare {
        cmd.args(["unshare", "-Ur"]);
    }
    cmd.arg(&rcrun).args(extra).args(&case.args).current_dir(d);
    Ok(cmd.output().expect("spawn rcrun"))
}

#[test]
fn bad_inputs_give_actionable_messages_and_docker_exit_codes() {
    let s = staging();
    let d = &s.dir;
    let all = cases(d);
    assert!(all.len() >= 25, "the table must hold at least 25 cases");
    let mut failures = Vec::new();
    let mut skipped = 0;
    for case in &all {
        let out = match run(d, case, &[]) {
            Ok(o) => o,
            Err(why) => {
                skip(&why);
                skipped += 1;
                continue;
            }
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code().unwrap_or(-1);
        let mut problems = Vec::new();
        if code != case.code {
            problems.push(format!("exit code {code}, expected {}", case.code));
        }
        for e in &case.expect {
            if !stderr.contains(e) {
                problems.push(format!("missing {e:?}"));
            }
        }
        if stderr.to_lowercase().contains("backtrace") || stderr.contains("Caused by") {
            problems.push("backtrace or cause list without -v".into());
        }
        // rcrun's own errors: one line, plus at most one hint line. (clap's usage errors add a
        // usage line and a pointer to --help.)
        if stderr.contains("rcrun: error:") {
            let n = stderr.lines().filter(|l| !l.trim().is_empty()).count();
            if n > 2 {
                problems.push(format!("{n} lines on stderr, expected at most 2"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{} (rcrun {}): {}\n  stderr: {}",
                case.name,
                case.args.join(" "),
                problems.join("; "),
                stderr.trim().replace('\n', "\n          ")
            ));
        }
    }
    println!(
        "{} cases, {} skipped, {} failed",
        all.len(),
        skipped,
        failures.len()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn verbose_shows_the_cause_chain() {
    let s = staging();
    let d = &s.dir;
    let case = cases(d).into_iter().next().unwrap();
    let out = run(d, &case, &["-v"]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr.contains("Caused by:") && stderr.contains("No such file or directory"),
        "-v should print the cause chain:\n{stderr}"
    );
}

#[test]
fn help_and_version_exit_zero() {
    for args in [&["--help"][..], &["--version"], &["run", "--help"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_rcrun"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "rcrun {args:?}");
        assert!(!out.stdout.is_empty());
    }
}
