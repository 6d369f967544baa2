//! The container root's mount table, as data (built by [`plan_mounts`], executed by the child).

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mnt {
    Proc,
    /// sysfs read-only (needs the new network namespace to be ours).
    Sysfs,
    Tmpfs {
        data: String,
        flags: u64,
    },
    Devpts,
    Mqueue,
    /// Bind a host path (file or directory).
    Bind {
        source: PathBuf,
        recursive: bool,
        read_only: bool,
    },
    /// mknod (real root only).
    Device {
        block: bool,
        major: u64,
        minor: u64,
        /// Permission bits of the node.
        mode: u32,
    },
    Symlink {
        to: String,
    },
    /// Bind /dev/null over a file, read-only tmpfs over a directory; skipped if absent.
    Mask,
    /// Re-bind onto itself read-only; skipped if absent.
    ReadOnly,
    /// A file whose contents rcrun writes (hostname, hosts, resolv.conf). The child writes it
    /// into the overlay's upper dir when the image's /etc is a directory; otherwise it is bound
    /// in read-only through the image's path.
    HostFile {
        contents: String,
    },
}

impl Mnt {
    /// A fresh instance of one of the kernel's file systems (not a bind, not user data).
    pub fn is_kernel_fs(&self) -> bool {
        matches!(self, Mnt::Proc | Mnt::Sysfs | Mnt::Devpts | Mnt::Mqueue)
    }

    /// The file system's name, for messages.
    pub fn fs_name(&self) -> &'static str {
        match self {
            Mnt::Proc => "proc",
            Mnt::Sysfs => "sysfs",
            Mnt::Tmpfs { .. } => "tmpfs",
            Mnt::Devpts => "devpts",
            Mnt::Mqueue => "mqueue",
            Mnt::Bind { .. } | Mnt::HostFile { .. } => "a bind mount",
            Mnt::Device { .. } => "a device node",
            Mnt::Symlink { .. } => "a symlink",
            Mnt::Mask => "a mask",
            Mnt::ReadOnly => "a read-only bind",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountStep {
    pub target: String,
    pub what: Mnt,
}

impl MountStep {
    pub fn describe(&self) -> String {
        let t = &self.target;
        match &self.what {
            Mnt::Proc => format!("mount(\"proc\", {t}, \"proc\", nosuid|nodev|noexec)"),
            Mnt::Sysfs => format!("mount(\"sysfs\", {t}, \"sysfs\", ro|nosuid|nodev|noexec)"),
            Mnt::Tmpfs { data, .. } => format!("mount(\"tmpfs\", {t}, \"tmpfs\", \"{data}\")"),
            Mnt::Devpts => format!(
                "mount(\"devpts\", {t}, \"devpts\", \"newinstance,ptmxmode=0666,mode=0620\")"
            ),
            Mnt::Mqueue => format!("mount(\"mqueue\", {t}, \"mqueue\", nosuid|nodev|noexec)"),
            Mnt::Bind {
                source,
                recursive,
                read_only,
            } => format!(
                "mount({}, {t}, MS_BIND{}{})",
                source.display(),
                if *recursive { "|MS_REC" } else { "" },
                match (*read_only, *recursive) {
                    (false, _) => "",
                    (true, false) => ", then remount ro",
                    (true, true) => ", then mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY): every submount read-only too",
                }
            ),
            Mnt::Device {
                block,
                major,
                minor,
                mode,
            } => format!(
                "mknod({t}, {}|{mode:04o}, {major}:{minor})",
                if *block { "S_IFBLK" } else { "S_IFCHR" }
            ),
            Mnt::Symlink { to } => format!("symlink({to}, {t})"),
            Mnt::Mask => format!("mask {t} (bind /dev/null or empty read-only tmpfs)"),
            Mnt::ReadOnly => format!("bind {t} onto itself, whole tree read-only"),
            Mnt::HostFile { contents } => {
                format!("bind file {t} ({} bytes) read-only", contents.len())
            }
        }
    }
}

pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

pub struct MountInputs<'a> {
    /// Real root creates device nodes; in a user namespace mknod is refused, so they are bound.
    pub can_mknod: bool,
    /// The mounts are made by real root (no user namespace, or `--userns`, whose namespace is
    /// entered after them): it may mount a fresh sysfs even in the host's network namespace.
    pub mounts_as_host_root: bool,
    pub new_netns: bool,
    pub privileged: bool,
    pub hostname: &'a str,
    pub resolv_conf: String,
    pub volumes: &'a [super::plan::Volume],
    pub tmpfs: &'a [String],
    /// `--device` nodes.
    pub devices: &'a [super::plan::DeviceMapping],
}

/// The mounts of a container root, in order (OCI runtime defaults, as runc/crun apply them).
pub fn plan_mounts(i: &MountInputs<'_>) -> Vec<MountStep> {
    use nix::mount::MsFlags as F;
    let step = |t: &str, what: Mnt| MountStep {
        target: t.to_string(),
        what,
    };
    let mut v = vec![
        step("/proc", Mnt::Proc),
        step(
            "/dev",
            Mnt::Tmpfs {
                data: "mode=755,size=65536k".into(),
                flags: (F::MS_NOSUID | F::MS_STRICTATIME).bits(),
            },
        ),
    ];
    for (name, major, minor) in DEVICES {
        let target = format!("/dev/{name}");
        v.push(if i.can_mknod {
            step(
                &target,
                Mnt::Device {
                    block: false,
                    major: *major,
                    minor: *minor,
                    mode: 0o666,
                },
            )
        } else {
            step(
                &target,
                Mnt::Bind {
                    source: PathBuf::from(&target),
                    recursive: false,
                    read_only: false,
                },
            )
        });
    }
    // --device nodes, with the defaults (their parent may be /dev, just mounted). A node is
    // created by real root; in a user namespace mknod is refused, so the host's node is bound.
    for d in i.devices {
        v.push(step(
            &d.container,
            if i.can_mknod {
                Mnt::Device {
                    block: d.block,
                    major: d.major as u64,
                    minor: d.minor as u64,
                    mode: d.mode,
                }
            } else {
                Mnt::Bind {
                    source: d.host.clone(),
                    recursive: false,
                    read_only: false,
                }
            },
        ));
    }
    v.push(step("/dev/pts", Mnt::Devpts));
    v.push(step(
        "/dev/ptmx",
        Mnt::Symlink {
            to: "pts/ptmx".into(),
        },
    ));
    for (l, t) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/core", "/proc/kcore"),
    ] {
        v.push(step(l, Mnt::Symlink { to: t.into() }));
    }
    v.push(step(
        "/dev/shm",
        Mnt::Tmpfs {
            data: "mode=1777,size=65536k".into(),
            flags: (F::MS_NOSUID | F::MS_NODEV | F::MS_NOEXEC).bits(),
        },
    ));
    v.push(step("/dev/mqueue", Mnt::Mqueue));
    let is_sys = |p: &&&str| p.starts_with("/sys");
    if !i.privileged {
        for p in MASKED_PATHS.iter().filter(|p| !is_sys(p)) {
            v.push(step(p, Mnt::Mask));
        }
        for p in READONLY_PATHS {
            v.push(step(p, Mnt::ReadOnly));
        }
    }
    v.push(step(
        "/etc/hostname",
        Mnt::HostFile {
            contents: format!("{}\n", i.hostname),
        },
    ));
    v.push(step(
        "/etc/hosts",
        Mnt::HostFile {
            contents: format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
                i.hostname
            ),
        },
    ));
    v.push(step(
        "/etc/resolv.conf",
        Mnt::HostFile {
            contents: i.resolv_conf.clone(),
        },
    ));
    // /sys last of the defaults: sysfs shows the network devices of the namespace of the task
    // that mounts it, and as root rcrun creates that namespace while the child does the mounts
    // above (the child joins it just before this one).
    // A fresh sysfs has none of the host's submounts (cgroup hierarchies, debugfs, bpffs, …).
    // Only a user namespace in the host's network namespace cannot mount one (sysfs needs
    // CAP_SYS_ADMIN over the network namespace): it binds the host's /sys, whole tree read-only.
    if i.new_netns || i.mounts_as_host_root {
        v.push(step("/sys", Mnt::Sysfs));
    } else {
        v.push(step(
            "/sys",
            Mnt::Bind {
                source: "/sys".into(),
                recursive: true,
                read_only: true,
            },
        ));
    }
    if !i.privileged {
        for p in MASKED_PATHS.iter().filter(is_sys) {
            v.push(step(p, Mnt::Mask));
        }
    }
    for t in i.tmpfs {
        v.push(step(
            t,
            Mnt::Tmpfs {
                data: "mode=1777".into(),
                flags: (F::MS_NOSUID | F::MS_NODEV).bits(),
            },
        ));
    }
    for vol in i.volumes {
        v.push(step(
            &vol.target,
            Mnt::Bind {
                source: vol.source.clone(),
                recursive: true,
                read_only: vol.read_only,
            },
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(can_mknod: bool, new_netns: bool, privileged: bool) -> MountInputs<'static> {
        MountInputs {
            can_mknod,
            mounts_as_host_root: can_mknod,
            new_netns,
            privileged,
            hostname: "abc",
            resolv_conf: "nameserver 1.1.1.1\n".into(),
            volumes: &[],
            tmpfs: &[],
            devices: &[],
        }
    }

    #[test]
    fn rootless_binds_devices_and_root_creates_them() {
        let rootless = plan_mounts(&inputs(false, true, false));
        assert!(rootless
            .iter()
            .any(|m| m.target == "/dev/null" && matches!(m.what, Mnt::Bind { .. })));
        let root = plan_mounts(&inputs(true, true, false));
        assert!(root.iter().any(|m| m.target == "/dev/null"
            && m.what
                == Mnt::Device {
                    block: false,
                    major: 1,
                    minor: 3,
                    mode: 0o666
                }));
    }

    #[test]
    fn proc_first_masks_after_proc_and_sys() {
        let m = plan_mounts(&inputs(false, true, false));
        assert_eq!(m[0].what, Mnt::Proc);
        let pos = |t: &str| m.iter().position(|s| s.target == t).unwrap();
        assert!(pos("/proc/kcore") > pos("/proc") && pos("/sys/firmware") > pos("/sys"));
        assert!(m
            .iter()
            .any(|s| s.target == "/proc/sysrq-trigger" && s.what == Mnt::ReadOnly));
    }

    /// With the host's network, real root still mounts a fresh sysfs (no host submounts such as
    /// /sys/fs/cgroup/*); only a user namespace binds the host's /sys.
    #[test]
    fn host_network_as_root_mounts_fresh_sysfs() {
        let m = plan_mounts(&inputs(true, false, false));
        assert!(m.iter().any(|s| s.target == "/sys" && s.what == Mnt::Sysfs));
    }

    #[test]
    fn privileged_has_no_masks_and_host_net_binds_sys() {
        let m = plan_mounts(&inputs(false, false, true));
        assert!(!m.iter().any(|s| s.what == Mnt::Mask));
        assert!(m.iter().any(|s| s.target == "/sys"
            && matches!(
                s.what,
                Mnt::Bind {
                    read_only: true,
                    ..
                }
            )));
    }
}
