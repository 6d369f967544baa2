//! An image run as an OCI runtime Spec: what rcrun decided from the image's config and the flags
//! ([`ImageRun`]) written as the `config.json` an OCI runtime (runc, crun, youki) would be handed
//! for the same container, as podman writes one before it calls crun. The launcher's compiler
//! ([`crate::launch::plan::compile`]) turns it into the plan, as it does a bundle's;
//! `rcrun run --print-spec` prints it.
//!
//! The document is assembled as JSON and then parsed into the typed `Spec`, so every action,
//! architecture, namespace and capability name is checked against the OCI types (a typo fails
//! the unit tests, not a runtime).
//!
//! What the runtime spec cannot say goes into [`Extras`] (the overlay of store layers that is the
//! root, the contents of the /etc files rcrun writes, the seccomp profile in Docker's format,
//! `-i`, `--init`) and, for a reader of the printed document, into annotations under
//! `org.rcrun.`.

use super::{id_mappings, ranges, resources, seccomp_json, SeccompInput, SpecError, OCI_VERSION};
use crate::cgroup::Limits;
use crate::launch::mounts::{MASKED_PATHS, READONLY_PATHS};
use crate::launch::plan::compile::DEFAULT_DEVICES;
use crate::launch::plan::{DeviceMapping, Extras, IdMapping, ImageLayers, SeccompSource, Volume};
use crate::launch::user::ResolvedUser;
use serde_json::{json, Value};
use std::path::PathBuf;

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
    /// The host's /etc/resolv.conf, for the container's.
    pub resolv_conf: String,
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
}

impl ImageRun {
    /// Real root creates device nodes; in a user namespace whose mounts are made inside it, mknod
    /// is refused, so they are bound from the host. The compiler decides the same way.
    fn mounts_as_host_root(&self) -> bool {
        !self.mapping.user_namespace() || self.mapping.enters_late()
    }
}

/// The files rcrun writes for the container, with their contents: /etc/hostname, /etc/hosts,
/// /etc/resolv.conf.
fn host_files(run: &ImageRun) -> Vec<(String, String)> {
    vec![
        ("/etc/hostname".into(), format!("{}\n", run.hostname)),
        (
            "/etc/hosts".into(),
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
                run.hostname
            ),
        ),
        ("/etc/resolv.conf".into(), run.resolv_conf.clone()),
    ]
}

/// The Spec of an image run, and what it cannot say. `seccomp`: the profile narrowed to the
/// entries that apply, written into `linux.seccomp` (for `--print-spec`; a run compiles the
/// profile in Docker's format from [`Extras::seccomp`], where its includes and excludes by
/// capability and kernel are evaluated the same way, without converting it on every start).
pub fn image_spec(
    run: &ImageRun,
    limits: &Limits,
    seccomp: Option<&SeccompInput<'_>>,
) -> Result<(oci_spec::runtime::Spec, Extras), SpecError> {
    let doc = document(run, limits, seccomp)?;
    let spec = serde_json::from_value(doc)?;
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

/// The same as JSON (what `--print-spec` writes, pretty-printed).
pub fn document(
    run: &ImageRun,
    limits: &Limits,
    seccomp: Option<&SeccompInput<'_>>,
) -> Result<Value, SpecError> {
    let caps: Vec<String> = crate::security::caps::cap_names(&run.caps.bounding);
    let caps_of = |set: &::caps::CapsHashSet| crate::security::caps::cap_names(set);
    let mut process = json!({
        "terminal": run.tty,
        "user": {
            "uid": run.user.uid,
            "gid": run.user.gid,
            "additionalGids": run.user.groups,
        },
        "args": run.argv,
        "env": run.env,
        "cwd": run.cwd,
        "capabilities": {
            "bounding": caps,
            "effective": caps_of(&run.caps.effective),
            "permitted": caps_of(&run.caps.permitted),
            "inheritable": [],
            "ambient": [],
        },
        "noNewPrivileges": run.no_new_privs,
    });
    if let Some(name) = &run.user.name {
        process["user"]["username"] = json!(name);
    }

    let (mounts, devices) = mounts_and_devices(run);
    let (masked, readonly): (Vec<&str>, Vec<&str>) = if run.privileged {
        (Vec::new(), Vec::new())
    } else {
        (MASKED_PATHS.to_vec(), READONLY_PATHS.to_vec())
    };

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "mount"}),
        json!({"type": "uts"}),
        json!({"type": "ipc"}),
        json!({"type": "cgroup"}),
    ];
    if run.new_netns {
        namespaces.push(json!({"type": "network"}));
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "maskedPaths": masked,
        "readonlyPaths": readonly,
        "devices": devices,
    });
    if run.mapping.user_namespace() {
        linux["namespaces"]
            .as_array_mut()
            .expect("array")
            .push(json!({"type": "user"}));
        let (uids, gids) = ranges(&run.mapping);
        linux["uidMappings"] = id_mappings(&uids);
        linux["gidMappings"] = id_mappings(&gids);
    }
    let resources = resources(limits);
    if resources.as_object().is_some_and(|o| !o.is_empty()) {
        linux["resources"] = resources;
    }
    if let Some(s) = seccomp {
        linux["seccomp"] = seccomp_json(s)?;
    }

    let mut annotations = serde_json::Map::new();
    annotations.insert(
        "org.rcrun.rootfs".into(),
        json!("overlay: lowerdir = org.rcrun.rootfs.lowerdir (top first), upperdir on a private tmpfs discarded at exit"),
    );
    annotations.insert(
        "org.rcrun.rootfs.lowerdir".into(),
        json!(run
            .lowers_top_first
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")),
    );
    annotations.insert(
        "org.rcrun.idmaps".into(),
        json!(match &run.mapping {
            IdMapping::None => "none (real root, no user namespace)",
            IdMapping::Single { .. } => "written by rcrun (one id: yours)",
            IdMapping::Privileged { .. } =>
                "written by rcrun as root (--userns); the user namespace is entered after the root is built",
            IdMapping::Helpers { .. } => "written by newuidmap/newgidmap from /etc/subuid and /etc/subgid",
        }),
    );
    annotations.insert(
        "org.rcrun.etc-files".into(),
        json!("/etc/hostname, /etc/hosts and /etc/resolv.conf are written into the overlay's upper dir (no mount) when the image's /etc is a directory; else bound read-only from the run's private scratch tmpfs"),
    );
    annotations.insert(
        "org.rcrun.dev.symlinks".into(),
        json!(crate::launch::plan::compile::DEV_SYMLINKS
            .iter()
            .map(|(l, t)| format!("{l} -> {t}"))
            .collect::<Vec<_>>()
            .join(", ")),
    );
    if run.init {
        annotations.insert(
            "org.rcrun.init".into(),
            json!("process.args run under rcrun's static init (PID 1, from a sealed memfd)"),
        );
    }

    Ok(json!({
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {
            "path": run.scratch.join("merged").display().to_string(),
            "readonly": run.read_only,
        },
        "hostname": run.hostname,
        "mounts": mounts,
        "linux": linux,
        "annotations": annotations,
    }))
}

/// The container's mounts, in order (OCI runtime defaults, as runc and crun apply them), and
/// the device nodes real root makes (`linux.devices`, the default ones and `--device`; in a user
/// namespace they are binds of the host's nodes, so mounts).
fn mounts_and_devices(run: &ImageRun) -> (Vec<Value>, Vec<Value>) {
    let fs = |dest: &str, typ: &str, options: &[&str]| json!({"destination": dest, "type": typ, "source": typ, "options": options});
    let bind = |dest: &str, source: &str, options: &[&str]| json!({"destination": dest, "type": "bind", "source": source, "options": options});
    let mut mounts = vec![
        fs("/proc", "proc", &["nosuid", "noexec", "nodev"]),
        fs(
            "/dev",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
    ];
    let mut devices = Vec::new();
    // The default nodes, then the --device ones (their parent may be /dev, just mounted). A node
    // is created by real root; in a user namespace mknod is refused, so the host's node is bound
    // (as podman writes it). The compiler adds the default ones a spec does not list.
    for (name, major, minor) in DEFAULT_DEVICES {
        let path = format!("/dev/{name}");
        if run.mounts_as_host_root() {
            devices.push(json!({
                "path": path, "type": "c", "major": major, "minor": minor, "fileMode": 0o666,
            }));
        } else {
            mounts.push(bind(&path, &path, &["bind"]));
        }
    }
    for d in &run.devices {
        if run.mounts_as_host_root() {
            devices.push(json!({
                "path": d.container,
                "type": if d.block { "b" } else { "c" },
                "major": d.major,
                "minor": d.minor,
                "fileMode": d.mode,
            }));
        } else {
            mounts.push(bind(&d.container, &d.host.display().to_string(), &["bind"]));
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
    ));
    mounts.push(fs(
        "/dev/shm",
        "tmpfs",
        &["nosuid", "nodev", "noexec", "mode=1777", "size=65536k"],
    ));
    mounts.push(fs("/dev/mqueue", "mqueue", &["nosuid", "noexec", "nodev"]));
    // What podman hands crun for these files: binds of files it wrote. rcrun writes them into the
    // overlay's upper dir instead (no mount) when the image's /etc is a directory, else binds
    // them from the run's private scratch tmpfs under these names (the compiler turns a bind at
    // a path of Extras::host_files into that step).
    for (dest, _) in host_files(run) {
        let name = dest.trim_start_matches('/').replace('/', "_");
        mounts.push(bind(
            &dest,
            &run.scratch.join(name).display().to_string(),
            &["bind"],
        ));
    }
    // /sys last of the defaults: sysfs shows the network devices of the namespace of the task
    // that mounts it, and as root rcrun creates that namespace while the child does the mounts
    // above (the child joins it just before this one).
    // A fresh sysfs has none of the host's submounts (cgroup hierarchies, debugfs, bpffs, …).
    // Only a user namespace in the host's network namespace cannot mount one (sysfs needs
    // CAP_SYS_ADMIN over the network namespace): it binds the host's /sys, whole tree read-only.
    if run.new_netns || run.mounts_as_host_root() {
        mounts.push(fs("/sys", "sysfs", &["nosuid", "noexec", "nodev", "ro"]));
    } else {
        mounts.push(bind("/sys", "/sys", &["rbind", "ro"]));
    }
    for t in &run.tmpfs {
        mounts.push(fs(t, "tmpfs", &["nosuid", "nodev", "mode=1777"]));
    }
    for vol in &run.volumes {
        let mut options = vec!["rbind"];
        if vol.read_only {
            options.push("ro");
        }
        mounts.push(bind(
            &vol.target,
            &vol.source.display().to_string(),
            &options,
        ));
    }
    (mounts, devices)
}
