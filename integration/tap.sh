# Sourced by scenarios.sh, docker-habits.sh and network.sh: TAP-like lines tagged with $MODE, the
# counts, and $WORK/err and $WORK/out for the last command's output (the caller makes $WORK).
#   ok NAME | bad NAME [REASON] | skip NAME REASON
#   expect NAME WANT CMD...   stdout of CMD (trimmed) must equal WANT
#   status NAME WANT CMD...   exit status of CMD must equal WANT
#   until_true SECONDS CMD... polls CMD every 0.05 s
#   finish                    prints the counts; its status is 0 only when nothing failed
pass=0; fail=0; skip=0
ok()   { pass=$((pass+1)); echo "ok - [$MODE] $1"; }
bad()  { fail=$((fail+1)); echo "not ok - [$MODE] $1"; [ -n "${2:-}" ] && echo "    # $2"; }
skip() { skip=$((skip+1)); echo "ok - [$MODE] $1 # SKIP $2"; }
expect() { local name=$1 want=$2; shift 2; local got; got=$("$@" 2>"$WORK/err"); got=${got%$'\n'}
  if [ "$got" == "$want" ]; then ok "$name"; else bad "$name" "want [$want] got [$got] stderr: $(head -c 600 "$WORK/err")"; fi; }
status() { local name=$1 want=$2; shift 2; "$@" >"$WORK/out" 2>"$WORK/err"; local rc=$?
  if [ "$rc" == "$want" ]; then ok "$name"; else bad "$name" "want status $want got $rc: $(head -c 600 "$WORK/err")"; fi; }
until_true() { local n=$(( $1 * 20 )); shift; while [ $n -gt 0 ]; do "$@" && return 0; sleep 0.05; n=$((n-1)); done; return 1; }
finish() { echo "$pass passed, $fail failed, $skip skipped"; [ "$fail" == 0 ]; }
