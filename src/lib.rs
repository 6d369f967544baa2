//! rcrun: run an image tarball now.
//!
//! ```text
//! image.tar ──image──▶ Image{config, layers} ──unpack──▶ [layer dirs] ──mount──▶ rootfs ──launch──▶ execve
//! ```
//! Each stage consumes only the previous stage's output; `main_with` below is the pipeline.

// Every `unsafe` block says why it is sound, in a `// SAFETY:` line above it.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cgroup;
pub mod cli;
pub mod host;
pub mod image;
pub mod inspect;
pub mod launch;
pub mod layers_view;
pub mod run;
pub mod security;
pub mod spec;
pub mod sys;
pub mod unpack;

use anyhow::{Context, Result};
use cli::{Cli, Command, ImageArg};
use host::Privilege;
use image::{Archive, Image, ImageRef};
use std::path::PathBuf;
use unpack::Store;

/// Exit codes, as docker uses them (defined with the launcher, which reports them).
pub use launch::failure::{EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, EXIT_RCRUN_FAILED};

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

/// Every error that reaches the top means rcrun itself failed (the command's own 126/127 come
/// back as the container's status, not as an error).
pub fn exit_code_for(_err: &anyhow::Error) -> i32 {
    EXIT_RCRUN_FAILED
}

/// The error as one line: each cause once. Error types that print their source in their own
/// message and also return it from `source()` would otherwise repeat it ("…: No such file or
/// directory (os error 2): No such file or directory (os error 2)").
pub fn error_message(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        // Names and details can come from an archive or a config: nothing in them may reach
        // the terminal as a control sequence.
        let text = printable(&cause.to_string());
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// `text` with every control character escaped as Rust writes it (`\n`, `\t`, `\u{1b}`,
/// `\u{9b}`), so that a name taken from an archive or a config cannot move the cursor, recolour or
/// retitle the terminal of whoever reads the message.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// What to do about an error whose message alone names the problem but not the remedy.
pub fn hint_for(err: &anyhow::Error, store_root: &std::path::Path) -> Option<String> {
    use unpack::StoreError;
    let os_error = |e: &(dyn std::error::Error + 'static)| {
        e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error())
    };
    for cause in err.chain() {
        if let Some(image::ImageError::Open { .. } | image::ImageError::NotTar { .. }) =
            cause.downcast_ref::<image::ImageError>()
        {
            return Some("IMAGE is the tar file that `docker save NAME -o FILE`, `podman save` or `skopeo copy … docker-archive:FILE` writes, as it is or compressed with gzip, zstd, xz or bzip2 (`-` reads it from stdin)".into());
        }
        if let Some(StoreError::Io { source, .. }) = cause.downcast_ref::<StoreError>() {
            if matches!(
                source.raw_os_error(),
                Some(libc::EACCES | libc::EPERM | libc::EROFS)
            ) {
                return Some(format!(
                    "choose a store you can write with --root DIR or RCRUN_ROOT=DIR (yours by default: {})",
                    unpack::store::default_root(Privilege::detect().is_real_root()).display()
                ));
            }
        }
        if let Some(cgroup::CgroupError::Create { source, .. }) =
            cause.downcast_ref::<cgroup::CgroupError>()
        {
            if matches!(source.raw_os_error(), Some(libc::EACCES | libc::EPERM))
                && matches!(Privilege::detect(), Privilege::FakeRoot)
            {
                return Some("uid 0 inside `unshare -Ur` owns no cgroup: run without resource limits, or run rcrun as a plain user in a cgroup that root delegated to you (see `rcrun run --help`)".into());
            }
        }
        if os_error(cause) == Some(libc::ENOSPC) || cause.to_string().contains("(os error 28)") {
            return Some(format!(
                "the disk is full: free space on the file system holding the store ({}) or the target directory, or choose another store with --root DIR",
                store_root.display()
            ));
        }
    }
    None
}

/// The store this invocation uses: --root / RCRUN_ROOT, else the default for who we are.
pub fn store_root(cli: &Cli) -> PathBuf {
    cli.root
        .clone()
        .unwrap_or_else(|| unpack::store::default_root(Privilege::detect().is_real_root()))
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
        for p in self.reclaim(&store) {
            tracing::info!(path = %p.display(), "removed leftover of a killed run");
        }
        Ok(store)
    }
}

impl Ctx {
    /// Removes what killed runs left in the store's tmp/ and returns it.
    pub fn reclaim(&self, store: &Store) -> Vec<PathBuf> {
        let mut removed = store.reclaim_tmp();
        // A killed extraction with subordinate ids leaves files owned by those ids, which only a
        // namespace holding the same map can delete.
        let list = || -> Vec<PathBuf> {
            std::fs::read_dir(store.tmp_dir())
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default()
        };
        let with_subids = matches!(
            self.privilege,
            Privilege::Rootless {
                subids: Some(_),
                ..
            }
        );
        let before = if with_subids { list() } else { Vec::new() };
        if !before.is_empty() {
            let mapping = launch::plan::IdMapping::for_privilege(&self.privilege);
            let _ = launch::idmap::run_in_userns(&mapping, || {
                store.reclaim_tmp();
                Ok(())
            });
            let after = list();
            removed.extend(before.into_iter().filter(|p| !after.contains(p)));
        }
        removed
    }
}

pub fn main_with(cli: Cli) -> Result<i32> {
    let privilege = Privilege::detect();
    let store_root = store_root(&cli);
    let ctx = Ctx {
        privilege,
        store_root,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Inspect(a) => cmd_inspect(&ctx, &a),
        Command::Unpack(a) => cmd_unpack(&ctx, &a),
        Command::Run(a) => run::cmd_run(&ctx, &a),
        Command::Spec(a) => spec::cmd_spec(&a, &ctx.privilege),
        Command::Gc => cmd_gc(&ctx),
        Command::Man(a) => cmd_man(&a),
        Command::Completions(a) => {
            write_completions(a.shell, &mut std::io::stdout())?;
            Ok(0)
        }
    }
}

/// The man pages come from the same clap definitions as the parser, so they cannot drift.
pub fn man_page(cmd: clap::Command) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    Ok(out)
}

fn cmd_man(a: &cli::ManArgs) -> Result<i32> {
    use clap::CommandFactory;
    match &a.dir {
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&man_page(Cli::command())?)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("rcrun man: cannot create {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), dir)
                .with_context(|| format!("rcrun man: writing pages into {}", dir.display()))?;
            let mut pages: Vec<String> = std::fs::read_dir(dir)?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("rcrun") && n.ends_with(".1"))
                .collect();
            pages.sort();
            for p in pages {
                println!("{}", dir.join(p).display());
            }
        }
    }
    Ok(0)
}

/// A completion script for `shell`, generated from the clap definitions.
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) -> Result<()> {
    use clap::CommandFactory;
    clap_complete::generate(shell, &mut Cli::command(), "rcrun", out);
    Ok(())
}

/// Stage 1: open the archive and pick the image.
pub fn open_image(store: &Store, arg: &ImageArg) -> Result<(Archive, Image)> {
    let archive = Archive::open(&arg.image, &store.tmp_dir())?;
    let wanted = arg.reference.as_deref().map(ImageRef::parse);
    let image = image::select_for(&archive, wanted.as_ref(), &arg.platform()?)?;
    print_warnings(&image);
    Ok((archive, image))
}

/// The image's warnings, one `rcrun: warning:` line each, escaped like every message.
pub fn print_warnings(image: &Image) {
    for w in &image.warnings {
        eprintln!("rcrun: warning: {}", printable(w));
    }
}

fn cmd_inspect(ctx: &Ctx, a: &cli::InspectArgs) -> Result<i32> {
    let store = ctx.open_store()?;
    let archive = Archive::open(&a.image.image, &store.tmp_dir())?;
    let (count, images) = image::image_positions(&archive)?;
    // Without --ref, every image of the archive, as `docker image ls` lists a loaded save.
    let wanted: Vec<Option<ImageRef>> = match a.image.reference.as_deref() {
        Some(r) => vec![Some(ImageRef::parse(r))],
        None if count > 1 => images
            .into_iter()
            .map(|i| Some(ImageRef::Index(i)))
            .collect(),
        None => vec![None],
    };
    let mut reports = Vec::new();
    let platform = a.image.platform()?;
    for w in &wanted {
        let image = image::select_for(&archive, w.as_ref(), &platform)?;
        print_warnings(&image);
        reports.push(inspect::build(&archive, &image, count, a.layers)?);
    }
    if a.json {
        let json = match reports.as_slice() {
            [one] => serde_json::to_string_pretty(one)?,
            many => serde_json::to_string_pretty(many)?,
        };
        println!("{json}");
    } else {
        // Tags, env and history come from the archive: no control character reaches the
        // terminal (each line escaped on its own, so the layout stays).
        let texts: Vec<String> = reports.iter().map(inspect::print_text).collect();
        for line in texts.join("\n").lines() {
            println!("{}", printable(line));
        }
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

fn cmd_gc(ctx: &Ctx) -> Result<i32> {
    let store = Store::open(&ctx.store_root)?;
    let mut removed = ctx.reclaim(&store);
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
