//! The cgroup v2 device program of `devices` loaded and attached by `sys::bpf` to a real cgroup
//! (root only; skipped loudly otherwise). Here rather than in `sys/`, which imports nothing from
//! above it.

use crate::cgroup::devices::{bpf_program, oci_default_rules};

/// The cgroup2 mount of this machine (/sys/fs/cgroup on a v2 host, /sys/fs/cgroup/unified on
/// a hybrid one).
fn cgroup2_mount() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| std::path::PathBuf::from(f[1]))
}

/// Removes the test cgroup and temp dir whatever the assertions say.
struct Cleanup(Vec<std::path::PathBuf>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir(p).or_else(|_| std::fs::remove_dir_all(p));
        }
    }
}

/// The default program attached to a fresh cgroup on the unified hierarchy: a shell that
/// moved itself there may create a kmsg node (m) but not open it, and may open null. Runs on
/// a hybrid host too: the cgroup v2 device hook applies whatever v1 controllers exist.
#[test]
fn attached_default_program_denies_kmsg_and_allows_null() {
    if !crate::host::Privilege::detect().is_real_root() {
        eprintln!("\n*** SKIPPED device program attach test: needs real root ***");
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        eprintln!("\n*** SKIPPED device program attach test: no cgroup2 mount ***");
        return;
    };
    let cg = mount.join(format!("rcrun-devtest-{}", std::process::id()));
    let tmp = std::env::current_dir()
        .unwrap()
        .join("target")
        .join(format!("rcrun-devtest-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::create_dir(&cg).unwrap();
    let _cleanup = Cleanup(vec![cg.clone(), tmp.clone()]);
    crate::sys::bpf::apply_device_policy(&cg, &bpf_program(&oci_default_rules()))
        .unwrap_or_else(|e| panic!("{e}"));
    let script = format!(
        "echo $$ > {cg}/cgroup.procs || exit 9
         cd {tmp} || exit 9
         mknod k c 1 11 && echo mknod-ok
         (exec 3>k) 2>/dev/null && echo kmsg-open || echo kmsg-refused
         mknod n c 1 3 && (exec 3>n) && echo null-open",
        cg = cg.display(),
        tmp = tmp.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    let got = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        ["mknod-ok", "kmsg-refused", "null-open"],
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
