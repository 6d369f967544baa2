//! `rcrun unpack IMAGE DIR`: the image's flattened root file system, from the layer store.

use crate::cli;
use crate::{launch, open_image, unpack, Ctx};
use anyhow::{Context, Result};
use std::path::PathBuf;

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
    let layers = unpack::ensure_layers(&store, &archive, &image, &mode, !ctx.quiet)?;
    let dirs: Vec<PathBuf> = layers.iter().map(|l| l.dir.clone()).collect();
    if ctx.privilege.is_real_root() {
        unpack::flatten::flatten(&dirs, &a.dir, true).map_err(anyhow::Error::from)
    } else {
        // As a plain user, layer files with mode 000 (or directories without r/x) are still
        // ours, but only a namespace root has CAP_DAC_OVERRIDE to read them: copy from inside a
        // user namespace that maps just us, so everything written is still owned by us.
        let mapping = launch::plan::IdMapping::single_for(&ctx.privilege);
        launch::idmap::run_in_userns(&mapping, || {
            unpack::flatten::flatten(&dirs, &a.dir, false).map_err(|e| e.to_string())
        })
        .map_err(|e| anyhow::anyhow!("{e}"))
    }
    .with_context(|| format!("unpacking {} into {}", image.name(), a.dir.display()))?;
    if !ctx.quiet {
        let extracted = layers.iter().filter(|l| !l.found).count();
        let skipped: u64 = layers
            .iter()
            .filter_map(|l| l.info.as_ref())
            .map(|i| i.stats.skipped_devices)
            .sum();
        eprintln!(
            "unpacked {} ({} layer(s): {} extracted, {} from the store{}) into {}",
            image.name(),
            layers.len(),
            extracted,
            layers.len() - extracted,
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
