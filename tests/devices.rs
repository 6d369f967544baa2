//! The device policy, end to end: as root every container gets Docker's rule set (a node that
//! container root makes with CAP_MKNOD cannot be opened unless the policy allows it), `--device`
//! adds a node and its rule, `--privileged` allows everything; rootless the kernel refuses mknod
//! and `--device` binds the host's node. The kmsg canary shows whether a write reached the host's
//! kernel log. (The full attack matrix — six devices at four places, every mode — is
//! tests/attacks.rs.)

mod common;
use common::*;

use std::path::Path;

/// A line nobody else writes to the kernel log.
fn canary(tag: &str) -> String {
    format!(
        "rcrun-devices-canary-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Whether the host's kernel log holds `line` (read through dmesg, as root).
fn host_kmsg_has(line: &str) -> bool {
    let out = std::process::Command::new("dmesg")
        .output()
        .expect("run dmesg");
    String::from_utf8_lossy(&out.stdout).contains(line)
}

/// `rcrun run [flags] IMAGE sh -c SCRIPT` as `who`, with a store of its own.
fn run(who: Who, case: &Path, flags: &[&str], script: &str) -> std::process::Output {
    let store = case.join("store");
    let image = busybox_image();
    let mut args: Vec<&std::ffi::OsStr> = vec![os("--root"), store.as_os_str(), os("run")];
    args.extend(flags.iter().map(|f| os(f)));
    args.extend([image.as_os_str(), os("sh"), os("-c"), os(script)]);
    rcrun(who, &args)
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn root_default_policy_denies_opening_what_container_root_creates() {
    if !is_root() {
        return skip("device policy as root: needs real root");
    }
    let case = case_dir("devices-default", Who::Root);
    let line = canary("default");
    // mknod is allowed (m on every node, as Docker); open is not, so the write never happens.
    let o = run(
        Who::Root,
        &case,
        &[],
        &format!(
            "mknod /tmp/k c 1 11 && echo mknod-ok; echo {line} > /tmp/k || echo open-refused; \
             mknod /dev/sda-like b 8 0 && (head -c1 /dev/sda-like >/dev/null 2>&1 || echo block-refused); \
             echo ok > /dev/null && echo null-ok"
        ),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        stdout(&o).lines().collect::<Vec<_>>(),
        ["mknod-ok", "open-refused", "block-refused", "null-ok"],
        "{}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Operation not permitted"),
        "the device cgroup answers EPERM: {}",
        text(&o)
    );
    assert!(
        !host_kmsg_has(&line),
        "the container wrote into the host's kernel log"
    );
}

#[test]
fn device_flag_creates_the_node_and_allows_only_its_permissions() {
    for who in modes("device_flag") {
        let case = case_dir("devices-flag", who);
        let o = run(
            who,
            &case,
            &["--device", "/dev/null:/dev/mynull", "--device", "/dev/zero:/opt/z:r"],
            "echo x > /dev/mynull && echo null-written; head -c 4 /opt/z | od -An -tx1 | tr -d ' '; \
             stat -c '%F %t:%T' /dev/mynull",
        );
        assert_eq!(o.status.code(), Some(0), "{who:?}: {}", text(&o));
        let out = stdout(&o);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "null-written", "{who:?}: {}", text(&o));
        assert_eq!(lines[1], "00000000", "{who:?}: {}", text(&o));
        assert_eq!(
            lines[2],
            "character special file 1:3",
            "{who:?}: {}",
            text(&o)
        );
        if who == Who::Root {
            // r only, on a node the defaults do not allow: reading works, writing is refused.
            // (Reading the kernel log also needs CAP_SYSLOG: dmesg_restrict.)
            let o = run(
                who,
                &case,
                &["--device", "/dev/kmsg:/dev/k2:r", "--cap-add", "SYSLOG"],
                "head -c1 /dev/k2 >/dev/null && echo read; echo x > /dev/k2 || echo write-refused",
            );
            assert_eq!(stdout(&o), "read\nwrite-refused", "{}", text(&o));
            assert!(
                String::from_utf8_lossy(&o.stderr).contains("Operation not permitted"),
                "{}",
                text(&o)
            );
        }
    }
}

#[test]
fn device_flag_for_kmsg_reaches_the_host_log_write_only() {
    if !is_root() {
        return skip("--device /dev/kmsg as root: needs real root");
    }
    let case = case_dir("devices-kmsg", Who::Root);
    let line = canary("granted");
    let o = run(
        Who::Root,
        &case,
        &["--device", "/dev/kmsg:/dev/kmsg:w"],
        &format!("echo {line} > /dev/kmsg && echo written; head -c1 /dev/kmsg >/dev/null || echo read-refused"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(stdout(&o), "written\nread-refused", "{}", text(&o));
    assert!(host_kmsg_has(&line), "the granted write did not arrive");
}

#[test]
fn privileged_allows_every_device() {
    if !is_root() {
        return skip("--privileged device policy: needs real root");
    }
    let case = case_dir("devices-privileged", Who::Root);
    let line = canary("privileged");
    let o = run(
        Who::Root,
        &case,
        &["--privileged"],
        &format!("mknod /tmp/k c 1 11 && echo {line} > /tmp/k && echo written"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(stdout(&o), "written", "{}", text(&o));
    assert!(
        host_kmsg_has(&line),
        "--privileged should allow kmsg, as docker does"
    );
}

#[test]
fn rootless_mknod_is_refused_by_the_kernel() {
    if !is_root() || test_user().is_none() {
        return skip(
            "rootless mknod: needs root (to switch to rcrun-test) and the user rcrun-test",
        );
    }
    let case = case_dir("devices-rootless", Who::User);
    let o = run(
        Who::User,
        &case,
        &[],
        "mknod /tmp/k c 1 11 2>/dev/null && echo made || echo refused; mknod /dev/k c 1 11 2>/dev/null && echo made || echo refused",
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(stdout(&o), "refused\nrefused", "{}", text(&o));
}

#[test]
fn explain_narrates_the_policy() {
    for who in modes("explain_devices") {
        let case = case_dir("devices-explain", who);
        let o = run(
            who,
            &case,
            &["--explain", "--device", "/dev/null:/dev/n2"],
            "true",
        );
        assert_eq!(o.status.code(), Some(0), "{who:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        let line = err
            .lines()
            .find(|l| l.contains(" devices "))
            .unwrap_or_else(|| panic!("{who:?}: no devices line: {err}"));
        if who == Who::Root {
            assert!(
                line.contains("device policy (OCI default, as Docker, plus --device)"),
                "{line}"
            );
            assert!(line.contains("c 1:3 rwm"), "{line}");
            assert!(line.contains("c *:* m"), "{line}");
            assert!(
                err.contains("devices.deny"),
                "the v1 writes are narrated: {err}"
            );
        } else {
            assert!(line.contains("no device cgroup needed"), "{line}");
            assert!(line.contains("/dev/null"), "{line}");
        }
    }
}

#[test]
fn bad_device_flags_are_refused_before_anything_starts() {
    let who = if is_root() { Who::Root } else { Who::User };
    let case = case_dir("devices-bad", who);
    for (flag, want) in [
        ("/etc/passwd", "is not a character or block device"),
        ("/dev/null:/dev/n:rx", "--device \"/dev/null:/dev/n:rx\""),
        ("dev/null", "HOST must be an absolute path"),
        ("/no/such/device", "HOST:"),
    ] {
        let o = run(who, &case, &["--device", flag], "true");
        assert_eq!(o.status.code(), Some(125), "{flag}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(want),
            "{flag}: {}",
            text(&o)
        );
    }
    assert!(
        list(&case.join("store/run")).is_empty(),
        "nothing left in the store's run/"
    );
}
