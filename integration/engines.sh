#!/usr/bin/env bash
# The engine scenarios (integration/engines/podman.sh as root and as rcrun-test, and
# integration/engines/containerd.sh) for several runtimes side by side, as a pass/fail table:
#
#   integration/engines.sh IMAGE.tar RUNTIME...      # as root; e.g. target/x86_64-unknown-linux-gnu/release/rcrun /usr/sbin/runc /usr/bin/crun
#
# crun 1.8.1 refuses this kind of hybrid cgroup host; it runs through ../shared/oci/hide-unified.sh
# when that is there (a private mount namespace without /sys/fs/cgroup/unified).
set -u
here=$(cd "$(dirname "$0")" && pwd)
TAR=$1; shift
work=$(mktemp -d /tmp/rcrun-engines.XXXXXX)
chmod 1777 "$work"
cp "$TAR" "$work/image.tar" && chmod 644 "$work/image.tar"
hide="$here/../../shared/oci/hide-unified.sh"
declare -A result seen
names=()
rows=()
for rt in "$@"; do
  name=$(basename "$rt")
  names+=("$name")
  bin="$work/$name"
  if [ "$name" = crun ] && [ -x "$hide" ]; then
    # (only where the unified mount is visible: rootless podman's namespace has none)
    printf '#!/bin/sh\nmountpoint -q /sys/fs/cgroup/unified && exec %q %q "$@"\nexec %q "$@"\n' \
      "$hide" "$rt" "$rt" > "$bin"
  else
    printf '#!/bin/sh\nexec %q "$@"\n' "$(readlink -f "$rt")" > "$bin"
  fi
  chmod 755 "$bin"
  out=$(
    bash "$here/engines/podman.sh" "$bin" "$work/image.tar" "$work/pm-root-$name" 2>&1
    runuser -u rcrun-test -- bash "$here/engines/podman.sh" "$bin" "$work/image.tar" "$work/pm-user-$name" 2>&1
    bash "$here/engines/containerd.sh" "$bin" "$work/image.tar" "$work/ctd-$name" 2>&1
  )
  while IFS= read -r line; do
    case "$line" in
      "ok - "*) key=${line#ok - }; v=ok ;;
      "not ok - "*) key=${line#not ok - }; v=FAIL ;;
      *) continue ;;
    esac
    [[ -v "seen[$key]" ]] || { rows+=("$key"); seen[$key]=1; }
    result["$name|$key"]=$v
  done <<< "$out"
done
printf '| scenario |'; for n in "${names[@]}"; do printf ' %s |' "$n"; done; echo
printf '|---|'; for _ in "${names[@]}"; do printf '---|'; done; echo
for key in "${rows[@]}"; do
  printf '| %s |' "$key"
  for n in "${names[@]}"; do printf ' %s |' "${result["$n|$key"]:--}"; done
  echo
done
for n in "${names[@]}"; do
  pass=0 total=0
  for key in "${rows[@]}"; do
    total=$((total + 1)); [ "${result["$n|$key"]:-}" = ok ] && pass=$((pass + 1))
  done
  echo "engines: $n $pass/$total"
done
rm -rf "$work"
