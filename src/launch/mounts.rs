//! The container root's mount table, as data (compiled from an OCI Spec by
//! [`crate::launch::plan::compile`], executed by the child).

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mnt {
    Proc,
    /// sysfs read-only (needs the new network namespace to be ours).
    Sysfs,
    Tmpfs {
        data: String,
        flags: u64,
        /// The mount's source name, shown in /proc/self/mountinfo (`shm` for /dev/shm in an
        /// OCI spec, `tmpfs` by default).
        source: String,
    },
    Devpts,
    Mqueue,
    /// The container's cgroups at the target (an OCI `cgroup` mount; see `child::cgroupfs`).
    Cgroup {
        read_only: bool,
    },
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
    /// A named pipe (mknod S_IFIFO) with this mode: an OCI `linux.devices` entry of type `p`.
    Fifo {
        mode: u32,
    },
    /// Bind /dev/null over a file, read-only tmpfs over a directory; skipped if absent.
    Mask,
    /// Re-bind onto itself read-only; skipped if absent.
    ReadOnly,
    /// Change the propagation of the mount just made at the target (MS_SHARED, MS_SLAVE,
    /// MS_PRIVATE, MS_UNBINDABLE, with MS_REC for the r- forms).
    Propagation {
        flags: u64,
    },
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
        matches!(
            self,
            Mnt::Proc | Mnt::Sysfs | Mnt::Devpts | Mnt::Mqueue | Mnt::Cgroup { .. }
        )
    }

    /// The file system's name, for messages.
    pub fn fs_name(&self) -> &'static str {
        match self {
            Mnt::Proc => "proc",
            Mnt::Sysfs => "sysfs",
            Mnt::Tmpfs { .. } => "tmpfs",
            Mnt::Devpts => "devpts",
            Mnt::Mqueue => "mqueue",
            Mnt::Cgroup { .. } => "cgroup",
            Mnt::Bind { .. } | Mnt::HostFile { .. } => "a bind mount",
            Mnt::Device { .. } => "a device node",
            Mnt::Symlink { .. } => "a symlink",
            Mnt::Fifo { .. } => "a fifo",
            Mnt::Mask => "a mask",
            Mnt::ReadOnly => "a read-only bind",
            Mnt::Propagation { .. } => "a propagation change",
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
            Mnt::Tmpfs { data, source, .. } => {
                format!("mount({source:?}, {t}, \"tmpfs\", \"{data}\")")
            }
            Mnt::Devpts => format!(
                "mount(\"devpts\", {t}, \"devpts\", \"newinstance,ptmxmode=0666,mode=0620\")"
            ),
            Mnt::Mqueue => format!("mount(\"mqueue\", {t}, \"mqueue\", nosuid|nodev|noexec)"),
            Mnt::Cgroup { read_only } => format!(
                "the container's cgroups at {t}{}: cgroup2, or a tmpfs of one cgroup mount per v1 hierarchy (rootless v1: the host's tree bound read-only)",
                if *read_only { " (read-only)" } else { "" }
            ),
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
            Mnt::Fifo { mode } => format!("mknod({t}, S_IFIFO|{mode:04o})"),
            Mnt::Mask => format!("mask {t} (bind /dev/null or empty read-only tmpfs)"),
            Mnt::ReadOnly => format!("bind {t} onto itself, whole tree read-only"),
            Mnt::Propagation { flags } => format!(
                "mount(NULL, {t}, NULL, {:?}) — propagation",
                nix::mount::MsFlags::from_bits_truncate(*flags as _)
            ),
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
