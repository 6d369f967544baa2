//! What a docker user's flag means to rcrun when rcrun has no such flag: clap's own tip ("to
//! pass '--rm' as a value, use '-- --rm'") sends a docker user the wrong way. The table is data,
//! `configs/docker-flags.txt`: one line per group of docker flags with what to say instead.

use clap::error::{ContextKind, ContextValue, ErrorKind};

const TABLE: &str = include_str!("../../configs/docker-flags.txt");

/// The table's message for `flag` (`--publish`, or `--network=bridge` for a refused value).
pub fn message_for(flag: &str) -> Option<&'static str> {
    TABLE
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('|'))
        .find(|(flags, _)| flags.split_whitespace().any(|f| f == flag))
        .map(|(_, msg)| msg.trim())
}

/// The subcommand a command line names (the first argument that is one), for the message.
fn subcommand(args: &[String]) -> Option<&str> {
    let cmd = <crate::cli::Cli as clap::CommandFactory>::command();
    args.iter()
        .skip(1)
        .map(String::as_str)
        .find(|a| cmd.get_subcommands().any(|s| s.get_name() == *a))
}

/// A one-line error in docker's terms for a clap error about a flag rcrun lacks or a value it
/// refuses, or None to let clap's message stand.
pub fn explain(err: &clap::Error, args: &[String]) -> Option<String> {
    let context = |kind| match err.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let sub = subcommand(args).unwrap_or("");
    match err.kind() {
        ErrorKind::UnknownArgument => {
            let given = context(ContextKind::InvalidArg)?;
            // `--publish=8080:80` and `-p8080:80` name the flag before the value.
            let flag = match given.split_once('=') {
                Some((f, _)) => f.to_string(),
                None if !given.starts_with("--") && given.len() > 2 => given[..2].to_string(),
                None => given.clone(),
            };
            Some(match message_for(&flag) {
                Some(msg) => format!("{flag}: {msg}"),
                None => format!(
                    "rcrun {sub} has no flag {flag}: `rcrun {sub} --help` lists its flags (the \
                     README's \"Coming from docker\" table maps docker's)"
                ),
            })
        }
        ErrorKind::InvalidValue => {
            let arg = context(ContextKind::InvalidArg)?;
            let value = context(ContextKind::InvalidValue)?;
            // clap names the argument with its value name: "--network <MODE>".
            let flag = arg.split_whitespace().next()?;
            message_for(&format!("{flag}={value}")).map(|msg| format!("{flag} {value}: {msg}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn error_for(line: &str) -> Option<String> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        let err = crate::cli::Cli::try_parse_from(&args).expect_err(line);
        explain(&err, &args)
    }

    #[test]
    fn docker_flags_are_named_in_docker_terms() {
        let e = error_for("rcrun run -P img.tar").unwrap();
        assert!(
            e.starts_with("-P: rcrun publishes only the ports you name"),
            "{e}"
        );
        let e = error_for("rcrun run --expose=80 img.tar").unwrap();
        assert!(e.starts_with("--expose: rcrun publishes only"), "{e}");
        let e = error_for("rcrun run --restart always img.tar").unwrap();
        assert!(e.contains("no restart policy"), "{e}");
    }

    #[test]
    fn an_unknown_flag_names_the_subcommand_not_clap_s_tip() {
        let e = error_for("rcrun run --frobnicate img.tar").unwrap();
        assert!(e.starts_with("rcrun run has no flag --frobnicate"), "{e}");
        assert!(!e.contains("-- --frobnicate"), "{e}");
    }

    #[test]
    fn other_errors_keep_clap_s_message() {
        assert_eq!(error_for("rcrun run --memory"), None);
        assert_eq!(error_for("rcrun run --cpus"), None);
    }

    #[test]
    fn every_table_line_parses_and_names_no_flag_rcrun_has() {
        let mut cmd = <crate::cli::Cli as clap::CommandFactory>::command();
        cmd.build(); // the subcommands' flags are deferred (cli::Lazy)
        let run = cmd.find_subcommand("run").unwrap();
        for line in TABLE
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (flags, msg) = line.split_once('|').expect(line);
            assert!(!msg.trim().is_empty(), "{line}");
            for f in flags.split_whitespace().filter(|f| !f.contains('=')) {
                let known = run.get_arguments().any(|a| {
                    a.get_long().map(|l| format!("--{l}")).as_deref() == Some(f)
                        || a.get_short().map(|s| format!("-{s}")).as_deref() == Some(f)
                });
                assert!(
                    !known,
                    "{f} is a flag of rcrun run: drop it from docker-flags.txt"
                );
            }
        }
    }
}
