//! An image run as an OCI runtime Spec: what rcrun decided from the image's config and the flags
//! ([`ImageRun`]) written as the `config.json` an OCI runtime (runc, crun, youki) would be handed
//! for the same container, as podman writes one before it calls crun. The launcher's compiler
//! ([`crate::launch::plan::compile`]) turns it into the plan, as it does a bundle's;
//! `rcrun run --print-spec` prints it.
//!
//! What the runtime spec cannot say goes into [`Extras`] (the overlay of store layers that is the
//! root, the contents of the /etc files rcrun writes, the seccomp profile in Docker's format,
//! `-i`, `--init`) and, for a reader of the printed document, into annotations under
//! `org.rcrun.`.

use super::{seccomp_json, SeccompInput, SpecError, OCI_VERSION};
use crate::cgroup::devices::DeviceKind;
use crate::cgroup::Limits;
use crate::launch::mounts::{MASKED_PATHS, READONLY_PATHS};
use crate::launch::plan::compile::{DEFAULT_DEVICES, DEV_SYMLINKS};
use crate::launch::plan::{
    DeviceMapping, Extras, IdMapping, IdRange, ImageLayers, SeccompSource, Volume,
};
use crate::launch::user::ResolvedUser;
use oci_spec::runtime::{
    Capabilities, Capability, Linux, LinuxCapabilities, LinuxCapabilitiesBuilder, LinuxCpu,
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxIdMapping,
    LinuxIdMappingBuilder, LinuxMemory, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResources, Mount, MountBuilder, Process, RootBuilder, Spec, UserBuilder,
};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What rcrun decided for an image run, from the image's config, the flags and who runs it.
#[derive(Debug, Clone)]
pub struct ImageRun {
    /// The container's ID (and its hostname unless `--hostname` names one).
    pub id: String,
    pub mapping: IdMapping,
    pub new_netns: bool,
    pub privileged: bool,
    /// Where the child mounts its private scratch tmpfs (the store's run dir).
    pub scratch: PathBuf,
    /// The image's layer dirs in the store, top layer first.
    pub lowers_top_first: Vec<PathBuf>,
    /// Index in `lowers_top_first` of the topmost layer with an `etc` entry.
    pub etc_layer: Option<usize>,
    pub read_only: bool,
    pub hostname: String,
    /// The container's /etc/resolv.conf (the host's, or the network helper's forwarder).
    pub resolv_conf: String,
    /// `--add-host` entries (name, address) for its /etc/hosts.
    pub extra_hosts: Vec<(String, String)>,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: ResolvedUser,
    pub no_new_privs: bool,
    pub caps: crate::security::CapPlan,
    pub tty: bool,
    pub interactive: bool,
    pub init: bool,
    pub volumes: Vec<Volume>,
    /// `--tmpfs` mount points.
    pub tmpfs: Vec<String>,
    /// `--device` nodes.
    pub devices: Vec<DeviceMapping>,
    /// The seccomp profile (name, bytes in Docker's format), None when unconfined.
    pub seccomp: Option<(String, Vec<u8>)>,
    /// `--ulimit`s, as `process.rlimits`.
    pub rlimits: Vec<oci_spec::runtime::PosixRlimit>,
}

impl ImageRun {
    /// Real root creates device nodes; in a user namespace whose mounts are made inside it, mknod
    /// is refused, so they are bound from the host. The compiler decides the same way.
    fn mounts_as_host_root(&self) -> bool {
        !self.mapping.user_namespace() || self.mapping.enters_late()
    }
}

/// The files rcrun writes for the container.
const HOST_FILES: [&str; 3] = ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"];

/// [`HOST_FILES`] with their contents.
fn host_files(run: &ImageRun) -> Vec<(String, String)> {
    let [hostname, hosts, resolv_conf] = HOST_FILES;
    vec![
        (hostname.into(), format!("{}\n", run.hostname)),
        (
            hosts.into(),
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n{}",
                run.hostname,
                run.extra_hosts
                    .iter()
                    .map(|(name, ip)| format!("{ip}\t{name}\n"))
                    .collect::<String>()
            ),
        ),
        (resolv_conf.into(), run.resolv_conf.clone()),
    ]
}

/// The Spec of an image run, and what it cannot say. The seccomp profile stays in Docker's
/// format in [`Extras::seccomp`] (its includes and excludes by capability and kernel are
/// evaluated when it is compiled, without converting it on every start); `--print-spec` writes
/// the entries that apply in OCI's format ([`document`]).
///
/// Built with oci-spec's types directly rather than through JSON: a start pays for every line
/// of code it runs for the first time, and serde's path through the whole Spec cost ~0.3 ms of
/// a 7 ms start.
pub fn image_spec(run: &ImageRun, limits: &Limits) -> Result<(Spec, Extras), SpecError> {
    let spec = spec(run, limits)?;
    let extras = Extras {
        layers: Some(ImageLayers {
            lowers_top_first: run.lowers_top_first.clone(),
            etc_layer: run.etc_layer,
        }),
        host_files: host_files(run),
        seccomp: run.seccomp.as_ref().map(|(name, bytes)| SeccompSource {
            name: name.clone(),
            bytes: bytes.clone(),
        }),
        interactive: Some(run.interactive),
        init: run.init,
    };
    Ok((spec, extras))
}

/// The Spec as JSON, what `--print-spec` writes: with `seccomp`, the profile's entries that
/// apply to this run as `linux.seccomp`.
pub fn document(
    run: &ImageRun,
    limits: &Limits,
    seccomp: Option<&SeccompInput<'_>>,
) -> Result<Value, SpecError> {
    let mut doc = serde_json::to_value(spec(run, limits)?)?;
    if let Some(s) = seccomp {
        doc["linux"]["seccomp"] = seccomp_json(s)?;
    }
    Ok(doc)
}

fn spec(run: &ImageRun, limits: &Limits) -> Result<Spec, SpecError> {
    let mut process = Process::default();
    process
        .set_terminal(Some(run.tty))
        .set_console_size(None)
        .set_user(
            UserBuilder::default()
                .uid(run.user.uid)
                .gid(run.user.gid)
                .additional_gids(run.user.groups.clone())
                .build()?,
        )
        .set_args(Some(run.argv.clone()))
        .set_command_line(None)
        .set_env(Some(run.env.clone()))
        .set_cwd(PathBuf::from(&run.cwd))
        .set_capabilities(Some(capabilities(&run.caps)?))
        .set_rlimits((!run.rlimits.is_empty()).then(|| run.rlimits.clone()))
        .set_no_new_privileges(Some(run.no_new_privs))
        .set_apparmor_profile(None)
        .set_oom_score_adj(None)
        .set_selinux_label(None)
        .set_io_priority(None)
        .set_scheduler(None)
        .set_exec_cpu_affinity(None);
    if let Some(name) = &run.user.name {
        process.user_mut().set_username(Some(name.clone()));
    }

    let (mounts, devices) = mounts_and_devices(run, !limits.is_empty())?;
    let (masked, readonly): (Vec<String>, Vec<String>) = if run.privileged {
        (Vec::new(), Vec::new())
    } else {
        (
            MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
            READONLY_PATHS.iter().map(|p| p.to_string()).collect(),
        )
    };

    use LinuxNamespaceType as N;
    let mut kinds = vec![N::Pid, N::Mount, N::Uts, N::Ipc, N::Cgroup];
    if run.new_netns {
        kinds.push(N::Network);
    }
    let userns = run.mapping.user_namespace();
    if userns {
        kinds.push(N::User);
    }
    let namespaces = kinds
        .into_iter()
        .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
        .collect::<Result<Vec<_>, _>>()?;
    let mut linux = Linux::default();
    linux
        .set_net_devices(None)
        .set_uid_mappings(None)
        .set_gid_mappings(None)
        .set_sysctl(None)
        .set_resources(resources(limits)?)
        .set_cgroups_path(None)
        .set_namespaces(Some(namespaces))
        .set_devices(Some(devices))
        .set_seccomp(None)
        .set_rootfs_propagation(None)
        .set_masked_paths(Some(masked))
        .set_readonly_paths(Some(readonly))
        .set_mount_label(None)
        .set_intel_rdt(None)
        .set_memory_policy(None)
        .set_personality(None)
        .set_time_offsets(None);
    if userns {
        let (uids, gids) = ranges(&run.mapping);
        linux
            .set_uid_mappings(Some(id_mappings(&uids)?))
            .set_gid_mappings(Some(id_mappings(&gids)?));
    }

    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_string())
        .set_process(Some(process))
        .set_root(Some(
            RootBuilder::default()
                .path(run.scratch.join("merged"))
                .readonly(run.read_only)
                .build()?,
        ))
        .set_hostname(Some(run.hostname.clone()))
        .set_domainname(None)
        .set_mounts(Some(mounts))
        .set_linux(Some(linux))
        .set_annotations(Some(annotations(run)))
        .set_hooks(None);
    Ok(spec)
}

/// The plan's five sets (inheritable and ambient are empty for an image run).
fn capabilities(c: &crate::security::CapPlan) -> Result<LinuxCapabilities, SpecError> {
    // oci-spec's names are the kernel's without the CAP_ prefix ("SYS_ADMIN").
    let set = |s: &::caps::CapsHashSet| -> Result<Capabilities, SpecError> {
        s.iter()
            .map(|cap| {
                let name = cap.to_string();
                name.trim_start_matches("CAP_")
                    .parse::<Capability>()
                    .map_err(|_| SpecError::Capability(name))
            })
            .collect()
    };
    Ok(LinuxCapabilitiesBuilder::default()
        .bounding(set(&c.bounding)?)
        .effective(set(&c.effective)?)
        .permitted(set(&c.permitted)?)
        .inheritable(set(&c.inheritable)?)
        .ambient(set(&c.ambient)?)
        .build()?)
}

fn ranges(m: &IdMapping) -> (Vec<IdRange>, Vec<IdRange>) {
    match m {
        IdMapping::None | IdMapping::Entered { .. } => (vec![], vec![]),
        IdMapping::Single { uid, gid } | IdMapping::Privileged { uid, gid } => {
            (vec![*uid], vec![*gid])
        }
        IdMapping::Helpers { uids, gids, .. } => (uids.clone(), gids.clone()),
    }
}

fn id_mappings(r: &[IdRange]) -> Result<Vec<LinuxIdMapping>, SpecError> {
    r.iter()
        .map(|r| {
            LinuxIdMappingBuilder::default()
                .container_id(r.inside)
                .host_id(r.outside)
                .size(r.count)
                .build()
                .map_err(SpecError::from)
        })
        .collect()
}

/// CFS period rcrun uses for `--cpus` (the kernel's default, as Docker).
const CPU_PERIOD_US: u64 = 100_000;

/// The cgroup limits as `linux.resources` (None when there is nothing to say).
fn resources(l: &Limits) -> Result<Option<LinuxResources>, SpecError> {
    let mut r = LinuxResources::default();
    let mut any = false;
    if l.memory.is_some() || l.memory_swap.is_some() {
        let mut m = LinuxMemory::default();
        m.set_limit(l.memory.map(|v| v as i64));
        m.set_swap(l.memory_swap);
        r.set_memory(Some(m));
        any = true;
    }
    if let Some(p) = l.pids {
        r.set_pids(Some(LinuxPidsBuilder::default().limit(p).build()?));
        any = true;
    }
    if l.cpus.is_some() || l.cpu_shares.is_some() || l.cpuset_cpus.is_some() {
        let mut cpu = LinuxCpu::default();
        if let Some(c) = l.cpus {
            cpu.set_period(Some(CPU_PERIOD_US));
            cpu.set_quota(Some((c * CPU_PERIOD_US as f64).round() as i64));
        }
        cpu.set_shares(l.cpu_shares);
        cpu.set_cpus(l.cpuset_cpus.clone());
        r.set_cpu(Some(cpu));
        any = true;
    }
    if let Some(rules) = &l.devices {
        let rules = rules
            .iter()
            .map(|d| {
                let mut b = LinuxDeviceCgroupBuilder::default()
                    .allow(d.allow)
                    .typ(match d.kind {
                        DeviceKind::All => LinuxDeviceType::A,
                        DeviceKind::Char => LinuxDeviceType::C,
                        DeviceKind::Block => LinuxDeviceType::B,
                    })
                    .access(d.access.as_text());
                if let Some(m) = d.major {
                    b = b.major(m as i64);
                }
                if let Some(m) = d.minor {
                    b = b.minor(m as i64);
                }
                b.build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        r.set_devices(Some(rules));
        any = true;
    }
    Ok(any.then_some(r))
}

/// What the runtime spec cannot say, for a reader of the printed document.
fn annotations(run: &ImageRun) -> HashMap<String, String> {
    let mut a = HashMap::new();
    a.insert(
        "org.rcrun.rootfs".into(),
        "overlay: lowerdir = org.rcrun.rootfs.lowerdir (top first), upperdir on a private tmpfs discarded at exit".into(),
    );
    a.insert(
        "org.rcrun.rootfs.lowerdir".into(),
        run.lowers_top_first
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
    );
    a.insert(
        "org.rcrun.idmaps".into(),
        match &run.mapping {
            IdMapping::None | IdMapping::Entered { .. } => "none (real root, no user namespace)",
            IdMapping::Single { .. } => "written by rcrun (one id: yours)",
            IdMapping::Privileged { .. } =>
                "written by rcrun as root (--userns); the user namespace is entered after the root is built",
            IdMapping::Helpers { .. } => "written by newuidmap/newgidmap from /etc/subuid and /etc/subgid",
        }
        .into(),
    );
    a.insert(
        "org.rcrun.etc-files".into(),
        "/etc/hostname, /etc/hosts and /etc/resolv.conf are written into the overlay's upper dir (no mount) when the image's /etc is a directory; else bound read-only from the run's private scratch tmpfs".into(),
    );
    a.insert(
        "org.rcrun.dev.symlinks".into(),
        DEV_SYMLINKS
            .iter()
            .map(|(l, t)| format!("{l} -> {t}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    if run.init {
        a.insert(
            "org.rcrun.init".into(),
            "process.args run under rcrun's static init (PID 1, from a sealed memfd)".into(),
        );
    }
    a
}

/// The container's mounts, in order (OCI runtime defaults, as runc and crun apply them), and
/// the device nodes real root makes (`linux.devices`, the default ones and `--device`; in a user
/// namespace they are binds of the host's nodes, so mounts).
/// `own_cgroups`: the container has limits, and /sys/fs/cgroup shows them.
fn mounts_and_devices(
    run: &ImageRun,
    own_cgroups: bool,
) -> Result<(Vec<Mount>, Vec<LinuxDevice>), SpecError> {
    let fs = |dest: &str, typ: &str, options: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(typ)
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .build()
    };
    let bind = |dest: &str, source: &Path, options: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ("bind")
            .source(source)
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .build()
    };
    let node = |path: &str, block: bool, major: i64, minor: i64, mode: u32| {
        LinuxDeviceBuilder::default()
            .path(path)
            .typ(if block {
                LinuxDeviceType::B
            } else {
                LinuxDeviceType::C
            })
            .major(major)
            .minor(minor)
            .file_mode(mode)
            .build()
    };
    let mut mounts = vec![
        fs("/proc", "proc", &["nosuid", "noexec", "nodev"])?,
        fs(
            "/dev",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
    ];
    let mut devices = Vec::new();
    // The default nodes, then the --device ones (their parent may be /dev, just mounted). A node
    // is created by real root; in a user namespace mknod is refused, so the host's node is bound
    // (as podman writes it). The compiler adds the default ones a spec does not list.
    for (name, major, minor) in DEFAULT_DEVICES {
        let path = format!("/dev/{name}");
        if run.mounts_as_host_root() {
            devices.push(node(&path, false, *major as i64, *minor as i64, 0o666)?);
        } else {
            mounts.push(bind(&path, Path::new(&path), &["bind"])?);
        }
    }
    for d in &run.devices {
        if run.mounts_as_host_root() {
            devices.push(node(
                &d.container,
                d.block,
                d.major as i64,
                d.minor as i64,
                d.mode,
            )?);
        } else {
            mounts.push(bind(&d.container, &d.host, &["bind"])?);
        }
    }
    mounts.push(fs(
        "/dev/pts",
        "devpts",
        &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
        ],
    )?);
    mounts.push(fs(
        "/dev/shm",
        "tmpfs",
        &["nosuid", "nodev", "noexec", "mode=1777", "size=65536k"],
    )?);
    mounts.push(fs("/dev/mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?);
    // What podman hands crun for these files: binds of files it wrote. rcrun writes them into the
    // overlay's upper dir instead (no mount) when the image's /etc is a directory, else binds
    // them from the run's private scratch tmpfs under these names (the compiler turns a bind at
    // a path of Extras::host_files into that step).
    for dest in HOST_FILES {
        let name = dest.trim_start_matches('/').replace('/', "_");
        mounts.push(bind(dest, &run.scratch.join(name), &["bind"])?);
    }
    // /sys last of the defaults: sysfs shows the network devices of the namespace of the task
    // that mounts it, and as root rcrun creates that namespace while the child does the mounts
    // above (the child joins it just before this one).
    // A fresh sysfs has none of the host's submounts (cgroup hierarchies, debugfs, bpffs, …).
    // Only a user namespace in the host's network namespace cannot mount one (sysfs needs
    // CAP_SYS_ADMIN over the network namespace): it binds the host's /sys, whole tree read-only.
    if run.new_netns || run.mounts_as_host_root() {
        mounts.push(fs("/sys", "sysfs", &["nosuid", "noexec", "nodev", "ro"])?);
        // The container's own cgroups, read-only, as docker mounts them: programs size themselves
        // from them (the JVM, Go's automaxprocs, .NET, nginx's worker count read memory.max or
        // memory.limit_in_bytes and the cpu quota). launch/child/cgroupfs.rs says how. Only with
        // limits: without, there is nothing to size by, and on cgroup v1 the tmpfs and one mount
        // per hierarchy cost ~1 ms of a 9 ms start.
        if own_cgroups {
            mounts.push(fs(
                "/sys/fs/cgroup",
                "cgroup",
                &["nosuid", "noexec", "nodev", "relatime", "ro"],
            )?);
        }
    } else {
        mounts.push(bind("/sys", Path::new("/sys"), &["rbind", "ro"])?);
    }
    for t in &run.tmpfs {
        mounts.push(fs(t, "tmpfs", &["nosuid", "nodev", "mode=1777"])?);
    }
    for vol in &run.volumes {
        let options: &[&str] = if vol.read_only {
            &["rbind", "ro"]
        } else {
            &["rbind"]
        };
        mounts.push(bind(&vol.target, &vol.source, options)?);
    }
    Ok((mounts, devices))
}
