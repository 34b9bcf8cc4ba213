#!/usr/bin/env bash
# bench/monitor.sh: memory of the per-container monitor of a detached
# container, side by side in one run: kist's monitor (`ctr-spawn -d`),
# containerd-shim-runc-v2 (`docker run -d`, a dockerd started for the run on
# a temporary data root) and conmon (`podman run -d`, on a temporary storage
# root). N containers each (`sleep 1000` from the same busybox root), then
# the median over the N monitor processes of VmRSS and of Pss (smaps_rollup:
# shared pages counted once per sharer, what a container really costs).
#
# Prints a markdown section on stdout; progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=${KIST_BIN_DIR:-$PWD/target/release}
OUT=${BENCH_OUT:-/tmp/kist-bench}
N=${BENCH_CONTAINERS:-10}
mkdir -p "$OUT"
need dockerd docker.io
need podman podman
need jq jq
for t in ctr-spawn ctr-monitor ctr-kill; do [ -x "$BIN/$t" ] || { echo "$t not built in $BIN (cargo build --release -p $t)" >&2; exit 1; }; done

# apt-get above needed the host's network; the rest runs in a private
# namespace of its own.
bench_private_netns "$0" "$@"
tmp=$(mktemp -d /tmp/kist-bench-mon.XXXXXX)
root=$tmp/root
cleanup() {
    [ -x "$BIN/ctr-kill" ] && "$BIN/ctr-kill" --root "$root" --rm -f $(ls "$root/containers" 2>/dev/null) >/dev/null 2>&1 || true
    stop_dockerd
    podman $pargs rm -f -a >/dev/null 2>&1 || true
    umount -R "$tmp/docker" "$tmp/podman" 2>/dev/null || true
    rm -rf "$tmp"
}
pargs=$(podman_args "$tmp")
trap cleanup EXIT

bench_busybox_snapshot "$root" "$tmp/record.json"
snap=$SNAP

# kB of a process: VmRSS, Pss.
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
pss() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
measure() { # name pids...
    local name=$1; shift
    for p in "$@"; do rss "$p"; done | median_of > "$OUT/monitor-$name.rss"
    for p in "$@"; do pss "$p"; done | median_of > "$OUT/monitor-$name.pss"
}

echo "monitor bench: kist ($N containers)" >&2
for i in $(seq "$N"); do "$BIN/ctr-spawn" --root "$root" -d --name "k$i" -- sleep 1000 < "$tmp/record.json" >/dev/null; done
sleep 1
kpids=$(for d in "$root"/containers/*/; do jq -r .ownerPid "$d/state.json"; done)
measure kist $kpids

echo "monitor bench: docker ($N containers)" >&2
start_dockerd "$tmp"
sock=$DOCKER_SOCK
tar -C "$snap" -c . | docker -H "$sock" import - kist-bench/busybox:latest >/dev/null
for i in $(seq "$N"); do docker -H "$sock" run -d --name "d$i" kist-bench/busybox:latest sleep 1000 >/dev/null; done
sleep 1
spids=$(for i in $(seq "$N"); do p=$(docker -H "$sock" inspect -f '{{.State.Pid}}' "d$i"); awk '{print $4}' "/proc/$p/stat"; done | sort -u)
measure shim $spids

echo "monitor bench: podman ($N containers)" >&2
ppids=
if tar -C "$snap" -c . | podman $pargs import - kist-bench/busybox:latest >/dev/null 2>"$tmp/podman.err"; then
    for i in $(seq "$N"); do podman $pargs run -d --network none $(podman_ulimits) --name "p$i" kist-bench/busybox:latest sleep 1000 >/dev/null 2>>"$tmp/podman.err" || break; done
    sleep 1
    ppids=$(pgrep -x conmon | while read -r p; do grep -q "$tmp/podman" "/proc/$p/cmdline" 2>/dev/null && echo "$p"; done || true)
fi
if [ -n "$ppids" ]; then measure conmon $ppids; else echo n/a > "$OUT/monitor-conmon.rss"; echo n/a > "$OUT/monitor-conmon.pss"; tail -3 "$tmp/podman.err" >&2 || true; fi

v() { cat "$OUT/monitor-$1.$2"; }
cat <<MD
## Monitor memory per detached container

$N containers \`sleep 1000\` from the same busybox root per runtime, started one after another, then the median
over the $N monitor processes: kist's monitor (ctr-monitor, which \`ctr-spawn -d\` hands each container to; release build, bridge network), containerd-shim-runc-v2
(\`docker run -d\`, docker $(docker -H "$sock" version --format '{{.Server.Version}}' 2>/dev/null || echo '?')), conmon
(\`podman run -d --network none $(podman_ulimits)\`, podman $(podman --version 2>/dev/null | awk '{print $3}'), vfs storage, cgroupfs,
runc; the ulimits because podman's defaults need CAP_SYS_RESOURCE, which this host lacks). VmRSS counts shared
pages fully; Pss shares them out. One run of this script.

| monitor | VmRSS median | Pss median | kist / peer (Pss) |
|---|---|---|---|
| kist monitor | $(v kist rss) kB | $(v kist pss) kB | 1 |
| containerd-shim-runc-v2 | $(v shim rss) kB | $(v shim pss) kB | $(ratio "$(v kist pss)" "$(v shim pss)") |
| conmon | $(v conmon rss) kB | $(v conmon pss) kB | $(ratio "$(v kist pss)" "$(v conmon pss)") |

Goal: kist's monitor at most conmon's.

MD
