//! Shared helpers for the archive/extraction tests: run the real `rcrun` binary as root and as
//! the plain user `rcrun-test` (via `runuser`), in world-readable per-case directories.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub mod oci;

pub const TEST_USER: &str = "rcrun-test";

pub fn skip(why: &str) {
    eprintln!("SKIP: {why}");
    println!("SKIP: {why}");
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
        && std::fs::read_to_string("/proc/self/uid_map")
            .map(|m| rcrun::host::is_full_map(&m))
            .unwrap_or(false)
}

pub fn test_user() -> Option<nix::unistd::User> {
    nix::unistd::User::from_name(TEST_USER).ok().flatten()
}

/// Who runs rcrun.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Root,
    User,
}

impl Who {
    /// The store's `<owners>` tag `rcrun unpack` uses.
    pub fn tag(self) -> &'static str {
        match self {
            Who::Root => "root",
            Who::User => "user",
        }
    }
}

/// The modes available here; each unavailable one is skipped loudly.
pub fn modes(test: &str) -> Vec<Who> {
    let mut v = Vec::new();
    if is_root() {
        v.push(Who::Root);
        if test_user().is_some() {
            v.push(Who::User);
        } else {
            skip(&format!(
                "{test}: as a plain user: the user {TEST_USER} does not exist (.ci/run creates it)"
            ));
        }
    } else {
        skip(&format!(
            "{test}: as root and via runuser: the tests are not running as real root"
        ));
        v.push(Who::User);
    }
    v
}

/// `<tmp>/<prefix>-<our pid>`, a directory shared by the tests of this process: removed when the
/// process exits (libtest returns from main or calls exit(3), both run atexit handlers), and, in
/// case a run was killed, such directories of processes that no longer exist are removed first.
pub fn process_temp_dir(prefix: &str) -> PathBuf {
    static OURS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    extern "C" fn remove_ours() {
        if let Ok(dirs) = OURS.lock() {
            for d in dirs.iter() {
                let _ = rcrun::sys::fs::remove_tree(d);
            }
        }
    }
    let tmp = std::env::temp_dir();
    for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = rcrun::sys::fs::remove_tree(&e.path());
            }
        }
    }
    let dir = tmp.join(format!("{prefix}-{}", std::process::id()));
    let mut ours = OURS.lock().unwrap();
    if ours.is_empty() {
        // SAFETY: registers a plain extern "C" function with no arguments.
        unsafe { libc::atexit(remove_ours) };
    }
    ours.push(dir.clone());
    dir
}

/// A world-readable directory holding a copy of the binary, shared by the tests of one process.
pub fn staging() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = process_temp_dir("rcrun-archtests");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_rcrun"), dir.join("rcrun")).unwrap();
        std::fs::set_permissions(dir.join("rcrun"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        dir
    })
}

pub fn rcrun_bin() -> PathBuf {
    staging().join("rcrun")
}

/// A fresh directory for one case, owned by whoever will run rcrun in it.
pub fn case_dir(name: &str, who: Who) -> PathBuf {
    let dir = staging().join(format!("{name}-{}", who.tag()));
    if dir.exists() {
        rcrun::sys::fs::remove_tree(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    if who == Who::User && nix::unistd::geteuid().is_root() {
        let u = test_user().expect("test user");
        nix::unistd::chown(&dir, Some(u.uid), Some(u.gid)).unwrap();
    }
    dir
}

/// A world-readable file for the image (written by the test, read by rcrun).
pub fn publish(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// The command line to run rcrun as `who`.
pub fn rcrun_cmd(who: Who, args: &[&std::ffi::OsStr]) -> Command {
    let mut cmd = if who == Who::User && nix::unistd::geteuid().is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", TEST_USER, "--"]).arg(rcrun_bin());
        c
    } else {
        Command::new(rcrun_bin())
    };
    cmd.args(args)
        .current_dir(staging())
        .env_remove("RCRUN_ROOT");
    cmd
}

pub fn rcrun(who: Who, args: &[&std::ffi::OsStr]) -> Output {
    rcrun_cmd(who, args).output().expect("run rcrun")
}

pub fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `rcrun --root STORE unpack IMAGE OUT [extra...]`.
pub fn unpack(who: Who, store: &Path, image: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        os("--root"),
        store.as_os_str(),
        os("unpack"),
        image.as_os_str(),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(|s| os(s)));
    rcrun(who, &args)
}

/// Entries of a directory (empty if it does not exist).
pub fn list(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
        Err(_) => Vec::new(),
    }
}

/// Layer directories of the store, any owner mode: `<tag>/<hex>`.
pub fn store_layers(store: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for tag in list(&store.join("layers")) {
        for hex in list(&store.join("layers").join(&tag)) {
            out.push(format!("{tag}/{hex}"));
        }
    }
    out
}

/// `sha256:<hex>` of bytes.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Peak resident set size in KiB of the command (via GNU time), and its output.
pub fn with_peak_rss(mut cmd: Command) -> (Output, Option<u64>) {
    let rss_file = std::env::temp_dir().join(format!(
        "rcrun-rss-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    if !Path::new("/usr/bin/time").exists() {
        skip("/usr/bin/time (package `time`) is missing: peak memory is not checked");
        return (cmd.output().unwrap(), None);
    }
    let prog = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut t = Command::new("/usr/bin/time");
    t.arg("-v").arg("-o").arg(&rss_file).arg(prog).args(args);
    if let Some(d) = cmd.get_current_dir() {
        t.current_dir(d);
    }
    let out = t.output().unwrap();
    let report = std::fs::read_to_string(&rss_file).unwrap_or_default();
    let _ = std::fs::remove_file(&rss_file);
    let rss = report
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok());
    (out, rss)
}

// ---- OCI bundles (tests/bundle.rs, tests/oci.rs) ----

/// A busybox image built by rcrun-mkimage, once per test process.
pub fn busybox_image() -> PathBuf {
    static IMG: OnceLock<PathBuf> = OnceLock::new();
    IMG.get_or_init(|| {
        let path = staging().join("bundle-busybox.tar");
        let st = Command::new(env!("CARGO_BIN_EXE_rcrun-mkimage"))
            .args(["--busybox", "-o"])
            .arg(&path)
            .output()
            .expect("run rcrun-mkimage");
        assert!(st.status.success(), "rcrun-mkimage: {}", text(&st));
        publish(&path);
        path
    })
    .clone()
}

/// The three ways rcrun runs: real root, the plain user rcrun-test, fake root in `unshare -Ur`
/// (entered as rcrun-test when the tests run as root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Root,
    User,
    Unshare,
}

impl Mode {
    /// Who owns the files of a case in this mode.
    pub fn who(self) -> Who {
        if self == Mode::Root {
            Who::Root
        } else {
            Who::User
        }
    }
}

/// The modes available here, each unavailable one skipped loudly.
pub fn bundle_modes(test: &str) -> Vec<(Mode, &'static str)> {
    let mut v = Vec::new();
    if is_root() {
        v.push((Mode::Root, "root"));
        if test_user().is_some() {
            v.push((Mode::User, "user"));
            v.push((Mode::Unshare, "unshare"));
        } else {
            skip(&format!(
                "{test}: user and unshare modes: no user {TEST_USER}"
            ));
        }
    } else {
        skip(&format!("{test}: root mode: not running as root"));
        v.push((Mode::User, "user"));
        v.push((Mode::Unshare, "unshare"));
    }
    v
}

/// The command line to run rcrun in `mode`.
pub fn rcrun_as_cmd(mode: Mode, args: &[&std::ffi::OsStr]) -> Command {
    match mode {
        Mode::Root => rcrun_cmd(Who::Root, args),
        Mode::User => rcrun_cmd(Who::User, args),
        Mode::Unshare => {
            let mut c = if is_root() {
                let mut c = Command::new("runuser");
                c.args(["-u", TEST_USER, "--", "unshare", "-Ur"]);
                c
            } else {
                let mut c = Command::new("unshare");
                c.arg("-Ur");
                c
            };
            c.arg(rcrun_bin())
                .args(args)
                .current_dir(staging())
                .env_remove("RCRUN_ROOT");
            c
        }
    }
}

pub fn rcrun_as(mode: Mode, args: &[&std::ffi::OsStr]) -> Output {
    rcrun_as_cmd(mode, args).output().expect("run rcrun")
}

/// A bundle in DIR: the busybox image unpacked into DIR/rootfs (through the store STORE), the
/// `rcrun spec` starter config (--rootless unless root), no terminal, `args` as process.args.
pub fn starter_bundle(mode: Mode, dir: &Path, store: &Path, args: serde_json::Value) {
    let image = busybox_image();
    let o = rcrun_as(
        mode,
        &[
            os("--root"),
            store.as_os_str(),
            os("unpack"),
            image.as_os_str(),
            dir.join("rootfs").as_os_str(),
        ],
    );
    assert!(o.status.success(), "unpack: {}", text(&o));
    let mut spec = vec![os("spec"), os("-b"), dir.as_os_str()];
    if mode != Mode::Root {
        spec.push(os("--rootless"));
    }
    let o = rcrun_as(mode, &spec);
    assert!(o.status.success(), "rcrun spec: {}", text(&o));
    edit_config(dir, |d| {
        d["process"]["terminal"] = false.into();
        d["process"]["args"] = args;
    });
}

/// Edits DIR/config.json as JSON.
pub fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut d: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut d);
    std::fs::write(&p, serde_json::to_vec_pretty(&d).unwrap()).unwrap();
}
