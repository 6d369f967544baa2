//! Unit tests against mock cgroup trees (plain directories and files in a
//! temporary directory), v1 and v2 layouts. Ownership for rootless cases is
//! simulated with an injected writability check.

use super::tests_mock_v2::{v2_user_tree, SCOPE, USER_SVC};
use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Minimal self-deleting temp dir (keeps the module free of dev-deps).
pub(super) struct Tmp(pub(super) PathBuf);

impl Tmp {
    pub(super) fn new(tag: &str) -> Tmp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "rcrun-cgroup-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub(super) fn put(p: &Path, content: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

pub(super) fn get(p: &Path) -> String {
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

const V1_CTRLS: [&str; 5] = ["memory", "pids", "cpu", "cpuacct", "cpuset"];

/// v1 layout: one directory per controller, with swap accounting on.
pub(super) fn v1_tree(t: &Tmp) -> CgroupFs {
    let root = t.0.join("cgroup");
    for c in V1_CTRLS {
        put(&root.join(c).join("cgroup.procs"), "");
    }
    put(
        &root.join("memory/memory.memsw.limit_in_bytes"),
        "9223372036854771712",
    );
    put(&root.join("cpuset/cpuset.cpus"), "0-3");
    put(&root.join("cpuset/cpuset.mems"), "0");
    put(
        &t.0.join("proc/self/cgroup"),
        "5:pids:/user.slice\n4:memory:/user.slice/app\n3:cpuset:/\n2:cpu,cpuacct:/\n1:name=systemd:/x\n0::/\n",
    );
    CgroupFs::new(root, t.0.join("proc")).with_uid(0)
}

/// v2 layout with the given controllers available at the root.
pub(super) fn v2_tree(t: &Tmp, own: &str) -> CgroupFs {
    let root = t.0.join("cgroup");
    put(
        &root.join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids rdma misc",
    );
    put(&root.join("cgroup.subtree_control"), "");
    put(&root.join("cgroup.procs"), "1\n");
    put(&t.0.join("proc/self/cgroup"), &format!("0::{own}\n"));
    CgroupFs::new(root, t.0.join("proc")).with_uid(0)
}

fn full_limits() -> Limits {
    Limits {
        memory: Some(64 << 20),
        memory_swap: None,
        pids: Some(50),
        cpus: Some(0.5),
        cpu_shares: Some(512),
        cpuset_cpus: Some("0-1".into()),
        devices: None,
        ..Default::default()
    }
}

/// Empties every cgroup.procs below `dir` (the mock's "all processes exited"),
/// so that remove() has nothing to kill.
pub(super) fn clear_procs(dir: &Path) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            clear_procs(&e.path());
        } else if e.file_name() == "cgroup.procs" {
            fs::write(e.path(), "").unwrap();
        }
    }
}

#[test]
fn limits_is_empty_and_validate() {
    assert!(Limits::default().is_empty());
    assert!(!full_limits().is_empty());
    assert!(Limits {
        pids: Some(-1),
        ..Default::default()
    }
    .validate()
    .is_ok());
    let bad = [
        Limits {
            memory: Some(0),
            ..Default::default()
        },
        Limits {
            memory_swap: Some(1 << 30),
            ..Default::default()
        },
        Limits {
            memory: Some(1 << 30),
            memory_swap: Some(1 << 20),
            ..Default::default()
        },
        Limits {
            memory: Some(1 << 30),
            memory_swap: Some(-2),
            ..Default::default()
        },
        Limits {
            cpus: Some(0.0),
            ..Default::default()
        },
        Limits {
            cpu_shares: Some(0),
            ..Default::default()
        },
        Limits {
            cpuset_cpus: Some("1-0".into()),
            ..Default::default()
        },
    ];
    for l in bad {
        assert!(l.validate().is_err(), "{l:?}");
    }
}

#[test]
fn version_detection() {
    let t = Tmp::new("ver");
    let fs1 = v1_tree(&t);
    assert_eq!(fs1.version(), Some(Version::V1));
    let t2 = Tmp::new("ver2");
    assert_eq!(v2_tree(&t2, "/").version(), Some(Version::V2));
    let t3 = Tmp::new("ver3");
    assert_eq!(CgroupFs::new(t3.0.clone(), t3.0.clone()).version(), None);
}

#[test]
fn no_cgroupfs_runs_without_or_errors() {
    let t = Tmp::new("nofs");
    let fs = CgroupFs::new(t.0.join("nothing"), t.0.clone());
    assert!(Cgroup::create(&fs, "c", &Limits::default())
        .unwrap()
        .is_none());
    let e = Cgroup::create(&fs, "c", &full_limits()).unwrap_err();
    assert!(matches!(e, CgroupError::NoCgroupFs { .. }), "{e}");
}

#[test]
fn bad_ids() {
    let t = Tmp::new("id");
    let fs = v1_tree(&t);
    for id in ["", "a/b", "..", "."] {
        assert!(matches!(
            Cgroup::create(&fs, id, &Limits::default()),
            Err(CgroupError::BadId(_))
        ));
    }
}

#[test]
fn v1_root_creates_dirs_and_writes_limits() {
    let t = Tmp::new("v1root");
    let fs = v1_tree(&t);
    let root = fs.root.clone();
    let mut cg = Cgroup::create(&fs, "c1", &full_limits()).unwrap().unwrap();
    assert_eq!(cg.version(), Version::V1);
    let dir = |c: &str| root.join(c).join("rcrun/c1");
    let mut want_paths: Vec<PathBuf> = V1_CTRLS.iter().map(|c| dir(c)).collect();
    want_paths.sort();
    let mut got: Vec<PathBuf> = cg.paths().iter().map(|p| p.to_path_buf()).collect();
    got.sort();
    assert_eq!(got, want_paths);

    assert_eq!(
        get(&dir("memory").join("memory.limit_in_bytes")),
        "67108864"
    );
    // Docker default: swap unset -> memory+swap = 2 × memory.
    assert_eq!(
        get(&dir("memory").join("memory.memsw.limit_in_bytes")),
        "134217728"
    );
    assert_eq!(get(&dir("pids").join("pids.max")), "50");
    assert_eq!(get(&dir("cpu").join("cpu.cfs_period_us")), "100000");
    assert_eq!(get(&dir("cpu").join("cpu.cfs_quota_us")), "50000");
    assert_eq!(get(&dir("cpu").join("cpu.shares")), "512");
    assert_eq!(get(&dir("cpuset").join("cpuset.cpus")), "0-1");
    assert_eq!(get(&dir("cpuset").join("cpuset.mems")), "0");
    // cpuset of the intermediate group got initialised from the root.
    assert_eq!(get(&root.join("cpuset/rcrun/cpuset.cpus")), "0-3");
    assert_eq!(get(&root.join("cpuset/rcrun/cpuset.mems")), "0");

    // Every write recorded, in order, with the exact values.
    let w = cg.writes().to_vec();
    let pos = |f: &Path, v: &str| {
        w.iter()
            .position(|(p, val)| p == f && val == v)
            .unwrap_or_else(|| panic!("no write of {v} to {} in {w:#?}", f.display()))
    };
    pos(&dir("memory").join("memory.limit_in_bytes"), "67108864");
    let period = pos(&dir("cpu").join("cpu.cfs_period_us"), "100000");
    let quota = pos(&dir("cpu").join("cpu.cfs_quota_us"), "50000");
    assert!(period < quota, "period is written before quota");
    let copy = pos(&dir("cpuset").join("cpuset.cpus"), "0-3");
    let set = pos(&dir("cpuset").join("cpuset.cpus"), "0-1");
    assert!(copy < set);
    assert!(w.iter().all(|(p, _)| p.exists()));

    cg.add_process(4242).unwrap();
    for c in V1_CTRLS {
        assert_eq!(get(&dir(c).join("cgroup.procs")), "4242");
        assert!(cg
            .writes()
            .contains(&(dir(c).join("cgroup.procs"), "4242".into())));
    }
    clear_procs(&root);
    cg.remove().unwrap();
    for c in V1_CTRLS {
        assert!(!dir(c).exists(), "{c} dir removed");
        assert!(root.join(c).join("rcrun").is_dir(), "shared group dir kept");
    }
}

#[test]
fn v1_without_limits_as_root_still_creates_for_stats() {
    let t = Tmp::new("v1nolim");
    let fs = v1_tree(&t);
    let cg = Cgroup::create(&fs, "c", &Limits::default())
        .unwrap()
        .unwrap();
    // memory, pids, cpuacct; no cpu without a CPU limit, no cpuset without --cpuset-cpus.
    assert_eq!(cg.paths().len(), 3);
    assert!(!fs.root.join("cpu/rcrun/c").exists());
    assert!(fs.root.join("cpuacct/rcrun/c").is_dir());
    assert!(!fs.root.join("cpuset/rcrun").exists());
    assert!(cg.writes().is_empty());
    // A CPU limit brings the cpu hierarchy in.
    let limited = Limits {
        cpus: Some(0.5),
        ..Default::default()
    };
    let cg2 = Cgroup::create(&fs, "d", &limited).unwrap().unwrap();
    assert_eq!(cg2.paths().len(), 4);
    assert!(fs.root.join("cpu/rcrun/d").is_dir());
}

#[test]
fn v1_existing_container_dir_is_an_error() {
    let t = Tmp::new("v1exists");
    let fs = v1_tree(&t);
    fs::create_dir_all(fs.root.join("pids/rcrun/dup")).unwrap();
    let e = Cgroup::create(&fs, "dup", &Limits::default()).unwrap_err();
    assert!(matches!(e, CgroupError::Exists { .. }), "{e}");
    // What was created before the failure (memory) was cleaned up.
    assert!(!fs.root.join("memory/rcrun/dup").exists());
    assert!(
        fs.root.join("pids/rcrun/dup").exists(),
        "not ours: untouched"
    );
}

#[test]
fn v1_swap() {
    let t = Tmp::new("v1swap");
    let fs = v1_tree(&t);
    let l = Limits {
        memory: Some(64 << 20),
        memory_swap: Some(-1),
        ..Default::default()
    };
    let cg = Cgroup::create(&fs, "a", &l).unwrap().unwrap();
    assert_eq!(
        get(&fs.root.join("memory/rcrun/a/memory.memsw.limit_in_bytes")),
        "-1"
    );
    drop(cg);
    let l = Limits {
        memory: Some(64 << 20),
        memory_swap: Some(96 << 20),
        ..Default::default()
    };
    let cg = Cgroup::create(&fs, "b", &l).unwrap().unwrap();
    assert_eq!(
        get(&fs.root.join("memory/rcrun/b/memory.memsw.limit_in_bytes")),
        "100663296"
    );
    drop(cg);
    assert!(!fs.root.join("memory/rcrun/b").exists(), "drop cleans up");

    // Swap accounting off: an explicit limit is an error, never ignored...
    fs::remove_file(fs.root.join("memory/memory.memsw.limit_in_bytes")).unwrap();
    let e = Cgroup::create(&fs, "c", &l).unwrap_err();
    assert!(matches!(e, CgroupError::SwapUnsupported { .. }), "{e}");
    assert!(e.to_string().contains("swapaccount=1"));
    assert!(!fs.root.join("memory/rcrun/c").exists());
    // ...while the implicit default and "unlimited" need nothing.
    for swap in [None, Some(-1), Some(0)] {
        let l = Limits {
            memory: Some(64 << 20),
            memory_swap: swap,
            ..Default::default()
        };
        let cg = Cgroup::create(&fs, "d", &l).unwrap().unwrap();
        assert!(!fs
            .root
            .join("memory/rcrun/d/memory.memsw.limit_in_bytes")
            .exists());
        assert_eq!(cg.writes().len(), 1);
        drop(cg);
    }
}

#[test]
fn v1_comounted_cpu_cpuacct_joined_once() {
    let t = Tmp::new("v1comount");
    let fs = v1_tree(&t);
    fs::remove_dir_all(fs.root.join("cpu")).unwrap();
    fs::remove_dir_all(fs.root.join("cpuacct")).unwrap();
    put(&fs.root.join("cpu,cpuacct/cgroup.procs"), "");
    std::os::unix::fs::symlink("cpu,cpuacct", fs.root.join("cpu")).unwrap();
    std::os::unix::fs::symlink("cpu,cpuacct", fs.root.join("cpuacct")).unwrap();
    let l = Limits {
        cpus: Some(1.5),
        ..Default::default()
    };
    let mut cg = Cgroup::create(&fs, "c", &l).unwrap().unwrap();
    assert_eq!(cg.paths().len(), 3, "{:?}", cg.paths()); // memory, pids, cpu+cpuacct
    assert_eq!(
        get(&fs.root.join("cpu,cpuacct/rcrun/c/cpu.cfs_quota_us")),
        "150000"
    );
    cg.add_process(7).unwrap();
    let procs_writes = cg
        .writes()
        .iter()
        .filter(|(p, _)| p.ends_with("cgroup.procs"))
        .count();
    assert_eq!(procs_writes, 3);
    put(
        &fs.root.join("cpu,cpuacct/rcrun/c/cpuacct.usage"),
        "2500000000\n",
    );
    assert_eq!(cg.stats().cpu_time, Some(Duration::from_millis(2500)));
    clear_procs(&fs.root);
    cg.remove().unwrap();
}

#[test]
fn v1_missing_controller_for_a_limit() {
    let t = Tmp::new("v1missing");
    let fs = v1_tree(&t);
    fs::remove_dir_all(fs.root.join("pids")).unwrap();
    let e = Cgroup::create(
        &fs,
        "c",
        &Limits {
            pids: Some(5),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            CgroupError::MissingController {
                controller: Controller::Pids,
                ..
            }
        ),
        "{e}"
    );
    // Without the pids limit the missing controller is just skipped (memory and cpuacct stay).
    let cg = Cgroup::create(&fs, "c", &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(cg.paths().len(), 2);
}

#[test]
fn v1_rootless_convention_dirs() {
    let t = Tmp::new("v1rl");
    let fs = v1_tree(&t);
    let root = fs.root.clone();
    // Root ran mkdir + chown for memory and pids only.
    for c in ["memory", "pids"] {
        put(&root.join(c).join("rcrun-1000/cgroup.procs"), "");
    }
    let owned = [root.join("memory/rcrun-1000"), root.join("pids/rcrun-1000")];
    let fs = fs
        .with_uid(1000)
        .with_writable_check(move |p| owned.iter().any(|o| p.starts_with(o)));

    let l = Limits {
        memory: Some(32 << 20),
        pids: Some(10),
        ..Default::default()
    };
    let cg = Cgroup::create(&fs, "c", &l).unwrap().unwrap();
    let mut got: Vec<PathBuf> = cg.paths().iter().map(|p| p.to_path_buf()).collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            root.join("memory/rcrun-1000/c"),
            root.join("pids/rcrun-1000/c")
        ]
    );
    assert_eq!(
        get(&root.join("memory/rcrun-1000/c/memory.limit_in_bytes")),
        "33554432"
    );
    drop(cg);

    // A CPU limit needs the cpu hierarchy delegated too.
    let l = Limits {
        cpus: Some(1.0),
        ..Default::default()
    };
    let e = Cgroup::create(&fs, "c", &l).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(
        e,
        CgroupError::NoDelegation {
            version: Version::V1,
            uid: 1000,
            ..
        }
    ));
    assert!(
        msg.contains(&format!("{}/cpu/rcrun-1000", root.display())),
        "{msg}"
    );
    assert!(
        msg.contains("mkdir -p") && msg.contains("chown -R 1000"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(
        !root.join("memory/rcrun-1000/c").exists(),
        "nothing left behind"
    );
}

#[test]
fn v1_rootless_current_cgroup_if_writable() {
    let t = Tmp::new("v1own");
    let fs = v1_tree(&t);
    let root = fs.root.clone();
    // /proc/self/cgroup says memory:/user.slice/app; make it "ours".
    put(&root.join("memory/user.slice/app/cgroup.procs"), "99\n");
    let mine = root.join("memory/user.slice/app");
    let fs = fs
        .with_uid(1000)
        .with_writable_check(move |p| p.starts_with(&mine));
    let l = Limits {
        memory: Some(16 << 20),
        ..Default::default()
    };
    let cg = Cgroup::create(&fs, "c", &l).unwrap().unwrap();
    assert_eq!(
        cg.paths(),
        vec![root.join("memory/user.slice/app/rcrun/c").as_path()]
    );
}

#[test]
fn v1_rootless_nothing_delegated() {
    let t = Tmp::new("v1none");
    let fs = v1_tree(&t).with_uid(1000).with_writable_check(|_| false);
    assert!(Cgroup::create(&fs, "c", &Limits::default())
        .unwrap()
        .is_none());
    let e = Cgroup::create(&fs, "c", &full_limits()).unwrap_err();
    assert!(matches!(e, CgroupError::NoDelegation { .. }));
    println!("v1 NoDelegation message: {e}");
}

#[test]
fn v1_oom_and_stats() {
    let t = Tmp::new("v1oom");
    let fs = v1_tree(&t);
    let cg = Cgroup::create(&fs, "c", &Limits::default())
        .unwrap()
        .unwrap();
    let m = fs.root.join("memory/rcrun/c");
    assert!(!cg.oom_killed());
    put(
        &m.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    );
    put(&m.join("memory.failcnt"), "5\n");
    assert!(!cg.oom_killed(), "oom_kill line wins over failcnt");
    put(
        &m.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    );
    assert!(cg.oom_killed());
    put(
        &m.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\n",
    );
    assert!(cg.oom_killed(), "old kernels: failcnt");
    put(&m.join("memory.max_usage_in_bytes"), "1234\n");
    put(&fs.root.join("cpuacct/rcrun/c/cpuacct.usage"), "1000\n");
    put(&fs.root.join("pids/rcrun/c/pids.current"), "0\n");
    put(&fs.root.join("pids/rcrun/c/pids.peak"), "4\n");
    assert_eq!(
        cg.stats(),
        Stats {
            peak_memory_bytes: Some(1234),
            cpu_time: Some(Duration::from_nanos(1000)),
            pids_current: Some(0),
            pids_peak: Some(4),
        }
    );
}

#[test]
fn gc_removes_only_empty_container_cgroups() {
    let t = Tmp::new("gc1");
    let fs = v1_tree(&t);
    let root = fs.root.clone();
    for c in ["memory", "pids"] {
        put(&root.join(c).join("rcrun/dead/cgroup.procs"), "");
        put(&root.join(c).join("rcrun/dead/memory.limit_in_bytes"), "1");
        put(&root.join(c).join("rcrun/alive/cgroup.procs"), "12345\n");
    }
    put(&root.join("cpu/rcrun/nested/cgroup.procs"), "");
    put(&root.join("cpu/rcrun/nested/inner/cgroup.procs"), "77\n");
    put(&root.join("cpu/rcrun-1000/mine/cgroup.procs"), "");
    let mut removed = gc_stale(&fs, None);
    removed.sort();
    assert_eq!(
        removed,
        vec![root.join("memory/rcrun/dead"), root.join("pids/rcrun/dead")]
    );
    assert!(root.join("memory/rcrun/alive").is_dir());
    assert!(root.join("cpu/rcrun/nested/inner").is_dir());
    assert!(
        root.join("cpu/rcrun-1000/mine").is_dir(),
        "rootless dirs not touched by root gc"
    );
    assert_eq!(
        gc_stale(&fs, Some(1000)),
        vec![root.join("cpu/rcrun-1000/mine")]
    );
    assert!(gc_stale(&fs, None).is_empty());
}

#[test]
fn gc_v2_root_and_rootless() {
    let t = Tmp::new("gc2");
    let fs = v2_user_tree(&t, "memory pids", USER_SVC);
    let root = fs.root.clone();
    put(&root.join("rcrun/old/cgroup.procs"), "");
    let scope = root.join(SCOPE.trim_start_matches('/'));
    put(&scope.join("rcrun/old2/cgroup.procs"), "");
    put(&scope.join("rcrun/running/cgroup.procs"), "5\n");
    assert_eq!(gc_stale(&fs, None), vec![root.join("rcrun/old")]);
    assert_eq!(gc_stale(&fs, Some(1000)), vec![scope.join("rcrun/old2")]);
    assert!(scope.join("rcrun/running").is_dir());
}

/// A cgroup named after a live rcrun is kept however empty (its container is about to join);
/// one named after a dead rcrun is removed at once, however young; an unowned one only when old.
#[test]
fn gc_sweep_follows_the_owner_in_the_name() {
    let t = Tmp::new("gc-owner");
    let fs = v1_tree(&t);
    let root = fs.root.clone();
    // A fake /proc: pid 4242 runs since tick 777; pid 4343 does not exist.
    let proc = fs.proc.clone();
    put(
        &proc.join("4242/stat"),
        "4242 (rcrun (x) y) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 777 1 1\n",
    );
    let live = owned_name(
        "aaaaaaaaaaaa",
        Some(Owner {
            pid: 4242,
            start: 777,
        }),
    );
    let recycled = owned_name(
        "bbbbbbbbbbbb",
        Some(Owner {
            pid: 4242,
            start: 778,
        }),
    );
    let dead = owned_name(
        "cccccccccccc",
        Some(Owner {
            pid: 4343,
            start: 777,
        }),
    );
    assert_eq!(live, "aaaaaaaaaaaa-4242-777");
    for name in [&live, &recycled, &dead, &"dddddddddddd".to_string()] {
        put(&root.join("pids/rcrun").join(name).join("cgroup.procs"), "");
    }
    let mut removed = gc_stale_older_than(&fs, None, Duration::from_secs(30));
    removed.sort();
    assert_eq!(
        removed,
        vec![
            root.join("pids/rcrun").join(&recycled),
            root.join("pids/rcrun").join(&dead)
        ]
    );
    assert!(root.join("pids/rcrun").join(&live).is_dir());
    assert!(
        root.join("pids/rcrun/dddddddddddd").is_dir(),
        "young and unowned: kept"
    );
    assert_eq!(
        gc_stale(&fs, None),
        vec![root.join("pids/rcrun/dddddddddddd")],
        "an explicit gc takes unowned ones of any age, never a live owner's"
    );
    // This process's own identity reads back as alive.
    let me = Owner::current().expect("/proc/self/stat");
    assert!(me.alive(Path::new("/proc")));
}

/// As root the device policy goes with every container: v1 gets its own devices hierarchy dir,
/// written before anything joins, deny-all first.
#[test]
fn v1_device_policy_written_deny_all_first() {
    let t = Tmp::new("v1dev");
    let fs = v1_tree(&t);
    put(&fs.root.join("devices/cgroup.procs"), "");
    let l = Limits {
        devices: Some(devices::oci_default_rules()),
        ..Default::default()
    };
    let cg = Cgroup::create(&fs, "c", &l).unwrap().unwrap();
    let dir = fs.root.join("devices/rcrun/c");
    assert!(cg.paths().contains(&dir.as_path()));
    let writes: Vec<(String, String)> = cg
        .writes()
        .iter()
        .filter(|(p, _)| p.starts_with(&dir))
        .map(|(p, v)| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                v.clone(),
            )
        })
        .collect();
    assert_eq!(writes[0], ("devices.deny".to_string(), "a".to_string()));
    assert!(writes.contains(&("devices.allow".into(), "c 1:3 rwm".into())));
    assert!(writes.contains(&("devices.allow".into(), "c 136:* rwm".into())));
    assert!(writes.contains(&("devices.allow".into(), "b *:* m".into())));
    assert!(!writes.iter().any(|(_, v)| v.contains("1:11")));
    // The container joins it like the other hierarchies (it writes 0 to tasks itself).
    assert!(cg.self_join_files().contains(&dir.join("tasks")));
}

/// No devices hierarchy (v1), or no cgroup file system at all: the policy cannot be applied and
/// creating the cgroup fails, instead of the container running without one.
#[test]
fn device_policy_that_cannot_be_applied_is_an_error() {
    let t = Tmp::new("v1nodev");
    let fs = v1_tree(&t);
    let l = Limits {
        devices: Some(devices::oci_default_rules()),
        ..Default::default()
    };
    let e = Cgroup::create(&fs, "c", &l).unwrap_err();
    assert!(
        matches!(
            e,
            CgroupError::MissingController {
                controller: Controller::Devices,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("device policy"), "{e}");
    assert!(
        !fs.root.join("memory/rcrun/c").exists(),
        "nothing left behind"
    );
    let empty = Tmp::new("nocgfs");
    let none = CgroupFs::new(empty.0.join("cgroup"), empty.0.join("proc")).with_uid(0);
    assert!(matches!(
        Cgroup::create(&none, "c", &l),
        Err(CgroupError::NoCgroupFs { .. })
    ));
}
