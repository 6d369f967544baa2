//! From an image and the flags to what the run is ([`ImageRun`], which becomes its OCI Spec): the
//! id mapping, the layers in the store, the user and groups from the image's /etc, environment,
//! command, volumes and devices.

use super::security::SecurityOptions;
use crate::cli::RunArgs;
use crate::image::cache::EtcSources;
use crate::image::Image;
use crate::launch::plan::{self, IdMapping};
use crate::spec::image::ImageRun;
use crate::unpack::{self, ReadyLayer};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// `--userns` as root: root's own /etc/subuid and /etc/subgid ranges; without one, the first
/// 65536 ids above every range those files hand out, so the container's ids belong to nobody
/// else (never a plain user's subordinate ids).
pub(super) fn root_userns_mapping() -> IdMapping {
    let range = |f: &str| {
        let content = std::fs::read_to_string(f).unwrap_or_default();
        crate::host::parse_subid(&content, Some("root"), 0)
            .or_else(|| Some((free_range_start(&content), 65536)))
    };
    IdMapping::for_root_userns(range("/etc/subuid"), range("/etc/subgid"))
}

/// The first multiple of 65536 (at least 100000 rounded up) above every range in a subid file.
pub(super) fn free_range_start(content: &str) -> u32 {
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
pub(super) fn owner_mode(ctx: &Ctx, a: &RunArgs) -> unpack::OwnerMode {
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
pub(super) fn ensure_layers(
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
    crate::launch::idmap::run_in_userns(&mapping, || {
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
/// The image's layer dirs in the store, top layer first (the overlay's lowerdir order).
pub(super) fn lowers_top_first(layers: &[ReadyLayer]) -> Vec<PathBuf> {
    layers.iter().rev().map(|l| l.dir.clone()).collect()
}

/// Finds the layers behind the container's /etc, /etc/passwd and /etc/group: one lookup per
/// layer from the top down to the first with an `etc` entry (the layers above it say nothing
/// about /etc), then the two files from there down. The image cache remembers the answer.
pub(super) fn etc_sources(lowers_top_first: &[PathBuf]) -> EtcSources {
    let etc_layer = plan::topmost_with(lowers_top_first, "etc");
    let below_etc = etc_layer.map_or(&[][..], |i| &lowers_top_first[i..]);
    let at = |rel: &str| Some(etc_layer? + plan::find_layer_of(below_etc, rel)?);
    EtcSources {
        etc_layer,
        passwd: at("etc/passwd"),
        group: at("etc/group"),
    }
}

/// Narration of [`EtcSources`] for `--explain`, numbering layers from the bottom as the layer
/// lines do.
pub(super) fn etc_note(etc: &EtcSources, layers: usize, how: &str) -> String {
    let n =
        |i: Option<usize>| i.map_or("no layer".to_string(), |i| format!("layer {}", layers - i));
    format!(
        "/etc from {}, /etc/passwd from {}, /etc/group from {}: {how}",
        n(etc.etc_layer),
        n(etc.passwd),
        n(etc.group)
    )
}

fn layer_table(
    lowers_top_first: &[PathBuf],
    layer: Option<usize>,
    rel: &str,
) -> plan::Table<'static> {
    match layer.and_then(|i| lowers_top_first.get(i)) {
        Some(dir) => plan::Table::File(dir.join(rel)),
        None => plan::Table::Absent,
    }
}

/// Everything rcrun decides for an image run, before it is written as a Spec.
pub fn decide(
    ctx: &Ctx,
    a: &RunArgs,
    sec: &SecurityOptions,
    image: &Image,
    lowers_top_first: Vec<PathBuf>,
    etc: &EtcSources,
    scratch: &std::path::Path,
) -> Result<ImageRun> {
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
    let passwd = layer_table(&lowers_top_first, etc.passwd, "etc/passwd");
    let group = layer_table(&lowers_top_first, etc.group, "etc/group");
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
    // docker sets TERM for a terminal when the image has none: without it, programs that draw
    // (vi, top, less) refuse or fall back to a dumb terminal.
    if a.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
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
    let network = super::network::Network::parse(&a.network)?;
    for p in &a.publish {
        super::network::parse_publish(p)?;
        if !network.helper() {
            bail!("-p {p}: publishing a port needs --network pasta or slirp4netns (a network of the container's own, reached through that helper; with --network host its ports are the host's already)");
        }
    }
    let new_netns = network.new_namespace();
    let resolv_conf = super::network::resolv_conf(
        &network,
        &a.dns,
        &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    )?;
    let extra_hosts = super::network::extra_hosts(&a.add_host)?;
    let user_is_root = user.uid == 0;
    let caps = crate::security::plan_caps(&a.cap_add, &a.cap_drop, a.privileged, user_is_root)?;
    let seccomp = super::security::seccomp_source(a, sec)?;
    let rlimits = a
        .ulimit
        .iter()
        .map(|u| crate::spec::ulimit::parse_ulimit(u))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ImageRun {
        id,
        mapping,
        new_netns,
        privileged: a.privileged,
        scratch: scratch.to_path_buf(),
        lowers_top_first,
        etc_layer: etc.etc_layer,
        read_only: a.read_only,
        hostname,
        resolv_conf,
        extra_hosts,
        argv,
        env,
        cwd,
        user,
        no_new_privs: sec.no_new_privs,
        caps,
        tty: a.tty,
        interactive: a.interactive,
        init: a.init,
        volumes,
        tmpfs: a.tmpfs.clone(),
        devices,
        seccomp,
        rlimits,
    })
}

/// A short random container id (12 hex digits, like docker's short ids).
pub(super) fn container_id() -> String {
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
