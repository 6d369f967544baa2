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
pub mod commands;
pub mod host;
pub mod image;
pub mod inspect;
pub mod launch;
pub mod layers_view;
pub mod oci;
pub mod security;
pub mod spec;
pub mod sys;
pub mod unpack;

use anyhow::Result;
use cli::{Cli, Command, ImageArg};
use host::Privilege;
use image::{Archive, Image, ImageRef};
use std::path::PathBuf;
use unpack::Store;

pub use commands::man::{man_page, write_completions};

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

/// The container's process failed before its command started, with docker's code for why (126
/// cannot execute, 127 not found, else 125). `rcrun create` returns it as an error: there is no
/// container status to pass on yet.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ProcessFailed {
    pub code: i32,
    pub message: String,
}

/// Marks an error of an OCI runtime command (create, start, state, kill, delete, list,
/// features): it exits 1, as runc's do; engines read that and runc's words, not docker's codes.
/// Its own text is empty, so the message stays the error's.
#[derive(Debug)]
pub struct OciCommandFailed;

impl std::fmt::Display for OciCommandFailed {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Ok(())
    }
}

/// Every error that reaches the top means rcrun itself failed (the command's own 126/127 come
/// back as the container's status, not as an error), except a [`ProcessFailed`], whose code
/// says why the command could not start.
pub fn exit_code_for(err: &anyhow::Error) -> i32 {
    if err.downcast_ref::<OciCommandFailed>().is_some() {
        return 1;
    }
    err.chain()
        .find_map(|c| c.downcast_ref::<ProcessFailed>())
        .map(|f| f.code)
        .filter(|c| [EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND].contains(c))
        .unwrap_or(EXIT_RCRUN_FAILED)
}

/// Appends one line to the `--log` file: runc's JSON (`{"level","msg","time"}`) or text
/// (`time="…" level=LEVEL msg="…"`, logrus's text form, which runc writes too).
pub fn append_log(
    path: &std::path::Path,
    json: bool,
    level: &str,
    msg: &str,
) -> std::io::Result<()> {
    use std::io::Write;
    let time = oci::state::rfc3339_now();
    let line = if json {
        serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
    } else {
        format!(
            "time=\"{time}\" level={level} msg={}",
            serde_json::Value::from(msg)
        )
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // One write(2) per line: O_APPEND keeps lines of concurrent rcrun processes whole.
    f.write_all(format!("{line}\n").as_bytes())
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
    /// The OCI runtime commands' state directory (--root, or /run/rcrun or
    /// $XDG_RUNTIME_DIR/rcrun).
    pub state_root: PathBuf,
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

/// Runs the parsed command. `prefork`: the network namespace holder main forked before parsing
/// ([`launch::EarlyNetns::prefork`]), for `run` to use or drop.
pub fn main_with(cli: Cli, prefork: Option<launch::EarlyNetns>) -> Result<i32> {
    // Before rcrun opens anything of its own: the descriptors it is to pass on must all be there.
    let preserve = match &cli.command {
        Command::Create(a) => Some(a.options.preserve_fds),
        Command::Exec(a) => Some(a.preserve_fds),
        Command::Run(a) if a.bundle.is_some() => Some(a.oci.preserve_fds),
        _ => None,
    };
    if let Some(n) = preserve {
        oci::passed_fds(n).map_err(|e| e.context(OciCommandFailed))?;
    }
    let privilege = Privilege::detect();
    let store_root = store_root(&cli);
    let state_root = cli
        .root
        .clone()
        .unwrap_or_else(|| oci::state::default_root(privilege.is_real_root()));
    if cli.systemd_cgroup {
        anyhow::bail!("--systemd-cgroup: rcrun manages cgroups through the cgroup file system, not systemd; use the engine's cgroupfs manager (podman --cgroup-manager cgroupfs; containerd: SystemdCgroup = false)");
    }
    let ctx = Ctx {
        privilege,
        store_root,
        state_root,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Inspect(a) => commands::inspect::cmd_inspect(&ctx, &a),
        Command::Unpack(a) => commands::unpack::cmd_unpack(&ctx, &a),
        Command::Run(a) => commands::run::cmd_run(&ctx, &a, prefork),
        Command::Spec(a) => commands::spec::cmd_spec(&a, &ctx.privilege),
        Command::Gc => commands::gc::cmd_gc(&ctx),
        Command::Create(a) => oci_exit(oci::lifecycle::cmd_create(&ctx, &a)),
        Command::Start(a) => oci_exit(oci::lifecycle::cmd_start(&ctx, &a)),
        Command::State(a) => oci_exit(oci::info::cmd_state(&ctx, &a.id)),
        Command::Kill(a) => oci_exit(oci::control::cmd_kill(&ctx, &a)),
        Command::Delete(a) => oci_exit(oci::lifecycle::cmd_delete(&ctx, &a)),
        Command::Exec(a) => oci_exit(oci::exec::cmd_exec(&ctx, &a)),
        Command::Ps(a) if a.id.is_none() => {
            oci_exit(commands::containers::verbs::cmd_ps_list(&ctx, &a))
        }
        Command::Ps(a) => oci_exit(oci::control::cmd_ps(&ctx, &a)),
        Command::Stop(a) => oci_exit(commands::containers::verbs::cmd_stop(&ctx, &a)),
        Command::Rm(a) => oci_exit(commands::containers::verbs::cmd_rm(&ctx, &a)),
        Command::Logs(a) => oci_exit(commands::containers::verbs::cmd_logs(&ctx, &a)),
        Command::Wait(a) => oci_exit(commands::containers::verbs::cmd_wait(&ctx, &a)),
        Command::Pause(a) => oci_exit(oci::control::cmd_pause(&ctx, &a.id)),
        Command::Resume(a) => oci_exit(oci::control::cmd_resume(&ctx, &a.id)),
        Command::Update(a) => oci_exit(oci::update::cmd_update(&ctx, &a)),
        Command::List(a) => oci_exit(oci::info::cmd_list(&ctx, &a)),
        Command::Features => oci_exit(oci::info::cmd_features()),
        Command::Man(a) => commands::man::cmd_man(&a),
        Command::Completions(a) => {
            commands::man::write_completions(a.shell, &mut std::io::stdout())?;
            Ok(0)
        }
    }
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

/// An OCI command's error, marked to exit 1 (see [`OciCommandFailed`]).
fn oci_exit(r: Result<i32>) -> Result<i32> {
    r.map_err(|e| e.context(OciCommandFailed))
}
