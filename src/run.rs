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

struct NoHooks;
impl BeforeStart for NoHooks {
    fn before_start(&mut self, _pid: nix::unistd::Pid) -> Result<(), String> {
        Ok(())
    }
}

pub fn cmd_run(ctx: &Ctx, a: &RunArgs) -> Result<i32> {
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
    let (archive, image) = ex.timed(
        "image",
        &format!("read {} and select the image", a.image.image.display()),
        || crate::open_image(&store, &a.image),
    )?;
    ex.step(
        "image",
        &format!(
            "{}: {} {} ({} layer(s), id {})",
            archive.display(),
            image.format,
            image.name(),
            image.layers.len(),
            image.id.short()
        ),
        std::time::Duration::ZERO,
    );
    let mode = ctx.privilege.owner_mode();
    let layers = match unpack::present_layers(&store, &mode, &image) {
        Some(l) => l,
        None => ensure_layers(
            ctx,
            &store,
            &archive,
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
        ex.step(
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
    drop(archive);
    let plan = build_plan(ctx, a, &image, &layers, &store.run_dir())?;
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
    let outcome =
        parent::start_and_wait(&plan, &ex, &mut NoHooks).context("starting the container")?;
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

fn read_layer_file(lowers_top_first: &[PathBuf], rel: &str) -> Option<String> {
    plan::find_in_layers(lowers_top_first, rel).and_then(|p| std::fs::read_to_string(p).ok())
}

pub fn build_plan(
    ctx: &Ctx,
    a: &RunArgs,
    image: &Image,
    layers: &[ReadyLayer],
    scratch: &std::path::Path,
) -> Result<StartupPlan> {
    let lowers_top_first: Vec<PathBuf> = layers.iter().rev().map(|l| l.dir.clone()).collect();
    let mapping = if ctx.privilege.is_real_root() && !a.userns {
        IdMapping::None
    } else if ctx.privilege.is_real_root() {
        bail!("--userns as root is not supported yet");
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
    let passwd = read_layer_file(&lowers_top_first, "etc/passwd");
    let group = read_layer_file(&lowers_top_first, "etc/group");
    let user = plan::resolve_user(&spec, passwd.as_deref(), group.as_deref())?;
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
    let new_netns = a.network != "host";
    let resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mounts = plan_mounts(&MountInputs {
        can_mknod: !mapping.user_namespace(),
        new_netns,
        privileged: a.privileged,
        hostname: &hostname,
        resolv_conf,
        volumes: &volumes,
        tmpfs: &a.tmpfs,
    });
    Ok(StartupPlan {
        id,
        mapping,
        new_netns,
        scratch: scratch.to_path_buf(),
        lowers_top_first,
        mounts,
        read_only: a.read_only,
        hostname,
        argv,
        env,
        cwd,
        user,
        no_new_privs: true,
        tty: a.tty,
        interactive: a.interactive,
        init: a.init,
    })
}
