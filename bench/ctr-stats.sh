#!/usr/bin/env bash
# bench/ctr-stats.sh: one sample of 50 running containers, `ctr-stats
# --no-stream` against `docker stats --no-stream`, side by side in one run
# (hyperfine).
#
# kist's 50: attached `ctr-spawn --name kN -- sleep 1000` in the background
# (the detached monitor does not exist yet), from a busybox snapshot made
# from the host's busybox-static; killed by their init pids afterwards.
# docker's 50: `docker run -d --network none` of the same busybox, built as
# an OCI layout (umoci), copied with skopeo to a docker-archive and loaded
# into a dockerd started for the run on a temporary data root, exec root and
# socket, and stopped (by pid) afterwards.
#
# $KIST_BIN_DIR (default target/release) holds ctr-stats; $KIST_SPAWN_BIN
# (default $KIST_BIN_DIR/ctr-spawn) starts the containers.
# Prints a markdown section on stdout; progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=${KIST_BIN_DIR:-$PWD/target/release}
SPAWN=${KIST_SPAWN_BIN:-$BIN/ctr-spawn}
OUT=${BENCH_OUT:-/tmp/kist-bench}
RUNS=${BENCH_RUNS:-10}
N=${BENCH_CONTAINERS:-50}
mkdir -p "$OUT"
need hyperfine hyperfine
need dockerd docker.io
need skopeo skopeo
need umoci umoci
need jq jq
[ -x /bin/busybox ] || need busybox busybox-static
[ -x "$BIN/ctr-stats" ] || { echo "ctr-stats not built in $BIN (cargo build --release -p ctr-stats)" >&2; exit 1; }
[ -x "$SPAWN" ] || { echo "ctr-spawn not found at $SPAWN" >&2; exit 1; }

# apt-get above needed the host's network; the rest runs in a private
# namespace of its own.
bench_private_netns "$0" "$@"
tmp=$(mktemp -d /tmp/kist-bench-stats.XXXXXX)
root=$tmp/kist
spawn_pids=()
cleanup() {
    for s in "$root"/containers/*/state.json; do
        [ -f "$s" ] || continue
        p=$(jq -r '.pid // empty' "$s")
        [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true
    done
    for p in "${spawn_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    stop_dockerd
    umount -R "$tmp/docker" 2>/dev/null || true
    umount -R "$tmp/exec" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# --- kist: N running containers ---------------------------------------------
mkdir -p "$root/snapshots"
bench_busybox_snapshot "$root" "$tmp/record.json"
echo "ctr-stats bench: starting $N kist containers" >&2
for i in $(seq "$N"); do
    "$SPAWN" --root "$root" --name "k$i" -- sleep 1000 < "$tmp/record.json" >/dev/null 2>"$tmp/spawn-$i.log" &
    spawn_pids+=($!)
done
for _ in $(seq 300); do
    c=$("$BIN/ctr-stats" --root "$root" --no-stream --format json | wc -l)
    [ "$c" -eq "$N" ] && break
    sleep 0.2
done
[ "$c" -eq "$N" ] || { echo "ctr-stats sees $c running containers, expected $N" >&2; exit 1; }

# --- docker: N running containers -------------------------------------------
echo "ctr-stats bench: busybox OCI layout -> docker-archive" >&2
bench_docker_archive "$tmp"

echo "ctr-stats bench: starting dockerd" >&2
start_dockerd "$tmp" --bridge none --iptables=false
sock=$DOCKER_SOCK
docker -H "$sock" load -q -i "$tmp/busybox.tar" >/dev/null
echo "ctr-stats bench: starting $N docker containers" >&2
seq "$N" | xargs -P 4 -I{} docker -H "$sock" run -d --network none --name d{} kist-bench/busybox:latest sleep 1000 >/dev/null
dcount=$(docker -H "$sock" ps -q | wc -l)
[ "$dcount" -eq "$N" ] || { echo "docker runs $dcount containers, expected $N" >&2; exit 1; }

echo "ctr-stats bench: hyperfine" >&2
hyperfine --warmup 1 --runs "$RUNS" --export-json "$OUT/ctr-stats.json" \
    -n "ctr-stats --no-stream" "$BIN/ctr-stats --root $root --no-stream --format json" \
    -n "ctr-stats --no-stream --format table" "$BIN/ctr-stats --root $root --no-stream --format table" \
    -n "docker stats --no-stream" "docker -H $sock stats --no-stream" >&2

median() { hyperfine_median "$OUT/ctr-stats.json" "$1"; }
kj=$(median "ctr-stats --no-stream")
kt=$(median "ctr-stats --no-stream --format table")
dp=$(median "docker stats --no-stream")
ms() { awk -v a="$1" 'BEGIN { printf "%.1f ms", a }'; }
dver=$(docker -H "$sock" version --format '{{.Server.Version}}')

cat <<EOF
## ctr-stats: one sample of $N running containers

\`ctr-stats --no-stream\` over $N running kist containers (attached ctr-spawn, \`sleep 1000\`) against
\`docker stats --no-stream\` over $N \`docker run -d --network none\` containers of the same busybox (docker
$dver, its own dockerd on a temporary data root). Both need two readings for CPU %: ctr-stats takes them
100 ms apart (one sleep for all containers), docker primes for about two seconds. hyperfine, $RUNS runs after
one warm-up, one run of this script.

| command | median | ctr-stats / docker |
|---|---|---|
| \`ctr-stats --no-stream\` (JSON Lines) | $(ms "$kj") | $(ratio "$kj" "$dp") |
| \`ctr-stats --no-stream --format table\` | $(ms "$kt") | $(ratio "$kt" "$dp") |
| \`docker stats --no-stream\` | $(ms "$dp") | 1 |

Goal: at most 1/20 (0.05) of docker's median.

EOF
