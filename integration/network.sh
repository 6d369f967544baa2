#!/usr/bin/env bash
# --network slirp4netns, -p, --dns and --add-host, end to end. Nothing outside this machine is
# reachable here, so every peer is on the host's loopback: busybox nc and httpd of the host.
# Usage: network.sh RCRUN BUSYBOX.tar MODE   (MODE: root | rootless | unshare)
# Prints TAP-like lines and a closing "N passed, M failed" line.
set -u
RCRUN=$1; BB=$2; MODE=$3
pass=0; fail=0; skip=0
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
export RCRUN_ROOT=$WORK/root
HOSTBB=$(command -v busybox)

ok()   { pass=$((pass+1)); echo "ok - [$MODE] $1"; }
bad()  { fail=$((fail+1)); echo "not ok - [$MODE] $1"; [ -n "${2:-}" ] && echo "    # $2"; }
skip() { skip=$((skip+1)); echo "ok - [$MODE] $1 # SKIP $2"; }
expect() { local name=$1 want=$2; shift 2; local got; got=$("$@" 2>"$WORK/err"); got=${got%$'\n'}
  if [ "$got" == "$want" ]; then ok "$name"; else bad "$name" "want [$want] got [$got] stderr: $(head -c 600 "$WORK/err")"; fi; }
status() { local name=$1 want=$2; shift 2; "$@" >"$WORK/out" 2>"$WORK/err"; local rc=$?
  if [ "$rc" == "$want" ]; then ok "$name"; else bad "$name" "want status $want got $rc: $(head -c 600 "$WORK/err")"; fi; }
until_true() { local n=$(( $1 * 20 )); shift; while [ $n -gt 0 ]; do "$@" && return 0; sleep 0.05; n=$((n-1)); done; return 1; }
# Ports of our own: a base from our pid, so parallel runs of the modes do not collide.
BASE=$(( 20000 + ($$ % 2000) * 10 ))
# slirp4netns's API socket lies in the store's tmp/net-<rcrun pid>-<container pid>/.
helpers() { pgrep -f "[s]lirp4netns.*$RCRUN_ROOT/tmp/net-${1:-}" | wc -l; }

if [ -z "$HOSTBB" ]; then echo "# SKIP: no busybox on the host to serve and fetch (apt-get install busybox-static)"; echo "0 passed, 0 failed"; exit 0; fi
if ! command -v slirp4netns >/dev/null; then echo "ok - [$MODE] --network slirp4netns # SKIP slirp4netns is not installed (apt-get install slirp4netns)"; echo "0 passed, 0 failed, 1 skipped"; exit 0; fi
# Whether this user can open /dev/net/tun: slirp4netns makes the container's tap0 with it.
if ! "$RCRUN" run --network slirp4netns "$BB" true 2>"$WORK/probe"; then
  if grep -q "tun" "$WORK/probe"; then
    skip "--network slirp4netns" "this user cannot open /dev/net/tun (mode $(stat -c %a /dev/net/tun 2>/dev/null); distributions make it 0666): $(head -c 200 "$WORK/probe")"
    echo "$pass passed, $fail failed, $skip skipped"; exit 0
  fi
fi

# ── outbound: a server on the host's loopback, through the helper's gateway ──
echo "hello from the host" > "$WORK/www-index"
mkdir -p "$WORK/www" && mv "$WORK/www-index" "$WORK/www/index.html"
"$HOSTBB" httpd -f -p 127.0.0.1:$((BASE+1)) -h "$WORK/www" & httpd=$!
until_true 5 sh -c "'$HOSTBB' wget -q -O /dev/null http://127.0.0.1:$((BASE+1))/"
expect "the host's loopback server, reached as 10.0.2.2 (allow_host_loopback=true)" "hello from the host" \
  "$RCRUN" run --network slirp4netns:allow_host_loopback=true "$BB" wget -q -O - http://10.0.2.2:$((BASE+1))/
got=$("$RCRUN" run --network slirp4netns "$BB" wget -q -T 3 -O - http://10.0.2.2:$((BASE+1))/ 2>/dev/null)
[ -z "$got" ] && ok "… not reached by default (podman's default too)" || bad "… not reached by default" "got [$got]"
expect "the container's address and route" "10.0.2.100 10.0.2.2" "$RCRUN" run --network slirp4netns "$BB" sh -c \
  'echo $(ip -4 -o addr show tap0 | sed "s/.*inet \([0-9.]*\).*/\1/") $(ip route | sed -n "s/^default via \([0-9.]*\).*/\1/p")'

# ── DNS and hosts files ──
expect "resolv.conf names slirp4netns's forwarder" "nameserver 10.0.2.3" sh -c "'$RCRUN' run --network slirp4netns '$BB' cat /etc/resolv.conf | grep nameserver"
expect "--dns replaces it" "nameserver 192.0.2.53" sh -c "'$RCRUN' run --network slirp4netns --dns 192.0.2.53 '$BB' cat /etc/resolv.conf | grep nameserver"
expect "--add-host resolves" "10.1.2.3" sh -c "'$RCRUN' run --add-host db.local:10.1.2.3 '$BB' sh -c 'ping -c1 -W1 db.local 2>&1 | sed -n \"s/.*(\([0-9.]*\)).*/\1/p\" | head -1'"

# ── -p: a busybox httpd in the container, fetched from the host ──
id=$("$RCRUN" run -d --network slirp4netns -p 127.0.0.1:$((BASE+2)):80 "$BB" sh -c 'mkdir /www && echo served by the container > /www/index.html && exec httpd -f -p 80 -h /www' 2>"$WORK/err")
if until_true 10 sh -c "'$HOSTBB' wget -q -O - http://127.0.0.1:$((BASE+2))/ > '$WORK/got' 2>/dev/null"; then
  expect "-p HOST:80 reaches the container's httpd" "served by the container" cat "$WORK/got"
else
  bad "-p HOST:80 reaches the container's httpd" "$(cat "$WORK/err"; "$RCRUN" logs "$id" 2>&1)"
fi
# A second container publishing another port at the same time.
id2=$("$RCRUN" run -d --network slirp4netns -p 127.0.0.1:$((BASE+3)):8000 "$BB" sh -c 'mkdir /www && echo second > /www/index.html && exec httpd -f -p 8000 -h /www')
until_true 10 sh -c "'$HOSTBB' wget -q -O - http://127.0.0.1:$((BASE+3))/ > '$WORK/got2' 2>/dev/null"
expect "two containers publish different ports at once" "served by the container second" sh -c "('$HOSTBB' wget -q -O - http://127.0.0.1:$((BASE+2))/; cat '$WORK/got2') | xargs"
# The port is taken now: a third asking for it is refused, naming the flag value.
status "a taken port is refused" 125 "$RCRUN" run --network slirp4netns -p 127.0.0.1:$((BASE+2)):80 "$BB" true
grep -q -- "-p 127.0.0.1:$((BASE+2)):80: the host's TCP port" "$WORK/err" && ok "… naming the -p value" || bad "… naming the -p value" "$(cat "$WORK/err")"
"$RCRUN" rm -f "$id" "$id2" >/dev/null

# ── UDP: the image's busybox has no UDP receiver, so a static one of ours is bound in ──
mkdir -p "$WORK/udp"
if gcc -static -O2 -o "$WORK/udp/udp-recv" "$(dirname "$0")/udp-recv.c" 2>"$WORK/err"; then
  id=$("$RCRUN" run -d --network slirp4netns -v "$WORK/udp:/u:ro" -p 127.0.0.1:$((BASE+4)):5353/udp "$BB" /u/udp-recv 5353)
  sleep 0.5
  for i in 1 2 3; do echo datagram > /dev/udp/127.0.0.1/$((BASE+4)); sleep 0.2; done
  expect "-p …/udp delivers a datagram" "0 datagram" sh -c "(timeout 10 '$RCRUN' wait '$id'; '$RCRUN' logs '$id') | xargs"
  "$RCRUN" rm -f "$id" >/dev/null
else
  skip "-p …/udp" "gcc -static could not build integration/udp-recv.c: $(head -c 200 "$WORK/err")"
fi

# ── the helper goes with the container, however it ends ──
[ "$(helpers)" == 0 ] && ok "no helper after normal exits" || bad "no helper after normal exits" "$(helpers) left"
# SIGINT reaches the container (forwarded); its trap ends it, and rcrun with it.
"$RCRUN" run --network slirp4netns "$BB" sh -c 'trap "exit 130" INT; sleep 30 & wait' & pid=$!
until_true 10 sh -c "pgrep -f '[s]lirp4netns.*net-$pid-' >/dev/null"
kill -INT $pid; wait $pid 2>/dev/null
until_true 5 sh -c "! pgrep -f '[s]lirp4netns.*$RCRUN_ROOT/tmp/net-$pid-' >/dev/null" && ok "no helper after Ctrl-C (SIGINT to rcrun)" || bad "helper after SIGINT"
"$RCRUN" run --network slirp4netns "$BB" sleep 30 & pid=$!
until_true 10 sh -c "pgrep -f '[s]lirp4netns.*net-$pid-' >/dev/null"
kill -KILL $pid; wait $pid 2>/dev/null
until_true 5 sh -c "! pgrep -f '[s]lirp4netns.*$RCRUN_ROOT/tmp/net-$pid-' >/dev/null" && ok "no helper after SIGKILL of rcrun (its --exit-fd closes)" || bad "helper after SIGKILL" "$(pgrep -af slirp4netns)"
"$RCRUN" gc >/dev/null 2>&1

kill $httpd 2>/dev/null
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" == 0 ]
