//! The network namespace holder `main` forks before the command line is parsed (a plain
//! `rcrun run` as root, launch/early_net.rs) never outlives rcrun: not when the run works, not
//! when clap rejects the command line or prints help, not when the run fails before it starts a
//! container, and not when the parsed flags say the run wants no holder.
//!
//! This test process makes itself a child subreaper (prctl(2) PR_SET_CHILD_SUBREAPER), so a
//! process rcrun leaves behind becomes our child when rcrun exits, alive or a zombie, and
//! `waitpid(-1, WNOHANG)` finds it. One test in its own binary: the subreaper would collect the
//! orphans of any other test running beside it.

use std::path::Path;
use std::process::Command;
mod common;
use common::{busybox_image, is_root, rcrun_bin, skip, staging};

/// Children of this process other than the ones `Command::output` reaped: what rcrun left. A
/// child still alive is given half a second to end (a leaked holder dies of PR_SET_PDEATHSIG
/// when rcrun exits) and is reported as it ends, or as still running.
fn leftovers() -> Vec<String> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let mut found = Vec::new();
    let mut patience = 10;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if patience > 0 => {
                patience -= 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Ok(WaitStatus::StillAlive) => {
                found.push("a process still running".to_string());
                return found;
            }
            Ok(ended) => found.push(format!("{ended:?}")),
            Err(_) => return found, // ECHILD: none left
        }
    }
}

fn rcrun(store: &Path, args: &[&str]) -> std::process::Output {
    Command::new(rcrun_bin())
        .arg("--root")
        .arg(store)
        .args(args)
        .output()
        .expect("run rcrun")
}

#[test]
fn the_early_network_holder_never_outlives_rcrun() {
    if !is_root() {
        return skip("the early network namespace holder is forked as real root only");
    }
    // SAFETY: prctl with integer arguments; it changes only who reaps this process's orphans.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(r, 0, "PR_SET_CHILD_SUBREAPER");
    let image = busybox_image();
    let image = image.to_str().unwrap();
    let store = staging().join("prefork-store");
    let missing = staging().join("no-such-image.tar");
    let missing = missing.to_str().unwrap();

    // The first run fills the store, and its detached syncer (unpack/mod.rs, step 6) outlives
    // it by design: wait for it before counting what the runs leave.
    let out = rcrun(&store, &["run", image, "true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the store's syncer did not end within 30 s"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(_) => {}
            Err(_) => break, // ECHILD: it ended
        }
    }
    // The argv shape of every case below is a plain run: main forks the holder for it. The
    // narration of a working (warm) run shows that it did.
    let out = rcrun(&store, &["run", "--explain", image, "true"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("(before the command line was parsed)"),
        "the holder was not forked before parsing:\n{said}"
    );
    assert_eq!(leftovers(), Vec::<String>::new(), "after a run that worked");

    let cases: [(&str, &[&str], i32); 5] = [
        ("a run that worked", &["run", image, "true"], 0),
        (
            "a flag clap rejects",
            &["run", "--no-such-flag", image, "true"],
            125,
        ),
        ("`run --help`", &["run", "--help"], 0),
        ("an image that is not there", &["run", missing, "true"], 125),
        (
            "a container whose command is not found",
            &["run", image, "/no/such/command"],
            127,
        ),
    ];
    for (what, args, code) in cases {
        let out = rcrun(&store, args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(leftovers(), Vec::<String>::new(), "after {what}");
    }
    // Flags that make `run` skip the early holder, so main forks none; the run itself is the
    // usual one (its own namespace helpers, if any, are its business and checked elsewhere).
    for args in [
        ["run", "--network", "host", image, "true"],
        ["run", "--name", "prefork-named", image, "true"],
    ] {
        let out = rcrun(&store, &args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(leftovers(), Vec::<String>::new(), "after {args:?}");
    }
    let _ = rcrun(&store, &["rm", "prefork-named"]);
}
