//! Tests against the real cgroup filesystem. They need root; otherwise (or
//! without a cgroup fs / the needed controllers) they are skipped with a
//! message written straight to stderr, so it shows even under output capture.
//! They are serialized: `gc_stale` as root would otherwise sweep up a sibling
//! test's cgroup between its creation and `add_process`.

use super::*;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

fn skip(test: &str, why: &str) {
    let _ = writeln!(
        io::stderr(),
        "\n*** SKIPPED real cgroup test `{test}`: {why} ***"
    );
}

/// The host cgroup fs if this test can run here.
fn host(test: &str, need: &[Controller]) -> Option<CgroupFs> {
    if !nix::unistd::geteuid().is_root() {
        skip(test, "needs root to create cgroups (run `sudo cargo test`)");
        return None;
    }
    let fs = CgroupFs::host();
    let Some(version) = fs.version() else {
        skip(test, "no cgroup filesystem mounted at /sys/fs/cgroup");
        return None;
    };
    for c in need {
        let ok = match version {
            Version::V1 => fs.root.join(c.name()).join("cgroup.procs").is_file(),
            Version::V2 => read_trim(&fs.root.join("cgroup.controllers"))
                .unwrap_or_default()
                .split_whitespace()
                .any(|n| n == c.name()),
        };
        if !ok {
            skip(
                test,
                &format!("the {c} controller is not available ({version})"),
            );
            return None;
        }
    }
    Some(fs)
}

fn id(name: &str) -> String {
    format!("test-{name}-{}", std::process::id())
}

/// `sh -c script` that first waits for a line on stdin, so the test can put
/// it into the cgroup before it does anything.
fn spawn_gated(script: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("read _go; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sh")
}

fn release(child: &mut Child) {
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
}

fn file(dir: &Path, name: &str) -> String {
    read_trim(&dir.join(name)).unwrap_or_else(|| panic!("read {}", dir.join(name).display()))
}

#[test]
fn real_limits_membership_and_removal() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let need = [Controller::Memory, Controller::Pids, Controller::Cpu];
    let Some(fs) = host("real_limits_membership_and_removal", &need) else {
        return;
    };
    let id = id("basic");
    let l = Limits {
        memory: Some(parse_size("64m").unwrap()),
        pids: Some(50),
        cpus: Some(parse_cpus("0.5").unwrap()),
        ..Default::default()
    };
    let mut cg = Cgroup::create(&fs, &id, &l)
        .unwrap()
        .expect("root gets a cgroup");
    let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
    let pid = child.id() as i32;
    cg.add_process(pid).unwrap();

    let mem = cg.dir_for(Controller::Memory).unwrap().to_path_buf();
    let pids = cg.dir_for(Controller::Pids).unwrap().to_path_buf();
    let cpu = cg.dir_for(Controller::Cpu).unwrap().to_path_buf();
    match cg.version() {
        Version::V1 => {
            assert_eq!(file(&mem, "memory.limit_in_bytes"), "67108864");
            assert_eq!(file(&cpu, "cpu.cfs_quota_us"), "50000");
            assert_eq!(file(&cpu, "cpu.cfs_period_us"), "100000");
        }
        Version::V2 => {
            assert_eq!(file(&mem, "memory.max"), "67108864");
            assert_eq!(file(&cpu, "cpu.max"), "50000 100000");
        }
    }
    assert_eq!(file(&pids, "pids.max"), "50");
    // Every recorded limit write reads back as written (cgroup.procs and
    // subtree_control read back differently by design).
    for (p, v) in cg.writes() {
        let name = p.file_name().unwrap().to_string_lossy();
        if name != "cgroup.procs" && name != "cgroup.subtree_control" {
            assert_eq!(&read_trim(p).unwrap(), v, "{}", p.display());
        }
    }
    // The kernel agrees the child is in our cgroup, in every hierarchy.
    let proc_cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for d in cg.paths() {
        let rel = d.strip_prefix(&fs.root).unwrap();
        let rel = match cg.version() {
            Version::V1 => rel.iter().skip(1).collect::<PathBuf>(), // drop "<controller>/"
            Version::V2 => rel.to_path_buf(),
        };
        let want = format!(":/{}", rel.display());
        assert!(
            proc_cg.lines().any(|l| l.ends_with(&want)),
            "{want} not in\n{proc_cg}"
        );
    }
    assert!(proc_cg.contains(&format!("/rcrun/{id}")));
    assert_eq!(cg.procs(), vec![pid]);
    let st = cg.stats();
    assert!(st.cpu_time.is_some(), "{st:?}");
    assert_eq!(st.pids_current, Some(1));
    assert!(!cg.oom_killed());

    child.kill().unwrap();
    child.wait().unwrap();
    let dirs: Vec<PathBuf> = cg.paths().iter().map(|p| p.to_path_buf()).collect();
    cg.remove().unwrap();
    for d in dirs {
        assert!(!d.exists(), "{} still exists", d.display());
    }
}

#[test]
fn real_remove_kills_leftover_processes() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(fs) = host("real_remove_kills_leftover_processes", &[Controller::Pids]) else {
        return;
    };
    let mut cg = Cgroup::create(
        &fs,
        &id("kill"),
        &Limits {
            pids: Some(10),
            ..Default::default()
        },
    )
    .unwrap()
    .unwrap();
    let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
    cg.add_process(child.id() as i32).unwrap();
    let dirs: Vec<PathBuf> = cg.paths().iter().map(|p| p.to_path_buf()).collect();
    cg.remove().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    for d in dirs {
        assert!(!d.exists());
    }
}

#[test]
fn real_memory_hog_is_oom_killed() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(fs) = host("real_memory_hog_is_oom_killed", &[Controller::Memory]) else {
        return;
    };
    let limit = 64u64 << 20;
    let mut cg = Cgroup::create(
        &fs,
        &id("oom"),
        &Limits {
            memory: Some(limit),
            ..Default::default()
        },
    )
    .unwrap()
    .unwrap();
    // dd allocates a 256 MiB buffer and read() from /dev/zero touches all of it.
    let mut child = spawn_gated("exec dd if=/dev/zero of=/dev/null bs=256M count=1");
    cg.add_process(child.id() as i32).unwrap();
    release(&mut child);
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "hog should be OOM-killed: {status:?}"
    );
    assert!(cg.oom_killed(), "oom_killed() after an OOM kill");
    let peak = cg.stats().peak_memory_bytes;
    if let Some(p) = peak {
        assert!(p > 0 && p <= limit, "peak {p} within the limit");
    }
    let _ = writeln!(
        io::stderr(),
        "real_memory_hog_is_oom_killed: container killed: exceeded its memory limit of {} (peak {:?})",
        format_size(limit),
        peak
    );
    cg.remove().unwrap();
}

#[test]
fn real_fork_bomb_stays_within_pids_limit() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(fs) = host(
        "real_fork_bomb_stays_within_pids_limit",
        &[Controller::Pids],
    ) else {
        return;
    };
    let max = 50usize;
    let mut cg = Cgroup::create(
        &fs,
        &id("pids"),
        &Limits {
            pids: Some(max as i64),
            ..Default::default()
        },
    )
    .unwrap()
    .unwrap();
    let mut child =
        spawn_gated("i=0; while [ $i -lt 200 ]; do sleep 1000 & i=$((i+1)); done; exit 0");
    cg.add_process(child.id() as i32).unwrap();
    release(&mut child);
    // The shell ends either way: after the loop, or when fork fails.
    child.wait().unwrap();
    let n = cg.procs().len();
    assert!(n >= 1 && n <= max, "{n} processes with pids.max={max}");
    let st = cg.stats();
    assert!(st.pids_current.unwrap() <= max as u64, "{st:?}");
    // The limit was actually hit: pids.events "max N" (v1 and v2).
    let events = file(cg.dir_for(Controller::Pids).unwrap(), "pids.events");
    let hits: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("max ")?.trim().parse().ok())
        .unwrap_or(0);
    assert!(hits > 0, "pids.events: {events}");
    let dirs: Vec<PathBuf> = cg.paths().iter().map(|p| p.to_path_buf()).collect();
    cg.remove().unwrap(); // kills the orphaned sleeps
    for d in dirs {
        assert!(!d.exists());
    }
}

#[test]
fn real_gc_removes_cgroup_of_a_killed_run() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(fs) = host("real_gc_removes_cgroup_of_a_killed_run", &[]) else {
        return;
    };
    let cg = Cgroup::create(&fs, &id("gc"), &Limits::default())
        .unwrap()
        .unwrap();
    // As if rcrun was SIGKILLed: the cgroup is left behind.
    let left: Vec<PathBuf> = cg.keep();
    assert!(left.iter().all(|d| d.is_dir()));
    let removed = gc_stale(&fs, None);
    for d in &left {
        assert!(removed.contains(d), "{} not in {removed:?}", d.display());
        assert!(!d.exists());
    }
}

/// On a hybrid host the v2 hierarchy at /sys/fs/cgroup/unified has no
/// controllers, but it still exercises the v2 code paths for real: directory
/// creation, cgroup.procs, cpu.stat, cgroup.kill and removal.
#[test]
fn real_v2_unified_hierarchy_of_hybrid_host() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let test = "real_v2_unified_hierarchy_of_hybrid_host";
    let Some(host_fs) = host(test, &[]) else {
        return;
    };
    let unified = host_fs.root.join("unified");
    if host_fs.version() != Some(Version::V1) || !unified.join("cgroup.controllers").is_file() {
        skip(test, "not a hybrid host (no /sys/fs/cgroup/unified); the v2 path is covered by the other real tests on pure v2");
        return;
    }
    let fs = CgroupFs::new(&unified, "/proc");
    assert_eq!(fs.version(), Some(Version::V2));
    let id = id("v2");
    let mut cg = Cgroup::create(&fs, &id, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(cg.paths(), vec![unified.join("rcrun").join(&id).as_path()]);
    let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
    let pid = child.id() as i32;
    cg.add_process(pid).unwrap();
    let proc_cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        proc_cg.lines().any(|l| l == format!("0::/rcrun/{id}")),
        "{proc_cg}"
    );
    assert!(cg.stats().cpu_time.is_some());
    let dir = cg.paths()[0].to_path_buf();
    let kill_file = dir.join("cgroup.kill");
    let has_kill = kill_file.exists(); // Linux >= 5.14
                                       // What remove() does, but keeping `cg` to inspect the recorded writes.
    cg.teardown().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(!dir.exists());
    assert_eq!(
        cg.writes().iter().any(|(p, v)| *p == kill_file && v == "1"),
        has_kill,
        "cgroup.kill used iff present: {:?}",
        cg.writes()
    );
    let _ = fs::remove_dir(unified.join("rcrun")); // leave no trace if empty
}

#[test]
fn real_cpuset_and_shares() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let need = [Controller::Cpu, Controller::Cpuset];
    let Some(fs) = host("real_cpuset_and_shares", &need) else {
        return;
    };
    let l = Limits {
        cpu_shares: Some(512),
        cpuset_cpus: Some(parse_cpuset("0").unwrap()),
        ..Default::default()
    };
    let mut cg = Cgroup::create(&fs, &id("cpuset"), &l).unwrap().unwrap();
    let cpuset = cg.dir_for(Controller::Cpuset).unwrap().to_path_buf();
    let cpu = cg.dir_for(Controller::Cpu).unwrap().to_path_buf();
    assert_eq!(file(&cpuset, "cpuset.cpus"), "0");
    match cg.version() {
        Version::V1 => {
            // Copied from the parent: without it attaching fails with ENOSPC.
            assert!(!file(&cpuset, "cpuset.mems").is_empty());
            assert_eq!(file(&cpu, "cpu.shares"), "512");
        }
        Version::V2 => assert_eq!(
            file(&cpu, "cpu.weight"),
            cpu_shares_to_weight(512).to_string()
        ),
    }
    let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
    let pid = child.id() as i32;
    cg.add_process(pid).unwrap();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Cpus_allowed_list:") && l.trim_end().ends_with("\t0")),
        "{status}"
    );
    cg.remove().unwrap();
    child.wait().unwrap();
}
