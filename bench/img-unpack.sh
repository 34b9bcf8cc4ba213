#!/usr/bin/env bash
# bench/img-unpack.sh: unpacking a debootstrap --variant=minbase bookworm
# image (two gzip layers) with img-unpack, side by side in one run with
# `umoci unpack` of the same OCI layout; then pull + unpack from a loopback
# registry (`img-fetch --stream | img-unpack`) side by side with
# `docker pull` (a dockerd started for the run, stopped after).
#
# The minbase root file system is built once with debootstrap from the
# apt mirror in /etc/apt/sources.list* and shared with the img-fetch bench
# at /var/cache/kist-bench/minbase (flock-guarded; reused when present).
#
# Where the outputs go (BENCH_FS): "loop" (default) is a fresh ext4 file
# system (mkfs defaults, with a journal) on a loop device backed by a
# file on the same disk, with direct I/O, made for the run and removed
# after; "host" is /tmp itself. The loop file system keeps the figures
# from depending on the host's: this machine's root is ext4 *without* a
# journal, where creating inodes soon after thousands were deleted (each
# run's --prepare does that) goes quadratic in the kernel
# (ext4 recently_deleted(), several seconds of system time for both
# img-unpack and umoci), and where syncfs(2) would also flush other
# processes' dirty data.
#
# BENCH_PRIORITY=1 (default) runs the measured commands, the registry and
# dockerd in sessions of their own whose autogroup has nice -15, kist and
# its peers alike: on a machine shared with other work that is what comes
# closest to an idle one. The load average is printed with the figures.
#
# Prints a markdown section on stdout; progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=${KIST_BIN_DIR:-$PWD/target/release}
OUT=${BENCH_OUT:-/tmp/kist-bench}
RUNS=${BENCH_RUNS:-10}
CACHE=/var/cache/kist-bench
mkdir -p "$OUT" "$CACHE"
need hyperfine hyperfine
need umoci umoci
need skopeo skopeo
need jq jq
need debootstrap debootstrap
need docker-registry docker-registry
need dockerd docker.io
for t in img-unpack img-fetch; do
    [ -x "$BIN/$t" ] || { echo "$t not built in $BIN (cargo build --release -p $t)" >&2; exit 1; }
done

# 1. The minbase root file system, shared between benches.
(
    exec 9>"$CACHE/minbase.lock"
    flock 9
    if [ -e "$CACHE/minbase/var/lib/dpkg/status" ] && [ -e "$CACHE/minbase/etc/debian_version" ]; then
        exit 0
    fi
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    echo "img-unpack bench: debootstrap minbase bookworm from $mirror" >&2
    rm -rf "$CACHE/minbase.tmp.$$"
    debootstrap --variant=minbase bookworm "$CACHE/minbase.tmp.$$" "$mirror" >&2
    rm -rf "$CACHE/minbase.tmp.$$"/var/cache/apt/archives/*.deb
    mv "$CACHE/minbase.tmp.$$" "$CACHE/minbase"
)
rootfs=$CACHE/minbase

# Everything from here on needs no network beyond loopback: a private
# namespace of its own (apt-get and debootstrap above needed the host's).
bench_private_netns "$0" "$@"

PRIO=${BENCH_PRIORITY:-1}
tmp=$(mktemp -d /tmp/kist-bench-unpack.XXXXXX)
work=$tmp/fs
mkdir -p "$work"
dpid=
rpid=
cleanup() {
    [ -n "$dpid" ] && { kill "$dpid" 2>/dev/null || true; wait "$dpid" 2>/dev/null || true; }
    [ -n "$rpid" ] && { kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true; }
    umount -R "$work/docker" 2>/dev/null || true
    bench_fs_cleanup "$work"
    rm -rf "$tmp"
}
trap cleanup EXIT
# kist's snapshots, umoci's bundle and docker's data root side by side.
bench_fs "$work" 16G
fsdesc=$BENCH_FSDESC

# 2. An OCI layout of it: two gzip layers (usr/lib and usr/share apart
# from the rest), built once and kept in $BENCH_OUT.
layout=$OUT/minbase-layout
if [ ! -e "$layout/.done" ]; then
    echo "img-unpack bench: building the OCI layout" >&2
    rm -rf "$layout"
    mkdir -p "$layout/blobs/sha256"
    w=$tmp/build
    mkdir -p "$w"
    tar -C "$rootfs" --numeric-owner --xattrs --sort=name --exclude=./usr/lib --exclude=./usr/share -cf "$w/l1.tar" .
    tar -C "$rootfs" --numeric-owner --xattrs --sort=name -cf "$w/l2.tar" --no-recursion ./usr --recursion ./usr/lib ./usr/share
    layers=
    diffs=
    for l in l1 l2; do
        diff=$(sha256sum "$w/$l.tar" | cut -d' ' -f1)
        gzip -6 -n -c "$w/$l.tar" > "$w/$l.tar.gz"
        dig=$(sha256sum "$w/$l.tar.gz" | cut -d' ' -f1)
        size=$(stat -c %s "$w/$l.tar.gz")
        mv "$w/$l.tar.gz" "$layout/blobs/sha256/$dig"
        layers="$layers${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$dig\",\"size\":$size}"
        diffs="$diffs${diffs:+,}\"sha256:$diff\""
    done
    printf '{"architecture":"amd64","os":"linux","created":"2025-05-20T00:00:00Z","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["bash"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' "$diffs" > "$w/config.json"
    cdig=$(sha256sum "$w/config.json" | cut -d' ' -f1)
    cp "$w/config.json" "$layout/blobs/sha256/$cdig"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
        "$cdig" "$(stat -c %s "$w/config.json")" "$layers" > "$w/manifest.json"
    mdig=$(sha256sum "$w/manifest.json" | cut -d' ' -f1)
    cp "$w/manifest.json" "$layout/blobs/sha256/$mdig"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' \
        "$mdig" "$(stat -c %s "$w/manifest.json")" > "$layout/index.json"
    echo '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
    rm -rf "$w"
    touch "$layout/.done"
fi
usize=$(du -sb "$rootfs" | cut -f1)
csize=$(jq '[.layers[].size] | add' "$layout/blobs/sha256/$(jq -r '.manifests[0].digest' "$layout/index.json" | cut -d: -f2)")

# 3. A kist state root holding the image (the store is an OCI layout too).
ref=127.0.0.1:5000/bench/minbase:latest
root=$work/root
mkdir -p "$root/blobs/sha256"
cp -l "$layout"/blobs/sha256/* "$root/blobs/sha256/" 2>/dev/null || cp "$layout"/blobs/sha256/* "$root/blobs/sha256/"
cp "$layout/oci-layout" "$root/"
jq --arg r "$ref" '.manifests[0].annotations = {"org.opencontainers.image.ref.name": $r, "io.containerd.image.name": $r}' "$layout/index.json" > "$root/index.json"

echo "img-unpack bench: unpack (img-unpack, img-unpack --flatten, umoci unpack)" >&2
load1=$(loadavg)
prio hyperfine --warmup 1 --runs "$RUNS" --export-json "$OUT/img-unpack-unpack.json" \
    -n img-unpack --prepare "rm -rf $root/snapshots $root/tmp; sync" \
    "$BIN/img-unpack --root $root $ref > /dev/null" \
    -n "img-unpack --sync" --prepare "rm -rf $root/snapshots $root/tmp; sync" \
    "$BIN/img-unpack --sync --root $root $ref > /dev/null" \
    -n "img-unpack --flatten" --prepare "rm -rf $work/flat; sync" \
    "$BIN/img-unpack --root $root --flatten $work/flat $ref > /dev/null" \
    -n "umoci unpack" --prepare "rm -rf $work/bundle; sync" \
    "umoci unpack --image $layout:latest $work/bundle" >&2
load2=$(loadavg)
rm -rf "$work/bundle" "$work/flat" "$root/snapshots"

# 4. Pull + unpack from a loopback registry.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
reg=127.0.0.1:$port
mkdir -p "$tmp/registry"
cat > "$tmp/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $tmp/registry/data
http:
  addr: $reg
EOF
prio_exec docker-registry serve "$tmp/registry/config.yml" > "$tmp/registry/log" 2>&1 &
rpid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
skopeo copy --quiet --dest-tls-verify=false "oci:$layout:latest" "docker://$reg/bench/minbase:latest" >&2
pref=$reg/bench/minbase:latest

echo "img-unpack bench: starting dockerd" >&2
sock=unix://$tmp/d.sock
prio_exec dockerd --data-root "$work/docker" --exec-root "$tmp/exec" --pidfile "$tmp/d.pid" -H "$sock" \
    --insecure-registry "$reg" --bridge none --iptables=false >"$tmp/dockerd.log" 2>&1 &
dpid=$!
for _ in $(seq 150); do docker -H "$sock" info >/dev/null 2>&1 && break; sleep 0.2; done
docker -H "$sock" info >/dev/null
proot=$work/pull-root
echo "img-unpack bench: pull + unpack (img-fetch --stream | img-unpack, docker pull)" >&2
load3=$(loadavg)
prio hyperfine --warmup 1 --runs "$RUNS" --export-json "$OUT/img-unpack-pull.json" \
    -n "img-fetch --stream | img-unpack" --prepare "rm -rf $proot; sync" \
    "$BIN/img-fetch --quiet --stream --root $proot $pref | $BIN/img-unpack --root $proot > /dev/null" \
    -n "docker pull" --prepare "docker -H $sock rmi -f $pref > /dev/null 2>&1 || true; sync" \
    "docker -H $sock pull -q $pref > /dev/null" >&2
load4=$(loadavg)
dver=$(docker -H "$sock" version --format '{{.Server.Version}}')
ddrv=$(docker -H "$sock" info --format '{{.Driver}}')

median() { jq -r --arg n "$2" '.results[] | select(.command == $n) | .median' "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
s() { awk -v a="$1" 'BEGIN { printf "%.3f s", a }'; }
U=$OUT/img-unpack-unpack.json
P=$OUT/img-unpack-pull.json
ku=$(median "$U" img-unpack); kn=$(median "$U" "img-unpack --sync"); kf=$(median "$U" "img-unpack --flatten"); um=$(median "$U" "umoci unpack")
kp=$(median "$P" "img-fetch --stream | img-unpack"); dp=$(median "$P" "docker pull")

cat <<EOF
## img-unpack: unpack, and pull + unpack

A debootstrap \`--variant=minbase\` bookworm root ($(awk -v b="$usize" 'BEGIN{printf "%.0f", b/1e6}') MB unpacked) as an OCI image of two gzip
layers ($(awk -v b="$csize" 'BEGIN{printf "%.0f", b/1e6}') MB compressed; /usr/lib and /usr/share in the second). hyperfine, $RUNS runs after
one warm-up each, every run from scratch (\`--prepare\` removes the previous output and syncs), one run of this script.
Outputs on $fsdesc. Priority boost for the measured commands (autogroup nice -15, kist and peers alike): $( [ "$PRIO" = 1 ] && echo on || echo off ).
Load average (1, 5, 15 min) before and after: $load1 → $load2.

\`img-unpack\` makes one snapshot per layer, both layers at once; each is published under an intent flushed
before the layer starts, and a detached settler flushes the snapshots (syncfs) just after img-unpack exits
(kist-state(5), UNSETTLED WRITES). \`--sync\` flushes each snapshot before renaming it into place.
umoci and docker do not flush. \`--flatten\` writes one tree, as umoci's rootfs, layer after layer.
The \`sync\` in every \`--prepare\` keeps one run's writeback (or settler) out of the next run.

| command | median | img-unpack / umoci |
|---|---|---|
| \`img-unpack REF\` | $(s "$ku") | $(ratio "$ku" "$um") |
| \`img-unpack --sync REF\` | $(s "$kn") | $(ratio "$kn" "$um") |
| \`img-unpack --flatten DIR REF\` | $(s "$kf") | $(ratio "$kf" "$um") |
| \`umoci unpack --image LAYOUT:latest BUNDLE\` | $(s "$um") | 1 |

Goal: at most 1/5 (0.2) of umoci's median.

Pull + unpack from docker-registry on 127.0.0.1 (plain HTTP), against \`docker pull\` (docker $dver,
$ddrv storage driver, its own dockerd on a temporary data root; the image removed before each run).

| command | median | kist / docker |
|---|---|---|
| \`img-fetch --stream REF \| img-unpack\` | $(s "$kp") | $(ratio "$kp" "$dp") |
| \`docker pull REF\` | $(s "$dp") | 1 |

Load average before and after: $load3 → $load4.

Goal: at most 1/3 (0.333) of docker's median.

EOF
