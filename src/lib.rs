//! rcrun: run an image tarball now.
//!
//! ```text
//! image.tar ──image──▶ Image{config, layers} ──unpack──▶ [layer dirs] ──mount──▶ rootfs ──launch──▶ execve
//! ```
//! Each stage consumes only the previous stage's output; `main_with` below is the pipeline.

pub mod cgroup;
pub mod cli;
pub mod host;
pub mod image;
pub mod imagebuild;
pub mod inspect;
pub mod launch;
pub mod layers_view;
pub mod run;
pub mod security;
pub mod sys;
pub mod unpack;

use anyhow::{Context, Result};
use cli::{Cli, Command, ImageArg};
use host::Privilege;
use image::{Archive, Image, ImageRef};
use std::path::PathBuf;
use unpack::Store;

/// Exit codes, as docker uses them.
pub const EXIT_RCRUN_FAILED: i32 = 125;
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
pub const EXIT_NOT_FOUND: i32 = 127;

pub fn init_logging(quiet: bool, verbose: u8) {
    let level = match (quiet, verbose) {
        (true, _) => tracing::Level::ERROR,
        (_, 0) => tracing::Level::WARN,
        (_, 1) => tracing::Level::INFO,
        (_, 2) => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

/// Every error that reaches the top means rcrun itself failed.
pub fn exit_code_for(_err: &anyhow::Error) -> i32 {
    EXIT_RCRUN_FAILED
}

/// Context shared by the commands.
pub struct Ctx {
    pub privilege: Privilege,
    pub store_root: PathBuf,
    pub quiet: bool,
}

impl Ctx {
    pub fn open_store(&self) -> Result<Store> {
        let store = Store::open(&self.store_root)?;
        // Leftovers of killed runs are reclaimed by the next invocation.
        for p in store.reclaim_tmp() {
            tracing::info!(path = %p.display(), "removed leftover of a killed run");
        }
        Ok(store)
    }
}

pub fn main_with(cli: Cli) -> Result<i32> {
    let privilege = Privilege::detect();
    let store_root = cli
        .root
        .clone()
        .unwrap_or_else(|| unpack::store::default_root(privilege.is_real_root()));
    let ctx = Ctx {
        privilege,
        store_root,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Inspect(a) => cmd_inspect(&ctx, &a),
        Command::Unpack(a) => cmd_unpack(&ctx, &a),
        Command::Run(a) => run::cmd_run(&ctx, &a),
        Command::Gc => cmd_gc(&ctx),
    }
}

/// Stage 1: open the archive and pick the image.
pub fn open_image(store: &Store, arg: &ImageArg) -> Result<(Archive, Image)> {
    let archive = Archive::open(&arg.image, &store.tmp_dir())?;
    let wanted = arg.reference.as_deref().map(ImageRef::parse);
    let image = image::select(&archive, wanted.as_ref())?;
    Ok((archive, image))
}

fn cmd_inspect(ctx: &Ctx, a: &cli::InspectArgs) -> Result<i32> {
    let store = ctx.open_store()?;
    let (archive, image) = open_image(&store, &a.image)?;
    let count = image::list_images(&archive)?.len();
    let report = inspect::build(&archive, &image, count, a.layers)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", inspect::print_text(&report));
    }
    Ok(0)
}

fn cmd_unpack(ctx: &Ctx, a: &cli::UnpackArgs) -> Result<i32> {
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
    unpack::flatten::flatten(&dirs, &a.dir, ctx.privilege.is_real_root())
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

fn cmd_gc(ctx: &Ctx) -> Result<i32> {
    let store = Store::open(&ctx.store_root)?;
    let mut removed = store.reclaim_tmp();
    let uid = nix::unistd::geteuid().as_raw();
    removed.extend(cgroup::gc_stale(
        &cgroup::CgroupFs::host(),
        (!ctx.privilege.is_real_root()).then_some(uid),
    ));
    for p in &removed {
        println!("removed {}", p.display());
    }
    if !ctx.quiet {
        eprintln!("gc: {} leftover(s) removed", removed.len());
    }
    Ok(0)
}
