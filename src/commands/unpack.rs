//! `rcrun unpack IMAGE DIR`: the image's flattened root file system, extracted straight into DIR.
//!
//! Each layer is extracted by the layer store's own code (digests verified, every path resolved
//! beneath the layer, in parallel) into a *scratch* store made inside DIR, and its entries are
//! then moved into place with rename(2) (`flatten_moving`: overlay's whiteout and opaque rules),
//! so every byte is written once. Copying out of the layer store wrote everything twice and took
//! 1.9× `tar -xf`; the price is that `unpack` does not fill the store (a later `run` extracts).

use crate::cli;
use crate::{launch, open_image, unpack, Ctx};
use anyhow::{Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The scratch store's name inside DIR: `.rcrun-unpack-PID`.
const SCRATCH_PREFIX: &str = ".rcrun-unpack-";

/// Removes the scratch store when the command ends, however it ends (a killed one is reclaimed
/// by the next unpack into the same DIR, [`reclaim_killed_scratch`]).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = crate::sys::fs::remove_tree(&self.0);
    }
}

pub fn cmd_unpack(ctx: &Ctx, a: &cli::UnpackArgs) -> Result<i32> {
    let store = ctx.open_store()?;
    let (archive, image) = open_image(&store, &a.image)?;
    // The flattened tree belongs to whoever asked for it: as a plain user every file is yours
    // (rootless cannot hold other owners), as root owners are preserved.
    let mode = if ctx.privilege.is_real_root() {
        unpack::OwnerMode::Root
    } else {
        unpack::OwnerMode::User
    };
    reclaim_killed_scratch(&a.dir);
    let created = unpack::flatten::prepare_target(&a.dir)?;
    let layers = match extract_and_move(ctx, &archive, &image, &mode, &a.dir) {
        Ok(layers) => layers,
        Err(e) => {
            // Nothing left behind: DIR as it was before (absent, or empty).
            if created {
                let _ = crate::sys::fs::remove_tree(&a.dir);
            } else if let Ok(entries) = std::fs::read_dir(&a.dir) {
                for e in entries.flatten() {
                    let _ = crate::sys::fs::remove_tree(&e.path());
                }
            }
            return Err(e);
        }
    };
    if !ctx.quiet {
        let skipped: u64 = layers
            .iter()
            .filter_map(|l| l.info.as_ref())
            .map(|i| i.stats.skipped_devices)
            .sum();
        eprintln!(
            "unpacked {} ({} layer(s) extracted straight into it{}) into {}",
            image.name(),
            layers.len(),
            if skipped > 0 {
                format!(", {skipped} device node(s) skipped: rootless cannot create them")
            } else {
                String::new()
            },
            a.dir.display()
        );
    }
    Ok(0)
}

/// Extracts every layer into a scratch store inside `dir` (an empty directory) and moves them
/// into place; the scratch store is gone when this returns, whatever it returns.
fn extract_and_move(
    ctx: &Ctx,
    archive: &crate::image::Archive,
    image: &crate::image::Image,
    mode: &unpack::OwnerMode,
    dir: &Path,
) -> Result<Vec<unpack::ReadyLayer>> {
    let reserved = OsString::from(format!("{SCRATCH_PREFIX}{}", std::process::id()));
    let scratch = Scratch(dir.join(&reserved));
    let scratch_store = unpack::Store::open_scratch(&scratch.0)?;
    let layers = unpack::ensure_layers(&scratch_store, archive, image, mode, !ctx.quiet)?;
    let movable: Vec<unpack::flatten::MovableLayer> = layers
        .iter()
        .map(|l| unpack::flatten::MovableLayer {
            dir: l.dir.clone(),
            // A repeat of a layer has no stats of its own: assume markers.
            markers: l
                .info
                .as_ref()
                .is_none_or(|i| i.stats.whiteouts + i.stats.opaque_dirs > 0),
        })
        .collect();
    let moving = || format!("unpacking {} into {}", image.name(), dir.display());
    if ctx.privilege.is_real_root() {
        unpack::flatten::flatten_moving(&movable, dir, &reserved, true).with_context(moving)?;
    } else {
        // As a plain user, layer directories may have modes without w or x (0555, 000): they are
        // still ours, but only a namespace root has CAP_DAC_OVERRIDE to move entries out of
        // them: move from inside a user namespace that maps just us, so every owner stays us.
        let mapping = launch::plan::IdMapping::single_for(&ctx.privilege);
        launch::idmap::run_in_userns(&mapping, || {
            unpack::flatten::flatten_moving(&movable, dir, &reserved, false)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(moving)?;
    }
    drop(scratch);
    Ok(layers)
}

/// A DIR holding nothing but the scratch stores of killed unpacks (their pid gone) is emptied,
/// so the next unpack into it can start; anything else in DIR stays, and `prepare_target`
/// refuses it as not empty.
fn reclaim_killed_scratch(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let names: Vec<OsString> = entries.flatten().map(|e| e.file_name()).collect();
    let killed = |n: &OsString| {
        n.to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|pid| pid.parse::<i32>().ok())
            .is_some_and(|pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                    == Err(nix::errno::Errno::ESRCH)
            })
    };
    if !names.is_empty() && names.iter().all(killed) {
        for n in names {
            let _ = crate::sys::fs::remove_tree(&dir.join(n));
        }
    }
}
