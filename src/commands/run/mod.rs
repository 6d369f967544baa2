//! `rcrun run`: the whole pipeline — image, unpack, plan, launch — for one container.

use crate::cli::RunArgs;
use crate::launch::explain::Explain;
use crate::launch::StartupPlan;
use crate::unpack::{self};
use crate::Ctx;
use anyhow::{bail, Result};

mod cgroup;
pub mod network;
mod security;
mod startup;
use self::cgroup::{limits, sweep_stale};
use self::security::{device_policy, security_options};
use self::startup::{decide, ensure_layers, owner_mode};
use crate::commands::parts::{load_seccomp, make_cgroup, target_arch};

/// `prefork`: a network namespace holder forked before the command line was parsed, used when
/// this run wants one made early and dropped (killed, reaped) otherwise.
pub fn cmd_run(ctx: &Ctx, a: &RunArgs, prefork: Option<crate::launch::EarlyNetns>) -> Result<i32> {
    if let Some(bundle) = &a.bundle {
        drop(prefork);
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
    // As root the container's network namespace is made by a holder process on the other CPU
    // while this one reads the image and plans (launch/early_net.rs): the one main forked before
    // parsing, or one forked now. Only for a plain foreground run: a detached or named one forks
    // its monitor first, and a holder main forked for it is dropped here.
    let wants_early_net = ctx.privilege.is_real_root()
        && !a.userns
        && !a.detach
        && a.name.is_none()
        && !a.print_spec
        && network::Network::parse(&a.network).is_ok_and(|n| n.new_namespace());
    let preforked = wants_early_net && prefork.is_some();
    let mut early_net = if wants_early_net {
        prefork.or_else(crate::launch::EarlyNetns::start)
    } else {
        drop(prefork);
        None
    };
    if early_net.is_some() {
        ex.step(
            "net",
            &format!("fork a holder of the container's network namespace{}: on the other CPU it does unshare(CLONE_NEWNET) and ioctl(SIOCSIFFLAGS, lo, IFF_UP) while rcrun reads the image and plans (not in the shares: it overlaps them)",
                if preforked { " (before the command line was parsed)" } else { "" }),
            std::time::Duration::ZERO,
        );
    }
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
    let (mut archive, image, etc_remembered) = match cached {
        Some(crate::image::cache::Cached { image, etc }) => {
            crate::print_warnings(&image);
            (None, image, etc)
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
            // Cached below, once the layers are in the store and their /etc is found: one
            // write of the entry instead of two.
            (Some(archive), image, None)
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
    // Formatting 200 lines for a 200-layer image costs more than finding the layers: only when
    // they are shown.
    for (i, l) in layers.iter().enumerate().filter(|_| ex.enabled) {
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
    let lowers_top_first = startup::lowers_top_first(&layers);
    let etc = match etc_remembered {
        Some(etc) => {
            ex.step(
                "plan",
                &startup::etc_note(&etc, layers.len(), "remembered in the image cache"),
                std::time::Duration::ZERO,
            );
            etc
        }
        None => {
            let started = std::time::Instant::now();
            let etc = startup::etc_sources(&lowers_top_first);
            ex.step(
                "plan",
                &startup::etc_note(&etc, layers.len(), "found by a lookup in each layer from the top; now remembered in the image cache"),
                started.elapsed(),
            );
            let cache_dir = store.cache_dir();
            match &archive {
                // Read from the archive this time: the whole entry, now.
                Some(read) => crate::image::cache::save(&cache_dir, reference, read, &image, etc),
                // From the cache, but from before a run had the layers: the entry gains this.
                None => crate::image::cache::remember_etc(
                    &cache_dir,
                    &a.image.image,
                    reference,
                    &image,
                    etc,
                ),
            }
            etc
        }
    };
    drop(archive);
    let sec = security_options(&a.security_opt)?;
    let run = ex.timed(
        "plan",
        "decide: the image's config and the flags → argv, env, user (from the image's /etc), cwd, id maps, volumes, --device nodes",
        || decide(ctx, a, &sec, &image, lowers_top_first, &etc, &store.run_dir()),
    )?;
    let mut limits = limits(a)?;
    limits.devices = device_policy(ctx, a, &run, &ex);
    if a.print_spec {
        println!(
            "{}",
            serde_json::to_string_pretty(&spec_document(&run, &limits)?)?
        );
        return Ok(0);
    }
    if a.detach && (a.tty || a.interactive) {
        bail!("-d with -t or -i: rcrun has no `attach`, so nobody could use that terminal or stdin; run the container with a long-lived command (e.g. sleep infinity) and open a shell in it with `rcrun exec -it ID sh`");
    }
    // A detached run keeps its Spec in its state directory: `exec` compiles its process from it.
    let detached_config = if a.detach || a.name.is_some() {
        Some(spec_document(&run, &limits)?)
    } else {
        None
    };
    // The one front door: the run written as an OCI Spec, compiled as a bundle's is.
    let (spec, extras) = ex.timed(
        "spec",
        "write the run as an OCI runtime Spec (what --print-spec prints) + the extras OCI cannot say (store layers, /etc files, the seccomp profile)",
        || crate::spec::image::image_spec(&run, &limits),
    )?;
    let compiled = ex.timed(
        "spec",
        "compile the Spec into the startup plan (launch/plan/compile.rs, the one a bundle's config.json goes through too)",
        || {
            crate::launch::plan::compile(
                &spec,
                &extras,
                &crate::launch::plan::HostFacts {
                    privilege: &ctx.privilege,
                    bundle: std::path::Path::new("/"),
                    id: &run.id,
                    scratch: &run.scratch,
                },
            )
        },
    )?;
    let mut plan = compiled.plan;
    plan.id_holder = crate::launch::holder::wanted().then(|| ctx.store_root.clone());
    plan.seccomp = load_seccomp(&store.cache_dir(), compiled.seccomp.as_ref(), &plan, &ex)?;
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
    // Read before `go` borrows the plan for the launch (only a registered run needs them).
    let registered = detached_config
        .is_some()
        .then(|| (plan.argv.clone(), plan.mapping.user_namespace()));
    let limits = &crate::cgroup::Limits {
        without_accounting: !a.stats,
        ..compiled.limits.clone()
    };
    let cgroups_path = compiled.cgroups_path.as_deref();
    let mut go = |on_started: Option<&crate::commands::containers::detach::OnStarted<'_>>| {
        launch(
            ctx,
            a,
            &ex,
            &mut plan,
            limits,
            cgroups_path,
            None,
            on_started,
            early_net.take(),
        )
    };
    let (Some(config), Some((argv, userns))) = (detached_config, registered) else {
        return go(None);
    };
    let image = match &a.image.reference {
        Some(r) => format!("{} ({r})", a.image.image.display()),
        None => a.image.image.display().to_string(),
    };
    let detached = crate::commands::containers::detach::Detached {
        id: &run.id,
        name: a.name.as_deref(),
        image,
        argv: &argv,
        auto_remove: a.remove,
        config,
        userns,
    };
    if a.detach {
        crate::commands::containers::detach::run(ctx, &detached, |f| go(Some(f)))
    } else {
        crate::commands::containers::detach::run_named_foreground(ctx, &detached, |f| go(Some(f)))
    }
}

/// Cgroup, namespaces, the child's start, the wait, and the cleanup: the same for an image and
/// for an OCI bundle.
fn launch(
    ctx: &Ctx,
    a: &RunArgs,
    ex: &Explain,
    plan: &mut StartupPlan,
    limits: &crate::cgroup::Limits,
    cgroups_path: Option<&str>,
    hooks: Option<&crate::oci::hooks::Foreground>,
    on_started: Option<&crate::commands::containers::detach::OnStarted<'_>>,
    early_net: Option<crate::launch::EarlyNetns>,
) -> Result<i32> {
    let network = network::Network::parse(&a.network)?;
    let ports = a
        .publish
        .iter()
        .map(|p| network::parse_publish(p))
        .collect::<Result<Vec<_>>>()?;
    // Before spawn: as root rcrun leaves the host's network namespace while the child mounts.
    let host_netns = if network.helper() {
        // The helper joins the container's namespaces where OCI hooks would run: the child
        // stops there, before pivot_root, still dumpable (after it, /proc/PID/ns/* of the
        // non-dumpable child can be opened by root only).
        plan.hooks_point = true;
        Some(network::host_namespace()?)
    } else {
        None
    };
    let cg_fs = crate::cgroup::CgroupFs::host();
    let mut cgroup = make_cgroup(ctx, ex, &cg_fs, &plan.id, cgroups_path, limits, a.stats)?;
    if let Some(cg) = &cgroup {
        plan.cgroup = cg.join();
    }
    // The launcher's three calls: spawn (namespaces, id maps, cgroup; the child builds the
    // container up to its start gate), start (the child execs the command), wait.
    // A bundle's hooks (oci::hooks) at their points: before pivot_root, before the gate, after
    // the start; poststop after the cleanup below.
    let started = (|| -> Result<crate::launch::Outcome> {
        let mut spawned = crate::launch::spawn_with(plan, ex, early_net)?;
        if let (Some(own), true) = (&cgroup, ctx.privilege.is_real_root()) {
            sweep_stale(&cg_fs, own, ex);
        }
        let pid = spawned.pid().as_raw();
        let mut helper = None;
        if let Some(host_netns) = &host_netns {
            if spawned.until_hooks_point() {
                helper =
                    network.start_helper(pid, host_netns, &ports, &ctx.store_root.join("tmp"))?;
                if let Some(h) = &helper {
                    ex.step("net", &format!("{}: {}", h.command_line, h.gave), h.took);
                }
                if hooks.is_none() {
                    spawned.resume_after_hooks(ex)?;
                }
            }
        }
        if let Some(h) = hooks {
            if plan.hooks_point && spawned.until_hooks_point() {
                ex.timed(
                    "hooks",
                    "prestart, createRuntime and createContainer hooks",
                    || h.create(pid),
                )?;
                spawned.resume_after_hooks(ex)?;
            }
            if h.has_start_container() {
                spawned.until_created()?;
                if spawned.failure().is_none() {
                    ex.timed("hooks", "startContainer hooks", || h.start_container(pid))?;
                }
            }
        }
        let running = crate::launch::start(spawned, ex)?;
        if let Some(h) = hooks {
            h.poststart(pid);
        }
        if let Some(f) = on_started {
            f(pid, cgroup.as_ref(), running.failure());
        }
        let outcome = crate::launch::wait(running, ex)?;
        // The helper goes with the container (killed and reaped here; PR_SET_PDEATHSIG would
        // end it anyway when rcrun exits).
        if let Some(h) = helper {
            let what = format!("stop {}: SIGKILL, reap, remove its scratch", h.program());
            ex.timed("net", &what, || -> Result<()> {
                drop(h);
                Ok(())
            })?;
        }
        Ok(outcome)
    })();
    let mut outcome = match started {
        Ok(o) => o,
        Err(e) => {
            if let Some(cg) = cgroup.take() {
                let _ = cg.remove();
            }
            if let Some(h) = hooks {
                h.poststop();
            }
            return Err(e.context("starting the container"));
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
                // After the exit pids.current is 0: only the peak says anything.
                s.pids_peak
                    .map(|n| format!("{n} at most"))
                    .unwrap_or_else(|| "n/a (this kernel has no pids.peak)".into()),
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
    if let Some(h) = hooks {
        // runtime-spec: poststop once the container is deleted (warnings only).
        h.poststop();
    }
    ex.summary();
    Ok(outcome.status)
}

/// `rcrun run --bundle DIR ID`: an OCI bundle, through the same launcher.
fn cmd_run_bundle(ctx: &Ctx, a: &RunArgs, bundle: &std::path::Path) -> Result<i32> {
    let ex = Explain::new(a.explain);
    let id = a.image.image.to_string_lossy().into_owned();
    if a.detach {
        return crate::oci::lifecycle::run_detached(ctx, bundle, &id, &a.oci, a.explain);
    }
    let o = &a.oci;
    if o.pid_file.is_some() || o.console_socket.is_some() || o.no_pivot || o.preserve_fds > 0 {
        bail!("--pid-file, --console-socket, --no-pivot and --preserve-fds are create options: with run --bundle they need -d (or use create and start)");
    }
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        || id.starts_with('.')
    {
        bail!("container ID {id:?}: use 1 to 64 of A-Z a-z 0-9 _ - . (not starting with .)");
    }
    let store = ex.timed(
        "store",
        &format!(
            "open store {} (scratch and seccomp cache)",
            ctx.store_root.display()
        ),
        || ctx.open_store(),
    )?;
    let mut p = crate::oci::lifecycle::prepare(
        ctx,
        &ex,
        bundle,
        &id,
        &store.run_dir(),
        &store.cache_dir(),
    )?;
    let hooks = crate::oci::hooks::Foreground {
        spec: &p.spec,
        id: &id,
        bundle: &p.bundle,
    };
    launch(
        ctx,
        a,
        &ex,
        &mut p.plan,
        &p.limits,
        p.cgroups_path.as_deref(),
        Some(&hooks),
        None,
        None,
    )
}

/// The run's OCI Spec, the one a run compiles, as JSON (what `--print-spec` prints and a `run -d`
/// keeps); its seccomp profile written in OCI's format (the entries that apply to this run) as
/// `linux.seccomp`.
fn spec_document(
    run: &crate::spec::image::ImageRun,
    limits: &crate::cgroup::Limits,
) -> Result<serde_json::Value> {
    let parsed = run
        .seccomp
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
                &run.caps.bounding,
                target_arch(),
            )?,
        }),
        None => None,
    };
    let doc = crate::spec::image::document(run, limits, input.as_ref())?;
    // Parse it back into the typed Spec: what is printed is a valid OCI document.
    let _: oci_spec::runtime::Spec =
        serde_json::from_value(doc.clone()).map_err(crate::spec::SpecError::from)?;
    Ok(doc)
}
