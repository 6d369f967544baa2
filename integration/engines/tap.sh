# Sourced by the engine scripts: one TAP-like line per scenario, tagged with $who.
#   ok NAME | bad NAME REASON | expect NAME WANT-STATUS WANT-OUTPUT-SUBSTRING CMD...
# $failed is 1 once any scenario failed.
failed=0
ok() { echo "ok - [$who] $1"; }
bad() { echo "not ok - [$who] $1"; echo "    # ${2:-}" | head -c 600; echo; failed=1; }
expect() {
  local name=$1 want=$2 needle=$3; shift 3
  local out st
  out=$(timeout 120 "$@" 2>&1); st=$?
  if [ "$st" = "$want" ] && [[ "$out" == *"$needle"* ]]; then ok "$name"
  else bad "$name" "status $st (want $want): $out"; fi
}
