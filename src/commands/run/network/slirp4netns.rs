//! `--network slirp4netns`: slirp4netns(1) makes `tap0` in the container's network namespace
//! (10.0.2.100/24, gateway 10.0.2.2, DNS forwarder 10.0.2.3), writes "1" to `--ready-fd` once it
//! is configured, takes `-p` ports through its API socket (`add_hostfwd`), and exits when it reads
//! EOF on `--exit-fd`, a pipe whose only write end rcrun holds.

use super::{Helper, Publish};
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The address slirp4netns gives the container, its gateway (the host) and its DNS forwarder.
pub const CONTAINER_ADDR: &str = "10.0.2.100";
pub const GATEWAY_ADDR: &str = "10.0.2.2";
pub const DNS_ADDR: &str = "10.0.2.3";

/// Starts slirp4netns for the network namespace of `pid`, waits until `tap0` is configured, and
/// publishes the ports.
pub(super) fn start(
    pid: i32,
    host_netns: &std::os::fd::OwnedFd,
    allow_host_loopback: bool,
    ports: &[Publish],
    scratch: PathBuf,
) -> Result<Helper> {
    let (exit_read, exit_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    std::fs::create_dir_all(&scratch).with_context(|| format!("mkdir {}", scratch.display()))?;
    let api = scratch.join("api.sock");
    let mut cmd = std::process::Command::new("slirp4netns");
    cmd.args(["--configure", "--mtu=65520"])
        .arg(format!("--exit-fd={}", exit_read.as_raw_fd()))
        .arg(format!("--ready-fd={}", ready_write.as_raw_fd()))
        .arg(format!("--api-socket={}", api.display()));
    if !allow_host_loopback {
        cmd.arg("--disable-host-loopback");
    }
    cmd.arg(pid.to_string())
        .arg("tap0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    crate::sys::net::prepare_helper(
        &mut cmd,
        vec![exit_read.as_raw_fd(), ready_write.as_raw_fd()],
        super::host_namespace_to_return_to(host_netns),
    );
    let command_line = super::shown(&cmd);
    let child = super::spawn(&mut cmd, "slirp4netns", "slirp4netns")?;
    drop(exit_read);
    drop(ready_write);
    let mut helper = Helper {
        child,
        _held: vec![exit_write],
        scratch,
        command_line,
        gave: format!("tap0 {CONTAINER_ADDR}/24 via {GATEWAY_ADDR}, DNS {DNS_ADDR}"),
        took: Duration::ZERO,
    };
    // slirp4netns writes "1" to --ready-fd once tap0 is up; EOF means it failed.
    let mut ready = std::fs::File::from(ready_read);
    let mut byte = [0u8; 1];
    let configured = super::wait_readable(ready.as_fd(), Duration::from_secs(10))
        && matches!(ready.read(&mut byte), Ok(1));
    if !configured {
        let _ = helper.child.kill();
        let mut why = String::new();
        if let Some(mut e) = helper.child.stderr.take() {
            let _ = e.read_to_string(&mut why);
        }
        bail!(
            "slirp4netns did not configure the container's network within 10 s: {}",
            crate::printable(why.trim())
        );
    }
    for p in ports {
        add_hostfwd(&api, p)?;
    }
    Ok(helper)
}

/// slirp4netns's API (its `add_hostfwd` request): the host port bound in the host's network
/// namespace, forwarded to the container's address.
fn add_hostfwd(api: &Path, p: &Publish) -> Result<()> {
    let mut s = std::os::unix::net::UnixStream::connect(api).with_context(|| {
        format!(
            "-p {}: connect to slirp4netns's API {}",
            p.spec,
            api.display()
        )
    })?;
    let request = serde_json::json!({
        "execute": "add_hostfwd",
        "arguments": {
            "proto": if p.udp { "udp" } else { "tcp" },
            "host_addr": p.host_ip,
            "host_port": p.host_port,
            "guest_addr": CONTAINER_ADDR,
            "guest_port": p.container_port,
        }
    });
    s.write_all(request.to_string().as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.read_to_string(&mut reply)
        .with_context(|| format!("-p {}: slirp4netns's answer", p.spec))?;
    let v: serde_json::Value = serde_json::from_str(&reply).unwrap_or_default();
    if v.get("return").is_some() {
        return Ok(());
    }
    let desc = v["error"]["desc"].as_str().unwrap_or(reply.as_str());
    bail!(
        "-p {}: the host's {} port {}:{} cannot be published: it is taken or not yours to bind (slirp4netns: {})",
        p.spec,
        if p.udp { "UDP" } else { "TCP" },
        p.host_ip,
        p.host_port,
        crate::printable(desc)
    )
}
