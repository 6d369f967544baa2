//! What the attack suites (tests/attacks.rs, tests/attacks_exec.rs) share: the four modes, the
//! rcrun command in each, the static probe (tests/probe/attack.c) and the images carrying it,
//! failures collected per (case, mode), host canaries.
#![allow(dead_code)]

pub use crate::common::*;
pub use rcrun_imagebuild::{
    busybox_entries, layer_tar, write_archive_to_file, ConfigSpec, Entry, Format, ImageSpec,
    LayerSpec, WriteOptions, BUSYBOX_PATH,
};
pub use std::collections::BTreeMap;
pub use std::os::unix::fs::PermissionsExt;
pub use std::path::{Path, PathBuf};
pub use std::process::{Command, Output, Stdio};
pub use std::sync::{Mutex, OnceLock};
pub use std::time::{Duration, Instant};

/// The tests of this file run one at a time: several look at host-wide state (cgroup dirs,
/// the kernel log, the mount table) that a neighbour's run would disturb.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeKind {
    Root,
    RootUserns,
    User,
    Unshare,
}

#[derive(Debug, Clone, Copy)]
pub struct Mode {
    pub kind: ModeKind,
    pub name: &'static str,
}

impl Mode {
    pub fn is_root(&self) -> bool {
        matches!(self.kind, ModeKind::Root | ModeKind::RootUserns)
    }
    pub fn who(&self) -> Who {
        if self.is_root() {
            Who::Root
        } else {
            Who::User
        }
    }
}

pub fn all_modes(test: &str) -> Vec<Mode> {
    let m = |kind, name| Mode { kind, name };
    let mut v = Vec::new();
    if is_root() {
        v.push(m(ModeKind::Root, "root"));
        v.push(m(ModeKind::RootUserns, "root-userns"));
        if test_user().is_some() {
            v.push(m(ModeKind::User, "user"));
            v.push(m(ModeKind::Unshare, "unshare"));
        } else {
            skip(&format!("{test}: user and unshare modes: the user {TEST_USER} does not exist (.ci/run creates it)"));
        }
    } else {
        skip(&format!(
            "{test}: root and root-userns modes: not running as real root"
        ));
        v.push(m(ModeKind::User, "user"));
        v.push(m(ModeKind::Unshare, "unshare"));
    }
    v
}

/// The rcrun binary under test (a world-readable copy, see common).
pub fn bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("RCRUN_ATTACKS_BIN") {
        Some(other) => {
            let dst = staging().join("rcrun-under-test");
            std::fs::copy(&other, &dst).unwrap();
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
            eprintln!("NOTE: attacks run against {}", Path::new(&other).display());
            dst
        }
        None => rcrun_bin(),
    })
    .clone()
}

/// A store per mode, owned by whoever runs rcrun in it; made empty once per test process.
pub fn store(mode: Mode) -> PathBuf {
    static MADE: Mutex<BTreeMap<&'static str, PathBuf>> = Mutex::new(BTreeMap::new());
    MADE.lock()
        .unwrap()
        .entry(mode.name)
        .or_insert_with(|| case_dir(&format!("attacks-store-{}", mode.name), mode.who()))
        .clone()
}

/// `rcrun --root STORE run [--userns] ARGS…` as the mode says.
pub fn command(mode: Mode, args: &[&str]) -> Command {
    let user_via_runuser = mode.who() == Who::User && nix::unistd::geteuid().is_root();
    let mut c = if user_via_runuser {
        let mut c = Command::new("runuser");
        c.args(["-u", TEST_USER, "--"]);
        if mode.kind == ModeKind::Unshare {
            c.args(["unshare", "-Ur"]);
        }
        c.arg(bin());
        c
    } else if mode.kind == ModeKind::Unshare {
        let mut c = Command::new("unshare");
        c.arg("-Ur").arg(bin());
        c
    } else {
        Command::new(bin())
    };
    c.arg("--root").arg(store(mode)).arg("run");
    if mode.kind == ModeKind::RootUserns {
        c.arg("--userns");
    }
    c.args(["-e", "RCRUN_ATTACK_INSIDE=1"]);
    c.args(args)
        .current_dir(staging())
        .env_remove("RCRUN_ROOT")
        .stdin(Stdio::null());
    c
}

/// Runs it with a time limit (a hung run is a failure of its own).
pub fn run_for(mode: Mode, args: &[&str], limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = command(mode, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rcrun");
    // Drain the pipes in threads so a chatty run cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut b);
        b
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = started.elapsed();
    (
        Output {
            status,
            stdout: t_out.join().unwrap(),
            stderr: t_err.join().unwrap(),
        },
        took,
    )
}

pub fn run(mode: Mode, args: &[&str]) -> Output {
    run_for(mode, args, Duration::from_secs(60)).0
}

pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Failures collected over a test: (case, mode, what happened).
#[derive(Default)]
pub struct Failures(pub Vec<String>);

impl Failures {
    pub fn check(&mut self, ok: bool, case: &str, mode: Mode, what: impl FnOnce() -> String) {
        if !ok {
            let line = format!("[{}] {case}: {}", mode.name, what());
            eprintln!("FAIL {line}");
            self.0.push(line);
        } else {
            eprintln!("pass [{}] {case}", mode.name);
        }
    }
    pub fn host(&mut self, ok: bool, case: &str, what: impl FnOnce() -> String) {
        if !ok {
            let line = format!("[host] {case}: {}", what());
            eprintln!("FAIL {line}");
            self.0.push(line);
        }
    }
    pub fn finish(self, test: &str) {
        assert!(
            self.0.is_empty(),
            "{test}: {} failing case(s):\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}

// ---- images ------------------------------------------------------------------------------

/// The static probe, built once.
pub fn probe() -> Vec<u8> {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES
        .get_or_init(|| {
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe/attack.c");
            let dst = staging().join("attack-probe");
            let o = Command::new("gcc")
                .args(["-static", "-O2", "-o"])
                .arg(&dst)
                .arg(&src)
                .output()
                .expect("run gcc (installed by .ci/run)");
            assert!(o.status.success(), "gcc -static attack.c: {}", text(&o));
            std::fs::read(&dst).unwrap()
        })
        .clone()
}

/// busybox plus the probe at /probe/attack: the bottom layer of every image here, identical
/// bytes, so each store extracts it once.
pub fn base_layer() -> LayerSpec {
    static TAR: OnceLock<Vec<u8>> = OnceLock::new();
    let tar = TAR.get_or_init(|| {
        let mut entries = busybox_entries(Path::new(BUSYBOX_PATH))
            .unwrap_or_else(|e| panic!("{e} (install busybox-static: .ci/run does)"));
        entries.push(Entry::dir("probe", 0o755));
        entries.push(Entry::file("probe/attack", 0o755, probe()));
        entries.push(Entry::dir("tmp", 0o1777));
        layer_tar(&entries).unwrap()
    });
    LayerSpec::bytes(tar.clone(), "busybox + attack probe")
}

/// An image over the base: `remove` whited out in a layer of its own (so `add` may put a
/// symlink where the base has a directory), then `add`.
pub fn image(name: &str, remove: &[&str], add: Vec<Entry>, config: ConfigSpec) -> PathBuf {
    let mut layers = vec![base_layer()];
    if !remove.is_empty() {
        let wh: Vec<Entry> = remove.iter().map(|p| Entry::whiteout(*p)).collect();
        layers.push(LayerSpec::entries(&wh, "remove").unwrap());
    }
    if !add.is_empty() {
        layers.push(LayerSpec::entries(&add, "add").unwrap());
    }
    let mut config = config;
    if config.env.is_empty() {
        config.env = vec!["PATH=/bin:/probe".into()];
    }
    let spec = ImageSpec {
        tags: vec![format!("attack/{name}:latest")],
        config,
        layers,
        ..Default::default()
    };
    let path = staging().join(format!("attack-{name}.tar"));
    write_archive_to_file(
        &path,
        &[spec],
        Format::DockerLegacy,
        &WriteOptions::default(),
    )
    .unwrap();
    publish(&path);
    path
}

pub fn plain_image() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| image("plain", &[], vec![], ConfigSpec::default()))
        .clone()
}

/// A host directory a hostile image points symlinks at; it must never change.
pub fn host_target() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let d = staging().join("attack-host-target");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("host-canary-file"), "host data\n").unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        d
    })
    .clone()
}

/// Names and contents of every file below `dir` (and whether it is a mount point).
pub fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    fn walk(base: &Path, dir: &Path, m: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                m.insert(rel, "<dir>".into());
                walk(base, &p, m);
            } else {
                m.insert(
                    rel,
                    std::fs::read_to_string(&p).unwrap_or_else(|_| "<special>".into()),
                );
            }
        }
    }
    walk(dir, dir, &mut m);
    m
}

pub fn host_mount_lines() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `..` steps enough to climb out of any store path, then `rel`.
pub fn climb(rel: &Path) -> String {
    format!(
        "{}{}",
        "../".repeat(24),
        rel.display().to_string().trim_start_matches('/')
    )
}
