#!/usr/bin/env bash
# --network pasta|slirp4netns, -p, --dns and --add-host, end to end. Nothing outside this machine
# is reachable here, so every peer is on the host's loopback: busybox nc and httpd of the host.
# Usage: network.sh RCRUN BUSYBOX.tar MODE [HELPER]   (MODE: root | rootless | unshare;
# HELPER: slirp4netns (default) | pasta)
# Prints TAP-like lines and a closing "N passed, M failed" line.
set -u
RCRUN=$1; BB=$2; MODE="$3 ${4:-slirp4netns}"; NET=${4:-slirp4netns}
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
export RCRUN_ROOT=$WORK/root
HOSTBB=$(command -v busybox)

. "$(dirname "$0")/tap.sh"
# Ports of our own: a base from our pid, so parallel runs of the modes do not collide.
BASE=$(( 20000 + ($$ % 2000) * 10 ))
# The helper's scratch (slirp4netns's API socket, pasta's log) lies in the store's
# tmp/net-<rcrun pid>-<container pid>/, which its command line names.
helpers() { pgrep -f "[${NET:0:1}]${NET:1} .*$RCRUN_ROOT/tmp/net-${1:-}" | wc -l; }

if [ -z "$HOSTBB" ]; then echo "# SKIP: no busybox on the host to serve and fetch (apt-get install busybox-static)"; echo "0 passed, 0 failed"; exit 0; fi
case $NET in
  slirp4netns) PKG=slirp4netns; IFACE=tap0; DNS=10.0.2.3
    # The host as the container sees it, and what the container is.
    GW=10.0.2.2; ADDR=10.0.2.100 ;;
  pasta) PKG=passt; IFACE=eth0; DNS=169.254.1.1
    # pasta copies the host's address and default route (and needs that route).
    GW=$(ip route 2>/dev/null | sed -n 's/^default via \([0-9.]*\).*/\1/p' | head -1)
    DEV=$(ip route 2>/dev/null | sed -n 's/^default via [0-9.]* dev \([^ ]*\).*/\1/p' | head -1)
    ADDR=$(ip -4 -o addr show dev "$DEV" 2>/dev/null | sed -n 's/.*inet \([0-9.]*\).*/\1/p' | head -1)
    if [ -z "$GW" ] || [ -z "$ADDR" ]; then
      echo "ok - [$MODE] --network pasta # SKIP this host has no IPv4 default route with an address, which pasta copies into the container"; echo "0 passed, 0 failed, 1 skipped"; exit 0
    fi ;;
  *) echo "unknown helper $NET"; exit 2 ;;
esac
if ! command -v $NET >/dev/null; then echo "ok - [$MODE] --network $NET # SKIP $NET is not installed (apt-get install $PKG)"; echo "0 passed, 0 failed, 1 skipped"; exit 0; fi
# Whether this user can open /dev/net/tun: both helpers make the container's interface with it.
if ! "$RCRUN" run --network $NET "$BB" true 2>"$WORK/probe"; then
  if grep -q "tun" "$WORK/probe"; then
    skip "--network $NET" "this user cannot open /dev/net/tun (mode $(stat -c %a /dev/net/tun 2>/dev/null); distributions make it 0666): $(head -c 200 "$WORK/probe")"
    echo "$pass passed, $fail failed, $skip skipped"; exit 0
  fi
fi

# ── outbound: a server on the host's loopback, through the helper's gateway ──
echo "hello from the host" > "$WORK/www-index"
mkdir -p "$WORK/www" && mv "$WORK/www-index" "$WORK/www/index.html"
"$HOSTBB" httpd -f -p 127.0.0.1:$((BASE+1)) -h "$WORK/www" & httpd=$!
until_true 5 sh -c "'$HOSTBB' wget -q -O /dev/null http://127.0.0.1:$((BASE+1))/"
expect "the host's loopback server, reached as $GW (allow_host_loopback=true)" "hello from the host" \
  "$RCRUN" run --network $NET:allow_host_loopback=true "$BB" wget -q -O - http://$GW:$((BASE+1))/
got=$("$RCRUN" run --network $NET "$BB" wget -q -T 3 -O - http://$GW:$((BASE+1))/ 2>/dev/null)
[ -z "$got" ] && ok "… not reached by default (podman's default too)" || bad "… not reached by default" "got [$got]"
got=$("$RCRUN" run --network $NET "$BB" wget -q -T 3 -O - http://127.0.0.1:$((BASE+1))/ 2>/dev/null)
[ -z "$got" ] && ok "… nor as the container's own 127.0.0.1 (no port of the host's loopback forwarded in)" || bad "… nor as the container's own 127.0.0.1" "got [$got]"
expect "the container's address and route" "$ADDR $GW" "$RCRUN" run --network $NET "$BB" sh -c \
  "echo \$(ip -4 -o addr show $IFACE | sed 's/.*inet \([0-9.]*\).*/\1/') \$(ip route | sed -n 's/^default via \([0-9.]*\).*/\1/p')"

# As root with --userns the child enters its user namespace after the helper configured it.
if [ "${MODE%% *}" = root ]; then
  expect "--userns as root with the helper" "$ADDR" timeout -s KILL 30 "$RCRUN" run --userns --network $NET "$BB" sh -c \
    "ip -4 -o addr show $IFACE | sed 's/.*inet \([0-9.]*\).*/\1/'"
fi

# ── DNS and hosts files ──
expect "resolv.conf names $NET's forwarder" "nameserver $DNS" sh -c "'$RCRUN' run --network $NET '$BB' cat /etc/resolv.conf | grep nameserver"
expect "--dns replaces it" "nameserver 192.0.2.53" sh -c "'$RCRUN' run --network $NET --dns 192.0.2.53 '$BB' cat /etc/resolv.conf | grep nameserver"
expect "--add-host resolves" "10.1.2.3" sh -c "'$RCRUN' run --add-host db.local:10.1.2.3 '$BB' sh -c 'ping -c1 -W1 db.local 2>&1 | sed -n \"s/.*(\([0-9.]*\)).*/\1/p\" | head -1'"

# ── -p: a busybox httpd in the container, fetched from the host ──
id=$("$RCRUN" run -d --network $NET -p 127.0.0.1:$((BASE+2)):80 "$BB" sh -c 'mkdir /www && echo served by the container > /www/index.html && exec httpd -f -p 80 -h /www' 2>"$WORK/err")
if until_true 10 sh -c "'$HOSTBB' wget -q -O - http://127.0.0.1:$((BASE+2))/ > '$WORK/got' 2>/dev/null"; then
  expect "-p HOST:80 reaches the container's httpd" "served by the container" cat "$WORK/got"
else
  bad "-p HOST:80 reaches the container's httpd" "$(cat "$WORK/err"; "$RCRUN" logs "$id" 2>&1)"
fi
# A port the container binds but -p does not name stays closed (pasta's own default would forward it).
id3=$("$RCRUN" run -d --network $NET "$BB" sh -c "mkdir /www && echo leaked > /www/index.html && exec httpd -f -p $((BASE+5)) -h /www")
sleep 1
got=$("$HOSTBB" wget -q -T 3 -O - http://127.0.0.1:$((BASE+5))/ 2>/dev/null)
[ -z "$got" ] && ok "a port the container binds is not published without -p" || bad "a port the container binds is not published without -p" "got [$got]"
"$RCRUN" rm -f "$id3" >/dev/null
# A second container publishing another port at the same time.
id2=$("$RCRUN" run -d --network $NET -p 127.0.0.1:$((BASE+3)):8000 "$BB" sh -c 'mkdir /www && echo second > /www/index.html && exec httpd -f -p 8000 -h /www')
until_true 10 sh -c "'$HOSTBB' wget -q -O - http://127.0.0.1:$((BASE+3))/ > '$WORK/got2' 2>/dev/null"
expect "two containers publish different ports at once" "served by the container second" sh -c "('$HOSTBB' wget -q -O - http://127.0.0.1:$((BASE+2))/; cat '$WORK/got2') | xargs"
# The port is taken now: a third asking for it is refused, naming the flag value.
status "a taken port is refused" 125 "$RCRUN" run --network $NET -p 127.0.0.1:$((BASE+2)):80 "$BB" true
grep -q -- "-p 127.0.0.1:$((BASE+2)):80: the host's TCP port" "$WORK/err" && ok "… naming the -p value" || bad "… naming the -p value" "$(cat "$WORK/err")"
"$RCRUN" rm -f "$id" "$id2" >/dev/null

# ── UDP: the image's busybox has no UDP receiver, so a static one of ours is bound in ──
mkdir -p "$WORK/udp"
if gcc -static -O2 -o "$WORK/udp/udp-recv" "$(dirname "$0")/udp-recv.c" 2>"$WORK/err"; then
  id=$("$RCRUN" run -d --network $NET -v "$WORK/udp:/u:ro" -p 127.0.0.1:$((BASE+4)):5353/udp "$BB" /u/udp-recv 5353)
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
"$RCRUN" run --network $NET "$BB" sh -c 'trap "exit 130" INT; sleep 30 & wait' & pid=$!
until_true 10 sh -c "[ \$(pgrep -f '[${NET:0:1}]${NET:1} .*net-$pid-' | wc -l) != 0 ]"
kill -INT $pid; wait $pid 2>/dev/null
until_true 5 sh -c "[ \$(pgrep -f '[${NET:0:1}]${NET:1} .*net-$pid-' | wc -l) = 0 ]" && ok "no helper after Ctrl-C (SIGINT to rcrun)" || bad "helper after SIGINT"
"$RCRUN" run --network $NET "$BB" sleep 30 & pid=$!
until_true 10 sh -c "[ \$(pgrep -f '[${NET:0:1}]${NET:1} .*net-$pid-' | wc -l) != 0 ]"
kill -KILL $pid; wait $pid 2>/dev/null
until_true 5 sh -c "[ \$(pgrep -f '[${NET:0:1}]${NET:1} .*net-$pid-' | wc -l) = 0 ]" && ok "no helper after SIGKILL of rcrun (PR_SET_PDEATHSIG)" || bad "helper after SIGKILL" "$(pgrep -af $NET)"
"$RCRUN" gc >/dev/null 2>&1

kill $httpd 2>/dev/null
finish
