//! `rcrun run --explain` narrates every startup step in order, as root, as a plain user and under
//! `unshare -Ur`; `rcrun inspect --layers` shows what each layer adds, changes and deletes.
//!
//! The narration is checked as an ordered list of greppable patterns: each step must appear after
//! the previous one. Durations are printed but never asserted. Rootless and `unshare -Ur` runs need
//! root (to switch users) and the user `rcrun-test` (.ci/run creates it); they skip LOUDLY.

use rcrun_imagebuild::{
    busybox_entries, layer_tar, write_archive_to_file, ConfigSpec, Entry, Format, ImageSpec,
    LayerSpec, WriteOptions, BUSYBOX_PATH,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
mod common;
use common::{is_root, skip, test_user, TEST_USER};

struct Staging(PathBuf);
impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A world-readable dir with rcrun and a 3-layer busybox image: busybox; + /app/a.txt,
/// /app/b.txt and a changed /etc/passwd; then a whiteout deleting /app/a.txt.
fn staging(name: &str) -> Staging {
    let dir = std::env::temp_dir().join(format!("rcrun-explain-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_rcrun"), dir.join("rcrun")).unwrap();
    let base = busybox_entries(Path::new(BUSYBOX_PATH))
        .unwrap_or_else(|e| panic!("{e} (install busybox-static: .ci/run does)"));
    let passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/app:/bin/sh\n";
    let layers = vec![
        LayerSpec::bytes(layer_tar(&base).unwrap(), "busybox"),
        LayerSpec::entries(
            &[
                Entry::dir("app", 0o755),
                Entry::file("app/a.txt", 0o644, "a\n"),
                Entry::file("app/b.txt", 0o644, "b\n"),
                Entry::dir("etc", 0o755),
                Entry::file("etc/passwd", 0o644, passwd),
            ],
            "COPY app /app",
        )
        .unwrap(),
        LayerSpec::entries(
            &[Entry::dir("app", 0o755), Entry::whiteout("app/a.txt")],
            "RUN rm /app/a.txt",
        )
        .unwrap(),
    ];
    let image = ImageSpec {
        tags: vec!["lesson:3".into()],
        config: ConfigSpec {
            cmd: Some(vec!["/bin/sh".into()]),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            ..Default::default()
        },
        layers,
        ..Default::default()
    };
    write_archive_to_file(
        &dir.join("img.tar"),
        &[image],
        Format::DockerLegacy,
        &WriteOptions::default(),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("user")).unwrap();
    for p in [
        dir.clone(),
        dir.join("rcrun"),
        dir.join("img.tar"),
        dir.join("user"),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    if let (true, Some(u)) = (is_root(), test_user()) {
        nix::unistd::chown(&dir.join("user"), Some(u.uid), Some(u.gid)).unwrap();
    }
    Staging(dir)
}

/// Each step: every substring must be on one line, and that line must come after the previous
/// step's line. Alternatives are separated by `|` inside one substring.
type Step = &'static [&'static str];

fn line_matches(line: &str, step: Step) -> bool {
    step.iter()
        .all(|pat| pat.split('|').any(|alt| line.contains(alt)))
}

/// The network namespace is made concurrently with other steps (as root by a holder rcrun forks
/// before it reads the image, then joins; by a helper rcrun forks into the child's user
/// namespace otherwise, while the child mounts), so its lines have no fixed place among the
/// other process's lines: checked on their own.
fn assert_net_made(stderr: &str, label: &str) {
    if label.starts_with("root,") {
        let joined: Step = &[
            "] net ",
            "setns(/proc/",
            "a holder made while rcrun read the image",
        ];
        assert!(
            stderr.lines().any(|l| line_matches(l, joined)),
            "{label}: no line {joined:?} in the narration:\n{stderr}"
        );
        assert!(
            !stderr.contains("FAILED"),
            "{label}: a step failed:\n{stderr}"
        );
    }
    let net: Step = if label.starts_with("root,") {
        &[
            "] net ",
            "fork a holder",
            // A plain `run` as root: main forks it before clap parses the command line.
            "(before the command line was parsed)",
            "unshare(CLONE_NEWNET)",
            "IFF_UP",
            "while rcrun reads the image",
        ]
    } else {
        &[
            "] net ",
            "enters the child's user namespace",
            "unshare(CLONE_NEWNET)",
            "IFF_UP",
            "while the child mounts",
        ]
    };
    assert!(
        stderr.lines().any(|l| line_matches(l, net)),
        "{label}: no line {net:?} in the narration:\n{stderr}"
    );
}

fn assert_in_order(stderr: &str, steps: &[Step], label: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    let mut at = 0;
    for step in steps {
        match lines[at..].iter().position(|l| line_matches(l, step)) {
            Some(i) => at += i + 1,
            None => panic!(
                "{label}: step {step:?} not found after line {at} of the narration:\n{stderr}"
            ),
        }
    }
}

/// The steps every run narrates, in order, with the parts that differ by who runs it.
fn steps(kind: &str, fresh: bool, limits: bool) -> Vec<Step> {
    let mut v: Vec<Step> = vec![
        &["] start ", "rcrun "],
        &["] store ", "open layer store", "(mode 0700)"],
        // Fresh: read and indexed; warm: the image cache (the read line appears only when fresh).
        &["] image ", "img.tar", "look it up in the image cache"],
        &[
            "] image ",
            "docker-save (legacy) lesson:3",
            "(3 layer(s), id ",
        ],
    ];
    let how: &'static str = if fresh {
        "extracted + verified"
    } else {
        "found in store"
    };
    let l1: Step = Box::leak(Box::new(["] layer ", "1/3 sha256:", how, "/fs"]));
    let l2: Step = Box::leak(Box::new(["] layer ", "2/3 sha256:", how]));
    let l3: Step = Box::leak(Box::new(["] layer ", "3/3 sha256:", how]));
    v.extend([l1, l2, l3]);
    v.extend::<[Step; 3]>([
        &[
            "] seccomp ",
            "rules, default action SCMP_ACT_ERRNO",
            "BPF instructions",
            "compiled and cached|loaded from cache",
        ],
        &["] plan ", "user 0:0 groups", "cwd /", "argv [\"true\"]"],
        &["] env ", "PATH=/usr/local/sbin"],
    ]);
    if kind == "root" {
        v.push(&["] cgroup ", "create cgroup for container"]);
        if limits {
            v.push(&["] cgroup ", "write \"", "memory.limit_in_bytes|memory.max"]);
            v.push(&["] cgroup ", "write \"64\"", "pids.max"]);
        }
        v.push(&["══ spawn: ", "start gate"]);
        v.push(&["] namespaces ", "clone(", "CLONE_NEWNS|", "CLONE_NEWPID"]);
        // v1: the child writes "0" to each hierarchy's `tasks`; v2: rcrun writes the pid.
        v.push(&["] cgroup ", "write ", "/tasks|cgroup.procs"]);
    } else {
        v.push(&["══ spawn: ", "start gate"]);
        if kind == "rootless" {
            // The store's id holder (made by the first start, entered by the next), before clone.
            v.push(&[
                "] idmap ",
                "the id holder pid ",
                "setns(its user namespace)",
            ]);
        }
        v.push(&[
            "] namespaces ",
            "clone(CLONE_NEWUSER|CLONE_NEWNS|",
            "CLONE_NEWPID",
        ]);
        if kind == "rootless" {
            v.push(&["] idmap ", "uid_map ← \"0 0 1, 1 1 ", "no newuidmap"]);
        } else if kind == "rootless-helpers" {
            v.push(&["] idmap ", "newuidmap ", " & ", "newgidmap "]);
        } else {
            v.push(&["] idmap ", "uid_map ← \"0 0 1\""]);
            v.push(&["] idmap ", "setgroups ← \"deny\"", "gid_map"]);
        }
    }
    v.push(&["] namespaces ", "unshare(CLONE_NEWCGROUP)"]);
    v.extend::<[Step; 20]>([
        &["] mount ", "MS_REC|MS_SLAVE"],
        &["] mount ", "mount(\"tmpfs\"", "scratch for upper/work"],
        &["] mount ", "write /etc/hostname (", "into the upper dir"],
        &[
            "] mount ",
            "overlay",
            "lowerdir (top first) = ",
            "}/fs, upperdir=",
            "workdir=",
            "userxattr,index=off,metacopy=off",
        ],
        &["] mount ", "mount(\"proc\", /proc"],
        &["] mount ", "/dev"],
        &["] mount ", "mount(\"devpts\", /dev/pts"],
        // Masked paths after every mount, as runc and crun apply them; the steps under /sys come
        // last, once the network namespace made beside the child is joined.
        &["] mount ", "mask /proc/kcore"],
        &["] mount ", "mount(\"sysfs\", /sys"],
        &["] mount ", "mask /sys/firmware"],
        &["] pivot_root ", "pivot_root(\".\", \".\")", "MNT_DETACH"],
        &["] dumpable ", "prctl(PR_SET_DUMPABLE, 0) until execve"],
        &["] cwd ", "chdir(\"/\")"],
        &["] caps ", "drop from bounding set", "CAP_CHOWN"],
        &["] user ", "setgroups([0]); setresgid(0); setresuid(0)"],
        &[
            "] caps ",
            "capset: effective+permitted",
            "inheritable []",
            "ambient cleared",
        ],
        &["] nnp ", "prctl(PR_SET_NO_NEW_PRIVS, 1)"],
        &["] gate ", "blocks until rcrun starts the container"],
        &["══ start: ", "open the start gate"],
        &[
            "] seccomp ",
            "seccomp(SECCOMP_SET_MODE_FILTER)",
            "BPF instructions",
        ],
    ]);
    if kind == "root" {
        // The child joins rcrun's new network namespace right before mounting /sys, after the
        // masks and read-only paths of /proc.
        let sysfs = v
            .iter()
            .position(|s| s.iter().any(|p| p.contains("sysfs")))
            .unwrap();
        v.insert(sysfs, &["] net ", "setns(/proc/", "/ns/net, CLONE_NEWNET)"]);
    }
    v.push(&["] exec ", "execve(", "[\"true\"]"]);
    v.push(&["══ wait: ", "reap it"]);
    if kind == "root" {
        v.push(&["] cleanup ", "rmdir /sys/fs/cgroup"]);
    }
    v.push(&["] exit ", "container exited with status 0"]);
    v.push(&["] cleanup ", "mount namespace gone"]);
    v.push(&[
        "rcrun: total ",
        " ms: ",
        "start ",
        "layer ",
        "seccomp ",
        "namespaces ",
        "%",
    ]);
    v
}

fn explain_run(s: &Staging, wrapper: &[&str], store: &Path, extra: &[&str]) -> String {
    let mut cmd = Command::new(wrapper[0]);
    cmd.args(&wrapper[1..])
        .arg(format!("RCRUN_ROOT={}", store.display()))
        .arg(s.0.join("rcrun"))
        .args(["run", "--explain"])
        .args(extra)
        .args([s.0.join("img.tar").to_str().unwrap(), "true"])
        .current_dir(&s.0);
    let out = cmd.output().expect("spawn rcrun");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "rcrun run --explain failed:\n{stderr}"
    );
    stderr
}

#[test]
fn explain_as_root_narrates_every_step_in_order() {
    if !is_root() {
        return skip("explain as root needs real root");
    }
    let s = staging("root");
    let store = s.0.join("store");
    let limits = ["--memory", "64m", "--pids-limit", "64"];
    let first = explain_run(&s, &["env"], &store, &limits);
    assert_in_order(&first, &steps("root", true, true), "root, fresh store");
    assert_net_made(&first, "root, fresh store");
    // Second start: the layers and the compiled seccomp filter come from the store.
    let second = explain_run(&s, &["env"], &store, &[]);
    assert_in_order(&second, &steps("root", false, false), "root, warm store");
    assert_net_made(&second, "root, warm store");
    assert!(second.contains("loaded from cache"), "{second}");
}

#[test]
fn explain_as_plain_user_narrates_every_step_in_order() {
    if !is_root() || test_user().is_none() {
        return skip("rootless explain needs root (to switch user) and the user rcrun-test (.ci/run creates it)");
    }
    let s = staging("rootless");
    let store = s.0.join("user/store");
    let w = ["runuser", "-u", TEST_USER, "--", "env"];
    let first = explain_run(&s, &w, &store, &[]);
    assert_in_order(
        &first,
        &steps("rootless", true, false),
        "plain user, fresh store",
    );
    assert_net_made(&first, "plain user, fresh store");
    let second = explain_run(&s, &w, &store, &[]);
    assert_in_order(
        &second,
        &steps("rootless", false, false),
        "plain user, warm store",
    );
    assert_net_made(&second, "plain user, warm store");
    assert!(second.contains("entered the id holder pid "), "{second}");
    // Without the holder: the setuid helpers map every start.
    let w = ["runuser", "-u", TEST_USER, "--", "env", "RCRUN_NO_HOLDER=1"];
    let third = explain_run(&s, &w, &store, &[]);
    assert_in_order(
        &third,
        &steps("rootless-helpers", false, false),
        "plain user, RCRUN_NO_HOLDER=1",
    );
    // The holder leaves with the store (its record gone, it exits at its next check), but not
    // later than this test.
    let gc = Command::new("runuser")
        .args(["-u", TEST_USER, "--", "env"])
        .arg(format!("RCRUN_ROOT={}", store.display()))
        .arg(s.0.join("rcrun"))
        .args(["-q", "gc"])
        .output()
        .expect("rcrun gc");
    assert!(gc.status.success(), "{gc:?}");
}

#[test]
fn explain_under_unshare_ur_narrates_every_step_in_order() {
    if !is_root() || test_user().is_none() {
        return skip("unshare -Ur explain needs root (to switch user) and the user rcrun-test (.ci/run creates it)");
    }
    let s = staging("unshare");
    let store = s.0.join("user/store");
    let w = ["runuser", "-u", TEST_USER, "--", "unshare", "-Ur", "env"];
    let out = explain_run(&s, &w, &store, &[]);
    assert_in_order(&out, &steps("unshare", true, false), "unshare -Ur");
    assert_net_made(&out, "unshare -Ur");
}

#[test]
fn inspect_layers_shows_adds_changes_and_deletes() {
    let s = staging("layers");
    let out = Command::new(s.0.join("rcrun"))
        .env("RCRUN_ROOT", s.0.join("store"))
        .args(["inspect", "--layers"])
        .arg(s.0.join("img.tar"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Layer 2: app/a.txt and app/b.txt (and app/) are new, etc/passwd (63 bytes) replaces
    // layer 1's. Layer 3: app/a.txt whited out. Directories a layer merely repeats do not count.
    let expect_in_order: &[Step] = &[
        &["Layers (bottom to top):"],
        &["1  sha256:", "busybox"],
        &["+ ", " added", "~ 0 changed", "- 0 deleted"],
        &["2  sha256:", "COPY app /app"],
        &["+ 3 added", "~ 1 changed (63 B)", "- 0 deleted"],
        &["3  sha256:", "RUN rm /app/a.txt"],
        &["+ 0 added", "~ 0 changed", "- 1 deleted"],
        &["deletes: /app/a.txt"],
    ];
    assert_in_order(&text, expect_in_order, "inspect --layers");

    let out = Command::new(s.0.join("rcrun"))
        .env("RCRUN_ROOT", s.0.join("store"))
        .args(["inspect", "--layers", "--json"])
        .arg(s.0.join("img.tar"))
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let text = doc.to_string();
    assert!(text.contains("\"deleted\":1"), "{text}");
    assert!(text.contains("app/a.txt"), "{text}");
}
