#!/usr/bin/env bash
# The id holder (src/launch/holder.rs), as a plain user with subordinate ids: made by the first
# start, entered by the next, confined, checked before every use (a dead or forged record is
# replaced, never trusted), out of the caller's pipes, one for concurrent first starts, stopped
# by gc, gone when idle, and off with RCRUN_NO_HOLDER=1.
# Usage: holder.sh RCRUN BUSYBOX_IMAGE MODE. Prints TAP-like lines and a closing count line.
set -u
RCRUN=$1; BB=$2; MODE=$3
WORK=$(mktemp -d)
export RCRUN_ROOT=$WORK/store
trap '"$RCRUN" -q gc >/dev/null 2>&1; rm -rf "$WORK"' EXIT

. "$(dirname "$0")/tap.sh"

me=$(id -un)
SUBUID=$(awk -F: -v u="$me" '$1 == u {print $2; exit}' /etc/subuid)
if [ -z "$SUBUID" ] || [ "$(id -u)" = 0 ]; then
  skip "the id holder" "only a plain user with /etc/subuid ranges uses one ($me)"
  finish; exit
fi
REC=$RCRUN_ROOT/holder
holder_pid() { cut -d' ' -f1 "$REC" 2>/dev/null; }
idmap() { "$RCRUN" run --explain "$BB" true 2>&1 | grep -m1 '] idmap '; }
gone() { ! kill -0 "$1" 2>/dev/null; }

# Made by the first start, which returns at once in a command substitution (the holder keeps
# none of the caller's descriptors: $(…) would wait for it).
out=$(timeout 20 "$RCRUN" run --explain "$BB" echo hi 2>"$WORK/explain"); rc=$?
[ "$rc" = 0 ] && [ "$out" = hi ] && ok "the first start makes the holder and returns" \
  || bad "the first start makes the holder and returns" "status $rc, output [$out]: $(tail -3 "$WORK/explain")"
grep -q '] idmap .*made the id holder pid ' "$WORK/explain" && ok "… narrated (--explain)" \
  || bad "… narrated (--explain)" "$(grep '] idmap ' "$WORK/explain")"
pid=$(holder_pid)
[ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = rcrun-holder ] && ok "the holder runs, as rcrun-holder" \
  || bad "the holder runs, as rcrun-holder" "record [$(cat "$REC" 2>&1)]"

# Confined: no capabilities, no_new_privs, an empty environment, /dev/null as its only files,
# "/" as its directory, a session of its own.
expect "holder: no capabilities, no_new_privs" "0000000000000000 0000000000000000 1" \
  sh -c "awk '/^CapEff:/ {e=\$2} /^CapPrm:/ {p=\$2} /^NoNewPrivs:/ {n=\$2} END {print e, p, n}' /proc/$pid/status"
expect "holder: no blocked signals (SIGTERM ends it)" "0000000000000000" awk '/^SigBlk:/ {print $2}' /proc/"$pid"/status
expect "holder: empty environment" "0" sh -c "tr '\0' '\n' < /proc/$pid/environ | grep -c ."
expect "holder: only 0, 1, 2, all /dev/null" "0 /dev/null|1 /dev/null|2 /dev/null" \
  sh -c "for f in /proc/$pid/fd/*; do echo \"\${f##*/} \$(readlink \$f)\"; done | paste -sd'|'"
expect "holder: cwd /" "/" readlink /proc/"$pid"/cwd
expect "holder: own session" "$pid" sh -c "awk '{sub(/.*\\) /, \"\"); print \$4}' /proc/$pid/stat"

# Entered by the next start, which maps its child itself, onto the same host ids as newuidmap.
idmap | grep -q "entered the id holder pid $pid " && ok "the next start enters it" || bad "the next start enters it" "$(idmap)"
expect "container's uid_map, in the holder's ids" "0 0 1|1 1 65536" \
  sh -c "'$RCRUN' run '$BB' cat /proc/self/uid_map | awk '{print \$1, \$2, \$3}' | paste -sd'|'"
mkdir -p "$WORK/vol"
"$RCRUN" run -v "$WORK/vol:/vol" "$BB" sh -c 'touch /vol/f && chown 1234:1234 /vol/f' >/dev/null 2>&1
expect "container uid 1234 is host uid subuid+1233" "$((SUBUID + 1233))" stat -c %u "$WORK/vol/f"
expect "setgroups is allowed in the container (as with newgidmap)" "allow" "$RCRUN" run "$BB" cat /proc/self/setgroups

# Every container has a user namespace of its own, a child of the holder's, not the holder's.
a=$("$RCRUN" run "$BB" readlink /proc/self/ns/user); b=$("$RCRUN" run "$BB" readlink /proc/self/ns/user)
h=$(readlink /proc/"$pid"/ns/user)
[ -n "$a" ] && [ "$a" != "$b" ] && [ "$a" != "$h" ] && [ "$b" != "$h" ] && ok "each container its own user namespace, none the holder's" \
  || bad "each container its own user namespace" "a=$a b=$b holder=$h"

# A dead holder is replaced.
kill -9 "$pid"; until_true 5 gone "$pid"
line=$(idmap); new=$(holder_pid)
echo "$line" | grep -q "made the id holder pid $new " && [ "$new" != "$pid" ] && ok "a killed holder is replaced" \
  || bad "a killed holder is replaced" "$line"

# A forged record (a living process of the same user that is no holder) is refused and left alone.
sleep 300 & decoy=$!
until_true 5 sh -c "[ \"\$(cat /proc/$decoy/comm)\" = sleep ]"
echo "$decoy $(awk '{sub(/.*\) /, ""); print $20}' /proc/$decoy/stat)" > "$REC"
line=$(idmap); now=$(holder_pid)
echo "$line" | grep -q "made the id holder pid $now " && [ "$now" != "$decoy" ] && ok "a forged record is refused (a new holder made)" \
  || bad "a forged record is refused" "$line"
kill -0 "$decoy" 2>/dev/null && ok "… and its process left alone" || bad "… and its process left alone"
kill "$decoy"
# The holder the forged record displaced leaves at its next check (every 20 s).
until_true 30 gone "$new" && ok "a holder its record no longer names leaves" || bad "a holder its record no longer names leaves"

# A store named by a relative path: the holder (working directory "/") still finds its record.
mkdir -p "$WORK/rel"
( cd "$WORK" && "$RCRUN" --root rel/store run "$BB" true >/dev/null 2>&1 )
rel=$(cut -d' ' -f1 "$WORK/rel/store/holder" 2>/dev/null)
[ -n "$rel" ] && tr '\0' ' ' < /proc/"$rel"/cmdline | grep -q "__holder $WORK/rel/store/holder" \
  && ok "--root with a relative path: the holder is given the absolute record path" \
  || bad "--root with a relative path" "$(tr '\0' ' ' < /proc/"$rel"/cmdline 2>&1)"
( cd "$WORK" && "$RCRUN" -q --root rel/store gc >/dev/null 2>&1 )

# RCRUN_NO_HOLDER=1: the setuid helpers, as before.
RCRUN_NO_HOLDER=1 "$RCRUN" run --explain "$BB" true 2>&1 | grep -q '] idmap .*newuidmap .* & .*newgidmap ' \
  && ok "RCRUN_NO_HOLDER=1 maps with newuidmap/newgidmap" || bad "RCRUN_NO_HOLDER=1 maps with newuidmap/newgidmap"

# gc stops it.
pid=$(holder_pid)
"$RCRUN" -q gc >/dev/null
until_true 5 gone "$pid" && [ ! -e "$REC" ] && ok "gc stops the holder and removes its record" || bad "gc stops the holder" "$(cat "$REC" 2>&1)"

# Concurrent first starts make one holder.
for i in 1 2 3 4; do "$RCRUN" run "$BB" true >"$WORK/c$i" 2>&1 & done; wait
n=$(pgrep -u "$me" -f "[r]crun-holder __holder $REC\$" | wc -l)
[ "$n" = 1 ] && ok "four concurrent first starts make one holder" || bad "four concurrent first starts make one holder" "$n: $(cat "$WORK"/c*)"

# Idle: a record unused for longer than the holder's idle limit (10 minutes) makes it leave.
pid=$(holder_pid)
touch -d '11 minutes ago' "$REC"
until_true 30 gone "$pid" && [ ! -e "$REC" ] && ok "an idle holder leaves and removes its record" || bad "an idle holder leaves" "$(ls -l "$REC" 2>&1)"

finish
