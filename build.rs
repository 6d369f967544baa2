//! Builds the `--init` program (src/launch/init/init.c) as a static executable and leaves it in
//! OUT_DIR, where `include_bytes!` embeds it in rcrun. It must be static: it runs inside the
//! container's root file system, which has no dynamic loader of the host's (and may have none).
//! A C compiler and a static libc are what linking Rust on Linux needs anyway (Debian: gcc,
//! libc6-dev).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "src/launch/init/init.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CC");
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("rcrun-init");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-static", "-Os", "-s", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(src)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "{cc} -static {src} failed ({s}): rcrun embeds a static --init program; install a C compiler and a static libc (Debian: apt-get install gcc libc6-dev)"
        ),
        Err(e) => panic!(
            "cannot run the C compiler {cc:?} ({e}): rcrun embeds a static --init program; install gcc and libc6-dev (or set CC)"
        ),
    }
}
