//! `--network pasta`: pasta(1), passt's namespace mode, gives the container an `eth0` with the
//! host's own addresses and routes, forwards DNS queries sent to 169.254.1.1 to the host's
//! resolver, and binds each `-p` port on the host itself. It runs in the foreground as rcrun's
//! child and writes its PID to `--pid` once the interface is configured and the ports are bound:
//! that file is a pipe here, so its first bytes say "ready" and an EOF without them "failed".
//!
//! Two things differ from slirp4netns and shape the command line:
//! - pasta forwards *every* port the container binds (`-t auto`) and lets it reach the ports of
//!   the host's loopback (`-T auto`, and the gateway address mapped to the host) unless told
//!   otherwise: rcrun says `-t none -u none -T none -U none --no-map-gw`, then adds only what `-p`
//!   and `allow_host_loopback=true` ask, as podman does.
//! - pasta drops its capabilities (and as root changes to nobody) before it opens the namespaces
//!   it is given by path. Opening `/proc/PID/ns/*` of a process with more capabilities then fails
//!   ptrace's access check (ptrace(2), "Ptrace access mode checking"), so rcrun opens them itself
//!   and hands them down as `/proc/self/fd/N`, which a process may always open; as root it keeps
//!   root (`--runas 0`), since nobody could not setns(2) into the container's network namespace.

use super::{Helper, Publish};
use anyhow::{Context, Result};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

/// The address whose DNS queries pasta forwards to the host's resolver (podman's choice: a
/// link-local address no network uses, reached through the default route).
pub const DNS_FORWARD_ADDR: &str = "169.254.1.1";

/// pasta's spelling of one `-p`: `[ADDR/]HOST_PORT:CONTAINER_PORT` after `-t` or `-u`.
fn port_spec(p: &Publish) -> String {
    if p.host_ip == "0.0.0.0" {
        format!("{}:{}", p.host_port, p.container_port)
    } else {
        format!("{}/{}:{}", p.host_ip, p.host_port, p.container_port)
    }
}

/// The arguments that say what pasta forwards: `-p` ports only, the host's loopback only when
/// allowed.
fn forwarding_args(allow_host_loopback: bool, ports: &[Publish]) -> Vec<String> {
    let mut args = Vec::new();
    for (flag, udp) in [("-t", false), ("-u", true)] {
        let specs: Vec<String> = ports
            .iter()
            .filter(|p| p.udp == udp)
            .map(port_spec)
            .collect();
        if specs.is_empty() {
            args.extend([flag.to_string(), "none".to_string()]);
        }
        for s in specs {
            args.extend([flag.to_string(), s]);
        }
    }
    args.extend(["-T", "none", "-U", "none"].map(String::from));
    // Mapping the gateway's address to the host is pasta's default (Debian 12's pasta, of March
    // 2023, has no `--map-gw` to ask for it).
    if !allow_host_loopback {
        args.push("--no-map-gw".to_string());
    }
    args
}

/// Starts pasta for the network namespace of `pid` and waits until it is configured.
pub(super) fn start(
    pid: i32,
    host_netns: &OwnedFd,
    allow_host_loopback: bool,
    ports: &[Publish],
    scratch: PathBuf,
) -> Result<Helper> {
    std::fs::create_dir_all(&scratch).with_context(|| format!("mkdir {}", scratch.display()))?;
    let netns: OwnedFd = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .with_context(|| format!("open /proc/{pid}/ns/net (the container's network namespace)"))?
        .into();
    // pasta must join the user namespace that owns the network namespace, unless that is its own
    // (root's runs; root's --userns enters the user namespace after the network namespace exists).
    let owner = crate::sys::net::owning_user_namespace(netns.as_fd())
        .context("ioctl NS_GET_USERNS on the container's network namespace")?;
    let ours = crate::sys::process::is_own_namespace(owner.as_fd(), "user").unwrap_or(true);
    let userns = (!ours).then_some(owner);
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let errors = scratch.join("pasta.err");
    let stderr =
        std::fs::File::create(&errors).with_context(|| format!("create {}", errors.display()))?;

    let mut cmd = std::process::Command::new("pasta");
    cmd.args([
        "--foreground",
        "--quiet",
        "--config-net",
        "--ns-ifname",
        "eth0",
    ])
    .args(forwarding_args(allow_host_loopback, ports))
    .args(["--dns-forward", DNS_FORWARD_ADDR])
    // Its log names the store, so the helper of a container can be found (and tested gone).
    .arg("--log-file")
    .arg(scratch.join("pasta.log"))
    .arg("--pid")
    .arg(format!("/proc/self/fd/{}", ready_write.as_raw_fd()));
    if nix::unistd::geteuid().is_root() {
        cmd.args(["--runas", "0"]);
    }
    let mut pass = vec![ready_write.as_raw_fd(), netns.as_raw_fd()];
    if let Some(u) = &userns {
        cmd.arg("--userns")
            .arg(format!("/proc/self/fd/{}", u.as_raw_fd()));
        pass.push(u.as_raw_fd());
    }
    cmd.arg("--netns")
        .arg(format!("/proc/self/fd/{}", netns.as_raw_fd()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr);
    crate::sys::net::prepare_helper(
        &mut cmd,
        pass,
        super::host_namespace_to_return_to(host_netns),
    );
    let command_line = super::shown(&cmd);
    let child = super::spawn(&mut cmd, "pasta", "passt")?;
    drop(ready_write);
    let mut helper = Helper {
        child,
        _held: Vec::new(),
        scratch,
        command_line,
        gave: format!(
            "eth0 with the host's addresses and routes, DNS forwarder {DNS_FORWARD_ADDR}{}",
            if allow_host_loopback {
                ", the host's loopback as the gateway's address"
            } else {
                ""
            }
        ),
        took: Duration::ZERO,
    };
    let mut ready = std::fs::File::from(ready_read);
    let mut pid_text = [0u8; 16];
    let configured = super::wait_readable(ready.as_fd(), Duration::from_secs(10))
        && matches!(ready.read(&mut pid_text), Ok(n) if n > 0);
    if !configured {
        let _ = helper.child.kill();
        let _ = helper.child.wait();
        let why = std::fs::read_to_string(&errors).unwrap_or_default();
        return Err(failure(&first_lines(&why), ports));
    }
    Ok(helper)
}

/// The first lines pasta wrote to stderr, without its complaints about a missing syslog and the
/// usage text that follows an unknown option.
fn first_lines(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with("Failed to send") && !l.trim().is_empty())
        .take_while(|l| !l.starts_with("Usage:"))
        .take(3)
        .collect::<Vec<_>>()
        .join("; ")
}

/// pasta's error in rcrun's terms: a port it could not bind names the `-p` value.
fn failure(why: &str, ports: &[Publish]) -> anyhow::Error {
    for p in ports {
        let flag = if p.udp { "-u" } else { "-t" };
        if why.contains(&format!("'{flag} {}'", port_spec(p))) {
            return anyhow::anyhow!(
                "-p {}: the host's {} port {}:{} cannot be published: it is taken or not yours to bind (pasta: {})",
                p.spec,
                if p.udp { "UDP" } else { "TCP" },
                p.host_ip,
                p.host_port,
                crate::printable(why)
            );
        }
    }
    if why.is_empty() {
        anyhow::anyhow!("pasta did not configure the container's network within 10 s")
    } else {
        anyhow::anyhow!(
            "pasta could not configure the container's network: {}",
            crate::printable(why)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_published_ports_are_forwarded() {
        let none = forwarding_args(false, &[]);
        assert_eq!(
            none.join(" "),
            "-t none -u none -T none -U none --no-map-gw"
        );
        let ports = [
            super::super::parse_publish("8080:80").unwrap(),
            super::super::parse_publish("127.0.0.1:5353:53/udp").unwrap(),
        ];
        assert_eq!(
            forwarding_args(true, &ports).join(" "),
            "-t 8080:80 -u 127.0.0.1/5353:53 -T none -U none"
        );
    }

    #[test]
    fn a_port_pasta_cannot_bind_names_the_publish_flag() {
        let ports = [super::super::parse_publish("127.0.0.1:28011:80").unwrap()];
        let e = failure(
            "Failed to bind any port for '-t 127.0.0.1/28011:80', exiting",
            &ports,
        )
        .to_string();
        assert!(
            e.starts_with(
                "-p 127.0.0.1:28011:80: the host's TCP port 127.0.0.1:28011 cannot be published"
            ),
            "{e}"
        );
        let e = failure(
            &first_lines("pasta: unrecognized option '--x'\nFailed to send 51 bytes to syslog\nUsage: pasta [OPTION]...\n"),
            &ports,
        )
        .to_string();
        assert!(e.ends_with("pasta: unrecognized option '--x'"), "{e}");
        let e = failure("Couldn't open network namespace", &ports).to_string();
        assert!(e.starts_with("pasta could not configure"), "{e}");
    }
}
