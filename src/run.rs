//! `rcrun run`: the whole pipeline — image, unpack, plan, launch — for one container.

use crate::cli::RunArgs;
use crate::image::Image;
use crate::launch::explain::Explain;
use crate::launch::mounts::{plan_mounts, MountInputs};
use crate::launch::parent::{self, BeforeStart};
use crate::launch::plan::{self, IdMapping};
use crate::launch::StartupPlan;
use crate::unpack::{self, ReadyLayer};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// A short random container id (12 hex digits, like docker's short ids).
fn container_id() -> String {
    let mut b = [0u8; 6];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        b.copy_from_slice(&(t ^ std::process::id() as u64).to_le_bytes()[..6]);
    }
    hex::encode(b)
}

/// Places the container in its cgroup between clone and start (before execve).
struct CgroupHook<'a> {
    cgroup: Option<&'a mut crate::cgroup::Cgroup>,
    /// As root: the cgroup fs to sweep for stale cgroups of killed runs once the child is on its
    /// way.
    sweep_stale: Option<&'a crate::cgroup::CgroupFs>,
    /// The child moves itself (v1 `tasks` files opened before clone).
    child_joins: bool,
    ex: &'a Explain,
}

impl BeforeStart for CgroupHook<'_> {
    fn meanwhile(&mut self) {
        let Some(fs) = self.sweep_stale else {
            return;
        };
        // Cgroups of killed runs (rcrun got SIGKILL before removing its own): empty ones whose
        // owning rcrun (named in the cgroup's name) is gone. Swept here, while the child builds
        // its root, rather than on the way to clone. Unowned ones (older rcrun versions) only
        // after 30 s, as they may belong to runs starting right now.
        let t = std::time::Instant::now();
        let removed =
            crate::cgroup::gc_stale_older_than(fs, None, std::time::Duration::from_secs(30));
        for p in &removed {
            tracing::info!(path = %p.display(), "removed stale cgroup of a killed run");
        }
        // Not counted in the closing per-stage shares: it overlaps the child's steps.
        self.ex.detail(
            "cgroup",
            &format!(
                "sweep cgroups of killed runs (empty, owner gone) under rcrun/ — in rcrun, while the child mounts (overlaps it: not in the shares): {} removed",
                removed.len()
            ),
            t.elapsed(),
        );
    }

    fn self_join_files(
        &mut self,
    ) -> Result<Vec<(std::path::PathBuf, std::os::fd::OwnedFd)>, String> {
        let Some(cg) = self.cgroup.as_deref() else {
            return Ok(Vec::new());
        };
        let opened: Result<Vec<_>, std::io::Error> = cg
            .self_join_files()
            .into_iter()
            .map(|p| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map(|f| (p.clone(), std::os::fd::OwnedFd::from(f)))
            })
            .collect();
        match opened {
            Ok(files) => {
                self.child_joins = !files.is_empty();
                Ok(files)
            }
            // A delegation that chowned cgroup.procs but not tasks: rcrun moves the child then.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(Vec::new()),
            Err(e) => Err(format!("open the cgroup's tasks files for writing: {e}")),
        }
    }

    fn clone_into(&mut self) -> Result<Option<(String, std::os::fd::OwnedFd)>, String> {
        let Some(dir) = self.cgroup.as_deref().and_then(|cg| cg.clone_into_dir()) else {
            return Ok(None);
        };
        let fd = nix::fcntl::open(
            dir,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| format!("open {}: {e}", dir.display()))?;
        Ok(Some((dir.display().to_string(), fd)))
    }

    fn before_start(&mut self, pid: nix::unistd::Pid, born_inside: bool) -> Result<(), String> {
        if born_inside {
            return Ok(());
        }
        if self.child_joins {
            return Ok(());
        }
        if let Some(cg) = self.cgroup.as_deref_mut() {
            let paths: Vec<String> = cg
                .paths()
                .iter()
                .map(|p| p.join("cgroup.procs").display().to_string())
                .collect();
            self.ex.timed(
                "cgroup",
                &format!("write {pid} to {}", paths.join(", ")),
                || cg.add_process(pid.as_raw()).map_err(|e| e.to_string()),
            )?;
        }
        Ok(())
    }
}

fn describe_limits(l: &crate::cgroup::Limits) -> String {
    use crate::cgroup::format_size;
    let mut v = Vec::new();
    if let Some(m) = l.memory {
        v.push(format!("memory {}", format_size(m)));
    }
    match l.memory_swap {
        Some(-1) => v.push("memory+swap unlimited".into()),
        Some(s) => v.push(format!("memory+swap {}", format_size(s as u64))),
        None => {}
    }
    if let Some(p) = l.pids {
        v.push(format!("pids {p}"));
    }
    if let Some(c) = l.cpus {
        v.push(format!("cpus {c}"));
    }
    if let Some(s) = l.cpu_shares {
        v.push(format!("cpu-shares {s}"));
    }
    if let Some(c) = &l.cpuset_cpus {
        v.push(format!("cpuset {c}"));
    }
    if v.is_empty() {
        "no limits: accounting only".into()
    } else {
        v.join(", ")
    }
}

/// Resource limits from the flags (sizes and counts validated here, before anything starts).
fn limits(a: &RunArgs) -> Result<crate::cgroup::Limits> {
    use crate::cgroup::{parse_cpus, parse_cpuset, parse_size};
    let swap = match a.memory_swap.as_deref() {
        None => None,
        Some("-1") => Some(-1),
        Some(s) => Some(parse_size(s).with_context(|| format!("--memory-swap {s}"))? as i64),
    };
    Ok(crate::cgroup::Limits {
        memory: a
            .memory
            .as_deref()
            .map(|s| parse_size(s).with_context(|| format!("--memory {s}")))
            .transpose()?,
        memory_swap: swap,
        pids: a.pids_limit,
        cpus: a
            .cpus
            .as_deref()
            .map(|s| parse_cpus(s).with_context(|| format!("--cpus {s}")))
            .transpose()?,
        cpu_shares: a.cpu_shares,
        cpuset_cpus: a
            .cpuset_cpus
            .as_deref()
            .map(|s| parse_cpuset(s).with_context(|| format!("--cpuset-cpus {s}")))
            .transpose()?,
        // Set by `device_policy` once the plan says who runs the container.
        devices: None,
    })
}

pub fn cmd_run(ctx: &Ctx, a: &RunArgs) -> Result<i32> {
    if let Some(bundle) = &a.bundle {
        return cmd_run_bundle(ctx, a, bundle);
    }
    let ex = Explain::new(a.explain);
    ex.step(
        "start",
        &format!(
            "rcrun {} as {}",
            env!("CARGO_PKG_VERSION"),
            ctx.privilege.describe()
        ),
        std::time::Duration::ZERO,
    );
    let store = ex.timed(
        "store",
        &format!("open layer store {} (mode 0700)", ctx.store_root.display()),
        || ctx.open_store(),
    )?;
    let selection = a.image.selection_key();
    let reference = selection.as_deref();
    let cached = ex.timed(
        "image",
        &format!(
            "stat {} and look it up in the image cache; re-hash its manifest and config bytes",
            a.image.image.display()
        ),
        || {
            Ok::<_, anyhow::Error>(crate::image::cache::load(
                &store.cache_dir(),
                &a.image.image,
                reference,
            ))
        },
    )?;
    let (mut archive, image) = match cached {
        Some(image) => {
            crate::print_warnings(&image);
            (None, image)
        }
        None => {
            let (archive, image) = ex.timed(
                "image",
                &format!(
                    "read {} (index the tar, parse manifest and config) and select the image",
                    a.image.image.display()
                ),
                || crate::open_image(&store, &a.image),
            )?;
            crate::image::cache::save(&store.cache_dir(), reference, &archive, &image);
            (Some(archive), image)
        }
    };
    ex.step(
        "image",
        &format!(
            "{}: {}{} {} ({} layer(s), id {}){}",
            a.image.image.display(),
            image.format,
            match archive.as_ref().map(|a| a.compression()) {
                Some(c) if c != crate::image::compression::ArchiveCompression::None => format!(
                    ", {}-compressed (indexed in one decompressing pass, each layer streamed by another)",
                    c.name()
                ),
                _ => String::new(),
            },
            image.name(),
            image.layers.len(),
            image.id.short(),
            if archive.is_none() {
                ", from the image cache (same file, same manifest and config bytes)"
            } else {
                ""
            }
        ),
        std::time::Duration::ZERO,
    );
    // Before anything is unpacked: an image of another platform fails here, named, rather than
    // at exec with ENOEXEC.
    if let Some(note) = crate::image::platform::check_runnable(&image)? {
        eprintln!("rcrun: warning: {}", crate::printable(&note));
    }
    let mode = owner_mode(ctx, a);
    let unpack_started = std::time::Instant::now();
    let layers = match unpack::present_layers(&store, &mode, &image) {
        Some(l) => l,
        None => ensure_layers(
            ctx,
            &store,
            match &mut archive {
                Some(a) => a,
                opened => opened.insert(crate::image::Archive::open(
                    &a.image.image,
                    &store.tmp_dir(),
                )?),
            },
            &image,
            &mode,
            !ctx.quiet && !a.explain,
        )?,
    };
    for (i, l) in layers.iter().enumerate() {
        let how = if l.found {
            "found in store"
        } else {
            "extracted + verified"
        };
        // Layers are extracted in parallel: each line shows its own time, the stage total
        // below the wall-clock time.
        ex.detail(
            "layer",
            &format!(
                "{}/{} {} {how}: {}",
                i + 1,
                layers.len(),
                l.diff_id,
                l.dir.display()
            ),
            l.took,
        );
    }
    let extracted = layers.iter().filter(|l| !l.found).count();
    ex.step(
        "layer",
        &format!(
            "{} layer(s) ready: {extracted} extracted, {} found in the store",
            layers.len(),
            layers.len() - extracted
        ),
        unpack_started.elapsed(),
    );
    drop(archive);
    let sec = security_options(&a.security_opt)?;
    let mut plan = build_plan(ctx, a, &sec, &image, &layers, &store.run_dir())?;
    plan.seccomp = seccomp_filter(&store, a, &sec, &plan, &ex)?;
    ex.step(
        "plan",
        &format!(
            "user {}:{} groups {:?} cwd {} argv {:?}",
            plan.user.uid, plan.user.gid, plan.user.groups, plan.cwd, plan.argv
        ),
        std::time::Duration::ZERO,
    );
    if ex.enabled {
        for e in &plan.env {
            ex.step("env", e, std::time::Duration::ZERO);
        }
    }
    let mut limits = limits(a)?;
    limits.devices = device_policy(ctx, a, &plan, &ex);
    if a.print_spec {
        print_spec(a, &sec, &plan, &limits)?;
        return Ok(0);
    }
    launch(ctx, a, &ex, &plan, &limits)
}

/// Cgroup, namespaces, the child's start, the wait, and the cleanup: the same for an image and
/// for an OCI bundle.
fn launch(
    ctx: &Ctx,
    a: &RunArgs,
    ex: &Explain,
    plan: &StartupPlan,
    limits: &crate::cgroup::Limits,
) -> Result<i32> {
    let cg_fs = crate::cgroup::CgroupFs::host();
    let mut cgroup = if !ctx.privilege.is_real_root() && limits.is_empty() && !a.stats {
        // Rootless without limits or --stats: nothing to enforce or read, so no cgroup (and no
        // probing for a delegated subtree on the start path).
        None
    } else {
        ex.timed(
            "cgroup",
            &format!(
                "create cgroup for container {} ({})",
                plan.id,
                describe_limits(limits)
            ),
            || {
                crate::cgroup::Cgroup::create(
                    &cg_fs,
                    &crate::cgroup::owned_name(&plan.id, crate::cgroup::Owner::current()),
                    limits,
                )
            },
        )?
    };
    if let Some(cg) = &cgroup {
        for (path, value) in cg.writes() {
            ex.step(
                "cgroup",
                &format!("write {value:?} to {}", path.display()),
                std::time::Duration::ZERO,
            );
        }
    }
    let started = parent::start_and_wait(
        plan,
        ex,
        &mut CgroupHook {
            sweep_stale: (cgroup.is_some() && ctx.privilege.is_real_root()).then_some(&cg_fs),
            child_joins: false,
            cgroup: cgroup.as_mut(),
            ex,
        },
    );
    let mut outcome = match started {
        Ok(o) => o,
        Err(e) => {
            if let Some(cg) = cgroup.take() {
                let _ = cg.remove();
            }
            return Err(anyhow::Error::new(e).context("starting the container"));
        }
    };
    if let Some(cg) = cgroup.take() {
        // The kernel's OOM killer picks any process of the cgroup; a shell as PID 1 then exits 137
        // itself. Either way the container died of its memory limit.
        let oom_status =
            outcome.signaled == Some(nix::sys::signal::Signal::SIGKILL) || outcome.status == 137;
        if oom_status && cg.oom_killed() {
            let limit = cg
                .memory_limit()
                .map(crate::cgroup::format_size)
                .unwrap_or_else(|| "?".into());
            eprintln!(
                "rcrun: container killed: it exceeded its memory limit of {limit} (--memory)"
            );
            outcome.status = 137;
        }
        if a.stats {
            let s = cg.stats();
            eprintln!(
                "rcrun: stats: peak memory {}, cpu time {}, pids {}",
                s.peak_memory_bytes
                    .map(crate::cgroup::format_size)
                    .unwrap_or_else(|| "n/a".into()),
                s.cpu_time
                    .map(|d| format!("{:.3}s", d.as_secs_f64()))
                    .unwrap_or_else(|| "n/a".into()),
                s.pids_peak
                    .or(s.pids_current)
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "n/a".into()),
            );
        }
        let paths: Vec<String> = cg.paths().iter().map(|p| p.display().to_string()).collect();
        ex.timed("cleanup", &format!("rmdir {}", paths.join(", ")), || {
            cg.remove()
        })?;
    } else if a.stats {
        eprintln!("rcrun: stats: not available (the container ran without a cgroup)");
    }
    if let Some(msg) = &outcome.failure {
        eprintln!("rcrun: error: {msg}");
    }
    ex.step(
        "exit",
        &format!("container exited with status {}", outcome.status),
        std::time::Duration::ZERO,
    );
    ex.step("cleanup", "mount namespace gone with its last process: overlay, scratch tmpfs and all mounts released by the kernel", std::time::Duration::ZERO);
    ex.summary();
    Ok(outcome.status)
}

/// `rcrun run --bundle DIR ID`: an OCI bundle, through the same launcher.
fn cmd_run_bundle(ctx: &Ctx, a: &RunArgs, bundle: &std::path::Path) -> Result<i32> {
    let ex = Explain::new(a.explain);
    let id = a.image.image.to_string_lossy().into_owned();
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        || id.starts_with('.')
    {
        bail!("container ID {id:?}: use 1 to 64 of A-Z a-z 0-9 _ - . (not starting with .)");
    }
    let bundle =
        std::fs::canonicalize(bundle).with_context(|| format!("--bundle {}", bundle.display()))?;
    let store = ex.timed(
        "store",
        &format!(
            "open store {} (scratch and seccomp cache)",
            ctx.store_root.display()
        ),
        || ctx.open_store(),
    )?;
    let spec = ex.timed(
        "spec",
        &format!("read and parse {}/config.json", bundle.display()),
        || crate::spec::bundle::load(&bundle),
    )?;
    let bp =
        crate::spec::bundle::plan_from_spec(&spec, &bundle, &ctx.privilege, &id, &store.run_dir())?;
    let mut plan = bp.plan;
    ex.step(
        "spec",
        &format!(
            "bundle {}: root {}{}, user {}:{}, argv {:?}, {} mount steps",
            bundle.display(),
            plan.rootfs_dir
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            if plan.read_only { " (read-only)" } else { "" },
            plan.user.uid,
            plan.user.gid,
            plan.argv,
            plan.mounts.len()
        ),
        std::time::Duration::ZERO,
    );
    if let Some(profile) = &bp.seccomp {
        if !plan.no_new_privs && plan.mapping.user_namespace() {
            bail!("config.json: a seccomp filter rootless needs process.noNewPrivileges true (seccomp(2))");
        }
        let t = std::time::Instant::now();
        let (filter, cached) = crate::security::seccomp::load_cached(
            &store.cache_dir(),
            profile,
            &plan.caps.bounding,
            target_arch(),
        )
        .map_err(|e| anyhow::anyhow!("config.json linux.seccomp: {e}"))?;
        ex.step(
            "seccomp",
            &format!(
                "linux.seccomp: {} rules, default action {}, {} BPF instructions{}",
                filter.rule_count,
                filter.default_action,
                filter.bpf_instructions,
                if cached { ", from the cache" } else { "" }
            ),
            t.elapsed(),
        );
        plan.seccomp = Some(filter);
    }
    if let Some(rules) = &bp.limits.devices {
        ex.step(
            "devices",
            &format!(
                "device policy from linux.resources.devices (and the default devices): {}",
                rules
                    .iter()
                    .map(|r| r.describe())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            std::time::Duration::ZERO,
        );
    }
    launch(ctx, a, &ex, &plan, &bp.limits)
}

/// The device policy: as real root always (also with --userns), Docker's rule set plus each
/// `--device`, or everything with --privileged; rootless none, as the kernel already refuses.
fn device_policy(
    ctx: &Ctx,
    a: &RunArgs,
    plan: &StartupPlan,
    ex: &Explain,
) -> Option<Vec<crate::cgroup::devices::DeviceRule>> {
    use crate::cgroup::devices;
    if !ctx.privilege.is_real_root() {
        ex.step(
            "devices",
            &format!(
                "no device cgroup needed: in a user namespace the kernel refuses mknod (CAP_MKNOD counts only in the initial user namespace) and opens no device node on a mount made there; the container sees host nodes only as bind mounts (null, zero, full, random, urandom, tty{})",
                plan.devices
                    .iter()
                    .map(|d| format!(", {}", d.host.display()))
                    .collect::<String>()
            ),
            std::time::Duration::ZERO,
        );
        return None;
    }
    let rules = if a.privileged {
        devices::allow_all_rules()
    } else {
        let mut r = devices::oci_default_rules();
        r.extend(plan.devices.iter().map(|d| d.rule()));
        r
    };
    if ex.enabled {
        let what = if a.privileged {
            "--privileged: every device"
        } else if plan.devices.is_empty() {
            "OCI default, as Docker"
        } else {
            "OCI default, as Docker, plus --device"
        };
        let list: Vec<String> = rules.iter().map(|r| r.describe()).collect();
        ex.step(
            "devices",
            &format!(
                "device policy ({what}), applied by the cgroup before the container joins it: {}{}",
                list.join("; "),
                if plan.mapping.user_namespace() {
                    " — with --userns the kernel also refuses mknod inside"
                } else {
                    ""
                }
            ),
            std::time::Duration::ZERO,
        );
    }
    Some(rules)
}

/// What `--security-opt` asked for.
pub struct SecurityOptions {
    pub no_new_privs: bool,
    /// None = default profile; Some(None) = unconfined; Some(Some(path)) = a profile file.
    pub seccomp: Option<Option<PathBuf>>,
}

pub fn security_options(opts: &[String]) -> Result<SecurityOptions> {
    let mut out = SecurityOptions {
        no_new_privs: true,
        seccomp: None,
    };
    for o in opts {
        let (k, v) = o.split_once(['=', ':']).unwrap_or((o.as_str(), ""));
        match (k, v) {
            ("no-new-privileges", "" | "true") => out.no_new_privs = true,
            ("no-new-privileges", "false") => out.no_new_privs = false,
            ("seccomp", "unconfined") => out.seccomp = Some(None),
            ("seccomp", p) if !p.is_empty() => out.seccomp = Some(Some(PathBuf::from(p))),
            _ => bail!("--security-opt {o:?}: unknown option (use seccomp=PATH, seccomp=unconfined, no-new-privileges=false)"),
        }
    }
    Ok(out)
}

/// `--print-spec`: the plan as an OCI runtime config.json on stdout.
fn print_spec(
    a: &RunArgs,
    sec: &SecurityOptions,
    plan: &StartupPlan,
    limits: &crate::cgroup::Limits,
) -> Result<()> {
    let source = seccomp_source(a, sec)?;
    let parsed = source
        .as_ref()
        .map(|(name, bytes)| {
            crate::security::seccomp::parse_profile(name, bytes).map(|p| (name, p))
        })
        .transpose()?;
    let input = match &parsed {
        Some((name, profile)) => Some(crate::spec::SeccompInput {
            name,
            profile,
            entries: crate::security::seccomp::applicable_entries(
                name,
                profile,
                &plan.caps.bounding,
                target_arch(),
            )?,
        }),
        None => None,
    };
    let doc = crate::spec::document(plan, limits, input.as_ref())?;
    // Parse it back into the typed Spec: what is printed is a valid OCI document.
    let _: oci_spec::runtime::Spec =
        serde_json::from_value(doc.clone()).map_err(crate::spec::SpecError::from)?;
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

fn target_arch() -> seccompiler::TargetArch {
    if cfg!(target_arch = "aarch64") {
        seccompiler::TargetArch::aarch64
    } else {
        seccompiler::TargetArch::x86_64
    }
}

/// The seccomp profile's name and bytes, or None when unconfined.
fn seccomp_source(a: &RunArgs, sec: &SecurityOptions) -> Result<Option<(String, Vec<u8>)>> {
    if a.privileged || matches!(sec.seccomp, Some(None)) {
        return Ok(None);
    }
    Ok(Some(match &sec.seccomp {
        Some(Some(path)) => (
            path.display().to_string(),
            std::fs::read(path).with_context(|| {
                format!(
                    "--security-opt seccomp={}: cannot read the profile",
                    path.display()
                )
            })?,
        ),
        _ => (
            "built-in configs/seccomp.json".to_string(),
            crate::security::DEFAULT_PROFILE.as_bytes().to_vec(),
        ),
    }))
}

/// Compiles (or loads from the cache) the seccomp filter for this container.
fn seccomp_filter(
    store: &unpack::Store,
    a: &RunArgs,
    sec: &SecurityOptions,
    plan: &StartupPlan,
    ex: &Explain,
) -> Result<Option<crate::security::CompiledFilter>> {
    let Some((name, profile)) = seccomp_source(a, sec)? else {
        ex.step(
            "seccomp",
            "no filter (unconfined)",
            std::time::Duration::ZERO,
        );
        return Ok(None);
    };
    if !plan.no_new_privs && plan.mapping.user_namespace() {
        // Unprivileged seccomp needs no_new_privs (seccomp(2)); root in the initial namespace does not.
        bail!("--security-opt no-new-privileges=false needs seccomp=unconfined when rootless: the kernel only lets an unprivileged process install a seccomp filter with no_new_privs set");
    }
    let arch = target_arch();
    let t = std::time::Instant::now();
    let (filter, cached) = crate::security::seccomp::load_cached(
        &store.cache_dir(),
        &profile,
        &plan.caps.bounding,
        arch,
    )
    .map_err(|e| anyhow::anyhow!("seccomp profile {name}: {e}"))?;
    ex.step(
        "seccomp",
        &format!(
            "{name}: {} rules, default action {}, {} BPF instructions in {} program(s), {}",
            filter.rule_count,
            filter.default_action,
            filter.bpf_instructions,
            filter.programs.len(),
            if cached {
                "loaded from cache"
            } else {
                "compiled and cached"
            }
        ),
        t.elapsed(),
    );
    Ok(Some(filter))
}

/// `--userns` as root: root's own /etc/subuid and /etc/subgid ranges; without one, the first
/// 65536 ids above every range those files hand out, so the container's ids belong to nobody
/// else (never a plain user's subordinate ids).
fn root_userns_mapping() -> IdMapping {
    let range = |f: &str| {
        let content = std::fs::read_to_string(f).unwrap_or_default();
        crate::host::parse_subid(&content, Some("root"), 0)
            .or_else(|| Some((free_range_start(&content), 65536)))
    };
    IdMapping::for_root_userns(range("/etc/subuid"), range("/etc/subgid"))
}

/// The first multiple of 65536 (at least 100000 rounded up) above every range in a subid file.
fn free_range_start(content: &str) -> u32 {
    let end = content
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':').skip(1);
            let start: u64 = f.next()?.trim().parse().ok()?;
            let count: u64 = f.next()?.trim().parse().ok()?;
            Some(start + count)
        })
        .max()
        .unwrap_or(0)
        .max(100000);
    (end.div_ceil(65536) * 65536).min(u32::MAX as u64 - 65536) as u32
}

/// How layers are stored for this run: as the privilege says, except root with `--userns`,
/// whose layers are stored with owners shifted into the mapped range.
fn owner_mode(ctx: &Ctx, a: &RunArgs) -> unpack::OwnerMode {
    if !(ctx.privilege.is_real_root() && a.userns) {
        return ctx.privilege.owner_mode();
    }
    match root_userns_mapping() {
        IdMapping::Privileged { uid, gid } => unpack::OwnerMode::Shifted {
            uid: uid.outside,
            gid: gid.outside,
            count: uid.count,
        },
        _ => ctx.privilege.owner_mode(),
    }
}

/// Extracts missing layers. With subordinate ids this happens inside a user namespace holding
/// the container's id map, so files keep the image's owners (shifted into the subordinate range).
fn ensure_layers(
    ctx: &Ctx,
    store: &unpack::Store,
    archive: &crate::image::Archive,
    image: &Image,
    mode: &unpack::OwnerMode,
    progress: bool,
) -> Result<Vec<ReadyLayer>> {
    if !matches!(mode, unpack::OwnerMode::Subid { .. }) {
        return Ok(unpack::ensure_layers(
            store, archive, image, mode, progress,
        )?);
    }
    let mapping = IdMapping::for_privilege(&ctx.privilege);
    let started = std::time::Instant::now();
    parent::run_in_userns(&mapping, || {
        unpack::ensure_layers(store, archive, image, mode, progress)
            .map(drop)
            .map_err(|e| format!("{e:#}"))
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut layers =
        unpack::present_layers(store, mode, image).context("layers missing after extraction")?;
    for l in &mut layers {
        l.found = false;
        l.took = started.elapsed();
    }
    Ok(layers)
}

/// The image's copy of `rel` as a table streamed from its layer file (absent if none).
fn layer_table(lowers_top_first: &[PathBuf], rel: &str) -> plan::Table<'static> {
    plan::find_in_layers(lowers_top_first, rel).map_or(plan::Table::Absent, plan::Table::File)
}

pub fn build_plan(
    ctx: &Ctx,
    a: &RunArgs,
    sec: &SecurityOptions,
    image: &Image,
    layers: &[ReadyLayer],
    scratch: &std::path::Path,
) -> Result<StartupPlan> {
    let lowers_top_first: Vec<PathBuf> = layers.iter().rev().map(|l| l.dir.clone()).collect();
    let mapping = if ctx.privilege.is_real_root() && !a.userns {
        IdMapping::None
    } else if ctx.privilege.is_real_root() {
        root_userns_mapping()
    } else {
        IdMapping::for_privilege(&ctx.privilege)
    };
    let argv = plan::compose_argv(
        &image.entrypoint(),
        &image.cmd(),
        a.entrypoint.as_deref(),
        &a.command,
    );
    if argv.is_empty() || argv[0].is_empty() {
        return Err(plan::PlanError::NoCommand.into());
    }
    let env_files = a
        .env_file
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|c| (p.clone(), c))
                .with_context(|| format!("--env-file {}", p.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let caller = |k: &str| std::env::var(k).ok();
    let mut env = plan::merge_env(&image.env(), &env_files, &a.env, &caller)?;
    let spec = a.user.clone().or_else(|| image.user()).unwrap_or_default();
    let etc_layer = plan::topmost_with(&lowers_top_first, "etc");
    let below_etc = etc_layer.map_or(&[][..], |i| &lowers_top_first[i..]);
    let passwd = layer_table(below_etc, "etc/passwd");
    let group = layer_table(below_etc, "etc/group");
    let user = plan::resolve_user(&spec, &passwd, &group)?;
    if !mapping.maps_uid(user.uid) {
        bail!(
            "user {spec:?} (uid {}) does not exist in this user namespace: rootless without subordinate ids maps only container root; add a range for your user to /etc/subuid and /etc/subgid and install newuidmap/newgidmap (package uidmap)",
            user.uid
        );
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let cwd = a
        .workdir
        .clone()
        .or_else(|| image.working_dir())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(plan::PlanError::NotAbsolute {
            flag: "--workdir",
            path: cwd,
        }
        .into());
    }
    let id = container_id();
    let hostname = a.hostname.clone().unwrap_or_else(|| id.clone());
    let volumes = a
        .volume
        .iter()
        .map(|v| plan::parse_volume(v))
        .collect::<Result<Vec<_>, _>>()?;
    for t in &a.tmpfs {
        if !t.starts_with('/') {
            return Err(plan::PlanError::NotAbsolute {
                flag: "--tmpfs",
                path: t.clone(),
            }
            .into());
        }
    }
    let devices = a
        .device
        .iter()
        .map(|d| plan::parse_device(d))
        .collect::<Result<Vec<_>, _>>()?;
    let new_netns = a.network != "host";
    let resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mounts = plan_mounts(&MountInputs {
        can_mknod: !mapping.user_namespace(),
        mounts_as_host_root: !mapping.user_namespace() || mapping.enters_late(),
        new_netns,
        privileged: a.privileged,
        hostname: &hostname,
        resolv_conf,
        volumes: &volumes,
        tmpfs: &a.tmpfs,
        devices: &devices,
    });
    let user_is_root = user.uid == 0;
    let caps = crate::security::plan_caps(&a.cap_add, &a.cap_drop, a.privileged, user_is_root)?;
    Ok(StartupPlan {
        id,
        mapping,
        new_netns,
        scratch: scratch.to_path_buf(),
        lowers_top_first,
        rootfs_dir: None,
        rlimits: Vec::new(),
        etc_layer,
        mounts,
        devices,
        read_only: a.read_only,
        hostname,
        argv,
        env,
        cwd,
        user,
        no_new_privs: sec.no_new_privs,
        caps,
        seccomp: None,
        tty: a.tty,
        interactive: a.interactive,
        init: a.init,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_userns_range_avoids_allocated_subids() {
        assert_eq!(super::free_range_start(""), 131072);
        assert_eq!(
            super::free_range_start("alice:100000:65536\nbob:165536:65536\n"),
            262144
        );
        assert_eq!(super::free_range_start("x:131072:65536\n"), 196608);
    }
}
