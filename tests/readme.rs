//! README.md cannot go stale: every command in its `sh` code blocks is run here, in order, in one
//! shell (the setup line without its `apt-get` parts; not `cargo test --profile release-tests`, which is what
//! runs this). Every fenced block must be `sh` (commands, run) or `text` (output, not run).
//! Also: the man pages and shell completions generated from the clap definitions are checked, and
//! the README must document every flag of every subcommand.

use clap::CommandFactory;
use std::path::Path;
use std::process::Command;
mod common;
use common::skip;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

struct Block {
    info: String,
    lines: Vec<String>,
}

fn blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut cur: Option<Block> = None;
    for line in md.lines() {
        if let Some(rest) = line.trim_start().strip_prefix("```") {
            match cur.take() {
                Some(b) => out.push(b),
                None => {
                    cur = Some(Block {
                        info: rest.trim().to_string(),
                        lines: Vec::new(),
                    })
                }
            }
        } else if let Some(b) = cur.as_mut() {
            b.lines.push(line.to_string());
        }
    }
    assert!(cur.is_none(), "README.md: unterminated code block");
    out
}

fn commands(b: &Block) -> Vec<String> {
    b.lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// The script the README amounts to.
fn script(md: &str) -> String {
    let all = blocks(md);
    for b in &all {
        assert!(
            b.info == "sh" || b.info == "sh setup" || b.info == "text",
            "README.md: a code block marked {:?}: use `sh` for commands (run by this test) or `text` for output",
            b.info
        );
    }
    let setup = all.iter().position(|b| b.info == "sh setup");
    assert_eq!(
        setup,
        Some(0),
        "the first code block must be the two commands (`sh setup`)"
    );
    let two = commands(&all[0]);
    assert_eq!(
        two.len(),
        2,
        "the setup block holds exactly two commands: {two:?}"
    );
    assert_eq!(
        two[1], "cargo test --profile release-tests",
        "command 2 is the test command"
    );
    let first: Vec<&str> = two[0]
        .split(" && ")
        .filter(|part| !part.contains("apt-get"))
        .collect();
    assert!(first.iter().any(|p| p.contains("rcrun run")));
    let mut s = String::from("set -euo pipefail\nset -x\n");
    s.push_str(&first.join(" && "));
    s.push('\n');
    for b in all.iter().skip(1).filter(|b| b.info == "sh") {
        for c in commands(b) {
            s.push_str(&c);
            s.push('\n');
        }
    }
    s
}

#[test]
fn every_readme_command_runs() {
    let md = std::fs::read_to_string(Path::new(MANIFEST).join("README.md")).unwrap();
    let script = script(&md);
    let work = std::env::temp_dir().join(format!("rcrun-readme-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let had_busybox = Path::new(MANIFEST).join("busybox.tar").exists();
    let _ = std::fs::remove_dir_all("/tmp/busybox-rootfs");
    // cargo (for the setup line's `cargo build --release`) lives next to $CARGO.
    let cargo_dir = std::env::var("CARGO")
        .ok()
        .and_then(|c| Path::new(&c).parent().map(|p| p.display().to_string()))
        .unwrap_or_default();
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(MANIFEST)
        .env(
            "PATH",
            format!("{cargo_dir}:{}", std::env::var("PATH").unwrap_or_default()),
        )
        // The setup line's store; the lesson then chooses its own.
        .env("RCRUN_ROOT", work.join("store"))
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all("/tmp/busybox-rootfs");
    // The lesson's store: `RCRUN_ROOT=/tmp/rcrun-lesson-$(id -u)`, one per user.
    let _ = std::fs::remove_dir_all(format!("/tmp/rcrun-lesson-{}", nix::unistd::getuid()));
    if !had_busybox {
        let _ = std::fs::remove_file(Path::new(MANIFEST).join("busybox.tar"));
    }
    println!("{stdout}");
    assert!(
        out.status.success(),
        "a README command failed:\n--- script\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    // What the lesson says happens, happens.
    assert!(stdout.contains("hello from rcrun"), "{stdout}");
    assert!(stdout.contains("hello from a container"), "{stdout}");
    assert!(stdout.contains("my pid: 1\n"), "{stdout}");
    // "tar -xOf … layer | sha256sum  # = the diff_id above"
    let sum = stdout
        .lines()
        .filter_map(|l| l.strip_suffix("  -"))
        .find(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .expect("sha256sum output");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("\"diff_ids\"") && l.contains(&format!("sha256:{sum}"))),
        "the layer's sha256 is not the config's diff_id:\n{stdout}"
    );
    // The copy-on-write demo: the file deleted in one container is back in the next.
    assert!(stdout.contains("root:x:0:0:"), "{stdout}");
    assert!(
        stderr.contains("rcrun: [") && stderr.contains("] exec "),
        "--explain narrated nothing:\n{stderr}"
    );
    assert!(
        stderr.contains("\"no-such-program\": executable file not found in $PATH"),
        "{stderr}"
    );
    assert!(stdout.contains("exit status 127"), "{stdout}");
}

/// All long and short flags of a command, as they are written on a command line.
fn flags(cmd: &clap::Command) -> Vec<String> {
    let mut v = Vec::new();
    for a in cmd.get_arguments() {
        if let Some(l) = a.get_long() {
            v.push(format!("--{l}"));
        }
        if let Some(s) = a.get_short() {
            v.push(format!("-{s}"));
        }
    }
    v
}

#[test]
fn readme_documents_every_subcommand_and_flag() {
    let md = std::fs::read_to_string(Path::new(MANIFEST).join("README.md")).unwrap();
    let mut cli = rcrun::cli::Cli::command();
    cli.build();
    let mut missing = Vec::new();
    for f in flags(&cli) {
        if !md.contains(&format!("`{f}")) && !md.contains(&format!("{f}`")) {
            missing.push(format!("rcrun {f}"));
        }
    }
    for sub in cli.get_subcommands() {
        let name = sub.get_name();
        if name == "help" {
            continue;
        }
        if !md.contains(&format!("rcrun {name}")) {
            missing.push(format!("subcommand {name}"));
        }
        for f in flags(sub) {
            if f == "--help" || f == "-h" || f == "--version" || f == "-V" {
                continue;
            }
            // Written as `--flag`, `--flag VALUE` or `-e`/`--env` in the README.
            if !md.contains(&format!("`{f}"))
                && !md.contains(&format!("{f}`"))
                && !md.contains(&format!("{f}/"))
            {
                missing.push(format!("rcrun {name} {f}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "README.md does not document: {missing:?}"
    );
}

#[test]
fn man_pages_cover_every_flag() {
    let dir = std::env::temp_dir().join(format!("rcrun-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_rcrun"))
        .arg("man")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cli = rcrun::cli::Cli::command();
    cli.build();
    let read = |page: &str| {
        std::fs::read_to_string(dir.join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"))
            .replace("\\-", "-")
    };
    let top = read("rcrun.1");
    assert!(
        top.starts_with(".ie") || top.contains(".TH rcrun 1"),
        "{top}"
    );
    assert!(
        top.contains("RCRUN_ROOT") && top.contains("125"),
        "rcrun.1 lacks the reference section"
    );
    for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
        let page = read(&format!("rcrun-{}.1", sub.get_name()));
        for f in flags(sub) {
            assert!(
                page.contains(&f),
                "rcrun-{}.1 does not mention {f}",
                sub.get_name()
            );
        }
    }
    // Every run flag, explicitly (the issue's check).
    let run = read("rcrun-run.1");
    for f in [
        "--explain",
        "--memory",
        "--cap-add",
        "--security-opt",
        "--read-only",
        "--userns",
    ] {
        assert!(run.contains(f), "rcrun-run.1 lacks {f}");
    }
    // Without DIR: rcrun.1 on stdout.
    let out = Command::new(env!("CARGO_BIN_EXE_rcrun"))
        .arg("man")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH rcrun 1"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn completions_are_valid_shell() {
    let gen = |shell: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_rcrun"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "completions {shell}");
        String::from_utf8(out.stdout).unwrap()
    };
    let dir = std::env::temp_dir().join(format!("rcrun-compl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (shell, checker, args) in [
        ("bash", "bash", &["-n"][..]),
        ("zsh", "zsh", &["-n"][..]),
        ("fish", "fish", &["--no-execute"][..]),
    ] {
        let script = gen(shell);
        assert!(
            script.contains("explain"),
            "{shell} completion lacks --explain"
        );
        assert!(
            script.contains("completions"),
            "{shell} completion lacks the subcommands"
        );
        let f = dir.join(format!("rcrun.{shell}"));
        std::fs::write(&f, &script).unwrap();
        match Command::new(checker).args(args).arg(&f).output() {
            Ok(o) => assert!(
                o.status.success(),
                "{checker} {args:?} rejects the {shell} completion: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(_) if shell != "bash" => {
                skip(&format!("{checker} not installed: {shell} completion syntax not checked (.ci/run installs it)"))
            }
            Err(e) => panic!("bash: {e}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
