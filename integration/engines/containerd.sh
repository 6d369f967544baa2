#!/usr/bin/env bash
# containerd driving rcrun (issue 24): a containerd of its own (root, state and socket under
# WORKDIR) whose runc shim runs RCRUN (`ctr run --runc-binary`, the path containerd's CRI plugin
# takes with BinaryName), stopped and removed at the end. One TAP-like line per scenario;
# non-zero exit if any failed. Root only (containerd runs as root).
#
#   integration/engines/containerd.sh RCRUN IMAGE.tar WORKDIR
set -u
RCRUN=$1 TAR=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
cat > "$W/config.toml" <<CONF
version = 2
root = "$W/root"
state = "$W/state"
[grpc]
  address = "$W/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  disable_apparmor = true
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  BinaryName = "$RCRUN"
CONF
containerd --config "$W/config.toml" > "$W/containerd.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do [ -S "$W/containerd.sock" ] && break; sleep 0.1; done
C=(ctr --address "$W/containerd.sock")
RB=(--runc-binary "$RCRUN")
IMG=docker.io/library/busybox:latest
who=containerd
. "$(dirname "$0")/tap.sh"

expect "ctr image import" 0 "unpacking" "${C[@]}" image import "$TAR"
# The oci-archive fixtures too, when ../shared is beside the checkout (what skopeo and buildah
# write): imported under a name of their own and run.
fixtures="$(dirname "$0")/../../../shared/fixtures"
for f in busybox.oci-archive.tar layered.oci-archive.tar; do
  if [ -f "$fixtures/$f" ]; then
    ref="localhost/fixture-${f%%.*}:oci"
    expect "ctr image import $f" 0 unpacking "${C[@]}" image import --index-name "$ref" "$fixtures/$f"
    expect "run the $f image" 0 from-fixture "${C[@]}" run --rm "${RB[@]}" "$ref" "fx-${f%%.*}" echo from-fixture
  else
    echo "skip - [containerd] $f: no $fixtures/$f"
  fi
done
expect "run --rm echo" 0 hello-from-containerd "${C[@]}" run --rm "${RB[@]}" "$IMG" t1 echo hello-from-containerd
expect "exit status passes through" 3 "" "${C[@]}" run --rm "${RB[@]}" "$IMG" t2 sh -c 'exit 3'
expect "run -d" 0 "" "${C[@]}" run -d "${RB[@]}" "$IMG" d1 sh -c 'echo started; exec sleep 300'
expect "task exec sees PID 1, status passes through" 4 "sleep 300" "${C[@]}" task exec --exec-id x1 d1 \
  sh -c 'tr "\0" " " < /proc/1/cmdline; exit 4'
expect "task ps" 0 "PID" "${C[@]}" task ps d1
expect "task pause" 0 "" "${C[@]}" task pause d1
expect "paused in task ls" 0 "PAUSED" "${C[@]}" task ls
expect "task resume" 0 "" "${C[@]}" task resume d1
expect "task kill" 0 "" "${C[@]}" task kill -s KILL d1
sleep 0.5
expect "task delete" 0 "" "${C[@]}" task delete d1
expect "container delete" 0 "" "${C[@]}" container delete d1
expect "--memory-limit 32m and a hog: 137" 137 "" "${C[@]}" run --rm "${RB[@]}" --memory-limit 33554432 "$IMG" m1 \
  sh -c 'a=$(head -c 67108864 /dev/zero | tr "\0" x); echo survived'
out=$(printf 'echo tty-$((6*7)); tty; exit 5\n' | timeout 60 script -qc \
  "$(printf '%q ' "${C[@]}" run --rm -t "${RB[@]}" "$IMG" tt1 sh)" /dev/null 2>&1 | tr -d '\r')
if [[ "$out" == *tty-42* && "$out" == */dev/pts/* ]]; then ok "run -t through the shim's console socket"
else bad "run -t through the shim's console socket" "$out"; fi
left=$("${C[@]}" containers ls -q 2>&1)
[ -z "$left" ] && ok "no container left" || bad "no container left" "$left"
cg=$(find /sys/fs/cgroup/*/default /sys/fs/cgroup/default -mindepth 1 -maxdepth 1 -type d 2>/dev/null)
[ -z "$cg" ] && ok "no container cgroup left" || bad "no container cgroup left" "$cg"
kill "$daemon"; wait "$daemon" 2>/dev/null
grep -q " $W/" /proc/self/mountinfo && bad "no mount left under $W" "$(grep " $W/" /proc/self/mountinfo)"
rm -rf "$W"
exit $failed
