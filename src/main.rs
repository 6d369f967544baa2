//! Thin entry point: parse the command line, run the library, print the error chain, exit.

use clap::Parser;

fn main() {
    let cli = rcrun::cli::Cli::parse();
    let verbose = cli.verbose;
    rcrun::init_logging(cli.quiet, verbose);
    match rcrun::main_with(cli) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            // One line a person can act on; the whole cause chain (and a backtrace if
            // RUST_BACKTRACE is set) only with -v.
            if verbose > 0 {
                eprintln!("rcrun: error: {err:?}");
            } else {
                eprintln!("rcrun: error: {err:#}");
            }
            std::process::exit(rcrun::exit_code_for(&err));
        }
    }
}
