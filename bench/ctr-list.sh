#!/usr/bin/env bash
# bench/ctr-list.sh: listing 1000 created containers, `ctr-list -a` against
# `docker ps -a`, side by side in one run (hyperfine).
#
# kist's 1000 containers: `ctr-spawn --create` is used when ctr-spawn has
# it; until then the script writes the 1000 containers/<id>/state.json
# files (status "created", the fields ctr-spawn writes) and names/<name>
# claims directly, which is exactly what ctr-list reads.
# docker's 1000: `docker create` from a busybox image that was built as an
# OCI layout (umoci, from the host's busybox-static), copied with
# `skopeo copy oci:… docker-archive:…` and `docker load`ed into a dockerd
# started for the run on a temporary data root, exec root and socket, and
# stopped (by pid) afterwards.
#
# Prints a markdown section on stdout; progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=${KIST_BIN_DIR:-$PWD/target/release}
OUT=${BENCH_OUT:-/tmp/kist-bench}
RUNS=${BENCH_RUNS:-20}
N=${BENCH_CONTAINERS:-1000}
mkdir -p "$OUT"
need hyperfine hyperfine
need dockerd docker.io
need skopeo skopeo
need umoci umoci
need jq jq
[ -x /bin/busybox ] || need busybox busybox-static
[ -x "$BIN/ctr-list" ] || { echo "ctr-list not built in $BIN (cargo build --release -p ctr-list)" >&2; exit 1; }

# apt-get above needed the host's network; the rest runs in a private
# namespace of its own.
bench_private_netns "$0" "$@"
tmp=$(mktemp -d /tmp/kist-bench-list.XXXXXX)
cleanup() {
    stop_dockerd
    umount -R "$tmp/docker" 2>/dev/null || true
    umount -R "$tmp/exec" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# --- kist: N created containers --------------------------------------------
root=$tmp/kist
mkdir -p "$root/containers" "$root/names" "$root/locks" "$root/snapshots"

echo "ctr-list bench: $N kist containers (ctr-spawn --create)" >&2
bench_busybox_snapshot "$root" "$tmp/record.json"
for i in $(seq "$N"); do
    "$BIN/ctr-spawn" --root "$root" --create --name "c$i" -- sleep 1000 < "$tmp/record.json" >/dev/null
done
count=$("$BIN/ctr-list" --root "$root" -aq | wc -l)
[ "$count" -eq "$N" ] || { echo "ctr-list lists $count containers, expected $N" >&2; exit 1; }

# --- docker: N created containers ------------------------------------------
echo "ctr-list bench: busybox OCI layout -> docker-archive" >&2
bench_docker_archive "$tmp"

echo "ctr-list bench: starting dockerd" >&2
start_dockerd "$tmp" --bridge none --iptables=false
sock=$DOCKER_SOCK
docker -H "$sock" load -q -i "$tmp/busybox.tar" >/dev/null
echo "ctr-list bench: $N docker containers (docker create)" >&2
seq "$N" | xargs -P 4 -I{} docker -H "$sock" create --name d{} kist-bench/busybox:latest sleep 1000 >/dev/null
dcount=$(docker -H "$sock" ps -aq | wc -l)
[ "$dcount" -eq "$N" ] || { echo "docker lists $dcount containers, expected $N" >&2; exit 1; }

echo "ctr-list bench: hyperfine" >&2
hyperfine --warmup 3 --runs "$RUNS" --export-json "$OUT/ctr-list.json" \
    -n "ctr-list -a" "$BIN/ctr-list --root $root -a --format json" \
    -n "ctr-list -a --format table" "$BIN/ctr-list --root $root -a --format table" \
    -n "docker ps -a" "docker -H $sock ps -a" >&2

median() { hyperfine_median "$OUT/ctr-list.json" "$1"; }
kj=$(median "ctr-list -a")
kt=$(median "ctr-list -a --format table")
dp=$(median "docker ps -a")
dver=$(docker -H "$sock" version --format '{{.Server.Version}}')

cat <<EOF
## ctr-list: list $N created containers

\`ctr-list -a\` over $N created containers (kist: ctr-spawn --create) against \`docker ps -a\` over $N containers made with
\`docker create\` (docker $dver, its own dockerd on a temporary data root; the client's time includes the API
round trip to the daemon, which is how a user meets it). hyperfine, $RUNS runs after 3 warm-ups, one run of
this script.

| command | median | ctr-list / docker |
|---|---|---|
| \`ctr-list -a\` (JSON Lines) | $(ms "$kj") | $(ratio "$kj" "$dp") |
| \`ctr-list -a --format table\` | $(ms "$kt") | $(ratio "$kt" "$dp") |
| \`docker ps -a\` | $(ms "$dp") | 1 |

Goal: at most 1/10 (0.1) of docker's median.

EOF
