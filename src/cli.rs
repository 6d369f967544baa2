//! The command line (clap definitions only; `lib.rs` turns them into a plan).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// rcrun — run an image tarball now, rootless, with nothing escaping.
///
/// Pipeline: image archive ─▶ verified layers in a content-addressed store ─▶ overlayfs root ─▶
/// namespaces, cgroups, capabilities, seccomp ─▶ execve. `rcrun run --explain` narrates each step.
#[derive(Debug, Parser)]
#[command(
    name = "rcrun",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_long_help = TOP_AFTER_HELP
)]
pub struct Cli {
    /// Image commands (run, unpack, inspect, gc): the layer store [default: /var/lib/rcrun as
    /// root, else $XDG_DATA_HOME/rcrun or ~/.local/share/rcrun], created mode 0700. OCI runtime
    /// commands (create, start, state, kill, delete, list): the containers' state directory, as
    /// runc's --root [default: /run/rcrun as root, else $XDG_RUNTIME_DIR/rcrun].
    #[arg(long, env = "RCRUN_ROOT", value_name = "DIR", global = true)]
    pub root: Option<PathBuf>,
    /// Also append errors to FILE, made by every command (engines pass it and show its last
    /// line when a command fails: containerd's shim, conmon).
    #[arg(long, value_name = "FILE", global = true)]
    pub log: Option<PathBuf>,
    /// Format of --log: text, or json (one {"level","msg","time"} object a line, as runc).
    #[arg(long = "log-format", value_name = "FORMAT", global = true, default_value = "text",
          value_parser = ["text", "json"])]
    pub log_format: String,
    /// Refused: rcrun manages cgroups through the cgroup file system, not through systemd (use
    /// the engine's cgroupfs manager).
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// runc's --debug, accepted: as -v.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Only print errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More detail (repeat for debug tracing); errors show their full cause chain.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what an image archive holds: format, tags, config and each layer.
    Inspect(Lazy<InspectArgs>),
    /// Write the image's flattened root file system into DIR (like `umoci unpack`).
    Unpack(Lazy<UnpackArgs>),
    /// Run a command in a new container from an image archive.
    Run(Lazy<Box<RunArgs>>),
    /// Write a starter OCI runtime config.json into a bundle directory (as `runc spec`), for
    /// `rcrun run --bundle DIR ID`.
    Spec(Lazy<SpecArgs>),
    /// Remove what killed runs left behind (temp dirs, stale cgroups) and report it; stop the
    /// store's id holder.
    Gc,
    /// OCI runtime: create a container from a bundle; its process waits for `start`.
    Create(Lazy<CreateArgs>),
    /// OCI runtime: let a created container's process exec its command.
    Start(Lazy<StartArgs>),
    /// OCI runtime: run a new process in a running container (every namespace of its first
    /// process, its cgroup, capabilities, no_new_privs, seccomp).
    Exec(Lazy<ExecArgs>),
    /// OCI runtime: print a container's state (the OCI state JSON).
    State(Lazy<IdArg>),
    /// List containers as docker ps does (running ones; -a every one), or with an ID, as the
    /// OCI runtime command, the processes of that container.
    Ps(Lazy<PsArgs>),
    /// Stop running containers: SIGTERM to the first process, SIGKILL after -t seconds.
    Stop(Lazy<StopArgs>),
    /// Remove containers: their state, log and name (-f: kill a running one first).
    Rm(Lazy<RmArgs>),
    /// Print the output of a container started with `run -d` (-f: follow it until it exits).
    Logs(Lazy<LogsArgs>),
    /// Wait until containers exit and print each one's exit status.
    Wait(Lazy<WaitArgs>),
    /// OCI runtime: freeze every process of a running container (cgroup freezer).
    Pause(Lazy<IdArg>),
    /// OCI runtime: thaw a paused container.
    Resume(Lazy<IdArg>),
    /// OCI runtime: change a running container's resource limits (memory, pids, cpu).
    Update(Lazy<UpdateArgs>),
    /// OCI runtime: send a signal to a container's first process (every process with --all).
    Kill(Lazy<KillArgs>),
    /// OCI runtime: remove a container: its cgroup and state (--force kills it first).
    Delete(Lazy<DeleteArgs>),
    /// OCI runtime: list the containers under --root.
    List(Lazy<ListArgs>),
    /// OCI runtime: print what this runtime supports (the OCI features JSON).
    Features,
    /// Write the manual pages (rcrun.1, rcrun-run.1, …) into DIR, or print rcrun.1 to stdout.
    Man(Lazy<ManArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(Lazy<CompletionsArgs>),
}

/// A subcommand's arguments, added to clap's command tree only when that subcommand is the one
/// parsed or shown (`clap::Command::defer`): the derive would build every subcommand's flags, help
/// texts included, on every start, and free them again. A warm `rcrun run` spent 0.49 ms (median
/// of 500, interleaved) in clap; `state`, `kill` and `delete`, which engines call per container,
/// need only their own few flags. Whatever walks the whole tree (man pages, completions) calls
/// `Command::build()` first, which runs the deferred parts.
#[derive(Debug)]
pub struct Lazy<T>(pub T);

impl<T> std::ops::Deref for Lazy<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: clap::FromArgMatches> clap::FromArgMatches for Lazy<T> {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(m).map(Lazy)
    }
    fn from_arg_matches_mut(m: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches_mut(m).map(Lazy)
    }
    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(m)
    }
    fn update_from_arg_matches_mut(&mut self, m: &mut clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches_mut(m)
    }
}

impl<T: Args> Args for Lazy<T> {
    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.defer(T::augment_args)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        cmd.defer(T::augment_args_for_update)
    }
}

#[derive(Debug, Args)]
#[command(after_long_help = "Read without installing: rcrun man | man -l -\n\
Install: rcrun man /usr/local/share/man/man1 && mandb")]
pub struct ManArgs {
    /// Directory for one page per command (created if missing); without it, rcrun.1 goes to stdout.
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(
    after_long_help = "bash: rcrun completions bash > /etc/bash_completion.d/rcrun\n\
zsh:  rcrun completions zsh > \"${fpath[1]}/_rcrun\"\n\
fish: rcrun completions fish > ~/.config/fish/completions/rcrun.fish"
)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The process to run, as an OCI `process` JSON object (what engines pass); the flags
    /// below then do not apply.
    #[arg(short = 'p', long, value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Working directory inside the container (default: the container's).
    #[arg(long, short = 'w', visible_alias = "workdir", value_name = "DIR")]
    pub cwd: Option<String>,
    /// Set an environment variable (repeatable), over the container's environment.
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Run as UID[:GID] (numbers, as in config.json), or as docker takes it, a NAME[:GROUP]
    /// from the container's own /etc/passwd and /etc/group, with its groups (default: the
    /// container's user).
    #[arg(short = 'u', long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Additional group ids (repeatable).
    #[arg(short = 'g', long = "additional-gids", value_name = "GID")]
    pub additional_gids: Vec<u32>,
    /// Add a capability to every set of the process (repeatable; `CAP_NET_ADMIN` or `NET_ADMIN`).
    #[arg(long = "cap", value_name = "CAP")]
    pub caps: Vec<String>,
    /// Set no_new_privs for the process.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Give the process a terminal (a pty from the container's devpts); TERM=xterm unless the
    /// container's environment sets TERM.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Accepted for docker's `exec -it`: the process always reads rcrun's stdin (with -t,
    /// through its terminal).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Return once the process has started, leaving it running.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Write the process's host pid into FILE.
    #[arg(long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// With a terminal: send the pty master over this unix socket (SCM_RIGHTS), as runc.
    #[arg(long = "console-socket", value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Pass descriptors 3 .. 3+N-1 on to the process, as runc (each must be open).
    #[arg(long = "preserve-fds", value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Narrate each step on stderr.
    #[arg(long)]
    pub explain: bool,
    /// The container ID.
    #[arg(value_name = "ID")]
    pub id: String,
    /// The command and its arguments (without --process).
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The container ID.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Narrate the start on stderr: the exec fifo opened, the container's process let go.
    #[arg(long)]
    pub explain: bool,
}

#[derive(Debug, Args)]
pub struct IdArg {
    /// The container ID.
    #[arg(value_name = "ID")]
    pub id: String,
}

#[derive(Debug, Args, Default)]
pub struct CreateOptions {
    /// Write the container's first process's host pid into FILE (engines read it).
    #[arg(long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// With process.terminal: send the pty master over this unix socket (SCM_RIGHTS), as runc.
    #[arg(long = "console-socket", value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Refused: rcrun always uses pivot_root (a chroot root can be escaped).
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Accepted: rcrun never creates a session keyring (keyctl is refused by its seccomp).
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass descriptors 3 .. 3+N-1 on to the container's process, as runc (each must be
    /// open); with LISTEN_FDS (socket activation) those follow too.
    #[arg(long = "preserve-fds", value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The bundle: a directory with config.json and the root file system it names.
    #[arg(short = 'b', long, value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
    /// Narrate each step on stderr (the bundle's compile, cgroup, namespaces, id maps, the
    /// child's mounts up to its start gate), as `run --explain` does.
    #[arg(long)]
    pub explain: bool,
    #[command(flatten)]
    pub options: CreateOptions,
    /// The container ID (A-Z a-z 0-9 _ + - ., unique under --root).
    #[arg(value_name = "ID")]
    pub id: String,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal every process of the container, not only the first.
    #[arg(short, long)]
    pub all: bool,
    /// The signal, docker's way (`kill -s HUP NAME`).
    #[arg(short = 's', long = "signal", value_name = "SIGNAL")]
    pub signal_flag: Option<String>,
    /// The container: its ID, or for one started with `run -d`, its name or an ID prefix.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Signal name (TERM, SIGTERM) or number [default: TERM, as runc; KILL for a container of
    /// `run -d`, as docker].
    #[arg(value_name = "SIGNAL")]
    pub signal: Option<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(
        short = 't',
        long = "time",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    pub time: u64,
    /// Containers: IDs, names or ID prefixes.
    #[arg(value_name = "CONTAINER", required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill a running container first.
    #[arg(short, long)]
    pub force: bool,
    /// Containers: IDs, names or ID prefixes.
    #[arg(value_name = "CONTAINER", required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new output until the container exits.
    #[arg(short, long)]
    pub follow: bool,
    /// The container: ID, name or ID prefix.
    #[arg(value_name = "CONTAINER")]
    pub id: String,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Containers: IDs, names or ID prefixes.
    #[arg(value_name = "CONTAINER", required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kill the container first if it still runs.
    #[arg(short, long)]
    pub force: bool,
    #[arg(value_name = "ID")]
    pub id: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// table, or json (an array of state objects); with the global -q, only the IDs.
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The new limits as an OCI `linux.resources` JSON object (`-`: stdin), as containerd's
    /// shim passes them; the flags below then do not apply.
    #[arg(short = 'r', long, value_name = "FILE")]
    pub resources: Option<PathBuf>,
    /// Memory limit (e.g. 64m).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Memory + swap total (e.g. 128m; -1 unlimited).
    #[arg(long = "memory-swap", value_name = "SIZE", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Maximum number of tasks (0 or -1: unlimited).
    #[arg(long = "pids-limit", value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// CPU shares (relative weight).
    #[arg(long = "cpu-shares", value_name = "N")]
    pub cpu_shares: Option<u64>,
    /// CFS quota in µs per period.
    #[arg(long = "cpu-quota", value_name = "US")]
    pub cpu_quota: Option<i64>,
    /// CFS period in µs.
    #[arg(long = "cpu-period", value_name = "US")]
    pub cpu_period: Option<u64>,
    /// CPUs allowed (e.g. 0-1).
    #[arg(long = "cpuset-cpus", value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes allowed (e.g. 0).
    #[arg(long = "cpuset-mems", value_name = "LIST")]
    pub cpuset_mems: Option<String>,
    /// The container ID.
    #[arg(value_name = "ID")]
    pub id: String,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// table, or json (with an ID: an array of host pids, as runc's; without: one object per
    /// container).
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// Without an ID: also list containers that exited.
    #[arg(short, long)]
    pub all: bool,
    /// A container: list its processes (the OCI runtime command).
    #[arg(value_name = "ID")]
    pub id: Option<String>,
}

#[derive(Debug, Args)]
pub struct SpecArgs {
    /// The bundle directory config.json is written into (its rootfs goes in DIR/rootfs).
    #[arg(short = 'b', long, value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
    /// A spec for a plain user: a user namespace mapping container root to your own uid and
    /// gid (no network namespace, as runc's). The default whenever rcrun is not real root.
    #[arg(long)]
    pub rootless: bool,
}

#[derive(Debug, Args)]
pub struct ImageArg {
    /// Image archive (`docker save`, `podman save`, `oci-archive`); `-` reads it from stdin.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// Which image of a multi-image archive: a reference as Docker reads it (NAME[:TAG],
    /// NAME@sha256:…), an image ID, or @N (0-based).
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
    /// Which platform of a multi-platform image: OS/ARCH[/VARIANT], e.g. linux/arm64 (default:
    /// this host's). `run` refuses an image of another platform unless an emulator is registered.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
}

impl ImageArg {
    /// `--platform`, or this host's.
    pub fn platform(&self) -> Result<crate::image::platform::Platform, crate::image::ImageError> {
        match &self.platform {
            None => Ok(crate::image::platform::Platform::host()),
            Some(p) => crate::image::platform::Platform::parse(p)
                .map_err(crate::image::ImageError::BadPlatform),
        }
    }

    /// What the image cache keys a selection on besides the file: `--ref` and `--platform`.
    pub fn selection_key(&self) -> Option<String> {
        match (&self.reference, &self.platform) {
            (None, None) => None,
            (r, p) => Some(format!(
                "{}|{}",
                r.as_deref().unwrap_or(""),
                p.as_deref().unwrap_or("")
            )),
        }
    }
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub image: ImageArg,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Per layer: what it adds, changes and deletes, and its largest directories.
    #[arg(long)]
    pub layers: bool,
}

#[derive(Debug, Args)]
pub struct UnpackArgs {
    #[command(flatten)]
    pub image: ImageArg,
    /// Target directory; must be empty or absent.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
#[command(after_long_help = RUN_AFTER_HELP)]
pub struct RunArgs {
    #[command(flatten)]
    pub image: ImageArg,
    /// Command and arguments; they replace the image's Cmd (Entrypoint stays).
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,

    /// Narrate every startup step on stderr: the kernel call, the values, and its duration.
    #[arg(long)]
    pub explain: bool,
    /// Print the OCI runtime config.json this run amounts to (what runc or crun would be handed
    /// for the same container, as podman builds one) and exit without starting it. Layers are
    /// still extracted: the root's lower dirs are named in an annotation.
    #[arg(long, conflicts_with = "explain")]
    pub print_spec: bool,
    /// Run the OCI bundle in DIR (its config.json and root.path) instead of an image archive:
    /// IMAGE is then the container ID, as in `runc run -b DIR ID`, and the command, Env, mounts,
    /// namespaces, limits and security all come from config.json.
    #[arg(
        short = 'b',
        long,
        value_name = "DIR",
        conflicts_with_all = [
            "command", "print_spec", "entrypoint", "env", "env_file", "workdir", "user", "hostname",
            "init", "tty", "interactive", "read_only", "tmpfs", "volume", "network", "publish", "dns", "add_host", "userns",
            "memory", "memory_swap", "pids_limit", "cpus", "cpu_shares", "cpuset_cpus", "cap_add",
            "cap_drop", "privileged", "security_opt", "device", "reference", "ulimit",
        ]
    )]
    pub bundle: Option<PathBuf>,
    /// Run in the background: print the container's ID and return. Its output goes to a log
    /// file (`rcrun logs`); `rcrun ps`, `exec`, `stop`, `kill`, `wait` and `rm` take its ID, an
    /// ID prefix or its --name. A small rcrun process stays with it to collect its exit status
    /// and clean up. With --bundle: create and start, as `runc run -d`.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// A name for the container, unique among the containers under --root (A-Z a-z 0-9 _ - .).
    #[arg(long, value_name = "NAME", conflicts_with = "bundle")]
    pub name: Option<String>,
    /// With --bundle -d: runc's create options (--pid-file, --console-socket, …).
    #[command(flatten)]
    pub oci: CreateOptions,

    // ── process ──
    /// Replace the image's Entrypoint (a single program; `""` clears it).
    #[arg(long, value_name = "CMD", help_heading = "Process")]
    pub entrypoint: Option<String>,
    /// Set an environment variable (K=V), or pass K from rcrun's own environment.
    #[arg(
        short = 'e',
        long = "env",
        value_name = "K=V",
        help_heading = "Process"
    )]
    pub env: Vec<String>,
    /// Read K=V lines from a file (# comments and blank lines ignored).
    #[arg(long = "env-file", value_name = "FILE", help_heading = "Process")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container (created if missing).
    #[arg(
        short = 'w',
        long = "workdir",
        value_name = "DIR",
        help_heading = "Process"
    )]
    pub workdir: Option<String>,
    /// User: uid, uid:gid, name or name:group, resolved in the image's /etc/passwd and /etc/group.
    #[arg(
        short = 'u',
        long = "user",
        value_name = "USER",
        help_heading = "Process"
    )]
    pub user: Option<String>,
    /// Container host name [default: a short container id].
    #[arg(long, value_name = "NAME", help_heading = "Process")]
    pub hostname: Option<String>,
    /// Run a minimal init as PID 1 that reaps zombies and forwards signals.
    #[arg(long, help_heading = "Process")]
    pub init: bool,
    /// Allocate a pseudo-terminal (raw mode, window size passed on); TERM=xterm unless the
    /// image or -e sets TERM.
    #[arg(short = 't', long, help_heading = "Process")]
    pub tty: bool,
    /// Keep stdin attached (with -t: forwarded to the terminal).
    #[arg(short = 'i', long, help_heading = "Process")]
    pub interactive: bool,
    /// Print peak memory, CPU time and the most pids used after the container exits (needs a
    /// cgroup).
    #[arg(long, help_heading = "Process")]
    pub stats: bool,
    /// A foreground run is always removed when it exits (its upper dir, cgroup and mounts); with
    /// -d, its state, log and name are removed too when it exits, as docker's --rm.
    #[arg(long = "rm", help_heading = "Process")]
    pub remove: bool,
    /// Set a resource limit of the process: NAME=SOFT[:HARD], docker's names (nofile, nproc,
    /// core, stack, memlock, …); -1 is unlimited. Repeatable.
    #[arg(
        long = "ulimit",
        value_name = "NAME=SOFT[:HARD]",
        help_heading = "Process"
    )]
    pub ulimit: Vec<String>,

    // ── file system ──
    /// Mount the root file system read-only.
    #[arg(long = "read-only", help_heading = "File system")]
    pub read_only: bool,
    /// Mount an empty writable tmpfs at PATH (e.g. /tmp with --read-only).
    #[arg(long = "tmpfs", value_name = "PATH", help_heading = "File system")]
    pub tmpfs: Vec<String>,
    /// Bind mount a host path: SRC:DST[:ro]. DST is resolved inside the container root.
    #[arg(
        short = 'v',
        long = "volume",
        value_name = "SRC:DST[:ro]",
        help_heading = "File system"
    )]
    pub volume: Vec<String>,

    // ── namespaces ──
    /// none: a new network namespace with only lo (default); host: share the host's network;
    /// pasta[:allow_host_loopback=true]: a new network namespace that reaches out through
    /// pasta(1) (eth0 with the host's addresses and routes, DNS forwarder 169.254.1.1; the
    /// host's own 127.0.0.1 as the gateway's address only with allow_host_loopback), podman's
    /// rootless default; slirp4netns[:allow_host_loopback=true]: the same through slirp4netns(1)
    /// (10.0.2.100, gateway 10.0.2.2, DNS forwarder 10.0.2.3).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "none",
        help_heading = "Namespaces"
    )]
    pub network: String,
    /// Publish a container port on the host: [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]
    /// (docker's syntax; repeatable). Needs --network pasta or slirp4netns.
    #[arg(
        short = 'p',
        long = "publish",
        value_name = "[IP:]HOST:CTR[/PROTO]",
        help_heading = "Namespaces"
    )]
    pub publish: Vec<String>,
    /// A DNS server for the container's /etc/resolv.conf (repeatable; default: the helper's
    /// forwarder with --network pasta or slirp4netns, else the host's file).
    #[arg(long, value_name = "IP", help_heading = "Namespaces")]
    pub dns: Vec<String>,
    /// An /etc/hosts line for the container: NAME:IP (repeatable).
    #[arg(long = "add-host", value_name = "NAME:IP", help_heading = "Namespaces")]
    pub add_host: Vec<String>,
    /// As root: also create a user namespace. Container ids 0..65535 map to root's range in
    /// /etc/subuid and /etc/subgid, else to the first free 65536 ids above every range listed
    /// there; layers are stored with owners shifted into that range. The namespace is entered
    /// after the root file system is built, so container root owns no mount or network namespace.
    #[arg(long, help_heading = "Namespaces")]
    pub userns: bool,

    // ── resources ──
    /// Memory limit (e.g. 64m, 1g). Exceeding it kills the container (exit 137).
    #[arg(long, value_name = "SIZE", help_heading = "Resources (cgroups)")]
    pub memory: Option<String>,
    /// Memory + swap limit (-1 = unlimited swap).
    #[arg(
        long = "memory-swap",
        value_name = "SIZE",
        help_heading = "Resources (cgroups)"
    )]
    pub memory_swap: Option<String>,
    /// Maximum number of processes/threads.
    #[arg(
        long = "pids-limit",
        value_name = "N",
        help_heading = "Resources (cgroups)"
    )]
    pub pids_limit: Option<i64>,
    /// CPU quota in cores (e.g. 0.5 = half a core; CFS quota/period).
    #[arg(long, value_name = "F", help_heading = "Resources (cgroups)")]
    pub cpus: Option<String>,
    /// Relative CPU weight (default 1024).
    #[arg(
        long = "cpu-shares",
        value_name = "N",
        help_heading = "Resources (cgroups)"
    )]
    pub cpu_shares: Option<u64>,
    /// CPUs the container may use (e.g. 0-1,3).
    #[arg(
        long = "cpuset-cpus",
        value_name = "LIST",
        help_heading = "Resources (cgroups)"
    )]
    pub cpuset_cpus: Option<String>,

    // ── security ──
    /// Add a capability (NAME, CAP_NAME or ALL) to Docker's default 14.
    #[arg(long = "cap-add", value_name = "CAP", help_heading = "Security")]
    pub cap_add: Vec<String>,
    /// Drop a capability (NAME, CAP_NAME or ALL).
    #[arg(long = "cap-drop", value_name = "CAP", help_heading = "Security")]
    pub cap_drop: Vec<String>,
    /// Give the container a host device: HOST[:CTR][:PERMS]. HOST is a character or block
    /// device (symlinks followed), CTR its path inside (default: the same), PERMS what the
    /// device policy allows on it, a combination of r (read), w (write) and m (mknod); default
    /// rwm. As root the node is created inside and its rule added to the device cgroup; rootless
    /// the host node is bound (your host permissions on it still apply).
    #[arg(
        long = "device",
        value_name = "HOST[:CTR][:PERMS]",
        help_heading = "Security"
    )]
    pub device: Vec<String>,
    /// All capabilities, all devices (the device policy allows everything), no seccomp filter,
    /// no masked or read-only /proc and /sys paths. The container is then only as confined as
    /// its namespaces.
    #[arg(long, help_heading = "Security")]
    pub privileged: bool,
    /// seccomp=PATH (a Docker-format profile), seccomp=unconfined, no-new-privileges=false.
    #[arg(long = "security-opt", value_name = "OPT", help_heading = "Security")]
    pub security_opt: Vec<String>,
}

pub const RUN_AFTER_HELP: &str = "\
Who you are decides how the container is built:
  root         namespaces without a user namespace (unless --userns); layers keep their owners;
               cgroup limits work. A device policy is always applied (Docker's: only null,
               zero, full, random, urandom, tty, console, ptmx and pts may be opened; any node
               may be created), through the devices cgroup (v1) or a BPF program (v2): container
               root keeps CAP_MKNOD, but a node it makes for the host's disk or kmsg cannot be
               opened. Without one rcrun does not start the container.
  plain user   a user namespace maps container root to you. With a range for you in /etc/subuid
               and /etc/subgid and newuidmap/newgidmap installed (package uidmap), container ids
               1..N map to that range, so images with several users keep their owners.
               Without subordinate ids only container root exists: every file appears owned by
               root, changing to another user (-u 1000) fails, and chown inside fails with EINVAL.
               Limits need a delegated cgroup (see --memory); without one, asking for a limit
               fails with exit 125 instead of being ignored. No device cgroup is needed: in a
               user namespace the kernel refuses mknod and opens no device node on a mount the
               container made.
  unshare -Ur  detected (uid 0 with a partial uid map) and treated like a plain user.

Exit status: the command's own; 125 when rcrun fails; 126 when the command cannot be executed;
127 when it is not found; 128+N when the container is killed by signal N (137 when the memory
limit killed it).";

pub const TOP_AFTER_HELP: &str = "\
Environment:
  RCRUN_ROOT       the layer store, as --root.
  XDG_DATA_HOME    a plain user's default store is $XDG_DATA_HOME/rcrun (else ~/.local/share/rcrun).
  RCRUN_NO_SUBIDS  =1: ignore /etc/subuid and /etc/subgid, map only container root to you.

Store layout (--root): layers/<owners>/<diff_id>/{fs,layer.json}, locks/, tmp/, run/, cache/.

Exit status: the command's own; 125 when rcrun fails (also for a bad command line); 126 when the
command cannot be executed; 127 when it is not found; 128+N when killed by signal N.";
