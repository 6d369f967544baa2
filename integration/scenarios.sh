#!/usr/bin/env bash
# End-to-end scenarios for `rcrun run`, run as root, as a plain user, and as a plain user under
# `unshare -Ur`. Usage: scenarios.sh RCRUN IMAGES_DIR MODE   (MODE: root | rootless | unshare)
# IMAGES_DIR holds busybox.docker-save.tar, layered.oci-archive.tar and, when built,
# many-layers.tar (200 layers). Prints TAP-like lines and a closing "N passed, M failed" line.
set -u
RCRUN=$1; IMG=$2; MODE=$3
BB=$IMG/busybox.docker-save.tar
LAYERED=$IMG/layered.oci-archive.tar
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
export RCRUN_ROOT=$WORK/store

. "$(dirname "$0")/tap.sh"

mounts_before=$(wc -l < /proc/self/mountinfo)

expect "echo output" "hi" "$RCRUN" run "$BB" echo hi
status "exit status passes through" 7 "$RCRUN" run "$BB" sh -c 'exit 7'
status "command not found is 127" 127 "$RCRUN" run "$BB" /no/such/program
status "non-executable command is 126" 126 "$RCRUN" run "$BB" /etc/passwd
expect "PID 1" "1" "$RCRUN" run "$BB" sh -c 'echo $$'
expect "hostname" "box1" "$RCRUN" run --hostname box1 "$BB" hostname
expect "only lo with --network none" "lo" "$RCRUN" run "$BB" ls /sys/class/net
# IFF_UP|IFF_LOOPBACK: the namespace (made by rcrun as root, by the child in a user namespace) has
# lo up, and /sys was mounted inside it.
expect "lo is up" "0x9" "$RCRUN" run "$BB" cat /sys/class/net/lo/flags
expect "env -e and config env" "bar:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "$RCRUN" run -e FOO=bar "$BB" sh -c 'echo $FOO:$PATH'
printf 'A=1\n# comment\nB=two\n' > "$WORK/envfile"
expect "env-file" "1 two" "$RCRUN" run --env-file "$WORK/envfile" "$BB" sh -c 'echo $A $B'
expect "workdir created" "/work/dir" "$RCRUN" run -w /work/dir "$BB" pwd
expect "entrypoint override" "x y" "$RCRUN" run --entrypoint /bin/echo "$BB" x y
expect "HOME from passwd" "/root" "$RCRUN" run "$BB" sh -c 'echo $HOME'
expect "--rm is accepted" "hi" "$RCRUN" run --rm "$BB" echo hi
expect "--ulimit nofile=100:200" "100 200" "$RCRUN" run --ulimit nofile=100:200 "$BB" sh -c 'echo $(ulimit -n) $(ulimit -Hn)'
if command -v script >/dev/null; then
  printf '#!/bin/sh\nexec "%s" run -t "%s" sh -c %s\n' "$RCRUN" "$BB" "'echo \$TERM'" > "$WORK/tty.sh"; chmod +x "$WORK/tty.sh"
  expect "-t sets TERM=xterm" "xterm" sh -c "script -qc '$WORK/tty.sh' /dev/null </dev/null | tr -d '\r\000'"
fi

# Under unshare -Ur only container root exists, so the layered image's User 1000:1000 cannot be
# mapped: those runs ask for root explicitly (the refusal itself is checked below).
SINGLE=0; case "$MODE" in unshare|rootless-single-map) SINGLE=1;; esac
AS=(); [ $SINGLE = 1 ] && AS=(-u 0)
# The layered fixture: Entrypoint ["/bin/sh","-c"], User 1000:1000, whiteouts and an opaque dir.
expect "config Entrypoint+Cmd, Env, WorkingDir" "hello from multi" sh -c "'$RCRUN' run ${AS[*]} '$LAYERED' | head -1"
expect "whiteout deleted /bin/vi" "gone" "$RCRUN" run "${AS[@]}" --entrypoint /bin/sh "$LAYERED" -c 'test -e /bin/vi || echo gone'
expect "whiteout deleted delete-me.txt" "gone" "$RCRUN" run "${AS[@]}" --entrypoint /bin/sh "$LAYERED" -c 'test -e /opt/app/delete-me.txt || echo gone'
expect "opaque dir shows only new content" "new.txt" "$RCRUN" run "${AS[@]}" --entrypoint /bin/ls "$LAYERED" /opt/replace
expect "hardlink kept" "2" "$RCRUN" run "${AS[@]}" --entrypoint /bin/stat "$LAYERED" -c %h /opt/app/hello.txt
if [ $SINGLE = 1 ]; then
  skip "config User 1000:1000" "with a single-id map (unshare -Ur, or no subordinate ids) only container root exists"
  status "user outside the map is refused with 125" 125 "$RCRUN" run "$LAYERED"
else
  expect "config User 1000:1000" "1000:1000" "$RCRUN" run --entrypoint /bin/sh "$LAYERED" -c 'echo $(id -u):$(id -g)'
  expect "-u name with supplementary groups" "0" "$RCRUN" run -u root "$BB" id -u
  expect "image owners kept (1000:1000 dir)" "1000 1000" "$RCRUN" run --entrypoint /bin/stat "$LAYERED" -c '%u %g' /opt/app/data
fi

"$RCRUN" run "$BB" sh -c 'echo x > /marker' >/dev/null 2>&1
status "writes do not survive to the next run" 1 "$RCRUN" run "$BB" test -e /marker
status "--read-only root" 1 "$RCRUN" run --read-only "$BB" sh -c 'touch /x 2>/dev/null'
expect "--tmpfs writable with --read-only" "ok" "$RCRUN" run --read-only --tmpfs /tmp "$BB" sh -c 'touch /tmp/x && echo ok'
mkdir -p "$WORK/vol"; echo from-host > "$WORK/vol/file"; chmod -R a+rwX "$WORK/vol"
expect "volume" "from-host" "$RCRUN" run -v "$WORK/vol:/data" "$BB" cat /data/file
status "read-only volume" 1 "$RCRUN" run -v "$WORK/vol:/data:ro" "$BB" sh -c 'echo x > /data/new 2>/dev/null'
status "/proc/sysrq-trigger is read-only" 1 "$RCRUN" run "$BB" sh -c 'echo h > /proc/sysrq-trigger 2>/dev/null'
# /proc/kcore only exists with CONFIG_PROC_KCORE; check every masked file the kernel has.
expect "masked /proc files read empty" "0" "$RCRUN" run "$BB" sh -c 'for f in /proc/kcore /proc/keys /proc/timer_list; do [ -e $f ] && wc -c < $f; done | sort -u'

# SIGTERM to rcrun ends a `sleep` container with 143.
"$RCRUN" run "$BB" sleep 30 & pid=$!
sleep 1; kill -TERM $pid; wait $pid; rc=$?
[ $rc == 143 ] && ok "SIGTERM ends sleep with 143" || bad "SIGTERM ends sleep with 143" "got $rc"

# --init: a minimal init is PID 1, reaps orphans and forwards signals to the command.
expect "--init runs the command as PID 2 under init" "2" "$RCRUN" run --init "$BB" sh -c 'echo $$'
expect "--init reaps orphaned zombies" "0" "$RCRUN" run --init "$BB" sh -c '(sleep 0.2 &); sleep 1; ps -o stat | grep -c "^Z"'
status "--init passes the exit status" 9 "$RCRUN" run --init "$BB" sh -c 'exit 9'
"$RCRUN" run --init "$BB" sh -c 'trap "exit 3" TERM; sleep 30 & wait' & pid=$!
sleep 1; kill -TERM $pid; wait $pid; rc=$?
[ $rc == 3 ] && ok "--init forwards SIGTERM to the command" || bad "--init forwards SIGTERM to the command" "got $rc"

if command -v script >/dev/null; then
  got=$(script -qec "'$RCRUN' run -t '$BB' tty" /dev/null </dev/null | tr -d '\r')
  [[ "$got" == /dev/pts/* ]] && ok "-t under script gives a tty" || bad "-t under script gives a tty" "got [$got]"
else
  skip "-t under script" "script(1) not installed"
fi

if [ -f "$IMG/many-layers.tar" ]; then
  # 200 layers in all: busybox plus 199 layers each adding /layers/<i>.
  expect "200-layer image sees all its files" "199" "$RCRUN" run "$IMG/many-layers.tar" sh -c 'ls /layers | wc -l'
else
  skip "200-layer image" "many-layers.tar not built (rcrun-mkimage missing)"
fi

# Confinement (issue: capabilities, no_new_privs, seccomp): the static probe reports its status.
if [ -x "$IMG/probe/probe" ]; then
  P=(-v "$IMG/probe:/p:ro")
  "$RCRUN" run "${P[@]}" "$BB" /p/probe > "$WORK/probe.out" 2>&1
  grep -q $'^CapBnd:\t00000000a80425fb' "$WORK/probe.out" && ok "default bounding set is Docker's 14" || bad "default bounding set" "$(grep Cap "$WORK/probe.out")"
  grep -q $'^CapInh:\t0000000000000000' "$WORK/probe.out" && grep -q $'^CapAmb:\t0000000000000000' "$WORK/probe.out" && ok "inheritable and ambient empty" || bad "inheritable and ambient empty"
  grep -q $'^NoNewPrivs:\t1' "$WORK/probe.out" && ok "no_new_privs on" || bad "no_new_privs on"
  grep -q $'^Seccomp:\t2' "$WORK/probe.out" && ok "seccomp filter active" || bad "seccomp filter active"
  for c in 'unshare(CLONE_NEWUSER)' 'clone(CLONE_NEWUSER)' mount setns keyctl add_key bpf perf_event_open reboot init_module kexec_load open_by_handle_at swapon; do
    grep -qF "syscall $c errno=EPERM" "$WORK/probe.out" && ok "$c denied with EPERM" || bad "$c denied with EPERM" "$(grep -F "syscall $c" "$WORK/probe.out")"
  done
  grep -qF "syscall clone3 errno=ENOSYS" "$WORK/probe.out" && ok "clone3 answered ENOSYS" || bad "clone3 answered ENOSYS"
  expect "--cap-drop ALL empties the bounding set" $'CapBnd:\t0000000000000000' sh -c "'$RCRUN' run --cap-drop ALL -v '$IMG/probe:/p:ro' '$BB' /p/probe | grep CapBnd"
  expect "seccomp=unconfined" $'Seccomp:\t0' sh -c "'$RCRUN' run --security-opt seccomp=unconfined -v '$IMG/probe:/p:ro' '$BB' /p/probe | grep Seccomp:"
  expect "Docker's own profile" "syscall clone3 errno=ENOSYS" sh -c "'$RCRUN' run --security-opt seccomp='$IMG/docker-default-seccomp.json' -v '$IMG/probe:/p:ro' '$BB' /p/probe | grep clone3"
  if [ $SINGLE = 1 ]; then
    skip "non-root user has empty effective set" "only container root exists with a single-id map"
  else
    expect "non-root user has empty effective set" $'CapEff:\t0000000000000000' sh -c "'$RCRUN' run -u 1000 -v '$IMG/probe:/p:ro' '$BB' /p/probe | grep CapEff"
  fi
else
  skip "confinement probe" "probe not built (gcc -static missing)"
fi

# --userns as root: container root is an unprivileged host id; image owners are kept.
if [ "$MODE" = root ]; then
  expect "--userns maps container root away from host root" "0 nonzero" sh -c "'$RCRUN' run --userns '$BB' cat /proc/self/uid_map | awk '{print \$1, (\$2 > 0 ? \"nonzero\" : \"zero\")}'"
  expect "--userns keeps image owners" "1000 1000" "$RCRUN" run --userns --entrypoint /bin/stat "$LAYERED" -c '%u %g' /opt/app/data
  expect "--userns container root can write its root" "ok" "$RCRUN" run --userns "$BB" sh -c 'touch /x && echo ok'
fi

# Resource limits.
if [ "$MODE" = root ]; then
  status "memory hog under --memory 64m exits 137" 137 "$RCRUN" run --memory 64m "$BB" sh -c 'head -c 300m /dev/zero | tail > /dev/null'
  grep -q "exceeded its memory limit" "$WORK/err" && ok "OOM kill message" || bad "OOM kill message" "$(cat "$WORK/err")"
  expect "fork bomb held under --pids-limit 50" "held" "$RCRUN" run --pids-limit 50 "$BB" sh -c '(for i in $(seq 80); do sleep 5 & done) 2>/dev/null; set -- /proc/[0-9]*; [ $# -le 50 ] && [ $# -ge 40 ] && echo held || echo "$# procs"'
  # --cpus 0.2: a busy loop for 2 s gets about a fifth of a core (the CFS quota caps it).
  "$RCRUN" run --init --stats --cpus 0.2 "$BB" timeout 2 sh -c 'while :; do :; done' >/dev/null 2>"$WORK/err"
  cpu=$(sed -n 's/.*cpu time \([0-9.]*\)s.*/\1/p' "$WORK/err")
  awk -v c="$cpu" 'BEGIN { exit !(c > 0.05 && c < 0.6) }' && ok "--cpus 0.2 holds a busy loop to ~20% (cpu ${cpu}s in 2s)" || bad "--cpus 0.2" "cpu time [$cpu] in 2 s: $(cat "$WORK/err")"
  grep -q "peak memory" "$WORK/err" && ok "--stats reports peak memory, cpu time, pids" || bad "--stats" "$(cat "$WORK/err")"
  # Read after the exit, pids.current is 0; the peak counts sh and its two sleeps.
  "$RCRUN" run --stats "$BB" sh -c 'sleep 0.3 & sleep 0.3 & wait' >/dev/null 2>"$WORK/err"
  peak=$(sed -n 's/.*pids \([0-9]*\) at most.*/\1/p' "$WORK/err")
  [ "${peak:-0}" -ge 3 ] && ok "--stats reports the pids peak ($peak)" || bad "--stats pids peak" "$(cat "$WORK/err")"
  # The cgroup namespace is unshared after the container joined its cgroup, so that cgroup is
  # its "/" (joined first and unshared at clone, it would read /../../rcrun/ID).
  expect "cgroup namespace rooted at the container's cgroup" "/ /" sh -c "'$RCRUN' run --memory 64m '$BB' cat /proc/self/cgroup | sed -n 's/^[0-9]*:\\(memory\\|pids\\):\\(.*\\)/\\2/p' | xargs"
  # Programs size themselves from /sys/fs/cgroup: it shows the container's own limit (v1 or v2),
  # read-only, and no hierarchy it did not join (there its namespace is rooted at the host's).
  expect "/sys/fs/cgroup shows the --memory limit" "67108864" "$RCRUN" run --memory 64m "$BB" sh -c 'cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max'
  expect "/sys/fs/cgroup is read-only" "ro" "$RCRUN" run --pids-limit 10 "$BB" sh -c 'touch /sys/fs/cgroup/pids/x /sys/fs/cgroup/x 2>/dev/null || echo ro'
  if [ -d /sys/fs/cgroup/blkio ]; then
    expect "/sys/fs/cgroup has no hierarchy the container did not join" "absent" "$RCRUN" run --pids-limit 10 "$BB" sh -c 'test -e /sys/fs/cgroup/blkio || echo absent'
  fi
  expect "without limits /sys/fs/cgroup stays sysfs's empty directory (no mounts on the start path)" "" "$RCRUN" run "$BB" ls /sys/fs/cgroup
  left=$(find /sys/fs/cgroup/*/rcrun -mindepth 1 -type d 2>/dev/null | wc -l)
  [ "$left" == 0 ] && ok "no cgroup left" || bad "no cgroup left" "$left dirs"
else
  status "limit without delegation is refused with 125" 125 "$RCRUN" run --memory 64m "$BB" true
  grep -q "cgroup" "$WORK/err" && ok "limit refusal names the cgroup problem" || bad "limit refusal names the cgroup problem" "$(cat "$WORK/err")"
  status "no limits runs without a cgroup" 0 "$RCRUN" run "$BB" true
fi

mounts_after=$(wc -l < /proc/self/mountinfo)
[ "$mounts_before" == "$mounts_after" ] && ok "no mount left behind" || bad "no mount left behind" "$mounts_before → $mounts_after"
left=$(find "$RCRUN_ROOT/run" "$RCRUN_ROOT/tmp" -mindepth 1 2>/dev/null | wc -l)
[ "$left" == 0 ] && ok "no state left in the store's run/ and tmp/" || bad "no state left" "$left entries"

finish
