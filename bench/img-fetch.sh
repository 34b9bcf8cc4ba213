#!/usr/bin/env bash
# bench/img-fetch.sh: pull time of img-fetch against `skopeo copy docker://… oci:…`,
# side by side in one run, for a realistic image: a `debootstrap
# --variant=minbase bookworm` tree (about 200 MB unpacked) in two gzip
# layers (usr/, then the rest), served by Debian's docker-registry on
# loopback. Also measures the second pull of an image already present.
#
# The debootstrap tree and the image layout are cached in $BENCH_CACHE
# (default $BENCH_OUT/cache); the mirror is the first deb URI apt knows.
# BENCH_PRIORITY=1 (default) runs the registry and the measured commands
# in sessions of their own whose autogroup has nice -15, img-fetch and
# skopeo alike: on a machine shared with other work that is what comes
# closest to an idle one. The load average is printed with the figures.
# Prints a markdown section on stdout; progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=${KIST_BIN_DIR:-$PWD/target/release}
OUT=${BENCH_OUT:-/tmp/kist-bench}
CACHE=${BENCH_CACHE:-$OUT/cache}
RUNS=${BENCH_RUNS:-10}
mkdir -p "$OUT" "$CACHE"
need hyperfine hyperfine
need skopeo skopeo
need docker-registry docker-registry
need debootstrap debootstrap
need jq jq
[ -x "$BIN/img-fetch" ] || { echo "img-fetch not built in $BIN (cargo build --release -p img-fetch)" >&2; exit 1; }

mirror=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
    | grep -v security | head -1 | awk "{print \$2}" || true)
mirror=${mirror:-http://deb.debian.org/debian}

rootfs=$CACHE/bookworm-minbase
if [ ! -d "$rootfs" ]; then
    echo "bench: debootstrap --variant=minbase bookworm from $mirror (once)" >&2
    rm -rf "$rootfs.tmp"
    debootstrap --variant=minbase bookworm "$rootfs.tmp" "$mirror" >"$CACHE/debootstrap.log" 2>&1
    mv "$rootfs.tmp" "$rootfs"
fi

layout=$CACHE/bookworm-layout
if [ ! -f "$layout/index.json" ]; then
    echo "bench: building the two-layer OCI layout (once)" >&2
    rm -rf "$layout.tmp"
    mkdir -p "$layout.tmp/blobs/sha256"
    put() { # file -> prints digest hex, moves the file into blobs/
        local h; h=$(sha256sum "$1" | cut -d' ' -f1); mv "$1" "$layout.tmp/blobs/sha256/$h"; echo "$h"; }
    layers=() diffs=() sizes=()
    for part in usr rest; do
        if [ $part = usr ]; then sel=(usr); else mapfile -t sel < <(cd "$rootfs" && ls -A | grep -vx usr); fi
        tar --numeric-owner --xattrs -C "$rootfs" -cf "$CACHE/layer.tar" "${sel[@]}"
        diffs+=("$(sha256sum "$CACHE/layer.tar" | cut -d' ' -f1)")
        gzip -6 -n -c "$CACHE/layer.tar" > "$CACHE/layer.tgz"
        rm -f "$CACHE/layer.tar"
        sizes+=("$(stat -c %s "$CACHE/layer.tgz")")
        layers+=("$(put "$CACHE/layer.tgz")")
    done
    printf '{"architecture":"amd64","os":"linux","created":"2026-01-01T00:00:00Z","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["bash"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s","sha256:%s"]}}' \
        "${diffs[0]}" "${diffs[1]}" > "$CACHE/config.json"
    csize=$(stat -c %s "$CACHE/config.json"); chex=$(put "$CACHE/config.json")
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s},{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
        "$chex" "$csize" "${layers[0]}" "${sizes[0]}" "${layers[1]}" "${sizes[1]}" > "$CACHE/manifest.json"
    msize=$(stat -c %s "$CACHE/manifest.json"); mhex=$(put "$CACHE/manifest.json")
    printf '{"imageLayoutVersion":"1.0.0"}' > "$layout.tmp/oci-layout"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"bookworm"}}]}' \
        "$mhex" "$msize" > "$layout.tmp/index.json"
    rm -rf "$layout"; mv "$layout.tmp" "$layout"
fi
unpacked=$(du -sm "$rootfs" | cut -f1)
compressed=$(du -cm "$layout"/blobs/sha256/* | tail -1 | cut -f1)

PRIO=${BENCH_PRIORITY:-1}
# apt-get and debootstrap above needed the host's network; the rest runs
# in a private namespace of its own.
bench_private_netns "$0" "$@"
tmp=$(mktemp -d /tmp/kist-bench-fetch.XXXXXX)
rpid=
cleanup() {
    [ -n "$rpid" ] && { kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true; }
    rm -rf "$tmp"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$tmp/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $tmp/registry
http:
  addr: 127.0.0.1:$port
YML
prio_exec docker-registry serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
rpid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
ref=127.0.0.1:$port/bench/bookworm:minbase
skopeo copy --quiet --dest-tls-verify=false "oci:$layout:bookworm" "docker://$ref" >&2

kroot=$tmp/kist-root
sdest=$tmp/skopeo-oci
echo "bench: first pull, $RUNS runs each" >&2
load1=$(loadavg)
# Every run starts with nothing dirty in the page cache (the sync in
# --prepare): neither tool's writes, nor img-fetch's settler flushing them
# after it returns, are paid for by the next run.
prio hyperfine --style basic --runs "$RUNS" --warmup 1 --export-json "$OUT/img-fetch-first.json" \
    --prepare "rm -rf $kroot $sdest; sync" \
    -n img-fetch "$BIN/img-fetch --quiet --root $kroot $ref" \
    -n "img-fetch --sync" "$BIN/img-fetch --sync --quiet --root $kroot $ref" \
    -n skopeo "skopeo copy --quiet --src-tls-verify=false docker://$ref oci:$sdest:bookworm" >&2

echo "bench: second pull (image present)" >&2
rm -rf "$kroot" "$sdest"
"$BIN/img-fetch" --quiet --root "$kroot" "$ref" >/dev/null
skopeo copy --quiet --src-tls-verify=false "docker://$ref" "oci:$sdest:bookworm"
load2=$(loadavg)
prio hyperfine --style basic --runs $((RUNS * 5)) --warmup 3 -N --export-json "$OUT/img-fetch-second.json" \
    -n img-fetch "$BIN/img-fetch --quiet --root $kroot $ref" \
    -n skopeo "skopeo copy --quiet --src-tls-verify=false docker://$ref oci:$sdest:bookworm" >&2
# A digest-pinned reference already present needs no network at all.
digest=$("$BIN/img-fetch" --quiet --root "$kroot" "$ref" | jq -r .digest)
pinned=127.0.0.1:$port/bench/bookworm@$digest
prio hyperfine --style basic --runs $((RUNS * 5)) --warmup 3 -N --export-json "$OUT/img-fetch-pinned.json" \
    -n img-fetch-pinned "$BIN/img-fetch --quiet --root $kroot $pinned" >&2

med() { jq -r --arg n "$2" '.results[] | select(.command == $n) | .median' "$OUT/$1"; }
ms() { awk -v s="$1" 'BEGIN { printf "%.1f ms", s * 1000 }'; }
f_k=$(med img-fetch-first.json img-fetch); f_s=$(med img-fetch-first.json skopeo)
f_y=$(med img-fetch-first.json "img-fetch --sync")
s_k=$(med img-fetch-second.json img-fetch); s_s=$(med img-fetch-second.json skopeo)
p_k=$(med img-fetch-pinned.json img-fetch-pinned)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

cat <<MD
## img-fetch: pull from a loopback registry

Image: \`debootstrap --variant=minbase bookworm\`, ${unpacked} MB unpacked, two gzip
layers, ${compressed} MB compressed, served by docker-registry on 127.0.0.1.
Priority boost for the registry and the measured commands (autogroup nice -15, both tools alike): $( [ "$PRIO" = 1 ] && echo on || echo off ).
Load average (1, 5, 15 min) before and after the first-pull runs: $load1 → $load2.
Machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo) RAM, $(uname -r).

| pull | img-fetch (median) | skopeo copy (median) | img-fetch / skopeo |
|---|---|---|---|
| first (empty store) | $(ms "$f_k") | $(ms "$f_s") | $(ratio "$f_k" "$f_s") |
| first, \`--sync\` (blobs on disk before exit) | $(ms "$f_y") | $(ms "$f_s") | $(ratio "$f_y" "$f_s") |
| second (image present, tag checked with one HEAD) | $(ms "$s_k") | $(ms "$s_s") | $(ratio "$s_k" "$s_s") |
| second, digest-pinned (no network) | $(ms "$p_k") | | |

Commands:

    img-fetch --quiet --root ROOT $ref
    img-fetch --sync --quiet --root ROOT $ref
    skopeo copy --quiet --src-tls-verify=false docker://$ref oci:DIR:bookworm
    img-fetch --quiet --root ROOT 127.0.0.1:PORT/bench/bookworm@sha256:…

By default img-fetch publishes the blobs under a flushed intent and a detached settler flushes them
just after it exits (see kist-state(5), UNSETTLED WRITES): after a crash in that window the next kist
tool finds the intent and re-checks the blobs. skopeo flushes each blob before it exits (strace:
fsync and fdatasync), as \`img-fetch --sync\` does, so the \`--sync\` row is the like-for-like one.

Goal: first pull at most half of skopeo's time (ratio ≤ 0.50); second pull under 20 ms.
Raw data: $OUT/img-fetch-{first,second,pinned}.json.
MD
