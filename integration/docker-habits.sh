#!/usr/bin/env bash
# A docker user's routine with rcrun: run -d --name, ps, exec, logs, stop, wait, rm, kill, --rm,
# names and ID prefixes, a killed monitor and `gc`, and nothing left behind. One shell per mode,
# so a container started here is still reachable by the next command (under `unshare -Ur` each
# new unshare would be a sibling user namespace that cannot enter it).
# Usage: docker-habits.sh RCRUN BUSYBOX.tar MODE   (MODE: root | rootless | unshare)
# Prints TAP-like lines and a closing "N passed, M failed" line.
set -u
RCRUN=$1; BB=$2; MODE=$3
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
export RCRUN_ROOT=$WORK/root

. "$(dirname "$0")/tap.sh"
row() { "$RCRUN" ps -a | awk -v n="$1" '$2 == n'; }

# ── the routine ──
id=$("$RCRUN" run -d --name web "$BB" sh -c 'echo started; trap "echo got TERM; exit 3" TERM; while :; do sleep 0.05; done' 2>"$WORK/err")
[[ "$id" =~ ^[0-9a-f]{12}$ ]] && ok "run -d --name prints the ID ($id)" || bad "run -d --name prints the ID" "got [$id]: $(cat "$WORK/err")"
row web | grep -q " Up " && ok "ps lists it, Up" || bad "ps lists it, Up" "$("$RCRUN" ps -a 2>&1)"
expect "ps -q prints the ID" "$id" "$RCRUN" -q ps
expect "exec by name sees the container's PID 1" "sh" "$RCRUN" exec web cat /proc/1/comm
expect "exec by name" "hi" "$RCRUN" exec web echo hi
expect "exec by an ID prefix" "${id:0:12}" "$RCRUN" exec "${id:0:5}" cat /etc/hostname
expect "exec -e -w" "v /tmp" "$RCRUN" exec -e K=v -w /tmp web sh -c 'echo $K $(pwd)'
status "exec status passes through" 7 "$RCRUN" exec web sh -c 'exit 7'
until_true 5 sh -c "'$RCRUN' logs web | grep -q started"
expect "logs shows the output" "started" "$RCRUN" logs web
expect "stop prints the name" "web" "$RCRUN" stop -t 5 web
expect "wait prints the exit status (the TERM trap's 3)" "3" "$RCRUN" wait web
expect "logs after the exit" "started got TERM" sh -c "'$RCRUN' logs web | xargs"
row web | grep -q "Exited (3)" && ok "ps -a: Exited (3)" || bad "ps -a: Exited (3)" "$("$RCRUN" ps -a 2>&1)"
[ -z "$("$RCRUN" -q ps)" ] && ok "ps without -a hides it" || bad "ps without -a hides it"
expect "rm prints the name" "web" "$RCRUN" rm web
[ -z "$("$RCRUN" -q ps -a)" ] && ok "rm removed it" || bad "rm removed it" "$("$RCRUN" ps -a)"
status "the name is free again" 0 "$RCRUN" run -d --name web "$BB" sleep 60
status "rm of a running container is refused" 1 "$RCRUN" rm web
grep -q "stop it first" "$WORK/err" && ok "… saying how" || bad "… saying how" "$(cat "$WORK/err")"
status "a second container of that name is refused" 125 "$RCRUN" run -d --name web "$BB" true
grep -q 'the name "web" is already used' "$WORK/err" && ok "… naming the holder" || bad "… naming the holder" "$(cat "$WORK/err")"
status "kill (docker's default: SIGKILL)" 0 "$RCRUN" kill web
expect "… wait says 137" "137" "$RCRUN" wait web
status "rm -f of a running one" 0 sh -c "'$RCRUN' run -d --name web2 '$BB' sleep 60 >/dev/null && '$RCRUN' rm -f web2 web"
# PID 1 of a pid namespace gets only the signals it handles (pid_namespaces(7)): a trap.
"$RCRUN" run -d --name h "$BB" sh -c 'trap "exit 5" HUP; while :; do sleep 0.05; done' >/dev/null
sleep 0.2
expect "kill -s HUP reaches its trap" "5" sh -c "'$RCRUN' kill -s HUP h && timeout 10 '$RCRUN' wait h"
"$RCRUN" rm -f h >/dev/null

# ── exec -u NAME reads the container's own /etc, never the host's ──
printf 'evil:x:4242:4242::/:/bin/sh\n' > "$WORK/host-passwd"; chmod 644 "$WORK/host-passwd"
"$RCRUN" run -d --name u "$BB" sleep 60 >/dev/null
if [ "$MODE" = unshare ]; then WHO=root; WANT="0 0"; else WHO=nobody; WANT="65534 65534"; fi
expect "exec -u NAME from the container's /etc/passwd" "$WANT" "$RCRUN" exec -u $WHO u sh -c 'echo $(id -u) $(id -g)'
"$RCRUN" exec u sh -c "rm /etc/passwd; ln -s '$WORK/host-passwd' /etc/passwd"
status "exec -u: a symlink to a host file resolves inside the container" 1 "$RCRUN" exec -u evil u id
"$RCRUN" exec u sh -c 'rm /etc/passwd; mkfifo /etc/passwd'
status "exec -u: a FIFO as /etc/passwd is refused, not waited on" 1 timeout 10 "$RCRUN" exec -u root u id
grep -q "not a regular file" "$WORK/err" && ok "… saying so" || bad "… saying so" "$(cat "$WORK/err")"
"$RCRUN" rm -f u >/dev/null

# ── logs -f follows until the exit ──
"$RCRUN" run -d --name f "$BB" sh -c 'for i in 1 2 3; do echo $i; sleep 0.2; done' >/dev/null
expect "logs -f follows to the end" "1 2 3" sh -c "timeout 10 '$RCRUN' logs -f f | xargs"
"$RCRUN" rm f >/dev/null

# ── a foreground run with --name is reachable from another terminal while it runs ──
"$RCRUN" run --name fg "$BB" sh -c 'sleep 1.5; echo done' > "$WORK/fg" 2>&1 & fg_pid=$!
until_true 5 sh -c "'$RCRUN' -q ps | grep -q ."
expect "a foreground --name run: exec finds it" "hi" "$RCRUN" exec fg echo hi
row fg | grep -q " Up " && ok "… ps lists it" || bad "… ps lists it" "$("$RCRUN" ps -a)"
wait "$fg_pid"; fg_rc=$?
[ "$fg_rc" == 0 ] && [ "$(cat "$WORK/fg")" == done ] && ok "… its output stays on the terminal" || bad "… its output" "rc $fg_rc: $(cat "$WORK/fg")"
[ -z "$("$RCRUN" -q ps -a)" ] && [ ! -e "$RCRUN_ROOT/.names/fg" ] && ok "… removed with its name when it exits" || bad "… removed when it exits" "$("$RCRUN" ps -a)"

# ── --rm removes it when it exits ──
rid=$("$RCRUN" run -d --rm "$BB" true)
until_true 5 sh -c "[ ! -e '$RCRUN_ROOT/$rid' ]" && ok "run -d --rm: removed when it exits" || bad "run -d --rm" "$(ls "$RCRUN_ROOT")"

# ── failures leave nothing ──
status "run -d of a missing command: 127" 127 "$RCRUN" run -d --name nope "$BB" /no/such
[ -z "$("$RCRUN" -q ps -a)" ] && [ ! -e "$RCRUN_ROOT/.names/nope" ] && ok "… and leaves no container or name" || bad "… leaves nothing" "$("$RCRUN" ps -a; ls -a "$RCRUN_ROOT/.names")"
status "-d with -t is refused" 125 "$RCRUN" run -d -t "$BB" sh
grep -q "no \`attach\`" "$WORK/err" && ok "… saying why" || bad "… saying why" "$(cat "$WORK/err")"
status "an unknown container" 1 "$RCRUN" stop nosuch
grep -q "no such container: nosuch" "$WORK/err" && ok "… named" || bad "… named" "$(cat "$WORK/err")"

# ── it survives the shell that started it (a hangup to that shell's process group) ──
setsid sh -c "'$RCRUN' run -d --name surv '$BB' sleep 60 > '$WORK/surv'; sleep 30" & sh_pid=$!
until_true 10 test -s "$WORK/surv"
kill -HUP -- -"$sh_pid" 2>/dev/null; kill -KILL -- -"$sh_pid" 2>/dev/null; wait "$sh_pid" 2>/dev/null
sleep 0.3
row surv | grep -q " Up " && ok "a detached container survives its shell's hangup" || bad "survives its shell" "$("$RCRUN" ps -a)"

# ── a killed monitor: gc cleans up ──
state=$RCRUN_ROOT/$(cat "$WORK/surv")/state.json
mon=$(sed -n 's/.*"run.rcrun.monitor": "\([0-9]*\):.*/\1/p' "$state")
cpid=$(sed -n 's/^  "pid": \([0-9]*\),/\1/p' "$state")
kill -KILL "$mon"
until_true 5 sh -c "! kill -0 $cpid 2>/dev/null" && ok "the container dies with its monitor" || bad "the container dies with its monitor"
row surv | grep -q "Exited (unknown)" && ok "ps: Exited (unknown)" || bad "ps: Exited (unknown)" "$("$RCRUN" ps -a)"
"$RCRUN" gc >"$WORK/out" 2>&1
grep -q "removed $RCRUN_ROOT/" "$WORK/out" && ok "gc removes what the killed one left" || bad "gc" "$(cat "$WORK/out")"

# ── nothing left behind ──
[ -z "$("$RCRUN" -q ps -a)" ] && ok "no container left" || bad "no container left" "$("$RCRUN" ps -a)"
left=$(ls -A "$RCRUN_ROOT/.names" 2>/dev/null)
[ -z "$left" ] && ok "no name left" || bad "no name left" "$left"
# Monitors are rcrun processes with this store in their environment.
ours=0
for p in $(pgrep -x rcrun); do
  { tr '\0' '\n' < /proc/$p/environ; } 2>/dev/null | grep -qx "RCRUN_ROOT=$RCRUN_ROOT" && ours=$((ours+1))
done
[ "$ours" == 0 ] && ok "no rcrun process left" || bad "no rcrun process left" "$ours"
if [ "$MODE" = root ]; then
  n=$(find /sys/fs/cgroup/*/rcrun -mindepth 1 -maxdepth 1 -type d -newer "$WORK" 2>/dev/null | wc -l)
  [ "$n" == 0 ] && ok "no cgroup left" || bad "no cgroup left" "$n"
fi

finish
