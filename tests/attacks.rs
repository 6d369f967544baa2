//! The runtime-level attack suite: what a hostile image or config tries once rcrun runs it, built
//! in code, run through the real binary in every mode, with the host checked afterwards
//! (canaries). The expected behaviour is a trusted runtime's (runc, crun, Docker): see their
//! advisories named per case.
//!
//! Modes: `root` (real root), `root-userns` (real root, `--userns`), `user` (the plain user
//! rcrun-test, subordinate ids) and `unshare` (rcrun-test inside `unshare -Ur`). A mode that
//! cannot run here is skipped loudly.
//!
//! The checks inside the container are made by a static probe (tests/probe/attack.c) carried in
//! the image. Each test collects every failing (case, mode) and fails once, listing them all.
//! `RCRUN_ATTACKS_BIN=/path/to/rcrun` runs the suite against another build (how the "before"
//! column of the issue note was measured).

mod attack_kit;
mod common;
use attack_kit::*;

// ---- 1. devices --------------------------------------------------------------------------

const DEVICES: &[(&str, u32, u32)] = &[
    ("kmsg", 1, 11),
    ("mem", 1, 1),
    ("port", 1, 4),
    ("tty1", 4, 1),
    ("loop-control", 10, 237),
    ("tun", 10, 200),
];

/// CVE-class: a device node container root makes with CAP_MKNOD (Docker keeps it too) must not
/// open, wherever it is made; the devices cgroup is what stops it (runc/crun/Docker).
#[test]
fn devices_made_or_shipped_in_the_image_cannot_be_opened() {
    let _serial = serial();
    let mut f = Failures::default();
    let image_with_nodes = image(
        "shipped-dev",
        &[],
        vec![
            Entry::dir("evil", 0o755),
            Entry::CharDev {
                path: "evil/kmsg".into(),
                major: 1,
                minor: 11,
                mode: 0o666,
            },
            Entry::CharDev {
                path: "evil/mem".into(),
                major: 1,
                minor: 1,
                mode: 0o666,
            },
        ],
        ConfigSpec::default(),
    );
    let mut canaries = Vec::new();
    // The control, written before any container runs (/dev/kmsg writers are rate-limited,
    // printk_devkmsg): a line the host itself writes must show, or the check proves nothing.
    let control = format!("rcrun-attack-control-{}", std::process::id());
    let wrote = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .and_then(|mut k| std::io::Write::write_all(&mut k, format!("{control}\n").as_bytes()));
    for mode in all_modes("devices") {
        let vol = case_dir(&format!("attack-devvol-{}", mode.name), mode.who());
        let canary = format!("rcrun-attack-canary-{}-{}", mode.name, std::process::id());
        canaries.push(canary.clone());
        let mut script = String::new();
        for place in ["/tmp", "/dev", "/vol", "/scratch"] {
            for (name, maj, min) in DEVICES {
                script.push_str(&format!(
                    "attack dev {place}/{name} {maj} {min} {canary}-{name}-{}\n",
                    place.trim_start_matches('/')
                ));
            }
        }
        script.push_str(&format!(
            "attack open /evil/kmsg {canary}-shipped\nattack open /evil/mem\n"
        ));
        let volume = format!("{}:/vol", vol.display());
        let o = run(
            mode,
            &[
                "-v",
                &volume,
                "--tmpfs",
                "/scratch",
                image_with_nodes.to_str().unwrap(),
                "sh",
                "-c",
                &script,
            ],
        );
        let stdout = out(&o);
        let opens: Vec<&str> = stdout.lines().filter(|l| l.starts_with("open ")).collect();
        f.check(
            o.status.success() && opens.len() == 4 * DEVICES.len() * 2 + 4,
            "device probe ran",
            mode,
            || format!("{} open lines; {}", opens.len(), text(&o)),
        );
        for l in &opens {
            f.check(!l.ends_with(" ok"), l, mode, || "opened".into());
        }
        // Nodes the container left in the host's volume dir must not be usable from there
        // either; they are removed here.
        let _ = rcrun::sys::fs::remove_tree(&vol);
    }
    if is_root() {
        let log = Command::new("dmesg").output().expect("dmesg");
        let log = String::from_utf8_lossy(&log.stdout);
        if wrote.is_err() || !log.contains(&control) {
            skip(&format!("devices: the host's kernel log cannot be checked here (writing /dev/kmsg: {wrote:?}; control line seen: {})", log.contains(&control)));
            canaries.clear();
        }
        for c in &canaries {
            f.host(!log.contains(c.as_str()), "kmsg canary", || {
                format!(
                    "{c} reached the host's kernel log: {}",
                    log.lines()
                        .filter(|l| l.contains(c.as_str()))
                        .collect::<Vec<_>>()
                        .join(" | ")
                )
            });
        }
    } else {
        skip("devices: the host's kernel log is only checked as root (dmesg)");
    }
    f.finish("devices");
}

// ---- 2. writable kernel interfaces ----------------------------------------------------------

/// /proc/sys, sysrq, uevent_helper read-only; no cgroup hierarchy writable or mountable
/// (CVE-2022-0492: cgroup v1 release_agent from a new user namespace); no bpffs or debugfs.
/// Also with --network host, where rcrun used to bind the host's /sys with its cgroup mounts.
#[test]
fn kernel_interfaces_are_not_writable() {
    let _serial = serial();
    let mut f = Failures::default();
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let script = r#"
v=$(cat /proc/sys/kernel/core_pattern); (printf '%s\n' "$v" > /proc/sys/kernel/core_pattern) 2>/dev/null && echo "WRITABLE core_pattern"
(echo h > /proc/sysrq-trigger) 2>/dev/null && echo "WRITABLE sysrq-trigger"
if [ -e /sys/kernel/uevent_helper ]; then v=$(cat /sys/kernel/uevent_helper); (printf '%s' "$v" > /sys/kernel/uevent_helper) 2>/dev/null && echo "WRITABLE uevent_helper"; fi
mkdir /sys/fs/cgroup/rcrun-attack-x 2>/dev/null && echo "WRITABLE mkdir /sys/fs/cgroup"
for d in /sys/fs/cgroup/*; do [ -d "$d" ] || continue
  mkdir "$d/rcrun-attack-x" 2>/dev/null && echo "WRITABLE mkdir $d"
  [ -e "$d/cgroup.procs" ] && (echo $$ > "$d/cgroup.procs") 2>/dev/null && echo "WRITABLE $d/cgroup.procs"
  [ -e "$d/release_agent" ] && (printf '' >> "$d/release_agent") 2>/dev/null && echo "WRITABLE $d/release_agent"
done
for d in /sys/fs/bpf /sys/kernel/debug /sys/kernel/tracing /sys/kernel/security; do
  [ -d "$d" ] && [ -n "$(ls -A "$d" 2>/dev/null)" ] && echo "VISIBLE $d"
done
attack sys
echo done
"#;
    let plain = plain_image();
    for mode in all_modes("kernel_interfaces") {
        for net in ["none", "host"] {
            let o = run(
                mode,
                &[
                    "--network",
                    net,
                    plain.to_str().unwrap(),
                    "sh",
                    "-c",
                    script,
                ],
            );
            let stdout = out(&o);
            let case = format!("--network {net}");
            f.check(
                stdout.contains("done"),
                &format!("{case}: script ran"),
                mode,
                || text(&o),
            );
            for l in stdout.lines() {
                if l.starts_with("WRITABLE") || l.starts_with("VISIBLE") {
                    f.check(false, &format!("{case}: {l}"), mode, || {
                        "the container could".into()
                    });
                } else if let Some((call, result)) = l.rsplit_once(' ') {
                    if l.contains("errno=") || l.ends_with(" ok") || l.contains("killed=") {
                        let refused = matches!(
                            result,
                            "errno=EPERM" | "errno=EACCES" | "errno=ENOSYS" | "errno=EROFS"
                        ) || result.starts_with("killed=");
                        f.check(refused, &format!("{case}: {call}"), mode, || {
                            format!("answered {result}")
                        });
                    }
                }
            }
        }
    }
    let after = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    f.host(after == core_pattern, "core_pattern", || {
        format!("{core_pattern:?} became {after:?}")
    });
    for e in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let leaked = e.path().join("rcrun-attack-x");
        if leaked.exists() {
            let _ = std::fs::remove_dir(&leaked);
            f.host(false, "host cgroup", || {
                format!("the container created {}", leaked.display())
            });
        }
    }
    f.finish("kernel_interfaces");
}

// ---- 5. image path games -----------------------------------------------------------------

/// Symlinks in the image that point out of the root, met by rcrun's own writes and mounts:
/// /etc for hostname/hosts/resolv.conf, -v and --tmpfs destinations, /dev/null where masks bind
/// it (CVE-2025-31133), /dev/console and /dev/pts (CVE-2025-52565), /proc (CVE-2019-16884).
#[test]
fn image_symlinks_never_redirect_rcrun_to_the_host() {
    let _serial = serial();
    let mut f = Failures::default();
    let target = host_target();
    let before = snapshot(&target);
    let mounts_before = host_mount_lines();
    let abs = target.display().to_string();
    let etc_abs = image(
        "etc-abs",
        &["etc"],
        vec![Entry::symlink("etc", abs.clone())],
        ConfigSpec::default(),
    );
    let etc_rel = image(
        "etc-rel",
        &["etc"],
        vec![Entry::symlink("etc", climb(&target))],
        ConfigSpec::default(),
    );
    let links = image(
        "links-out",
        &[],
        vec![
            Entry::symlink("mnt-abs", abs.clone()),
            Entry::symlink("mnt-rel", climb(&target)),
        ],
        ConfigSpec::default(),
    );
    let dev_links = image(
        "dev-links",
        &[],
        vec![
            Entry::dir("dev", 0o755),
            Entry::symlink("dev/null", "/proc/sys/kernel/core_pattern"),
            Entry::symlink("dev/console", "/proc/sysrq-trigger"),
            Entry::symlink("dev/pts", "/proc"),
        ],
        ConfigSpec::default(),
    );
    let proc_images: Vec<(&str, PathBuf)> = vec![
        (
            "/proc -> /",
            image(
                "proc-root",
                &["proc"],
                vec![Entry::symlink("proc", "/")],
                ConfigSpec::default(),
            ),
        ),
        (
            "/proc -> /etc",
            image(
                "proc-etc",
                &["proc"],
                vec![Entry::symlink("proc", "/etc")],
                ConfigSpec::default(),
            ),
        ),
        (
            "/proc -> ../../..",
            image(
                "proc-rel",
                &["proc"],
                vec![Entry::symlink("proc", "../../..")],
                ConfigSpec::default(),
            ),
        ),
        (
            "/sys -> /",
            image(
                "sys-root",
                &["sys"],
                vec![Entry::symlink("sys", "/")],
                ConfigSpec::default(),
            ),
        ),
    ];
    for mode in all_modes("path_games") {
        for (case, img) in [
            ("/etc -> absolute host dir", &etc_abs),
            ("/etc -> ../ host dir", &etc_rel),
        ] {
            let o = run(
                mode,
                &[
                    "--hostname",
                    "attackhost",
                    img.to_str().unwrap(),
                    "sh",
                    "-c",
                    "cat /etc/hostname; ls -a /etc",
                ],
            );
            let ok = o.status.success()
                && out(&o).starts_with("attackhost")
                && !out(&o).contains("host-canary-file");
            f.check(ok, case, mode, || text(&o));
        }
        let vol = case_dir(&format!("attack-linkvol-{}", mode.name), mode.who());
        // Under --userns container root is a subordinate id on the host: let it write.
        std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o777)).unwrap();
        let volume = format!("{}:/mnt-abs", vol.display());
        let o = run(mode, &["-v", &volume, "--tmpfs", "/mnt-rel", links.to_str().unwrap(), "sh", "-c",
            "echo in-volume > /mnt-abs/written && touch /mnt-rel/in-tmpfs && ls -a /mnt-abs /mnt-rel"]);
        let ok = o.status.success()
            && !out(&o).contains("host-canary-file")
            && std::fs::read_to_string(vol.join("written")).is_ok_and(|s| s == "in-volume\n");
        f.check(
            ok,
            "-v and --tmpfs onto symlinks out of the root",
            mode,
            || text(&o),
        );
        let o = run(
            mode,
            &[
                "-t",
                dev_links.to_str().unwrap(),
                "sh",
                "-c",
                r#"
            stat -c '%F %t:%T' /dev/null
            for p in /proc/kcore /proc/keys /proc/timer_list; do [ -e $p ] && wc -c < $p; done | sort -u
            v=$(cat /proc/sys/kernel/core_pattern); (printf '%s\n' "$v" > /proc/sys/kernel/core_pattern) 2>/dev/null && echo WRITABLE-core_pattern
            [ -L /dev/console ] && echo CONSOLE-IS-A-LINK
            stat -f -c %T /dev/pts"#,
            ],
        );
        let stdout = out(&o).replace('\r', "");
        let ok = o.status.success()
            && stdout.lines().collect::<Vec<_>>() == ["character special file 1:3", "0", "devpts"];
        f.check(
            ok,
            "image /dev/null, /dev/console, /dev/pts symlinks",
            mode,
            || format!("{stdout:?} {}", err(&o)),
        );
        for (case, img) in &proc_images {
            let o = run(mode, &[img.to_str().unwrap(), "sh", "-c",
                "stat -f -c %T /proc /sys; for p in /proc/kcore /proc/keys /proc/timer_list; do [ -e $p ] && wc -c < $p; done | sort -u"]);
            let fs = if case.starts_with("/sys") {
                "/sys"
            } else {
                "/proc"
            };
            let refused = o.status.code() == Some(125) && err(&o).contains(fs);
            let safe = o.status.success() && {
                let s = out(&o);
                let l: Vec<&str> = s.lines().collect();
                l.len() >= 2
                    && l[0] == "proc"
                    && l[1] == "sysfs"
                    && l.get(2).is_none_or(|x| *x == "0")
            };
            f.check(refused || safe, case, mode, || text(&o));
        }
        let _ = rcrun::sys::fs::remove_tree(&vol);
    }
    let after = snapshot(&target);
    f.host(
        before == after,
        "host directory the image points at",
        || format!("{before:?} became {after:?}"),
    );
    let mounts_after = host_mount_lines();
    f.host(mounts_before == mounts_after, "host mount table", || {
        let new: Vec<&String> = mounts_after
            .iter()
            .filter(|l| !mounts_before.contains(l))
            .collect();
        format!("new mounts: {new:?}")
    });
    f.finish("path_games");
}

// ---- 6. hostile config -------------------------------------------------------------------

/// A docker-save archive written by hand around raw config bytes (the writer of imagebuild
/// only makes valid JSON): manifest.json, <sha256>.json, one layer.
fn raw_config_archive(name: &str, config: &[u8]) -> PathBuf {
    let layer = match base_layer().source {
        rcrun_imagebuild::LayerSource::Bytes(b) => b,
        _ => unreachable!(),
    };
    let config_name = format!("{}.json", sha256(config));
    let manifest = format!(
        r#"[{{"Config":"{config_name}","RepoTags":["attack/{name}:latest"],"Layers":["l/layer.tar"]}}]"#
    );
    let path = staging().join(format!("attack-{name}.tar"));
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    for (member, data) in [
        (config_name.as_str(), config),
        ("l/layer.tar", &layer[..]),
        ("manifest.json", manifest.as_bytes()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, member, data).unwrap();
    }
    b.finish().unwrap();
    publish(&path);
    path
}

fn raw_config(env: &str) -> Vec<u8> {
    let layer = match base_layer().source {
        rcrun_imagebuild::LayerSource::Bytes(b) => b,
        _ => unreachable!(),
    };
    format!(
        r#"{{"architecture":"{}","os":"linux","config":{{"Env":["PATH=/bin",{env}],"Cmd":["true"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}}}}"#,
        rcrun_imagebuild::host_arch(),
        sha256(&layer)
    )
    .into_bytes()
}

/// Whatever a config says, rcrun answers with a clean run or a one-line error (125/126), never a
/// panic, a hang, or a process running as root when the config named another user.
#[test]
fn hostile_configs_get_a_clear_answer() {
    let _serial = serial();
    let mut f = Failures::default();
    let cfg = |env: Vec<String>, cmd: Option<Vec<String>>, user: &str| ConfigSpec {
        env,
        cmd,
        user: user.into(),
        ..Default::default()
    };
    let mut env = vec!["PATH=/bin:/probe".to_string()];
    env.extend((0..100_000).map(|i| format!("V{i}=x")));
    let env100k = image(
        "env100k",
        &[],
        vec![],
        cfg(env, Some(vec!["true".into()]), ""),
    );
    let cmd1mb = image(
        "cmd1mb",
        &[],
        vec![],
        cfg(vec![], Some(vec!["echo".into(), "a".repeat(1 << 20)]), ""),
    );
    // An Env entry whose bytes are not UTF-8 at all (0xff 0xfe 0x80), spliced into otherwise
    // valid JSON: serde must refuse the document, rcrun must say which file.
    let mut bytes = raw_config("\"X=1\"");
    let at = bytes.windows(5).position(|w| w == b"\"X=1\"").unwrap();
    bytes.splice(
        at..at + 5,
        [&b"\"BAD="[..], &[0xff, 0xfe, 0x80], b"\""].concat(),
    );
    let invalid_utf8 = raw_config_archive("invalid-utf8", &bytes);
    let surrogate = raw_config_archive("surrogate", &raw_config(r#""BAD=\udc80""#));
    let nul = raw_config_archive("nul", &raw_config(r#""BAD=a\u0000b""#));
    let mut passwd = String::with_capacity(33 << 20);
    let mut i = 0u64;
    while passwd.len() < 32 << 20 {
        passwd.push_str(&format!("u{i}:x:{}:100::/home/u{i}:/bin/sh\n", 10_000 + i));
        i += 1;
    }
    passwd.push_str("last:x:4242:4242::/home/last:/bin/sh\n");
    let huge_passwd = image(
        "huge-passwd",
        &[],
        vec![
            Entry::dir("etc", 0o755),
            Entry::file("etc/passwd", 0o644, passwd),
        ],
        cfg(vec![], None, "last"),
    );
    let users: Vec<(&str, PathBuf)> = [
        "nosuchuser",
        "4294967295",
        "1000:4294967295",
        "0:4294967295",
        "4294967295:0",
        "99999999999",
    ]
    .iter()
    .map(|u| {
        (
            *u,
            image(
                &format!("user-{}", u.replace(':', "_")),
                &[],
                vec![],
                cfg(vec![], None, u),
            ),
        )
    })
    .collect();
    for mode in all_modes("hostile_config") {
        let no_panic = |o: &Output| !err(o).contains("panicked") && !out(o).contains("panicked");
        let (o, took) = run_for(mode, &[env100k.to_str().unwrap()], Duration::from_secs(60));
        let clear = o.status.success()
            || (matches!(o.status.code(), Some(125 | 126)) && err(&o).starts_with("rcrun:"));
        f.check(
            clear && no_panic(&o) && took < Duration::from_secs(60),
            "100 000 Env entries",
            mode,
            || format!("{took:?}: {}", text(&o)),
        );
        eprintln!(
            "  [{}] 100 000 Env entries: {:?}, status {:?}",
            mode.name,
            took,
            o.status.code()
        );
        let o = run(mode, &[cmd1mb.to_str().unwrap()]);
        f.check(
            matches!(o.status.code(), Some(125 | 126))
                && err(&o).contains("rcrun: error")
                && no_panic(&o),
            "1 MB Cmd argument",
            mode,
            || {
                format!(
                    "{:?} {}",
                    o.status.code(),
                    err(&o).chars().take(300).collect::<String>()
                )
            },
        );
        for (case, img) in [
            ("invalid UTF-8 in the config", &invalid_utf8),
            ("lone surrogate \\udc80 in the config", &surrogate),
            ("NUL in an Env value", &nul),
        ] {
            let o = run(mode, &[img.to_str().unwrap()]);
            f.check(
                o.status.code() == Some(125) && err(&o).starts_with("rcrun: error") && no_panic(&o),
                case,
                mode,
                || text(&o),
            );
        }
        for (user, img) in &users {
            let o = run(
                mode,
                &[img.to_str().unwrap(), "sh", "-c", "echo $(id -u):$(id -g)"],
            );
            let got = out(&o).trim().to_string();
            let asked_uid = user.split(':').next().unwrap();
            let ran_as_asked = o.status.success()
                && asked_uid
                    .parse::<u64>()
                    .is_ok_and(|u| got.starts_with(&format!("{u}:")));
            let refused = o.status.code() == Some(125)
                && err(&o).contains("rcrun: error")
                && err(&o).contains("user");
            f.check(
                (ran_as_asked || refused) && no_panic(&o),
                &format!("User {user:?}"),
                mode,
                || format!("ran as {got}: {}", text(&o)),
            );
        }
        let (o, took) = run_for(
            mode,
            &[huge_passwd.to_str().unwrap(), "id", "-u"],
            Duration::from_secs(60),
        );
        let ok = (o.status.success() && out(&o).trim() == "4242")
            || (o.status.code() == Some(125) && err(&o).contains("user"));
        f.check(
            ok && no_panic(&o),
            "32 MB /etc/passwd, the user at its end",
            mode,
            || format!("{took:?}: {}", text(&o)),
        );
    }
    f.finish("hostile_config");
}

// ---- 7. the image cache ------------------------------------------------------------------

/// An archive rewritten in place (same inode, same size, mtime put back with touch -r) runs the
/// new image, not the layers the cache remembers for the old one.
#[test]
fn archive_rewritten_in_place_is_not_served_stale() {
    let _serial = serial();
    let mut f = Failures::default();
    let marked = |name: &str, m: &str| {
        image(
            name,
            &[],
            vec![Entry::file("marker", 0o644, m)],
            ConfigSpec::default(),
        )
    };
    let a = marked("cache-a", "AAAA");
    let b = marked("cache-b", "BBBB");
    assert_eq!(
        std::fs::metadata(&a).unwrap().len(),
        std::fs::metadata(&b).unwrap().len(),
        "the two archives must have one size"
    );
    for mode in all_modes("image_cache") {
        let victim = staging().join(format!("attack-cache-{}.tar", mode.name));
        std::fs::copy(&a, &victim).unwrap();
        publish(&victim);
        let first = run(mode, &[victim.to_str().unwrap(), "cat", "/marker"]);
        let reference = staging().join("attack-cache-ref");
        std::fs::copy(&victim, &reference).unwrap();
        let mtime = Command::new("touch")
            .arg("-r")
            .arg(&victim)
            .arg(&reference)
            .status()
            .unwrap();
        assert!(mtime.success());
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&victim).unwrap());
        std::os::unix::fs::FileExt::write_all_at(
            &std::fs::OpenOptions::new()
                .write(true)
                .open(&victim)
                .unwrap(),
            &std::fs::read(&b).unwrap(),
            0,
        )
        .unwrap();
        assert!(Command::new("touch")
            .arg("-r")
            .arg(&reference)
            .arg(&victim)
            .status()
            .unwrap()
            .success());
        assert_eq!(
            ino,
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&victim).unwrap())
        );
        let second = run(mode, &[victim.to_str().unwrap(), "cat", "/marker"]);
        f.check(
            out(&first) == "AAAA" && out(&second) == "BBBB",
            "rewritten in place, mtime restored",
            mode,
            || {
                format!(
                    "first {:?} then {:?} ({})",
                    out(&first),
                    out(&second),
                    err(&second)
                )
            },
        );
    }
    f.finish("image_cache");
}

// ---- 8. SIGKILL during a start -----------------------------------------------------------

/// A tiny LCG: reproducible from the printed seed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

fn cgroup_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        for c in std::fs::read_dir(e.path().join("rcrun"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if c.path().is_dir() {
                v.push(c.path());
            }
        }
    }
    v.sort();
    v
}

/// rcrun killed (SIGKILL) at 30 random points of a start: the container dies with it (the
/// parent-death signal), and the next run leaves no mount, cgroup or temp dir behind.
#[test]
fn sigkill_during_start_leaves_nothing_after_the_next_run() {
    let _serial = serial();
    let mut f = Failures::default();
    let plain = plain_image();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("sigkill: seed {seed}");
    let mut rng = Lcg(seed);
    for mode in all_modes("sigkill")
        .into_iter()
        .filter(|m| matches!(m.kind, ModeKind::Root | ModeKind::User))
    {
        // Warm the store first: the kills should land in the start, not in an extraction.
        let warm = run(mode, &[plain.to_str().unwrap(), "true"]);
        assert!(warm.status.success(), "{}", text(&warm));
        let cgroups_before = cgroup_dirs();
        let mounts_before = host_mount_lines();
        for i in 0..30 {
            let marker = format!("rcrun-attack-kill-{}-{i}", std::process::id());
            let script = format!("sleep 100; : {marker}");
            // The rcrun process itself, not runuser: spawned with the user's ids directly.
            let mut c = Command::new(bin());
            c.arg("--root").arg(store(mode)).args([
                "run",
                plain.to_str().unwrap(),
                "sh",
                "-c",
                &script,
            ]);
            c.current_dir(staging())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .stdin(Stdio::null());
            if mode.kind == ModeKind::User {
                let u = test_user().unwrap();
                let (uid, gid) = (u.uid.as_raw(), u.gid.as_raw());
                c.env("HOME", &u.dir).env("USER", TEST_USER);
                // SAFETY: only async-signal-safe calls between fork and exec.
                unsafe {
                    std::os::unix::process::CommandExt::pre_exec(&mut c, move || {
                        if libc::setgroups(0, std::ptr::null()) != 0
                            || libc::setgid(gid) != 0
                            || libc::setuid(uid) != 0
                        {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            let mut child = c.spawn().unwrap();
            let delay = rng.next() % 30_000;
            std::thread::sleep(Duration::from_micros(delay));
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut left = processes_with(&marker);
            while !left.is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                left = processes_with(&marker);
            }
            f.check(
                left.is_empty(),
                &format!("container dies with rcrun (kill after {delay} µs)"),
                mode,
                || format!("still running: {left:?}"),
            );
            for pid in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let next = run(mode, &[plain.to_str().unwrap(), "true"]);
        f.check(next.status.success(), "the next run", mode, || text(&next));
        let st = store(mode);
        for sub in ["run", "tmp"] {
            let left = list(&st.join(sub));
            f.check(
                left.is_empty(),
                &format!("store {sub}/ empty after the next run"),
                mode,
                || format!("{left:?}"),
            );
        }
        let new_mounts: Vec<String> = host_mount_lines()
            .into_iter()
            .filter(|l| !mounts_before.contains(l))
            .collect();
        f.check(
            new_mounts.is_empty(),
            "no mount left on the host",
            mode,
            || format!("{new_mounts:?}"),
        );
        if mode.is_root() {
            // Give a cgroup whose last task just died a moment (the kernel frees it lazily).
            std::thread::sleep(Duration::from_millis(300));
            let left: Vec<PathBuf> = cgroup_dirs()
                .into_iter()
                .filter(|d| !cgroups_before.contains(d))
                .collect();
            f.check(
                left.is_empty(),
                "no cgroup left after the next run",
                mode,
                || format!("{left:?}"),
            );
        }
    }
    f.finish("sigkill");
}
