#!/usr/bin/env bash
# bench/net.sh: start latency of a detached container with bridge
# networking and one published port, side by side in one run:
# `ctr-spawn -d -p 127.0.0.1:PORT:80` (kist0, veth, lease, nft DNAT, port
# reservation; returns once the container runs), `docker run -d -p
# 127.0.0.1:PORT:80` (a dockerd started for the run on a temporary data
# root, with its docker0 bridge and iptables inside this script's private
# network namespace) and `podman run -d -p 127.0.0.1:PORT:80` (temporary
# storage root; reported as n/a when it cannot start containers).
#
# Each start gets its own host port, so the runs are timed one by one
# (date +%s%N around the command) rather than with hyperfine, and the
# containers stay up until the end. Prints a markdown section on stdout;
# progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=${KIST_BIN_DIR:-$PWD/target/release}
OUT=${BENCH_OUT:-/tmp/kist-bench}
N=${BENCH_RUNS:-30}
mkdir -p "$OUT"
need dockerd docker.io
need podman podman
need nft nftables
need jq jq
for t in ctr-spawn ctr-monitor ctr-kill; do
    [ -x "$BIN/$t" ] || { echo "$t not built in $BIN (cargo build --release -p $t)" >&2; exit 1; }
done

# apt-get above needed the host's network; the rest runs in a private
# namespace of its own.
bench_private_netns "$0" "$@"
tmp=$(mktemp -d /tmp/kist-bench-net.XXXXXX)
root=$tmp/root
pargs=$(podman_args "$tmp")
cleanup() {
    # shellcheck disable=SC2046
    "$BIN/ctr-kill" --root "$root" --rm -f $(ls "$root/containers" 2>/dev/null) >/dev/null 2>&1 || true
    stop_dockerd
    # shellcheck disable=SC2086
    podman $pargs rm -f -a >/dev/null 2>&1 || true
    umount -R "$tmp/docker" "$tmp/podman" 2>/dev/null || true
    rm -rf "${tmp:?}"/*
    bench_fs_cleanup "$tmp"
    rm -rf "$tmp"
}
trap cleanup EXIT
# kist's root and docker's and podman's storage on one file system: by
# default a fresh journalled ext4 (bench_fs in bench/lib.sh).
bench_fs "$tmp"

bench_busybox_snapshot "$root" "$tmp/record.json"
snap=$SNAP

now() { date +%s%N; }
# timed NAME CMD...: appends the command's wall time in ms to $OUT/net-NAME.ms.
timed() {
    local name=$1 t0 t1
    shift
    t0=$(now)
    "$@" >/dev/null
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e6 }' >> "$OUT/net-$name.ms"
}
rm -f "$OUT"/net-*.ms

echo "net bench: kist ($N starts, one warm-up)" >&2
"$BIN/ctr-spawn" --root "$root" -d --network bridge -p 127.0.0.1:19999:80 -- sleep 1000 < "$tmp/record.json" >/dev/null
for i in $(seq "$N"); do
    timed kist "$BIN/ctr-spawn" --root "$root" -d --network bridge -p "127.0.0.1:$((20000 + i)):80" -- sleep 1000 < "$tmp/record.json"
done
# The same start without networking, to tell the network's share from the
# rest of a detached start.
for i in $(seq "$N"); do
    timed kist-none "$BIN/ctr-spawn" --root "$root" -d --network none -- sleep 1000 < "$tmp/record.json"
done
# It works: the published port answers (a listener in one container is
# enough to show the path; the timing runs only start `sleep`).
"$BIN/ctr-spawn" --root "$root" -d --network bridge -p 127.0.0.1:19998:80 -- sh -c 'echo ok > /i; exec httpd -f -p 80 -h /' < "$tmp/record.json" >/dev/null
sleep 0.3
check=$(busybox wget -q -O - http://127.0.0.1:19998/i 2>/dev/null || echo FAILED)
echo "net bench: kist published port answers: $check" >&2

echo "net bench: docker ($N starts, one warm-up)" >&2
start_dockerd "$tmp"
sock=$DOCKER_SOCK
tar -C "$snap" -c . | docker -H "$sock" import - kist-bench/busybox:latest >/dev/null
docker -H "$sock" run -d -p 127.0.0.1:29999:80 kist-bench/busybox:latest sleep 1000 >/dev/null
for i in $(seq "$N"); do
    timed docker docker -H "$sock" run -d -p "127.0.0.1:$((30000 + i)):80" kist-bench/busybox:latest sleep 1000
done
dver=$(docker -H "$sock" version --format '{{.Server.Version}}' 2>/dev/null || echo '?')
stop_dockerd

echo "net bench: podman ($N starts, one warm-up)" >&2
pnote=""
# shellcheck disable=SC2086
if tar -C "$snap" -c . | podman $pargs import - kist-bench/busybox:latest >/dev/null 2>"$tmp/podman.err" &&
    podman $pargs run -d $(podman_ulimits) -p 127.0.0.1:39999:80 kist-bench/busybox:latest sleep 1000 >/dev/null 2>>"$tmp/podman.err"; then
    for i in $(seq "$N"); do
        # shellcheck disable=SC2086
        timed podman podman $pargs run -d $(podman_ulimits) -p "127.0.0.1:$((40000 + i)):80" kist-bench/busybox:latest sleep 1000 || break
    done
else
    pnote=$(tail -1 "$tmp/podman.err" | cut -c1-200)
    echo "net bench: podman could not start a container: $pnote" >&2
fi

med() { if [ -s "$OUT/net-$1.ms" ]; then median_of < "$OUT/net-$1.ms"; else echo n/a; fi; }
k=$(med kist)
kn=$(med kist-none)
d=$(med docker)
p=$(med podman)
fmt() { [ "$1" = n/a ] && echo n/a || ms "$1"; }
load=$(cut -d' ' -f1-3 /proc/loadavg)
cat <<MD
## Start latency with bridge networking and a published port

$N detached starts each of \`sleep 1000\` from the same busybox root with one published port (a new
127.0.0.1 host port per start), timed one by one after a warm-up; the containers stay up until the end.
kist: \`ctr-spawn -d --network bridge -p 127.0.0.1:PORT:80\` (release build: veth into the new namespace,
lease, nftables DNAT element, port reservation; returns once the container runs). docker: \`docker run -d -p
127.0.0.1:PORT:80\` (docker $dver, its own dockerd with docker0, iptables and docker-proxy). podman: \`podman
run -d $(podman_ulimits) -p 127.0.0.1:PORT:80\` (podman $(podman --version 2>/dev/null | awk '{print $3}'), vfs, cgroupfs, runc)${pnote:+: could not start a container here (\`$pnote\`)}.
All in one private network namespace, on $BENCH_FSDESC; load average at the end: $load. One run of this script.
Published port check (kist): $check.

| start | median | kist / peer |
|---|---|---|
| \`ctr-spawn -d -p\` | $(fmt "$k") | 1 |
| \`ctr-spawn -d --network none\` (no networking, for reference) | $(fmt "$kn") | $(ratio "$k" "$kn") |
| \`docker run -d -p\` | $(fmt "$d") | $(ratio "$k" "$d") |
| \`podman run -d -p\` | $(fmt "$p") | $(ratio "$k" "$p") |

Goal: kist at most 1/10 (0.1) of docker's median.

MD
