//! The attack suite, part 2: what a hostile process inside the container tries against the
//! runtime around its own exec — seccomp (compat ABIs, dangerous calls, arguments wider than the
//! kernel reads), descriptors, working directory and /proc/PID/exe of rcrun (CVE-2024-21626,
//! CVE-2019-5736). Modes and probe as in tests/attacks.rs (tests/attack_kit).

mod attack_kit;
mod common;
use attack_kit::*;

// ---- 3. seccomp --------------------------------------------------------------------------

/// i386 calls through int $0x80 and x32 numbers (seccomp filters keyed on the native arch only
/// let them through: runc's and libseccomp's arch handling), the dangerous native calls, and
/// ptrace of a host process.
#[test]
fn seccomp_refuses_compat_abis_and_dangerous_calls() {
    let _serial = serial();
    let mut f = Failures::default();
    let plain = plain_image();
    let mut sleeper = Command::new("sleep").arg("60").spawn().expect("sleep");
    let host_pid = sleeper.id().to_string();
    for mode in all_modes("seccomp") {
        let script =
            format!("attack i386; attack x32; attack sys; attack ptrace {host_pid}; echo done");
        let o = run(mode, &[plain.to_str().unwrap(), "sh", "-c", &script]);
        let stdout = out(&o);
        f.check(
            stdout.contains("done") && stdout.lines().count() > 25,
            "probe ran",
            mode,
            || text(&o),
        );
        for l in stdout
            .lines()
            .filter(|l| l.contains("errno=") || l.ends_with(" ok") || l.contains("killed="))
        {
            let (call, result) = l.rsplit_once(' ').unwrap();
            let refused = matches!(
                result,
                "errno=EPERM" | "errno=EACCES" | "errno=ENOSYS" | "errno=ESRCH"
            ) || result == "killed=31";
            f.check(refused, call, mode, || format!("answered {result}"));
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap_or_default();
    f.host(
        status.contains("TracerPid:\t0"),
        "host sleep untraced and alive",
        || status.lines().take(8).collect::<Vec<_>>().join(" | "),
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    f.finish("seccomp");
}

// ---- 4. fds, cwd, exe --------------------------------------------------------------------

/// Nothing but 0, 1, 2 at exec; a WorkingDir through /proc/self/fd/N or an image symlink never
/// leaves the container (CVE-2024-21626); no container process runs the host's rcrun binary
/// (CVE-2019-5736), --init included.
#[test]
fn fds_cwd_and_exe_stay_inside() {
    let _serial = serial();
    let mut f = Failures::default();
    let plain = plain_image();
    let target = host_target();
    let wd = |n: &str, w: &str, add: Vec<Entry>, remove: &[&str]| {
        image(
            n,
            remove,
            add,
            ConfigSpec {
                working_dir: w.into(),
                ..Default::default()
            },
        )
    };
    let mut wd_images: Vec<(String, PathBuf)> = (3..=8)
        .map(|n| {
            (
                format!("WorkingDir /proc/self/fd/{n}"),
                wd(
                    &format!("wd-fd{n}"),
                    &format!("/proc/self/fd/{n}"),
                    vec![],
                    &[],
                ),
            )
        })
        .collect();
    wd_images.push((
        "WorkingDir via an absolute symlink to a host dir".into(),
        wd(
            "wd-abs",
            "/work",
            vec![Entry::symlink("work", target.display().to_string())],
            &[],
        ),
    ));
    wd_images.push((
        "WorkingDir via a ../ symlink to a host dir".into(),
        wd(
            "wd-rel",
            "/work",
            vec![Entry::symlink("work", climb(&target))],
            &[],
        ),
    ));
    for mode in all_modes("fds_cwd_exe") {
        for extra in [&[][..], &["--init"][..]] {
            let mut args: Vec<&str> = extra.to_vec();
            args.extend([plain.to_str().unwrap(), "attack", "fds"]);
            let o = run(mode, &args);
            f.check(
                out(&o).trim() == "fds 0 1 2",
                &format!("fds at exec {extra:?}"),
                mode,
                || text(&o),
            );
        }
        for (case, img) in &wd_images {
            let o = run(
                mode,
                &[img.to_str().unwrap(), "sh", "-c", "attack cwd; ls -a"],
            );
            let stdout = out(&o);
            let refused = o.status.code() == Some(125) && err(&o).contains("working directory");
            let inside = o.status.success()
                && stdout
                    .lines()
                    .next()
                    .is_some_and(|l| l.starts_with("cwd /") && !l.contains("unreachable"))
                && !stdout.contains("host-canary-file");
            f.check(refused || inside, case, mode, || text(&o));
        }
        let host_bin = host_binary_id();
        for extra in [
            &[][..],
            &["--init"][..],
            &["--init", "--cap-add", "SYS_PTRACE"][..],
        ] {
            let mut args: Vec<&str> = extra.to_vec();
            args.extend([plain.to_str().unwrap(), "attack", "exe"]);
            let o = run(mode, &args);
            let stdout = out(&o);
            f.check(
                o.status.success() && stdout.contains("exe 1 "),
                &format!("exe probe {extra:?}"),
                mode,
                || text(&o),
            );
            // Judged by the file behind /proc/PID/exe, not by the name: a process mid-execve
            // of the sealed init still calls itself rcrun, and a copy could be named anything.
            for l in stdout.lines() {
                f.check(
                    l.split(' ').nth(3) != Some(host_bin.as_str()),
                    &format!("no process inside runs the host's rcrun {extra:?}"),
                    mode,
                    || l.to_string(),
                );
            }
        }
    }
    f.finish("fds_cwd_exe");
}

/// `DEV:INO` of the rcrun binary under test, as stat(2) inside a container reports it.
fn host_binary_id() -> String {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(bin()).unwrap();
    format!("{}:{}", m.dev(), m.ino())
}

/// CVE-2019-5736 raced: the command opens /proc/1/exe 200 times from its first instruction, then
/// every /proc/PID/exe, 20 rounds, and compares each file with the host's rcrun binary. With
/// `--init` the command is PID 2, forked by PID 1 before PID 1 becomes the sealed init: it must
/// not run until then. Without it the command is PID 1 itself, after its own execve. 300 starts
/// each, in every mode, four at a time: the contention makes the window real (before the start
/// gate, 35 of 400 such starts of the old binary opened it; one at a time on a quiet machine, 1
/// in 200). A single hit is a failure.
#[test]
fn no_start_lets_the_container_open_the_host_binary() {
    let _serial = serial();
    let mut f = Failures::default();
    let plain = plain_image();
    let host_bin = host_binary_id();
    const STARTS: usize = 300;
    const AT_ONCE: usize = 4;
    for mode in all_modes("exe_race") {
        for extra in [&["--init"][..], &[][..]] {
            let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            args.extend(
                [
                    plain.to_str().unwrap(),
                    "attack",
                    "exe-scan",
                    &host_bin,
                    "20",
                ]
                .map(String::from),
            );
            // (hits, failed starts, opens, first problem) per worker
            let results: Vec<(u64, u64, u64, Option<String>)> = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..AT_ONCE)
                    .map(|_| {
                        let args = &args;
                        scope.spawn(move || {
                            let args: Vec<&str> = args.iter().map(String::as_str).collect();
                            let (mut hits, mut failed, mut opened) = (0, 0, 0u64);
                            let mut first_problem = None;
                            for _ in 0..STARTS / AT_ONCE {
                                let o = run(mode, &args);
                                let stdout = out(&o);
                                let summary = stdout.lines().find(|l| l.starts_with("exe-scan "));
                                let field = |k: &str| {
                                    summary
                                        .and_then(|l| l.split(' ').find_map(|w| w.strip_prefix(k)))
                                        .and_then(|v| v.parse::<u64>().ok())
                                };
                                match (o.status.success(), field("hits="), field("opened=")) {
                                    (true, Some(0), Some(n)) => opened += n,
                                    (true, Some(_), _) => {
                                        hits += 1;
                                        first_problem.get_or_insert_with(|| text(&o));
                                    }
                                    _ => {
                                        failed += 1;
                                        first_problem.get_or_insert_with(|| text(&o));
                                    }
                                }
                            }
                            (hits, failed, opened, first_problem)
                        })
                    })
                    .collect();
                workers.into_iter().map(|w| w.join().unwrap()).collect()
            });
            let hits: u64 = results.iter().map(|r| r.0).sum();
            let failed: u64 = results.iter().map(|r| r.1).sum();
            let opened: u64 = results.iter().map(|r| r.2).sum();
            let first_problem = results.into_iter().find_map(|r| r.3);
            eprintln!(
                "[{}] exe race {extra:?}: {hits} of {STARTS} starts opened the host binary, {failed} failed, {opened} /proc/PID/exe opened in all",
                mode.name
            );
            f.check(
                hits == 0 && failed == 0,
                &format!("exe race {extra:?}: 0 of {STARTS} starts reach the host binary"),
                mode,
                || {
                    format!(
                        "{hits} hit(s), {failed} failed start(s); first: {}",
                        first_problem.unwrap_or_default()
                    )
                },
            );
            // The scan must really look: the probe opens at least its own exe in every round.
            f.check(
                opened >= (STARTS * 20) as u64,
                &format!("exe race {extra:?}: the probe opened /proc/PID/exe"),
                mode,
                || format!("only {opened} opens over {STARTS} starts"),
            );
        }
    }
    f.finish("exe_race");
}

/// The kernel reads socket's family and personality's persona as 32-bit ints, so bits above 32
/// must not change the filter's answer (libseccomp issue 383: Docker and runc let
/// socket(1<<32|AF_VSOCK) through). Docker's profile allows socket families below 38, 39 and
/// above 40, and a list of personalities with PER_LINUX32 but not ADDR_NO_RANDOMIZE.
#[test]
fn seccomp_judges_int_arguments_as_the_kernel_reads_them() {
    let _serial = serial();
    let mut f = Failures::default();
    let plain = plain_image();
    for mode in all_modes("seccomp_width") {
        let o = run(mode, &[plain.to_str().unwrap(), "attack", "wide"]);
        let stdout = out(&o);
        let answer = |call: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(call)?.strip_prefix(' '))
                .map(str::to_string)
        };
        f.check(
            o.status.success() && stdout.lines().count() == 10,
            "probe ran",
            mode,
            || text(&o),
        );
        for (call, want_refused) in [
            ("socket(AF_VSOCK)", true),
            ("socket(AF_ALG)", true),
            ("socket(AF_UNIX)", false),
            ("personality(PER_LINUX32)", false),
            ("personality(ADDR_NO_RANDOMIZE)", true),
        ] {
            let narrow = answer(call);
            let wide = answer(&call.replace('(', "(1<<32|"));
            let refused = |a: &Option<String>| a.as_deref() == Some("errno=EPERM");
            f.check(refused(&narrow) == want_refused, call, mode, || {
                format!("answered {narrow:?}")
            });
            f.check(
                refused(&wide) == want_refused,
                &call.replace('(', "(1<<32|"),
                mode,
                || format!("answered {wide:?}, the call without the high bit {narrow:?}"),
            );
        }
    }
    f.finish("seccomp_width");
}
