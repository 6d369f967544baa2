//! Thin entry point: parse the command line, run the library, print the error, exit.

fn main() {
    // The id holder (launch/holder.rs) is rcrun exec'd by rcrun; it never parses a command line.
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(std::ffi::OsStr::new(rcrun::launch::holder::HOLDER_ARG)) {
        if let (Some(record), None) = (args.next(), args.next()) {
            rcrun::launch::holder::holder_main(record.into());
        }
    }
    // A plain `rcrun run` as root: the container's network namespace starts being made now, on
    // the other CPU, while the command line is parsed (launch/early_net.rs).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let prefork = rcrun::launch::EarlyNetns::prefork(&args);
    // As Cli::try_parse(). The command tree and the matches (a few hundred KiB for `run`: clap
    // copies every help text into its Args) are freed once parsed, so that the run's own
    // allocations reuse their pages: each page first touched costs a page fault, ~2 µs on these
    // VMs. Leaking them instead saved the frees but cost ~26 more faults per warm root start.
    let mut command = <rcrun::cli::Cli as clap::CommandFactory>::command();
    let parsed = command
        .try_get_matches_from_mut(&args)
        .and_then(|mut matches| {
            <rcrun::cli::Cli as clap::FromArgMatches>::from_arg_matches_mut(&mut matches)
        });
    drop(command);
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            // The holder is killed and reaped here: exit() runs no destructors.
            drop(prefork);
            // --help and --version are not errors; a bad command line is rcrun failing (125, as
            // docker), with clap's message naming the flag and the accepted values, or, for a
            // docker flag rcrun lacks, what rcrun offers instead.
            let args: Vec<String> = std::env::args().collect();
            match rcrun::commands::docker_flags::explain(&e, &args) {
                Some(msg) => eprintln!("rcrun: error: {}", rcrun::printable(&msg)),
                None => {
                    let _ = e.print();
                }
            }
            std::process::exit(if e.use_stderr() {
                rcrun::EXIT_RCRUN_FAILED
            } else {
                0
            });
        }
    };
    let verbose = cli.verbose.max(u8::from(cli.debug));
    let log = cli.log.clone().map(|path| (path, cli.log_format == "json"));
    if let Some((path, _)) = &log {
        // Engines read this file after every command, and containerd's shim reports only
        // "unable to retrieve OCI runtime error (open …/log.json: no such file or directory)"
        // when it is missing: it exists from the start, empty until something goes wrong.
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
    }
    let store_root = rcrun::store_root(&cli);
    rcrun::init_logging(cli.quiet, verbose);
    match rcrun::main_with(cli, prefork) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            // One line a person can act on (plus a hint when the remedy is not obvious); the
            // whole cause chain, one cause per line (and a backtrace if RUST_BACKTRACE is set),
            // only with -v.
            if verbose > 0 {
                eprintln!("rcrun: error: {err:?}");
            } else {
                eprintln!("rcrun: error: {}", rcrun::error_message(&err));
            }
            let hint = rcrun::hint_for(&err, &store_root);
            if let Some(hint) = &hint {
                eprintln!("rcrun: hint: {hint}");
            }
            if let Some((path, json)) = &log {
                // Engines (containerd's shim, conmon) show this file's last error when a command
                // fails; a log that cannot be written must not hide the error itself.
                let mut msg = rcrun::error_message(&err);
                if let Some(hint) = &hint {
                    msg.push_str(&format!(" (hint: {hint})"));
                }
                let _ = rcrun::append_log(path, *json, "error", &msg);
            }
            std::process::exit(rcrun::exit_code_for(&err));
        }
    }
}
