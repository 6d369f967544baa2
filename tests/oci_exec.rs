//! `rcrun exec` (runc's command line) into a running container, as root, as the plain user
//! rcrun-test and under `unshare -Ur`: the new process joins the container's namespaces, root
//! and cgroup and gets its capabilities, no_new_privs and seccomp filter; exit statuses pass
//! through; `--process FILE`, `-e`, `--cwd`, `-u`, `-d` and `--pid-file` work as runc's; a
//! stopped container is refused; and no container process ever sees the host's rcrun binary
//! through /proc/PID/exe (CVE-2019-5736). Every case ends with `delete --force` leaving nothing.
//!
//! The starter config's root is read-only: what the processes write goes to /dev/shm.

mod common;
use common::oci::*;
use common::*;

use serde_json::json;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

const READY: &str = "echo ready; exec sleep 300";
type R = Result<(), String>;

/// Creates and starts container `id`, waits for its `ready`, and returns its cgroups.
fn running(c: &Case, id: &str) -> Result<Vec<PathBuf>, String> {
    let (code, out) = c.create(id, &[]);
    if code != Some(0) {
        return Err(format!("create: {code:?}: {out}"));
    }
    let cgroups = c.cgroups(id);
    expect_ok(&c.rcrun(&["start", id]), "start")?;
    c.wait_output("ready")?;
    Ok(cgroups)
}

fn finish(c: &Case, id: &str, cgroups: &[PathBuf]) -> R {
    expect_ok(&c.rcrun(&["delete", "--force", id]), "delete --force")?;
    c.assert_gone(id, cgroups)
}

/// `rcrun --root STATE exec ARGS...`.
fn exec(c: &Case, args: &[&str]) -> Output {
    let mut all = vec!["exec"];
    all.extend_from_slice(args);
    c.rcrun(&all)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `exec` that must succeed and print exactly `want` (trimmed).
fn exec_prints(c: &Case, args: &[&str], want: &str) -> R {
    let o = exec(c, args);
    expect_ok(&o, &format!("exec {args:?}"))?;
    if stdout(&o).trim() != want {
        return Err(format!("exec {args:?}: want {want:?}: {}", text(&o)));
    }
    Ok(())
}

fn in_every_mode(test: &str, script: &str, f: fn(&Case) -> R) {
    each_mode(test, json!(["sh", "-c", script]), Some(SIBLING_USERNS), f);
}

/// What the exec'd shell ($$) reports next to the container's first process (PID 1), one
/// `key: value` line each.
const PROBE: &str = r#"echo "cmdline: $(tr '\0' ' ' < /proc/1/cmdline)"
echo "hostname: $(hostname)"
echo "marker: $(cat /etc/rcrun-exec-marker 2>&1)"
for k in CapEff CapBnd NoNewPrivs Seccomp; do
  echo "self-$k: $(grep "^$k:" /proc/$$/status)"
  echo "init-$k: $(grep "^$k:" /proc/1/status)"
done
echo "self-cgroup: $(tr '\n' ' ' < /proc/$$/cgroup)"
echo "init-cgroup: $(tr '\n' ' ' < /proc/1/cgroup)"
for n in mnt uts ipc net cgroup pid; do
  echo "self-ns-$n: $(readlink /proc/$$/ns/$n 2>/dev/null)"
  echo "init-ns-$n: $(readlink /proc/1/ns/$n 2>/dev/null)"
done"#;

fn joins(c: &Case) -> R {
    let id = format!("join-{}", c.name);
    let marker = format!("marker-{}", c.name);
    let path = c.bundle.join("rootfs/etc/rcrun-exec-marker");
    std::fs::write(&path, format!("{marker}\n"))
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    publish(&path);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.bundle.join("config.json")).unwrap()).unwrap();
    let hostname = config["hostname"].as_str().unwrap_or_default().to_string();
    let cgroups = running(c, &id)?;

    let o = exec(c, &[&id, "sh", "-c", PROBE]);
    expect_ok(&o, "exec of the probe")?;
    let out = stdout(&o);
    let got: BTreeMap<&str, &str> = out
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k, v.trim()))
        .collect();
    let get = |k: &str| got.get(k).copied().unwrap_or_default();
    // PID 1 is the container's `sleep 300`: the exec'd process is in its pid namespace.
    if !get("cmdline").starts_with("sleep 300") {
        return Err(format!("/proc/1/cmdline is not the container's: {out}"));
    }
    if get("hostname") != hostname || get("marker") != marker {
        return Err(format!(
            "want the hostname {hostname:?} and /etc/rcrun-exec-marker {marker:?}: {out}"
        ));
    }
    for k in ["CapEff", "CapBnd", "NoNewPrivs", "Seccomp"] {
        let (mine, init) = (get(&format!("self-{k}")), get(&format!("init-{k}")));
        if mine.is_empty() || mine != init {
            return Err(format!("{k}: exec'd {mine:?}, PID 1 {init:?}: {out}"));
        }
    }
    // Rootless, rcrun puts neither process in a cgroup of its own: nothing to compare.
    if c.mode == Mode::Root && get("self-cgroup") != get("init-cgroup") {
        return Err(format!("not in the container's cgroup: {out}"));
    }
    for n in ["mnt", "uts", "ipc", "net", "cgroup", "pid"] {
        let (mine, init) = (get(&format!("self-ns-{n}")), get(&format!("init-ns-{n}")));
        if mine.is_empty() || init.is_empty() {
            skip(&format!(
                "oci exec [{}]: a /proc/PID/ns/{n} link unreadable inside, not compared",
                c.name
            ));
        } else if mine != init {
            return Err(format!("{n} namespace: exec'd {mine}, PID 1 {init}: {out}"));
        }
    }
    finish(c, &id, &cgroups)
}

#[test]
fn exec_joins_the_container() {
    in_every_mode("exec-join", READY, joins);
}

fn status_env_cwd_process(c: &Case) -> R {
    let id = format!("st-{}", c.name);
    let cgroups = running(c, &id)?;
    let o = exec(c, &[&id, "sh", "-c", "exit 7"]);
    if o.status.code() != Some(7) {
        return Err(format!("exec sh -c 'exit 7': want 7: {}", text(&o)));
    }
    let o = exec(c, &[&id, "sh", "-c", "kill -9 $$"]);
    if o.status.code() != Some(128 + 9) {
        return Err(format!(
            "exec of a process killed by KILL: want 137: {}",
            text(&o)
        ));
    }
    let o = exec(c, &[&id, "nosuch-cmd"]);
    if o.status.code() != Some(127) || !String::from_utf8_lossy(&o.stderr).contains("not found") {
        return Err(format!(
            "exec of a missing command: want 127 and \"not found\": {}",
            text(&o)
        ));
    }
    let args = [
        "-e",
        "FOO=bar",
        "--cwd",
        "/tmp",
        &id,
        "sh",
        "-c",
        "echo $FOO; pwd",
    ];
    exec_prints(c, &args, "bar\n/tmp")?;

    let file = c.dir.join("process.json");
    let process = json!({
        "args": ["sh", "-c", "echo from-process-file"],
        "cwd": "/",
        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        "user": {"uid": 0, "gid": 0},
        "terminal": false,
    });
    std::fs::write(&file, serde_json::to_vec_pretty(&process).unwrap()).unwrap();
    publish(&file);
    exec_prints(
        c,
        &["--process", file.to_str().unwrap(), &id],
        "from-process-file",
    )?;
    if c.mode == Mode::Root {
        exec_prints(
            c,
            &["-u", "1000:1000", &id, "sh", "-c", "id -u; id -g"],
            "1000\n1000",
        )?;
    }
    finish(c, &id, &cgroups)
}

#[test]
fn exec_status_env_cwd_and_process_file() {
    in_every_mode("exec-status", READY, status_env_cwd_process);
}

/// `rcrun exec -d ARGS...` with its output into a file (the detached process keeps it open):
/// it must return 0 within 10 s.
fn exec_detached(c: &Case, args: &[&str]) -> R {
    let log = c.dir.join("exec-d.out");
    let out_file = File::create(&log).unwrap();
    let mut all = vec![os("--root"), c.state.as_os_str(), os("exec"), os("-d")];
    all.extend(args.iter().map(|a| os(a)));
    let mut child = rcrun_as_cmd(c.mode, &all)
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().unwrap())
        .stderr(out_file)
        .spawn()
        .expect("rcrun exec -d");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let out = std::fs::read_to_string(&log).unwrap_or_default();
            return match st.code() {
                Some(0) => Ok(()),
                code => Err(format!("exec -d: status {code:?}: {out}")),
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("exec -d did not return within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn detach(c: &Case) -> R {
    let id = format!("det-{}", c.name);
    let cgroups = running(c, &id)?;
    let pid_file = c.dir.join("exec.pid");
    let script = "echo detached-ran > /dev/shm/x; exec sleep 300";
    let pf = pid_file.to_str().unwrap();
    exec_detached(c, &["--pid-file", pf, &id, "sh", "-c", script])?;
    let recorded = std::fs::read_to_string(&pid_file).unwrap_or_default();
    let pid: i64 = recorded.trim().parse().unwrap_or(0);
    if pid <= 1 {
        return Err(format!("--pid-file holds {recorded:?}, want a pid"));
    }
    if c.mode == Mode::Root {
        // The host pid of the exec'd process, which has exec'd (busybox's sh or sleep).
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map_err(|e| format!("--pid-file {pid}: /proc/{pid}/exe: {e}"))?;
        if !exe.to_string_lossy().contains("busybox") {
            return Err(format!("--pid-file {pid}: runs {}", exe.display()));
        }
    }
    // It runs on after `exec -d` returned.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let o = exec(c, &[&id, "cat", "/dev/shm/x"]);
        if stdout(&o).trim() == "detached-ran" {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the detached process wrote nothing: {}", text(&o)));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    finish(c, &id, &cgroups)?;
    if c.mode == Mode::Root {
        process_gone(pid).map_err(|e| format!("after delete --force: {e}"))?;
    }
    Ok(())
}

#[test]
fn exec_detach_and_pid_file() {
    in_every_mode("exec-detach", READY, detach);
}

fn stopped(c: &Case) -> R {
    let id = format!("stop-{}", c.name);
    let cgroups = running(c, &id)?;
    expect_ok(&c.rcrun(&["kill", &id, "KILL"]), "kill KILL")?;
    c.wait_status(&id, "stopped")?;
    expect_fail(
        &exec(c, &[&id, "true"]),
        "exec into a stopped container",
        "cannot exec in a stopped container",
    )?;
    finish(c, &id, &cgroups)
}

#[test]
fn exec_into_a_stopped_container_fails() {
    in_every_mode("exec-stopped", READY, stopped);
}

/// The container's first process: it reports its own exe, then reads every process's exe,
/// forever, and reports any that names rcrun (the host binary of an exec'd process not yet
/// past its execve).
const ATTACKER: &str = r#"echo "ready $(readlink /proc/$$/exe)"
while :; do
  for p in /proc/[0-9]*; do
    l=$(readlink $p/exe 2>/dev/null)
    case "$l" in *rcrun*) echo "LEAK $p $l";; esac
  done
done"#;

fn no_host_binary(c: &Case) -> R {
    let id = format!("cve-{}", c.name);
    let cgroups = running(c, &id)?;
    // The attacker can read an exe link (its own), and so can an exec'd process (PID 1's).
    if !c.output().contains("ready /bin/busybox") {
        return Err(format!(
            "the attacker cannot read its own exe: {:?}",
            c.output()
        ));
    }
    let o = exec(c, &[&id, "readlink", "/proc/1/exe"]);
    expect_ok(&o, "exec readlink /proc/1/exe")?;
    if !stdout(&o).contains("busybox") {
        return Err(format!("readlink /proc/1/exe: {}", text(&o)));
    }
    for i in 0..40 {
        expect_ok(&exec(c, &[&id, "true"]), &format!("exec true #{}", i + 1))?;
    }
    let out = c.output();
    if out.contains("LEAK") {
        return Err(format!("a container process saw the host binary: {out}"));
    }
    finish(c, &id, &cgroups)
}

#[test]
fn exec_never_exposes_the_host_binary() {
    in_every_mode("exec-exe", ATTACKER, no_host_binary);
}

/// Under `unshare -Ur`, as a CI job runs: create, start, exec and delete from one shell in one
/// user namespace. The exec sees PID 1 and passes its status through.
#[test]
fn exec_in_one_unshare_session() {
    if !bundle_modes("oci exec under unshare")
        .iter()
        .any(|(m, _)| *m == Mode::Unshare)
    {
        return;
    }
    let c = Case::new(
        "exec-unshare",
        Mode::Unshare,
        "unshare",
        json!(["sh", "-c", "echo ready; exec sleep 300"]),
    );
    let script = format!(
        "R='{bin} --root {state}'; $R create -b {bundle} u1 > {out} 2>&1 < /dev/null || exit 90; \
         $R start u1 || exit 91; \
         i=0; until grep -q ready {out}; do i=$((i+1)); [ $i -gt 200 ] && exit 92; sleep 0.05; done; \
         $R exec u1 sh -c 'exit 7'; echo \"status=$?\"; \
         echo \"pid1=$($R exec u1 cat /proc/1/cmdline | tr '\\0' ' ')\"; \
         $R exec u1 nosuch-cmd 2>/dev/null; echo \"missing=$?\"; \
         $R delete --force u1; echo \"deleted=$?\"",
        bin = rcrun_bin().display(),
        state = c.state.display(),
        bundle = c.bundle.display(),
        out = c.dir.join("session-out").display(),
    );
    let mut cmd = if is_root() {
        let mut cmd = std::process::Command::new("runuser");
        cmd.args(["-u", TEST_USER, "--", "unshare", "-Ur", "sh", "-c", &script]);
        cmd
    } else {
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(["-Ur", "sh", "-c", &script]);
        cmd
    };
    let o = cmd.current_dir(staging()).output().expect("unshare");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let want = ["status=7", "pid1=sleep 300", "missing=127", "deleted=0"];
    let missing: Vec<_> = want.iter().filter(|w| !out.contains(*w)).collect();
    let r = if o.status.success() && missing.is_empty() {
        c.assert_gone("u1", &[])
    } else {
        Err(format!("missing {missing:?}: {}", text(&o)))
    };
    c.cleanup();
    r.unwrap();
}

/// `--preserve-fds N`: descriptor 3 of rcrun (a file here) reaches the container's command and
/// an exec'd process; asking for one that is not open fails before anything starts.
#[test]
fn preserve_fds_passes_descriptors_on() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let mut failures = Vec::new();
    for (mode, name) in bundle_modes("oci --preserve-fds") {
        if mode == Mode::Unshare {
            skip("oci --preserve-fds [unshare]: each command in its own unshare -Ur; see exec_in_one_unshare_session");
            continue;
        }
        let c = Case::new(
            "preserve",
            mode,
            name,
            json!([
                "sh",
                "-c",
                "echo \"got $(cat <&3)\"; echo ready; exec sleep 300"
            ]),
        );
        let r = (|| -> R {
            let passed = c.dir.join("passed");
            std::fs::write(&passed, "passed-through").unwrap();
            let run_with_fd3 = |args: &[&str]| -> Output {
                let file = File::open(&passed).unwrap();
                let fd = file.as_raw_fd();
                let mut all = vec![std::ffi::OsStr::new("--root"), c.state.as_os_str()];
                all.extend(args.iter().map(std::ffi::OsStr::new));
                let mut cmd = rcrun_as_cmd(c.mode, &all);
                // SAFETY: dup2 in the forked child before exec: fd 3 becomes the file, without
                // FD_CLOEXEC, as an engine hands it over.
                unsafe {
                    cmd.pre_exec(move || {
                        // dup2(3, 3) would keep FD_CLOEXEC: clear it either way.
                        if libc::dup2(fd, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                let out = File::create(c.dir.join(format!("cmd-{}", args[0]))).unwrap();
                let o = cmd
                    .stdin(Stdio::null())
                    .stdout(out.try_clone().unwrap())
                    .stderr(out)
                    .output()
                    .unwrap();
                drop(file);
                o
            };
            let id = format!("pf-{}", c.name);
            let bundle = c.bundle.to_str().unwrap().to_string();
            let o = run_with_fd3(&["create", "--preserve-fds", "1", "-b", &bundle, &id]);
            if !o.status.success() {
                let log = std::fs::read_to_string(c.dir.join("cmd-create")).unwrap_or_default();
                return Err(format!("create --preserve-fds 1: {:?}: {log}", o.status));
            }
            expect_ok(&c.rcrun(&["start", &id]), "start")?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let log = || std::fs::read_to_string(c.dir.join("cmd-create")).unwrap_or_default();
            while !log().contains("ready") {
                if Instant::now() > deadline {
                    return Err(format!("no ready: {}", log()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !log().contains("got passed-through") {
                return Err(format!("fd 3 did not reach the command: {}", log()));
            }
            let o = run_with_fd3(&["exec", "--preserve-fds", "1", &id, "sh", "-c", "cat <&3"]);
            let said = std::fs::read_to_string(c.dir.join("cmd-exec")).unwrap_or_default();
            if !o.status.success() || !said.contains("passed-through") {
                return Err(format!("exec --preserve-fds 1: {:?}: {said}", o.status));
            }
            // Without it, the descriptor stays behind.
            let o = run_with_fd3(&["exec", &id, "sh", "-c", "cat <&3"]);
            if o.status.success() {
                return Err("exec without --preserve-fds passed fd 3 on".into());
            }
            let o = c.rcrun(&["create", "--preserve-fds", "4", "-b", &bundle, "pf-missing"]);
            expect_fail(
                &o,
                "create --preserve-fds 4 without fds 3..6",
                "is not open",
            )?;
            c.assert_gone("pf-missing", &[])?;
            expect_ok(&c.rcrun(&["delete", "--force", &id]), "delete --force")?;
            c.assert_gone(&id, &[])
        })();
        check(&mut failures, name, r);
        c.cleanup();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
