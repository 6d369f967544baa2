#!/usr/bin/env bash
# podman driving rcrun (issue 24): `podman --runtime RCRUN` with throwaway storage, as the user
# running this script (root, or a plain user with /etc/subuid ranges: podman's own rootless
# setup). Prints one TAP-like line per scenario (`ok - …` / `not ok - …` with a `#` reason) and
# exits non-zero if any failed. Nothing of the host's podman is touched: --root, --runroot and
# XDG_RUNTIME_DIR live under WORKDIR, which is removed at the end.
#
#   integration/engines/podman.sh RCRUN IMAGE.tar WORKDIR
#
# Facts of this kind of host, the same for runc (measured side by side):
# - root has no CAP_SYS_RESOURCE, so podman's default RLIMIT_NOFILE 1048576 cannot be set
#   ("error setting rlimit type 7" from runc): every run passes smaller --ulimit values;
# - slirp4netns cannot open /dev/net/tun: rootless runs use --network none;
# - rootless podman on cgroup v1 has no cgroup for any runtime: --memory and pause are root-only.
set -u
RCRUN=$1 TAR=$2 W=$3
rm -rf "$W" && mkdir -p "$W/xdg" && chmod 700 "$W/xdg"
export XDG_RUNTIME_DIR="$W/xdg" HOME="$W"
root=false; [ "$(id -u)" = 0 ] && root=true
P=(podman --root "$W/root" --runroot "$W/runroot" --cgroup-manager cgroupfs
   --events-backend file --runtime "$RCRUN")
RUN=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
$root || RUN+=(--network none)
who=$($root && echo root || echo "$(id -un)")
. "$(dirname "$0")/tap.sh"

expect "podman load" 0 "Loaded image" "${P[@]}" load -i "$TAR"
expect "run --rm echo" 0 hello-from-podman "${P[@]}" run --rm "${RUN[@]}" busybox echo hello-from-podman
expect "exit status passes through" 3 "" "${P[@]}" run --rm "${RUN[@]}" busybox sh -c 'exit 3'
expect "missing command is 127" 127 "not found" "${P[@]}" run --rm "${RUN[@]}" busybox nosuch-cmd
expect "-e, -w, -u 1000" 0 "1000 bar /tmp" "${P[@]}" run --rm "${RUN[@]}" -e FOO=bar -w /tmp -u 1000 busybox \
  sh -c 'echo "$(id -u) $FOO $(pwd)"'
$root || echo "skip - [$who] --memory and pause: rootless podman on cgroup v1 has no cgroup for any runtime"
if $root; then
  expect "--memory 32m and a hog: 137" 137 "" "${P[@]}" run --rm "${RUN[@]}" --memory 32m busybox \
    sh -c 'a=$(head -c 67108864 /dev/zero | tr "\0" x); echo survived'
fi
expect "run -d" 0 "" "${P[@]}" run -d --name w1 "${RUN[@]}" busybox sh -c 'echo started; exec sleep 300'
expect "exec sees PID 1" 0 "sleep 300" "${P[@]}" exec w1 sh -c 'tr "\0" " " < /proc/1/cmdline'
expect "exec status passes through" 4 "" "${P[@]}" exec w1 sh -c 'exit 4'
expect "top (rcrun ps)" 0 "sleep 300" "${P[@]}" top w1
expect "logs" 0 started "${P[@]}" logs w1
if $root; then
  expect "pause" 0 "" "${P[@]}" pause w1
  expect "paused in ps" 0 "Paused" "${P[@]}" ps -a --format '{{.Names}} {{.Status}}'
  expect "unpause" 0 "" "${P[@]}" unpause w1
fi
expect "stop" 0 "" "${P[@]}" stop -t 1 w1
expect "rm" 0 "" "${P[@]}" rm w1
out=$(printf 'echo tty-$((6*7)); tty; exit 5\n' | timeout 60 script -qc \
  "$(printf '%q ' "${P[@]}" run --rm -it "${RUN[@]}" busybox sh)" /dev/null 2>&1 | tr -d '\r')
if [[ "$out" == *tty-42* && "$out" == */dev/pts/* ]]; then ok "-it through conmon's console socket"
else bad "-it through conmon's console socket" "$out"; fi
# By name, as a user sets it up (README, "Use rcrun from podman and containerd"): podman passes
# --log-format=json only to the runtimes runtime_supports_json names, and then shows the JSON
# log's message instead of "OCI runtime error: <path>: <stderr>".
cat > "$W/containers.conf" <<CONF
[engine]
runtime = "rcrun"
runtime_supports_json = ["rcrun", "crun", "runc"]
[engine.runtimes]
rcrun = ["$RCRUN"]
CONF
BYNAME=(env CONTAINERS_CONF="$W/containers.conf" podman --root "$W/root" --runroot "$W/runroot"
   --cgroup-manager cgroupfs --events-backend file)
expect "by name through containers.conf" 0 "rcrun $RCRUN" "${BYNAME[@]}" info \
  --format '{{.Host.OCIRuntime.Name}} {{.Host.OCIRuntime.Path}}'
expect "run by name" 0 by-name "${BYNAME[@]}" run --rm "${RUN[@]}" busybox echo by-name
out=$(timeout 120 "${BYNAME[@]}" run --rm "${RUN[@]}" busybox nosuch-cmd 2>&1); st=$?
# (the message is podman's runtime name, then the runtime's own words, instead of "OCI runtime
# error: PATH: …" made of its stderr)
if [ "$st" = 127 ] && [[ "$out" == *"Error: rcrun: "* && "$out" != *"OCI runtime error"* ]]; then
  ok "the JSON log's error is podman's message"
else bad "the JSON log's error is podman's message" "status $st: $out"; fi
left=$("${P[@]}" ps -aq 2>&1)
[ -z "$left" ] && ok "--rm and rm leave no container" || bad "--rm and rm leave no container" "$left"
if $root; then
  cg=$(find /sys/fs/cgroup/*/libpod_parent -mindepth 1 -maxdepth 1 -type d -name 'libpod-*' 2>/dev/null)
  [ -z "$cg" ] && ok "no container cgroup left" || bad "no container cgroup left" "$cg"
fi
"${P[@]}" rm -af >/dev/null 2>&1
# Layers unpacked under subordinate ids are not ours to remove outside podman's namespace.
if $root; then rm -rf "$W"; else podman unshare rm -rf "$W/root" "$W/runroot" 2>/dev/null; rm -rf "$W" 2>/dev/null; fi
exit $failed
