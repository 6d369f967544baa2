//! The one compiler: an OCI runtime [`Spec`] (a bundle's config.json, or the one an image and
//! the flags make) plus the few [`Extras`] OCI cannot say, and the [`HostFacts`] of this
//! machine, → the [`StartupPlan`] the launcher runs. Pure: no file is read and nothing is
//! changed; the only place where the rules about namespaces, id maps, capabilities, rlimits,
//! mounts, devices and masked paths are decided.
//!
//! What rcrun cannot do yet is refused by name (exit 125) rather than ignored: a runtime that
//! silently drops a namespace path or a hook runs something other than what was asked.

use crate::cgroup::devices::{Access, DeviceKind, DeviceRule};
use crate::cgroup::Limits;
use crate::host::Privilege;
use crate::launch::mounts::{Mnt, MountStep};
use crate::launch::plan::{IdMapping, IdRange};
use crate::launch::user::ResolvedUser;
use crate::launch::{NsKind, Rlimit, StartupPlan};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("config.json asks for {0}, which rcrun does not support yet")]
    Unsupported(String),
    #[error("config.json: {0}")]
    Spec(String),
    #[error("the OCI runtime spec does not convert: {0}")]
    Json(#[from] serde_json::Error),
}

/// What a start needs that the OCI runtime spec cannot say. Empty for a bundle.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// An image run: the root is an overlay of these store layers on a private upper dir
    /// (`root.path` only names where it is mounted); a bundle's root is its `root.path`.
    pub layers: Option<ImageLayers>,
    /// Files rcrun writes for the container (destination, contents): a bind mount of the spec at
    /// one of these paths becomes a [`Mnt::HostFile`] (written into the overlay's upper dir when
    /// the image's /etc is a directory, else bound from the scratch tmpfs).
    pub host_files: Vec<(String, String)>,
    /// An image run's seccomp profile in Docker's format, whose includes and excludes by
    /// capability and kernel the profile compiler evaluates (OCI's `linux.seccomp` has none).
    pub seccomp: Option<SeccompSource>,
    /// `-i` without `-t` or the reverse; None: as `process.terminal` says.
    pub interactive: Option<bool>,
    /// `--init`: rcrun's static init runs as PID 1 and starts `process.args`.
    pub init: bool,
}

/// The store layers an image run's root is made of.
#[derive(Debug, Clone)]
pub struct ImageLayers {
    /// Layer dirs, top layer first (overlayfs lowerdir order).
    pub lowers_top_first: Vec<PathBuf>,
    /// Index of the topmost layer with an `etc` entry (its /etc decides).
    pub etc_layer: Option<usize>,
}

/// A seccomp profile to compile: its name for messages, and its bytes (Docker's format or OCI's
/// `linux.seccomp` object; the profile compiler reads both).
#[derive(Debug, Clone)]
pub struct SeccompSource {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The device nodes every container gets (runtime-spec config-linux.md, "Default Devices"):
/// name under /dev, major, minor.
pub const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// The /dev symlinks runc and crun make (/dev/core theirs only): link, target.
pub const DEV_SYMLINKS: &[(&str, &str)] = &[
    ("/dev/ptmx", "pts/ptmx"),
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
    ("/dev/core", "/proc/kcore"),
];

/// Facts of this machine and this start, not of the container.
pub struct HostFacts<'a> {
    /// Who runs rcrun: decides who writes the id maps, whether device nodes can be made, and
    /// whether the device cgroup applies.
    pub privilege: &'a Privilege,
    /// Relative paths of the spec (root.path, bind sources) are relative to it.
    pub bundle: &'a Path,
    /// The container's ID.
    pub id: &'a str,
    /// The store's run dir, where the child mounts its private scratch tmpfs.
    pub scratch: &'a Path,
}

/// A compiled start: the plan, its cgroup limits, and the seccomp object of the spec (JSON in
/// the OCI format, which rcrun's profile compiler reads; compiled and cached by the caller, who
/// has the store).
pub struct Compiled {
    pub plan: StartupPlan,
    pub limits: Limits,
    pub seccomp: Option<SeccompSource>,
    /// `linux.cgroupsPath`: where the cgroup goes (None: rcrun's own `rcrun/<id>`).
    pub cgroups_path: Option<String>,
}

fn unsupported(what: impl Into<String>) -> CompileError {
    CompileError::Unsupported(what.into())
}

/// Compiles `spec` into the plan the launcher runs.
pub fn compile(
    spec: &Spec,
    extras: &Extras,
    host: &HostFacts<'_>,
) -> Result<Compiled, CompileError> {
    let HostFacts {
        privilege,
        bundle,
        id,
        scratch,
    } = *host;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| unsupported("a spec without root"))?;
    // An image run's root is the overlay of its layers; a bundle's, its root.path.
    let rootfs = match &extras.layers {
        Some(_) => None,
        None => {
            let rootfs = if root.path().is_absolute() {
                root.path().clone()
            } else {
                bundle.join(root.path())
            };
            if !rootfs.is_dir() {
                return Err(CompileError::Spec(format!(
                    "root.path {} is not a directory",
                    rootfs.display()
                )));
            }
            Some(rootfs)
        }
    };
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| unsupported("a spec without process"))?;
    let argv = process.args().clone().unwrap_or_default();
    if argv.is_empty() {
        return Err(CompileError::Spec("process.args is empty".into()));
    }
    let linux = spec.linux().clone().unwrap_or_default();
    let mut sysctls: Vec<(String, String)> = linux
        .sysctl()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    sysctls.sort();
    for (key, _) in &sysctls {
        check_sysctl(key, &linux)?;
    }

    let root_propagation = match linux.rootfs_propagation() {
        None => None,
        Some(p) if p.is_empty() => None,
        Some(p) => Some(propagation_flag(p).ok_or_else(|| {
            CompileError::Spec(format!(
                "linux.rootfsPropagation {p:?}: expected shared, slave, private or unbindable \
                 (r- forms too)"
            ))
        })?),
    };

    // Hooks run by rcrun (oci::hooks); the first three while the child waits before pivot_root.
    #[allow(deprecated)] // prestart: deprecated by the spec, still what engines send
    let hooks_point = spec.hooks().as_ref().is_some_and(|h| {
        [h.prestart(), h.create_runtime(), h.create_container()]
            .iter()
            .any(|l| l.as_ref().is_some_and(|l| !l.is_empty()))
    });

    if !privilege.is_real_root()
        && spec
            .hooks()
            .as_ref()
            .and_then(|h| h.start_container().as_ref())
            .is_some_and(|l| !l.is_empty())
    {
        return Err(unsupported(
            "startContainer hooks without real root: they run in the container's namespaces, \
             which `rcrun start` enters from outside, and the container's process stays \
             non-dumpable until its execve (CVE-2019-5736), which closes its /proc/PID/ns to a \
             rootless rcrun",
        ));
    }

    // Namespaces: a listed type without a path is a new namespace, with a path the namespace at
    // that path, and an unlisted one rcrun's own (see StartupPlan::inherit). The mount namespace
    // is always rcrun's to make or join.
    let (new_netns, userns, inherit, joins) = namespaces(&linux, privilege)?;
    if spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) && inherit.contains(&NsKind::Uts) {
        return Err(CompileError::Spec(
            "hostname is set but the spec has no uts namespace of its own: it would rename the host"
                .into(),
        ));
    }
    let uids = ranges(linux.uid_mappings());
    let gids = ranges(linux.gid_mappings());
    let mapping = mapping(privilege, userns, uids, gids)?;

    // Capabilities: all five sets as the spec says (an image run's spec leaves inheritable and
    // ambient empty).
    let caps = match process.capabilities() {
        Some(c) => {
            let set = |s: &Option<oci_spec::runtime::Capabilities>| -> Result<::caps::CapsHashSet, CompileError> {
                s.iter()
                    .flatten()
                    .map(|c| {
                        // oci-spec writes the kernel's name without CAP_ ("SYS_ADMIN").
                        crate::security::parse_cap(&format!("CAP_{c}"))
                            .map_err(|e| CompileError::Spec(e.to_string()))
                    })
                    .collect()
            };
            crate::security::CapPlan {
                bounding: set(c.bounding())?,
                effective: set(c.effective())?,
                permitted: set(c.permitted())?,
                inheritable: set(c.inheritable())?,
                ambient: set(c.ambient())?,
            }
        }
        None => crate::security::CapPlan::default(),
    };

    let u = process.user();
    let user = ResolvedUser {
        uid: u.uid(),
        gid: u.gid(),
        groups: u.additional_gids().clone().unwrap_or_default(),
        home: String::new(),
        name: u.username().clone(),
    };
    if !mapping.maps_uid(user.uid) {
        return Err(CompileError::Spec(format!(
            "process.user.uid {} is not mapped by linux.uidMappings",
            user.uid
        )));
    }

    let mut rlimits = Vec::new();
    for r in process.rlimits().iter().flatten() {
        let name = serde_json::to_value(r.typ())?;
        let name = name.as_str().unwrap_or_default();
        rlimits.push(Rlimit {
            resource: rlimit_resource(name).ok_or_else(|| unsupported(format!("rlimit {name}")))?,
            soft: r.soft(),
            hard: r.hard(),
        });
    }

    let can_mknod = !mapping.in_user_namespace() || mapping.enters_late();
    let mut mounts = Vec::new();
    for m in spec.mounts().iter().flatten() {
        let step = mount_step(m, bundle, &extras.host_files)?;
        let propagation = m
            .options()
            .iter()
            .flatten()
            .filter_map(|o| propagation_flag(o))
            .fold(0u64, |acc, f| acc | f);
        let target = step.target.clone();
        mounts.push(step);
        if propagation != 0 {
            mounts.push(MountStep {
                target,
                what: Mnt::Propagation { flags: propagation },
            });
        }
    }
    let spec_end = mounts.len();
    // After every mount of the spec, as runc and crun order them (createDevices, then the
    // symlinks, then the masked and read-only paths, so that no mount of the spec can cover
    // them): the devices every OCI container gets, then the spec's own, then the /dev symlinks.
    // A default node the spec lists (as a device, or bound as a mount) is made once, as listed
    // (runc merges them by path the same way).
    let listed = |path: &str| {
        linux
            .devices()
            .iter()
            .flatten()
            .any(|d| d.path() == Path::new(path))
            || mounts.iter().any(|m: &MountStep| m.target == path)
    };
    let mut nodes: Vec<(String, bool, u64, u64, u32)> = DEFAULT_DEVICES
        .iter()
        .map(|(n, a, b)| (format!("/dev/{n}"), false, *a, *b, 0o666))
        .filter(|(path, ..)| !listed(path))
        .collect();
    let mut fifos = Vec::new();
    for d in linux.devices().iter().flatten() {
        if matches!(d.typ(), oci_spec::runtime::LinuxDeviceType::P) {
            // A fifo is no device: made with mknod(S_IFIFO) wherever, rootless too.
            fifos.push(MountStep {
                target: d.path().display().to_string(),
                what: Mnt::Fifo {
                    mode: d.file_mode().unwrap_or(0o666),
                },
            });
            continue;
        }
        let block = matches!(d.typ(), oci_spec::runtime::LinuxDeviceType::B);
        nodes.push((
            d.path().display().to_string(),
            block,
            d.major() as u64,
            d.minor() as u64,
            d.file_mode().unwrap_or(0o666),
        ));
    }
    for (path, block, major, minor, mode) in &nodes {
        mounts.push(MountStep {
            target: path.clone(),
            what: if can_mknod {
                Mnt::Device {
                    block: *block,
                    major: *major,
                    minor: *minor,
                    mode: *mode,
                }
            } else {
                Mnt::Bind {
                    source: PathBuf::from(path),
                    recursive: false,
                    read_only: false,
                }
            },
        });
    }
    mounts.append(&mut fifos);
    for (l, t) in DEV_SYMLINKS {
        mounts.push(MountStep {
            target: l.to_string(),
            what: Mnt::Symlink { to: t.to_string() },
        });
    }
    for p in linux.masked_paths().iter().flatten() {
        mounts.push(MountStep {
            target: p.clone(),
            what: Mnt::Mask,
        });
    }
    for p in linux.readonly_paths().iter().flatten() {
        mounts.push(MountStep {
            target: p.clone(),
            what: Mnt::ReadOnly,
        });
    }
    if new_netns {
        sys_steps_last(&mut mounts, spec_end);
    }

    let limits = limits(&linux, privilege)?;
    let seccomp = match (&extras.seccomp, linux.seccomp()) {
        (Some(source), _) => Some(source.clone()),
        (None, Some(s)) => Some(SeccompSource {
            name: "config.json linux.seccomp".into(),
            bytes: serde_json::to_vec(s)?,
        }),
        (None, None) => None,
    };
    let terminal = process.terminal().unwrap_or(false);
    let plan = StartupPlan {
        id: id.to_string(),
        mapping,
        id_holder: None,
        new_netns,
        scratch: scratch.to_path_buf(),
        lowers_top_first: extras
            .layers
            .as_ref()
            .map(|l| l.lowers_top_first.clone())
            .unwrap_or_default(),
        rootfs_dir: rootfs,
        rlimits,
        etc_layer: extras.layers.as_ref().and_then(|l| l.etc_layer),
        mounts,
        read_only: root.readonly().unwrap_or(false),
        hostname: spec.hostname().clone().unwrap_or_default(),
        argv,
        env: process.env().clone().unwrap_or_default(),
        cwd: process.cwd().display().to_string(),
        user,
        no_new_privs: process.no_new_privileges().unwrap_or(false),
        caps,
        seccomp: None,
        tty: terminal,
        interactive: extras.interactive.unwrap_or(terminal),
        init: extras.init,
        cgroup: Default::default(),
        die_with_rcrun: true,
        start_gate: Default::default(),
        sysctls,
        oom_score_adj: process.oom_score_adj(),
        root_propagation,
        inherit,
        joins,
        hooks_point,
        enter_running: false,
        preserve_fds: 0,
    };
    let cgroups_path = linux
        .cgroups_path()
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty());
    Ok(Compiled {
        plan,
        limits,
        seccomp,
        cgroups_path,
    })
}

fn ranges(m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>) -> Vec<IdRange> {
    m.iter()
        .flatten()
        .map(|r| IdRange {
            inside: r.container_id(),
            outside: r.host_id(),
            count: r.size(),
        })
        .collect()
}

/// Who writes which id maps: root may write any single range itself (entered after the root is
/// built, as `--userns`); a plain user writes its own id, and the setuid helpers the rest.
fn mapping(
    privilege: &Privilege,
    userns: bool,
    uids: Vec<IdRange>,
    gids: Vec<IdRange>,
) -> Result<IdMapping, CompileError> {
    if !userns {
        if !uids.is_empty() || !gids.is_empty() {
            return Err(CompileError::Spec(
                "linux.uidMappings/gidMappings given without a user namespace".into(),
            ));
        }
        return match privilege {
            Privilege::Root => Ok(IdMapping::None),
            // Root of a user namespace rcrun already runs in (rootless podman runs its runtime
            // inside its own, `unshare -Ur` likewise): the container shares it, as runc does.
            Privilege::FakeRoot => Ok(IdMapping::Entered {
                setgroups: crate::host::setgroups_allowed(),
            }),
            _ => Err(CompileError::Spec(
                "rootless, the spec needs a user namespace with uid/gid mappings (rcrun spec --rootless writes one)".into(),
            )),
        };
    }
    if uids.is_empty() || gids.is_empty() {
        return Err(CompileError::Spec(
            "a user namespace needs linux.uidMappings and linux.gidMappings".into(),
        ));
    }
    match privilege {
        Privilege::Root if uids.len() == 1 && gids.len() == 1 => Ok(IdMapping::Privileged {
            uid: uids[0],
            gid: gids[0],
        }),
        Privilege::Root => Err(unsupported(
            "more than one uid or gid mapping range as root",
        )),
        Privilege::FakeRoot | Privilege::Rootless { .. } => {
            let (own_uid, own_gid) = match privilege {
                Privilege::Rootless { uid, gid, .. } => (*uid, *gid),
                _ => (0, 0),
            };
            let single =
                |r: &[IdRange], own: u32| r.len() == 1 && r[0].outside == own && r[0].count == 1;
            if single(&uids, own_uid) && single(&gids, own_gid) {
                return Ok(IdMapping::Single {
                    uid: uids[0],
                    gid: gids[0],
                });
            }
            match privilege {
                Privilege::Rootless {
                    subids: Some(s), ..
                } => Ok(IdMapping::Helpers {
                    uids,
                    gids,
                    newuidmap: s.newuidmap.clone(),
                    newgidmap: s.newgidmap.clone(),
                }),
                _ => Err(CompileError::Spec(format!(
                    "these id mappings need newuidmap/newgidmap and a range in /etc/subuid and /etc/subgid; without them only your own ids ({own_uid}:{own_gid}) can be mapped, with size 1"
                ))),
            }
        }
    }
}

type Namespaces = (bool, bool, Vec<NsKind>, Vec<(NsKind, PathBuf)>);

/// `linux.namespaces` → (new network namespace, user namespace listed, inherited kinds, joins in
/// join order). Each type at most once; paths only as real root and not for the user or mount
/// namespace (see the errors).
fn namespaces(
    linux: &oci_spec::runtime::Linux,
    privilege: &Privilege,
) -> Result<Namespaces, CompileError> {
    use LinuxNamespaceType as T;
    let mut seen = Vec::new();
    let mut joins = Vec::new();
    let (mut new_netns, mut userns) = (false, false);
    for ns in linux.namespaces().iter().flatten() {
        let kind = match ns.typ() {
            T::Mount => NsKind::Mount,
            T::Cgroup => NsKind::Cgroup,
            T::Uts => NsKind::Uts,
            T::Ipc => NsKind::Ipc,
            T::User => NsKind::User,
            T::Pid => NsKind::Pid,
            T::Network => NsKind::Net,
            T::Time => return Err(unsupported("a time namespace")),
        };
        if seen.contains(&kind) {
            return Err(CompileError::Spec(format!(
                "linux.namespaces lists the {} namespace twice",
                kind.proc_name()
            )));
        }
        seen.push(kind);
        match ns.path().as_ref().filter(|p| !p.as_os_str().is_empty()) {
            None => match kind {
                NsKind::Net => new_netns = true,
                NsKind::User => userns = true,
                _ => {}
            },
            Some(path) => {
                if !path.is_absolute() {
                    return Err(CompileError::Spec(format!(
                        "linux.namespaces: the {} namespace path {} is not absolute",
                        kind.proc_name(),
                        path.display()
                    )));
                }
                if kind == NsKind::User {
                    return Err(unsupported(format!(
                        "joining a user namespace by path ({})",
                        path.display()
                    )));
                }
                if !privilege.is_real_root() {
                    return Err(unsupported(format!(
                        "joining a namespace by path ({} at {}) without real root: rcrun's \
                         process in its own user namespace has no privilege over the others",
                        kind.proc_name(),
                        path.display()
                    )));
                }
                joins.push((kind, path.clone()));
            }
        }
    }
    let inherit = [NsKind::Pid, NsKind::Uts, NsKind::Ipc, NsKind::Cgroup]
        .into_iter()
        .filter(|k| !seen.contains(k))
        .collect();
    joins.sort_by_key(|(k, _)| *k);
    Ok((new_netns, userns, inherit, joins))
}

/// A sysctl the container may set: one of its own namespaces' (runc's list: ipc's kernel.msg*,
/// kernel.sem, kernel.shm*, fs.mqueue.*; uts' kernel.hostname and kernel.domainname; net.*
/// with a network namespace of its own), spelled with nothing a path could escape with.
fn check_sysctl(key: &str, linux: &oci_spec::runtime::Linux) -> Result<(), CompileError> {
    let spelled = !key.is_empty()
        && !key.starts_with('.')
        && !key.contains("..")
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if !spelled {
        return Err(CompileError::Spec(format!(
            "linux.sysctl {key:?}: not a sysctl name"
        )));
    }
    let key = key.replace('/', ".");
    let has = |t: LinuxNamespaceType| linux.namespaces().iter().flatten().any(|n| n.typ() == t);
    let ipc = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let ok = ipc.contains(&key.as_str())
        || key.starts_with("fs.mqueue.")
        || key == "kernel.hostname"
        || key == "kernel.domainname"
        || (key.starts_with("net.") && has(LinuxNamespaceType::Network));
    if ok {
        Ok(())
    } else {
        Err(CompileError::Spec(format!(
            "linux.sysctl {key:?} is not in a namespace of the container's own: it would change the host"
        )))
    }
}

fn rlimit_resource(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Some(match name {
        "RLIMIT_AS" => R::RLIMIT_AS,
        "RLIMIT_CORE" => R::RLIMIT_CORE,
        "RLIMIT_CPU" => R::RLIMIT_CPU,
        "RLIMIT_DATA" => R::RLIMIT_DATA,
        "RLIMIT_FSIZE" => R::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => R::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => R::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => R::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => R::RLIMIT_NICE,
        "RLIMIT_NOFILE" => R::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => R::RLIMIT_NPROC,
        "RLIMIT_RSS" => R::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => R::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => R::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => R::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => R::RLIMIT_STACK,
        _ => return None,
    })
}

/// linux.resources → cgroup limits; as root the device rules always (the spec's, or the OCI
/// default when it gives none: a bundle run as root is not left unconfined).
fn limits(linux: &oci_spec::runtime::Linux, privilege: &Privilege) -> Result<Limits, CompileError> {
    let r = linux.resources().clone().unwrap_or_default();
    let mut l = crate::cgroup::from_spec(&r).map_err(|e| CompileError::Spec(e.to_string()))?;
    if matches!(privilege, Privilege::Root) {
        let rules: Vec<DeviceRule> = r
            .devices()
            .iter()
            .flatten()
            .map(|d| {
                let access = match d.access() {
                    Some(a) => Access::parse(a).map_err(|e| CompileError::Spec(e.to_string()))?,
                    None => Access::RWM,
                };
                Ok(DeviceRule {
                    allow: d.allow(),
                    kind: match d.typ() {
                        Some(oci_spec::runtime::LinuxDeviceType::C) => DeviceKind::Char,
                        Some(oci_spec::runtime::LinuxDeviceType::B) => DeviceKind::Block,
                        _ => DeviceKind::All,
                    },
                    major: d.major().map(|v| v as u32),
                    minor: d.minor().map(|v| v as u32),
                    access,
                })
            })
            .collect::<Result<_, CompileError>>()?;
        // The default devices stay usable whatever the spec's rules say (runc appends them the
        // same way): only their specific allows, after the spec's own rules.
        l.devices = Some(if rules.is_empty() {
            crate::cgroup::devices::oci_default_rules()
        } else {
            let mut rules = rules;
            // Once each: an image run's spec already lists them.
            for r in crate::cgroup::devices::oci_default_rules() {
                if r.allow && r.major.is_some() && !rules.contains(&r) {
                    rules.push(r);
                }
            }
            rules
        });
        // The spec's own nodes are usable (runc adds the same allows): under the devices cgroup
        // even mknod of a node outside the policy fails with EPERM. A node the spec's rules
        // already name keeps what they say (an image run's `--device /dev/kmsg:/dev/k:r`).
        if let Some(rules) = l.devices.as_mut() {
            for d in linux.devices().iter().flatten() {
                let kind = match d.typ() {
                    oci_spec::runtime::LinuxDeviceType::B => DeviceKind::Block,
                    oci_spec::runtime::LinuxDeviceType::C
                    | oci_spec::runtime::LinuxDeviceType::U => DeviceKind::Char,
                    _ => continue,
                };
                let (major, minor) = (Some(d.major() as u32), Some(d.minor() as u32));
                let named = rules
                    .iter()
                    .any(|r| r.kind == kind && r.major == major && r.minor == minor);
                if !named {
                    rules.push(DeviceRule {
                        allow: true,
                        kind,
                        major,
                        minor,
                        access: Access::RWM,
                    });
                }
            }
        }
    }
    Ok(l)
}

// The `mounts` list: one OCI mount → one mount step (split out along that seam).
#[path = "compile_mounts.rs"]
mod mounts;
use mounts::{mount_step, propagation_flag, sys_steps_last};

#[cfg(test)]
#[path = "tests_compile.rs"]
mod tests;
