//! The launcher's three calls driven one at a time, through the library: `spawn` builds the
//! container up to its start gate and the command has not run (the process is still a copy of
//! this program, blocked); `start` opens the gate and the command runs; `wait` reports its exit
//! status. A container spawned but never started is killed and reaped when dropped.
//!
//! Its own `main` (harness = false): the launcher clones a fork-like child that keeps running
//! Rust code, which is only safe from a single-threaded process, and the test harness runs tests
//! on threads.

use rcrun::host::Privilege;
use rcrun::launch::explain::Explain;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn main() {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        eprintln!(
            "\n*** SKIPPED launch_phases: no /bin/busybox (apt-get install busybox-static) ***"
        );
        return;
    }
    let scratch = tempdir("scratch");
    let bundle = tempdir("bundle");
    make_rootfs(&bundle.join("rootfs"), busybox);

    println!("test spawn_builds_up_to_the_gate_and_start_runs_the_command ...");
    spawn_builds_up_to_the_gate_and_start_runs_the_command(&bundle, &scratch);
    println!("ok");
    println!("test a_spawned_container_never_started_is_killed_when_dropped ...");
    a_spawned_container_never_started_is_killed_when_dropped(&bundle, &scratch);
    println!("ok");
    println!("test a_created_container_waits_on_its_exec_fifo_without_its_creator ...");
    a_created_container_waits_on_its_exec_fifo_without_its_creator(&bundle, &scratch);
    println!("ok");
    println!("test a_failure_before_the_gate_reaches_start_and_wait ...");
    a_failure_before_the_gate_reaches_start_and_wait(&bundle, &scratch);
    println!("ok");

    let _ = std::fs::remove_dir_all(&bundle);
    let _ = std::fs::remove_dir_all(&scratch);
}

fn spawn_builds_up_to_the_gate_and_start_runs_the_command(bundle: &Path, scratch: &Path) {
    let plan = plan(bundle, scratch, &["/bin/busybox", "sh", "-c", "exit 7"]);
    let ex = Explain::new(false);
    let mut spawned = rcrun::launch::spawn(&plan, &ex).expect("spawn");
    spawned.until_created().expect("until_created");
    let pid = spawned.pid();

    // At the gate: still a copy of this test program, asleep, and it stays there. It reported
    // "created" just before it blocks: on a busy machine it may still be running for a moment.
    let ours = std::fs::read("/proc/self/cmdline").unwrap();
    wait_until_asleep(pid);
    for _ in 0..5 {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert_eq!(
            cmdline, ours,
            "before start, pid {pid} must not run the container's command yet"
        );
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let state = stat.rsplit_once(") ").unwrap().1.chars().next().unwrap();
        assert_eq!(
            state, 'S',
            "pid {pid} should be blocked at its start gate: {stat}"
        );
        if let Ok(wchan) = std::fs::read_to_string(format!("/proc/{pid}/wchan")) {
            // Readable with ptrace access (root here); "0" when the kernel hides it.
            if wchan != "0" {
                // pipe_read, or anon_pipe_read since Linux 6.16.
                assert!(
                    wchan.ends_with("pipe_read"),
                    "pid {pid} should wait on its go pipe, waits in {wchan}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(40));
    }

    let running = rcrun::launch::start(spawned, &ex).expect("start");
    assert_eq!(running.pid, pid);
    let outcome = rcrun::launch::wait(running, &ex).expect("wait");
    assert!(outcome.failure.is_none(), "{:?}", outcome.failure);
    assert_eq!(outcome.status, 7, "the command's own exit status");
}

fn a_spawned_container_never_started_is_killed_when_dropped(bundle: &Path, scratch: &Path) {
    let plan = plan(bundle, scratch, &["/bin/busybox", "true"]);
    let ex = Explain::new(false);
    let mut spawned = rcrun::launch::spawn(&plan, &ex).expect("spawn");
    spawned.until_created().expect("until_created");
    let pid = spawned.pid();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(spawned);
    // Killed and reaped, not left running or as a zombie.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} left behind after its Spawned was dropped"
    );
}

/// An OCI `create`: the gate is a fifo another process opens later; the Spawned is detached
/// (nothing of the creator holds the child any more) and the child stays blocked, still a copy
/// of this program, until someone opens the fifo for reading; then it runs its command.
fn a_created_container_waits_on_its_exec_fifo_without_its_creator(bundle: &Path, scratch: &Path) {
    let fifo = scratch.join("exec.fifo");
    let _ = std::fs::remove_file(&fifo);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622)).unwrap();
    let mut plan = plan(bundle, scratch, &["/bin/busybox", "sh", "-c", "exit 9"]);
    plan.die_with_rcrun = false;
    plan.start_gate = rcrun::launch::StartGate::ExecFifo(fifo.clone());
    let ex = Explain::new(false);
    let mut spawned = rcrun::launch::spawn(&plan, &ex).expect("spawn");
    spawned.until_created().expect("until_created");
    let pid = spawned.detach();
    // Killed if an assertion below fails: it would otherwise wait on the fifo forever.
    struct KillOnPanic(nix::unistd::Pid);
    impl Drop for KillOnPanic {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(self.0, None);
            }
        }
    }
    let _guard = KillOnPanic(pid);
    let ours = std::fs::read("/proc/self/cmdline").unwrap();
    wait_until_asleep(pid);
    assert_eq!(
        std::fs::read(format!("/proc/{pid}/cmdline")).unwrap(),
        ours,
        "created, not started: pid {pid} must not run its command yet"
    );
    if let Ok(wchan) = std::fs::read_to_string(format!("/proc/{pid}/wchan")) {
        if wchan != "0" {
            assert!(
                // fs/pipe.c: fifo_open waits in wait_for_partner for a reader.
                wchan == "wait_for_partner",
                "pid {pid} should wait opening its exec fifo, waits in {wchan}"
            );
        }
    }
    // `rcrun start`: open for reading, read the byte the child writes, and it execs.
    let mut byte = [0u8; 1];
    let mut f = std::fs::File::open(&fifo).expect("open the exec fifo for reading");
    std::io::Read::read_exact(&mut f, &mut byte).expect("the created child writes one byte");
    assert_eq!(&byte, b"0");
    let status = nix::sys::wait::waitpid(pid, None).unwrap();
    assert_eq!(
        status,
        nix::sys::wait::WaitStatus::Exited(pid, 9),
        "the started command's own status"
    );
}

fn a_failure_before_the_gate_reaches_start_and_wait(bundle: &Path, scratch: &Path) {
    let mut plan = plan(bundle, scratch, &["/bin/busybox", "true"]);
    plan.cwd = "/bin/busybox/not-a-dir".into();
    let ex = Explain::new(false);
    let mut spawned = rcrun::launch::spawn(&plan, &ex).expect("spawn");
    spawned.until_created().expect("until_created");
    let running = rcrun::launch::start(spawned, &ex).expect("start");
    let outcome = rcrun::launch::wait(running, &ex).expect("wait");
    let msg = outcome.failure.expect("the cwd failure is reported");
    assert_eq!(outcome.status, rcrun::EXIT_RCRUN_FAILED, "{msg}");
    assert!(msg.contains("not-a-dir"), "{msg}");
}

/// Waits (up to 5 s) until `pid` sleeps in the kernel (state S): past its report, blocked.
fn wait_until_asleep(pid: nix::unistd::Pid) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let state = stat.rsplit_once(") ").unwrap().1.chars().next().unwrap();
        if state == 'S' {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pid {pid} never blocked at its start gate: {stat}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn plan(bundle: &Path, scratch: &Path, argv: &[&str]) -> rcrun::launch::StartupPlan {
    let privilege = Privilege::detect();
    let rootless = (!privilege.is_real_root()).then(|| {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    });
    let mut spec = rcrun::spec::starter(rootless);
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(argv.iter().map(|s| s.to_string()).collect()));
    process.set_terminal(Some(false));
    spec.set_process(Some(process));
    let mut root = spec.root().clone().unwrap();
    root.set_readonly(Some(false));
    spec.set_root(Some(root));
    let id = format!("phases-{}", std::process::id());
    rcrun::launch::plan::compile(
        &spec,
        &rcrun::launch::plan::Extras::default(),
        &rcrun::launch::plan::HostFacts {
            privilege: &privilege,
            bundle,
            id: &id,
            scratch,
        },
    )
    .expect("plan from the starter spec")
    .plan
}

fn make_rootfs(rootfs: &Path, busybox: &Path) {
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
}

fn tempdir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rcrun-phases-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
