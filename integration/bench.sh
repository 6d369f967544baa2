#!/usr/bin/env bash
# rcrun performance benchmark (not a test: nothing here fails the build; it prints and records).
#
# The one command (as root, from the repository root, after `cargo build --release`):
#
#     integration/bench.sh
#
# Optional: `integration/bench.sh SECTION...` with SECTION in start cold scale memory unpack
# (default: all). Environment: BENCH_DIR (work dir, images are cached there; default
# /var/tmp/rcrun-bench), BENCH_USER (plain user for rootless runs; default rcrun-test),
# BENCH_RUNS (warm runs, default 30), BENCH_ROUNDS (the warm runs are taken in that many
# interleaved rounds, default 5), BENCH_COLD_RUNS (cold runs, default 3), BENCH_REBUILD=1 (rebuild the images), BENCH_RESULTS (default integration/bench-results.json).
#
# What it does (Debian 12, cgroup v1 hybrid host; see DESIGN.md section 6):
# - installs hyperfine, crun, runc, bubblewrap, podman, umoci, zstd, debootstrap if missing (a
#   peer that cannot be installed or started is skipped with a note);
# - builds images with target/<host triple>/release/rcrun-mkimage: busybox; a ~300 MB 3-layer Debian bookworm
#   minbase image (debootstrap; falls back to a rootfs copied from the host's /usr when no mirror is
#   reachable, and says so) as docker-save plain, oci-archive gzip and oci-archive zstd; 1-, 10-,
#   100- and 200-layer images;
# - re-executes itself inside `unshare -m` with /sys/fs/cgroup/unified unmounted (crun 1.8 refuses
#   to start otherwise on this hybrid host), so every contender runs in the same environment;
# - start: warm `/bin/true`, root and rootless, hyperfine with warm-up in rounds (every
#   contender once per round: integration/bench/merge_rounds.py joins them), rcrun vs crun and runc
#   (OCI bundle of the same rootfs, with and without Docker's default seccomp profile), bwrap
#   --unshare-all with proc and dev, podman run --rm --network=none;
# - cold: first `rcrun run` of the 300 MB image on an empty store vs tar -xf of the same layers
#   into 3 dirs, umoci unpack, podman load; gzip and zstd archives vs tar -xzf / tar --zstd -xf.
#   Page cache dropped right before every run (hyperfine --prepare);
# - scale: 1/10/100/200-layer warm start (in rounds too); 20 concurrent cold `rcrun run` (all must succeed, each
#   layer extracted once);
# - memory: peak RSS (/usr/bin/time -f %M) of rcrun cold and warm;
# - unpack (issue A): cold `rcrun unpack` vs tar -xf into 3 dirs, with rcrun's peak RSS;
# - prints tables (medians, ratios to peers, targets) and writes JSON.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/rcrun-bench}
BENCH_USER=${BENCH_USER:-rcrun-test}
RUNS=${BENCH_RUNS:-30}
COLD_RUNS=${BENCH_COLD_RUNS:-3}
RESULTS=${BENCH_RESULTS:-$REPO/integration/bench-results.json}
SECTIONS=${*:-start cold scale memory unpack}

note() { echo "bench: $*" >&2; }
die() { note "$*"; exit 1; }
want() { [[ " $SECTIONS " == *" $1 "* ]]; }

[ "$(id -u)" = 0 ] || die "run as root (rootless runs use the user $BENCH_USER via runuser)"

# --- 1. Enter one private mount namespace with the cgroup2 hybrid mount gone -------------------
if [ -z "${RCRUN_BENCH_INNER:-}" ]; then
  # Install first (apt wants the host's view).
  missing=()
  for pair in hyperfine:hyperfine crun:crun runc:runc bwrap:bubblewrap podman:podman \
              umoci:umoci zstd:zstd debootstrap:debootstrap newuidmap:uidmap jq:jq; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  [ -x /usr/bin/time ] || missing+=(time)
  if [ ${#missing[@]} -gt 0 ]; then
    note "installing ${missing[*]}"
    apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; } \
      || note "could not install some of: ${missing[*]} (those peers are skipped)"
  fi
  command -v hyperfine >/dev/null || die "hyperfine is required"
  command -v jq >/dev/null || die "jq is required"
  exec unshare -m env RCRUN_BENCH_INNER=1 "$0" "$@"
fi
umount /sys/fs/cgroup/unified 2>/dev/null || true
have() { command -v "$1" >/dev/null; }
# Runs a warm hyperfine section, and once more if a command failed in it: a peer failing once in
# 30 runs (runc with seccomp did, on a loaded VM) would otherwise end the whole bench. Not
# hyperfine -i: a failed rcrun run would then be timed as if it had worked. A second failure
# stops the bench.
again_once() { "$@" || { note "a command failed in this section (above); running it once more"; "$@"; }; }
# Runs a warm comparison (a hyperfine command line without --runs and --export-json) in ROUNDS
# rounds of RUNS/ROUNDS runs, and merges the rounds into OUT_JSON. hyperfine runs each command's
# runs back to back; on a shared VM a slow minute then lands on one contender only (the 200-layer
# / 1-layer ratio once read 0.91 and 2.45 in two full runs). In rounds, such drift is spread
# over every contender, and the ratio of medians measures the commands, not the minute.
ROUNDS=${BENCH_ROUNDS:-5}
rounds() { # rounds OUT_JSON COMMAND...
  local out=$1 dir k; shift
  dir=$(mktemp -d "$WORK/rounds.XXXXXX")
  chmod 0777 "$dir"
  for k in $(seq 1 "$ROUNDS"); do
    again_once "$@" --runs $(((RUNS + ROUNDS - 1) / ROUNDS)) --export-json "$dir/$k.json" >&2 || return 1
  done
  python3 "$REPO/integration/bench/merge_rounds.py" "$out" "$dir"/*.json
  rm -rf "$dir"
}

T0=$(date +%s)
mkdir -p "$BENCH_DIR"
chmod 0755 "$BENCH_DIR"
IMG=$BENCH_DIR/images
OUT=$BENCH_DIR/out
WORK=$BENCH_DIR/work
BIN=$BENCH_DIR/bin
rm -rf "$OUT" "$WORK"
mkdir -p "$IMG" "$OUT" "$WORK" "$BIN"
chmod 0777 "$OUT"
echo '{}' > "$OUT/extra.json"
chmod 0666 "$OUT/extra.json"
extra() { # extra KEY JSON_VALUE
  jq --arg k "$1" --argjson v "$2" '.[$k] = $v' "$OUT/extra.json" > "$OUT/extra.tmp" && mv "$OUT/extra.tmp" "$OUT/extra.json"
}
# A copy of the binaries the plain user can reach (and that a rebuild cannot change mid-run).
# --remove-destination: a previous run's id holder (src/launch/holder.rs) may still run from
# $BIN/rcrun, and a running program's file cannot be written over (ETXTBSY).
# cargo builds for the host triple by name (.cargo/config.toml: static linking).
BUILT="$REPO/target/$(rustc -vV | sed -n 's/^host: //p')/release"
cp --remove-destination "$BUILT/rcrun" "$BUILT/rcrun-mkimage" "$BIN/"
chmod 0755 "$BIN"/*
RCRUN=$BIN/rcrun
MKIMAGE=$BIN/rcrun-mkimage
# A hyperfine --prepare command (run without a shell under -N): CMD, then drop the page cache.
prep() { echo "sh -c '$1 && sync && echo 3 > /proc/sys/vm/drop_caches'"; }
# A cold-run command whose stderr is kept in $OUT/errors.log (a failed run is counted, not fatal).
logged() { echo "sh -c '$1 2>>$OUT/errors.log'"; }

# The plain user: its own home, runtime dir and stores under $BENCH_DIR/user.
U=$BENCH_DIR/user
ROOTLESS=1
if ! id "$BENCH_USER" >/dev/null 2>&1; then
  note "user $BENCH_USER missing: rootless runs skipped"; ROOTLESS=0
else
  rm -rf "$U"; mkdir -p "$U/home" "$U/run"; chown -R "$BENCH_USER:" "$U"; chmod 0700 "$U/run"
fi
as_user() {
  runuser -u "$BENCH_USER" -- env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
    HOME="$U/home" XDG_RUNTIME_DIR="$U/run" XDG_DATA_HOME="$U/home/.local/share" \
    XDG_CONFIG_HOME="$U/home/.config" USER="$BENCH_USER" "$@"
}

# --- 2. Images -----------------------------------------------------------------------------------
[ "${BENCH_REBUILD:-0}" = 1 ] && rm -rf "${IMG:?}"/* "$BENCH_DIR/rootfs-debian"
build() { [ -s "$IMG/$1" ] || { note "building $1"; "$MKIMAGE" "${@:2}" -o "$IMG/$1" >/dev/null; }; }
build busybox.tar --busybox --tag busybox:latest
for n in 1 10 100 200; do build "layers-$n.tar" --busybox --many-layers "$n" --tag "layers$n:latest"; done

ROOTFS=$BENCH_DIR/rootfs-debian
if [ ! -e "$ROOTFS/.complete" ]; then
  rm -rf "$ROOTFS"
  # minbase (~210 MB with apt lists) plus python3, git and openssl: a ~310 MB Debian rootfs.
  if have debootstrap && timeout 900 debootstrap --variant=minbase \
       --include=perl,python3,git,openssl,ca-certificates bookworm "$ROOTFS" >"$BENCH_DIR/debootstrap.log" 2>&1; then
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*_Packages "$ROOTFS"/var/cache/apt/*.bin
    echo "debootstrap --variant=minbase bookworm (+python3, git, openssl)" > "$ROOTFS/.complete"
  else
    note "debootstrap failed (no mirror?): building the big rootfs from the host's /usr instead"
    umount -R "$ROOTFS/proc" "$ROOTFS/sys" 2>/dev/null || true
    rm -rf "$ROOTFS"; mkdir -p "$ROOTFS/usr/lib" "$ROOTFS/tmp"
    cp -a /etc "$ROOTFS/"
    cp -a /usr/bin /usr/sbin /usr/libexec "$ROOTFS/usr/"
    cp -a /usr/lib/x86_64-linux-gnu "$ROOTFS/usr/lib/" 2>/dev/null || true
    cp -a /usr/lib64 "$ROOTFS/usr/" 2>/dev/null || true
    for l in bin sbin lib lib64; do ln -s "usr/$l" "$ROOTFS/$l"; done
    echo "host /usr copy (bin, sbin, libexec, lib/x86_64-linux-gnu)" > "$ROOTFS/.complete"
  fi
fi
ROOTFS_KIND=$(cat "$ROOTFS/.complete")
ROOTFS_MB=$(du -sm --exclude=proc --exclude=sys "$ROOTFS" 2>/dev/null | cut -f1)
note "big image rootfs: $ROOTFS_KIND, $ROOTFS_MB MB"
extra big_rootfs "$(jq -n --arg k "$ROOTFS_KIND" --argjson mb "$ROOTFS_MB" '{source: $k, mb: $mb}')"
build big.tar --rootfs "$ROOTFS" --layers 3 --tag bench/big:latest
build big-plain.oci.tar --rootfs "$ROOTFS" --layers 3 --format oci --tag latest
build big-gzip.oci.tar --rootfs "$ROOTFS" --layers 3 --format oci --compression gzip --tag latest
build big-zstd.oci.tar --rootfs "$ROOTFS" --layers 3 --format oci --compression zstd --tag latest
chmod 0644 "$IMG"/*.tar; chmod 0755 "$IMG"

# Layer files of the big images for the tar baselines (same bytes rcrun reads).
L=$BENCH_DIR/layers
if [ ! -e "$L/.complete" ]; then
  rm -rf "$L"; mkdir -p "$L/docker" "$L/plain" "$L/gzip" "$L/zstd"
  tar -xf "$IMG/big.tar" -C "$L/docker"
  for c in plain gzip zstd; do
    tar -xf "$IMG/big-$c.oci.tar" -C "$L/$c"
  done
  touch "$L/.complete"
fi
docker_layers=(); while read -r m; do docker_layers+=("$L/docker/$m"); done \
  < <(jq -r '.[0].Layers[]' "$L/docker/manifest.json")
oci_layers() { # oci_layers DIR -> blob paths, bottom first
  local m; m=$(jq -r '.manifests[0].digest' "$1/index.json")
  jq -r '.layers[].digest' "$1/blobs/sha256/${m#sha256:}" | sed "s#sha256:#$1/blobs/sha256/#"
}
mapfile -t gzip_layers < <(oci_layers "$L/gzip")
mapfile -t zstd_layers < <(oci_layers "$L/zstd")
NL=${#docker_layers[@]}
tar_x3() { # tar_x3 TARFLAGS DEST LAYER... -> one shell command extracting each layer into DEST/<i>
  local flags=$1 dest=$2; shift 2; local i=0 cmd=""
  for f in "$@"; do i=$((i + 1)); cmd+="${cmd:+ && }tar $flags $f -C $dest/$i"; done
  echo "$cmd"
}
mkdirs_x3() { local s="rm -rf $1"; for i in $(seq 1 "$NL"); do s+=" && mkdir -p $1/$i"; done; echo "$s"; }

# --- 3. Warm start -------------------------------------------------------------------------------
seccomp_oci() { # Docker's profile (fixture) in OCI runtime-spec form: x86 arches, no cap-gated rules
  jq '{defaultAction, defaultErrnoRet,
       architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
       syscalls: [.syscalls[]
         | select((.includes.caps // []) == [] and
                  ((.includes.arches // ["amd64"]) | index("amd64") != null))
         | {names, action} + (if .args then {args} else {} end)
                           + (if .errnoRet then {errnoRet} else {} end)]}' \
    "$(ls "$REPO"/../shared/fixtures/docker-default-seccomp.json /work/shared/fixtures/docker-default-seccomp.json 2>/dev/null | head -1)" 2>/dev/null \
    || jq '{defaultAction, syscalls: [.syscalls[] | {names, action}]}' "$REPO/configs/seccomp.json"
}
make_bundle() { # make_bundle TOOL DIR ROOTFS ROOTLESS(0|1) SECCOMP(0|1), as the caller's user
  local tool=$1 dir=$2 rootfs=$3 rl=$4 sc=$5
  mkdir -p "$dir"; ( cd "$dir" && rm -f config.json && if [ "$rl" = 1 ]; then "$tool" spec --rootless; else "$tool" spec; fi )
  jq --arg r "$rootfs" --argjson sc "$sc" --slurpfile prof "$dir/../seccomp.json" \
    '.root.path = $r | .root.readonly = true | .process.args = ["/bin/true"] | .process.terminal = false
     | (if $sc == 1 then .linux.seccomp = $prof[0] else del(.linux.seccomp) end)' \
    "$dir/config.json" > "$dir/config.tmp" && mv "$dir/config.tmp" "$dir/config.json"
}

start_bench() { # start_bench MODE(root|rootless)
  local mode=$1 base store run as=()
  if [ "$mode" = root ]; then base=$WORK/start-root; else base=$U/start; as=(as_user); fi
  store=$base/store; run=$base/run
  "${as[@]}" mkdir -p "$base" "$run"
  seccomp_oci > "$WORK/seccomp.json"; "${as[@]}" cp "$WORK/seccomp.json" "$base/seccomp.json"
  "${as[@]}" "$RCRUN" -q --root "$store" unpack "$IMG/busybox.tar" "$base/rootfs"
  "${as[@]}" "$RCRUN" -q --root "$store" run "$IMG/busybox.tar" /bin/true || note "rcrun $mode failed"
  local -a names=() cmds=()
  add() { names+=("$1"); cmds+=("$2"); }
  add rcrun "$RCRUN -q --root $store run $IMG/busybox.tar /bin/true"
  # The cost of a network that reaches out: the same start with pasta (issue 12); none stays the
  # default and the row above.
  if "${as[@]}" "$RCRUN" -q --root "$store" run --network pasta "$IMG/busybox.tar" /bin/true >"$WORK/peer.out" 2>&1; then
    add "rcrun --network pasta" "$RCRUN -q --root $store run --network pasta $IMG/busybox.tar /bin/true"
  else note "rcrun --network pasta ($mode) does not start here, skipped: $(head -c 300 "$WORK/peer.out")"; fi
  local rl=0; [ "$mode" = rootless ] && rl=1
  for tool in crun runc; do
    have "$tool" || { note "$tool missing: skipped"; continue; }
    for sc in 0 1; do
      local b=$base/$tool-$sc label
      "${as[@]}" bash -c "$(declare -f make_bundle); make_bundle $tool $b $base/rootfs $rl $sc" >/dev/null
      if [ $sc = 0 ]; then label="$tool (no seccomp)"; else label="$tool (seccomp)"; fi
      local cmd="$tool --root $run/$tool run --bundle $b bench-$tool-$sc"
      [ "$tool" = runc ] && cmd="$tool --root $run/$tool run -b $b bench-$tool-$sc"
      if "${as[@]}" $cmd >"$WORK/peer.out" 2>&1; then add "$label" "$cmd"
      else note "$label ($mode) does not start here, skipped: $(head -c 300 "$WORK/peer.out")"; fi
    done
  done
  if have bwrap; then
    local cmd="bwrap --unshare-all --ro-bind $base/rootfs / --proc /proc --dev /dev /bin/true"
    if "${as[@]}" $cmd >"$WORK/peer.out" 2>&1; then add bwrap "$cmd"
    else note "bwrap ($mode) failed, skipped: $(head -c 300 "$WORK/peer.out")"; fi
  fi
  # The floor (issue 13): integration/floor.c does only the kernel work of a confined rootless
  # start (clone into all namespaces, 1-id map, overlay of 3 lowers with its upper on a tmpfs,
  # proc, a /dev of 6 bound nodes, pivot_root, exec). Lowers, top first: two tiny dirs made here
  # and the busybox rootfs the peers use; the scratch dir stays empty (the tmpfs is the child's).
  if [ "$mode" = rootless ]; then
    if ! have gcc; then note "gcc missing: C floor skipped"
    elif ! gcc -O2 -o "$WORK/floor" "$REPO/integration/floor.c" >"$WORK/peer.out" 2>&1; then
      note "gcc failed on integration/floor.c: C floor skipped: $(head -c 300 "$WORK/peer.out")"
    else
      local fl=$base/floor
      "${as[@]}" sh -c "mkdir -p $fl/l1/etc $fl/l2/etc $fl/scratch && echo 1 > $fl/l1/etc/floor-1 && echo 2 > $fl/l2/etc/floor-2"
      local cmd="$WORK/floor $fl/l1:$fl/l2:$base/rootfs $fl/scratch /bin/true"
      if "${as[@]}" $cmd >"$WORK/peer.out" 2>&1; then add "C floor" "$cmd"
      else note "C floor ($mode) does not run here, skipped: $(head -c 300 "$WORK/peer.out")"; fi
    fi
  fi
  if have podman; then
    local p="podman --root $base/podman/root --runroot $run/podman --storage-driver overlay"
    [ "$mode" = rootless ] && p="podman --root $base/podman/root --runroot $run/podman"
    local id
    if id=$("${as[@]}" $p load -q -i "$IMG/busybox.tar" 2>"$WORK/peer.out" | sed -n 's/^Loaded image[^:]*: *//p' | tail -1) \
       && [ -n "$id" ] && "${as[@]}" $p run --rm --network=none "$id" /bin/true >>"$WORK/peer.out" 2>&1; then
      add "podman run" "$p run --rm --network=none $id /bin/true"
      if "${as[@]}" $p run --rm --network=pasta "$id" /bin/true >"$WORK/peer.out" 2>&1; then
        add "podman run (pasta)" "$p run --rm --network=pasta $id /bin/true"
      else note "podman --network=pasta ($mode) does not start here, skipped: $(head -c 300 "$WORK/peer.out")"; fi
    else note "podman ($mode) failed, skipped: $(head -c 300 "$WORK/peer.out")"; fi
  fi
  local -a args=()
  for i in "${!names[@]}"; do args+=(-n "${names[$i]}" "${cmds[$i]}"); done
  note "start ($mode): ${names[*]}"
  # The checks above ran every contender once, podman's load and run included, whose clean-up
  # (its network namespace, storage, conmon) goes on in the background for a while; hyperfine
  # runs rcrun first, and it absorbed that (a 11.5 ms median with a 6.1 ms minimum once, 7.3 ms
  # when run again). Let it settle.
  sync; sleep 3
  rounds "$OUT/start-$mode.json" "${as[@]}" hyperfine -N --style basic --warmup 3 "${args[@]}"
  if [ "$mode" = rootless ]; then
    # crun's rootless bundle (crun spec --rootless) maps only the user's own id, and bwrap does the
    # same; rcrun with subordinate ids runs the setuid helpers newuidmap and newgidmap instead.
    # The like-for-like row: rcrun with RCRUN_NO_SUBIDS=1 (single-id map written directly),
    # against the same peers in one hyperfine run (the variable is set for all; only rcrun reads
    # it). Its layers are stored once more, owned by the user.
    "${as[@]}" env RCRUN_NO_SUBIDS=1 "$RCRUN" -q --root "$store" run "$IMG/busybox.tar" /bin/true || note "rcrun single id failed"
    local -a single=(-n "rcrun (single id)" "$RCRUN -q --root $store run $IMG/busybox.tar /bin/true")
    for i in "${!names[@]}"; do
      case ${names[$i]} in "crun (no seccomp)"|bwrap|"C floor") single+=(-n "${names[$i]}" "${cmds[$i]}") ;; esac
    done
    note "start (rootless, single-id map): rcrun vs crun (no seccomp), bwrap and the C floor (it maps a single id too)"
    rounds "$OUT/start-rootless-single.json" "${as[@]}" env RCRUN_NO_SUBIDS=1 \
      hyperfine -N --style basic --warmup 3 "${single[@]}"
  fi
}

if want start; then
  start_bench root
  [ $ROOTLESS = 1 ] && start_bench rootless
fi

# --- 4. Cold image ---------------------------------------------------------------------------------
if want cold; then
  C=$WORK/cold
  mkdir -p "$C"
  args=(-n "rcrun run (cold store)" --prepare "$(prep "rm -rf $C/store")" "$(logged "$RCRUN -q --root $C/store run $IMG/big.tar /bin/true")"
        -n "tar -xf x3" --prepare "$(prep "$(mkdirs_x3 "$C/tar")")" "sh -c '$(tar_x3 -xf "$C/tar" "${docker_layers[@]}")'")
  if have umoci; then
    args+=(-n "umoci unpack" --prepare "$(prep "rm -rf $C/umoci")" "umoci unpack --image $L/plain:$(jq -r '.manifests[0].annotations["org.opencontainers.image.ref.name"]' "$L/plain/index.json") $C/umoci")
  fi
  if have podman; then
    args+=(-n "podman load" --prepare "$(prep "rm -rf $C/podman")"
           "podman --root $C/podman/root --runroot $C/podman/run --storage-driver overlay load -q -i $IMG/big.tar")
  fi
  note "cold plain"
  hyperfine -N -i --style basic --runs "$COLD_RUNS" --export-json "$OUT/cold-plain.json" "${args[@]}" >&2
  # Both prepares above delete the previous run's files right before the next run, and this
  # machine's ext4 has no journal, so its inode allocator skips inodes freed in the last 5-35 s
  # one by one (recently_deleted). Measured again with nothing deleted: each run's output is
  # moved aside instead, and removed at the end of the section (more than 5 s before other runs).
  note "cold plain, nothing deleted before a run"
  aside() { echo "mkdir -p $C/aside && if [ -e $1 ]; then mv $1 $C/aside/\$(date +%s%N); fi"; }
  hyperfine -N -i --style basic --runs "$COLD_RUNS" --export-json "$OUT/cold-plain-fresh.json" \
    -n "rcrun run (cold store)" --prepare "$(prep "$(aside "$C/store")")" "$(logged "$RCRUN -q --root $C/store run $IMG/big.tar /bin/true")" \
    -n "tar -xf x3" --prepare "$(prep "$(aside "$C/tar") && $(mkdirs_x3 "$C/tar" | sed 's/^rm -rf [^ ]* && //')")" "sh -c '$(tar_x3 -xf "$C/tar" "${docker_layers[@]}")'" >&2
  rm -rf "$C/aside" "$C/store" "$C/tar"
  note "cold gzip"
  hyperfine -N -i --style basic --runs "$COLD_RUNS" --export-json "$OUT/cold-gzip.json" \
    -n "rcrun run gzip (cold store)" --prepare "$(prep "rm -rf $C/store")" "$(logged "$RCRUN -q --root $C/store run $IMG/big-gzip.oci.tar /bin/true")" \
    -n "tar -xzf x3" --prepare "$(prep "$(mkdirs_x3 "$C/tar")")" "sh -c '$(tar_x3 -xzf "$C/tar" "${gzip_layers[@]}")'" >&2
  if tar --zstd --version >/dev/null 2>&1 && have zstd; then
    note "cold zstd"
    hyperfine -N -i --style basic --runs "$COLD_RUNS" --export-json "$OUT/cold-zstd.json" \
      -n "rcrun run zstd (cold store)" --prepare "$(prep "rm -rf $C/store")" "$(logged "$RCRUN -q --root $C/store run $IMG/big-zstd.oci.tar /bin/true")" \
      -n "tar --zstd -xf x3" --prepare "$(prep "$(mkdirs_x3 "$C/tar")")" "sh -c '$(tar_x3 "--zstd -xf" "$C/tar" "${zstd_layers[@]}")'" >&2
  else note "tar --zstd unavailable: zstd baseline skipped"; fi
  rm -rf "$C"
fi

# --- 5. Scale --------------------------------------------------------------------------------------
if want scale; then
  S=$WORK/scale
  args=()
  for n in 1 10 100 200; do
    "$RCRUN" -q --root "$S/store" run "$IMG/layers-$n.tar" /bin/true || note "rcrun $n layers failed"
    label="rcrun $n layer"; [ $n -gt 1 ] && label+=s
    args+=(-n "$label" "$RCRUN -q --root $S/store run $IMG/layers-$n.tar /bin/true")
  done
  note "scale: warm start by layer count"
  # After the cold section's gigabyte of writes: let writeback finish first, as before the
  # start sections.
  sync; sleep 3
  rounds "$OUT/scale.json" hyperfine -N --style basic --warmup 3 "${args[@]}"
  note "scale: 20 concurrent cold runs of the big image"
  rm -rf "$S/store"; sync; echo 3 > /proc/sys/vm/drop_caches
  t0=$(date +%s%N)
  pids=()
  for i in $(seq 1 20); do
    "$RCRUN" --root "$S/store" run --explain "$IMG/big.tar" /bin/true >"$S/c$i.out" 2>"$S/c$i.err" &
    pids+=($!)
  done
  ok=0; for j in "${pids[@]}"; do if wait "$j"; then ok=$((ok + 1)); fi; done
  t1=$(date +%s%N)
  extracted=$(cat "$S"/c*.err | grep -c "extracted + verified" || true)
  note "20 concurrent: $ok succeeded, $extracted extractions for $NL layers, $(((t1 - t0) / 1000000)) ms wall"
  cat "$S"/c*.err | grep "error" | sed 's/[0-9a-f]\{12\}/ID/g; s/"[0-9]*"/PID/' | sort | uniq -c | sed 's/^/bench:   /' >&2 || true
  extra concurrent_20_ok "$ok"; extra concurrent_20_extractions "$extracted"
  extra concurrent_20_layers "$NL"; extra concurrent_20_wall_ms "$(((t1 - t0) / 1000000))"
  rm -rf "$S"
fi

# --- 6. Memory -------------------------------------------------------------------------------------
rss() { /usr/bin/time -f %M -o "$WORK/rss" "$@" >/dev/null 2>"$WORK/rss.err" || note "failed: $* $(head -c 300 "$WORK/rss.err")"; cat "$WORK/rss"; }
if want memory; then
  M=$WORK/mem
  rm -rf "$M"; sync; echo 3 > /proc/sys/vm/drop_caches
  cold=$(rss "$RCRUN" -q --root "$M/store" run "$IMG/big.tar" /bin/true)
  warm=$(rss "$RCRUN" -q --root "$M/store" run "$IMG/big.tar" /bin/true)
  rm -rf "$M/store"; sync; echo 3 > /proc/sys/vm/drop_caches
  cold_gz=$(rss "$RCRUN" -q --root "$M/store" run "$IMG/big-gzip.oci.tar" /bin/true)
  note "peak RSS: cold 300 MB $cold KiB, cold gzip $cold_gz KiB, warm $warm KiB"
  extra rss_kib_cold_300mb "$cold"; extra rss_kib_cold_gzip_300mb "$cold_gz"; extra rss_kib_warm "$warm"
  if [ $ROOTLESS = 1 ]; then
    as_user "$RCRUN" -q --root "$U/mem" run "$IMG/busybox.tar" /bin/true >/dev/null 2>&1 || true
    warm_rl=$(as_user /usr/bin/time -f %M "$RCRUN" -q --root "$U/mem" run "$IMG/busybox.tar" /bin/true 2>&1 >/dev/null | tail -1)
    extra rss_kib_warm_rootless "$warm_rl"
  fi
  rm -rf "$M"
fi

# --- 7. Issue A: cold rcrun unpack vs tar -xf --------------------------------------------------------
if want unpack; then
  P=$WORK/unpack
  mkdir -p "$P"
  note "unpack: cold rcrun unpack vs tar -xf into $NL dirs"
  hyperfine -N -i --style basic --runs "$COLD_RUNS" --export-json "$OUT/unpack.json" \
    -n "rcrun unpack (cold store)" --prepare "$(prep "rm -rf $P/store $P/dir")" "$(logged "$RCRUN -q --root $P/store unpack $IMG/big.tar $P/dir")" \
    -n "tar -xf x3" --prepare "$(prep "$(mkdirs_x3 "$P/tar")")" "sh -c '$(tar_x3 -xf "$P/tar" "${docker_layers[@]}")'" >&2
  rm -rf "$P/store" "$P/dir"; sync; echo 3 > /proc/sys/vm/drop_caches
  extra rss_kib_unpack_cold_300mb "$(rss "$RCRUN" -q --root "$P/store" unpack "$IMG/big.tar" "$P/dir")"
  rm -rf "$P"
fi

extra total_seconds "$(($(date +%s) - T0))"
[ -s "$OUT/errors.log" ] && { note "rcrun errors during cold runs:"; sort "$OUT/errors.log" | uniq -c >&2; }
python3 "$REPO/integration/bench/report.py" "$OUT" "$RESULTS"
