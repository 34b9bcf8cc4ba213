#!/usr/bin/env bash
# bench/ctr-spawn.sh: container start-to-exit time of `ctr-spawn --rm` running
# `true` from an unpacked busybox image, side by side in one run with
# `runc run` and `crun run` of an equivalent bundle (the config.json
# ctr-spawn wrote, over a plain copy of the same root) and `docker run --rm`
# (a dockerd started for the run on a temporary data root, stopped after).
#
# crun 1.8 refuses this host's hybrid cgroup layout, so crun runs inside
# `unshare -m` with cgroup2 mounted on /sys/fs/cgroup and without
# linux.resources in its config; ctr-spawn is measured again in that same
# environment so that the crun comparison is like for like.
#
# Prints a markdown section on stdout; progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=${KIST_BIN_DIR:-$PWD/target/release}
OUT=${BENCH_OUT:-/tmp/kist-bench}
RUNS=${BENCH_RUNS:-50}
mkdir -p "$OUT"
need hyperfine hyperfine
need runc runc
need crun crun
need dockerd docker.io
need jq jq
need python3 python3
[ -x "$BIN/ctr-spawn" ] || { echo "ctr-spawn not built in $BIN (cargo build --release -p ctr-spawn)" >&2; exit 1; }

# apt-get above needed the host's network; the rest runs in a private
# namespace of its own.
bench_private_netns "$0" "$@"
tmp=$(mktemp -d /tmp/kist-bench-spawn.XXXXXX)
cleanup() {
    stop_dockerd
    umount -R "$tmp/docker" 2>/dev/null || true
    # runc removes its own cgroup but not the parent this script named.
    for d in /sys/fs/cgroup/*/kist-bench /sys/fs/cgroup/kist-bench; do rmdir "$d/runc" "$d" 2>/dev/null || true; done
    rm -rf "${tmp:?}"/*
    bench_fs_cleanup "$tmp"
    rm -rf "$tmp"
}
trap cleanup EXIT
[ -n "${BENCH_KEEP:-}" ] && trap - EXIT
# Everything (kist's root, the bundles, docker's data root) on one file
# system: by default a fresh journalled ext4 (bench_fs in bench/lib.sh).
bench_fs "$tmp"

# The unpacked image: one snapshot holding busybox-static and its applets.
root=$tmp/root
bench_busybox_snapshot "$root" "$tmp/record.json"
snap=$SNAP

# The equivalent bundle: the config.json ctr-spawn writes, over a copy.
"$BIN/ctr-spawn" --root "$root" --cidfile "$tmp/cid" -- true < "$tmp/record.json"
cdir=$root/containers/$(cat "$tmp/cid")
bundle=$tmp/bundle
crun_bundle=$tmp/crun-bundle
mkdir -p "$bundle" "$crun_bundle"
cp -a "$snap" "$bundle/rootfs"
cp "$cdir/hosts" "$cdir/hostname" "$cdir/resolv.conf" "$bundle/"
# python3, not jq: jq turns the u64 "unlimited" rlimits into floats runc rejects.
python3 - "$cdir/config.json" "$bundle" "$crun_bundle" <<'PY'
import json, sys
src, bundle, crun = sys.argv[1:4]
c = json.load(open(src))
c["root"] = {"path": bundle + "/rootfs", "readonly": False}
for m in c["mounts"]:
    name = m.get("source", "").rsplit("/", 1)[-1]
    if m.get("type") == "bind" and name in ("hosts", "hostname", "resolv.conf"):
        m["source"] = bundle + "/" + name
c["linux"]["cgroupsPath"] = "/kist-bench/runc"
json.dump(c, open(bundle + "/config.json", "w"))
del c["linux"]["resources"]
del c["linux"]["cgroupsPath"]
json.dump(c, open(crun + "/config.json", "w"))
PY
rm -rf "$cdir"

# dockerd for the run, on its own data root, socket and exec root.
echo "ctr-spawn bench: starting dockerd" >&2
start_dockerd "$tmp"
sock=$DOCKER_SOCK
tar -C "$snap" -c . | docker -H "$sock" import - kist-bench/busybox:latest >/dev/null
docker -H "$sock" run --rm kist-bench/busybox:latest true

echo "ctr-spawn bench: host (ctr-spawn, runc, docker)" >&2
hyperfine --warmup 5 --runs "$RUNS" --export-json "$OUT/ctr-spawn-host.json" \
    -n ctr-spawn "$BIN/ctr-spawn --root $root --rm -- true < $tmp/record.json" \
    -n ctr-spawn-none "$BIN/ctr-spawn --root $root --rm --network none -- true < $tmp/record.json" \
    -n runc "runc --root $tmp/runc run -b $bundle kist-bench-runc" \
    -n docker "docker -H $sock run --rm kist-bench/busybox:latest true" >&2

echo "ctr-spawn bench: unshare -m + cgroup2 (ctr-spawn, crun)" >&2
unshare -m bash -c "mount -t cgroup2 none /sys/fs/cgroup && \
    hyperfine --warmup 5 --runs $RUNS --export-json $OUT/ctr-spawn-cg2.json \
      -n ctr-spawn '$BIN/ctr-spawn --root $root --rm --network none -- true < $tmp/record.json' \
      -n crun 'crun --root $tmp/crun run -b $crun_bundle kist-bench-crun'" >&2

median() { hyperfine_median "$1" "$2"; }
ks=$(median "$OUT/ctr-spawn-host.json" ctr-spawn)
kn=$(median "$OUT/ctr-spawn-host.json" ctr-spawn-none)
rs=$(median "$OUT/ctr-spawn-host.json" runc)
ds=$(median "$OUT/ctr-spawn-host.json" docker)
k2=$(median "$OUT/ctr-spawn-cg2.json" ctr-spawn)
cs=$(median "$OUT/ctr-spawn-cg2.json" crun)

cat <<EOF
## ctr-spawn: start, run \`true\`, tear down

\`ctr-spawn --rm -- true\` from an unpacked busybox image (the snapshot record on stdin; overlay root, Docker's
default namespaces, mounts, capabilities, seccomp profile, cgroup), against \`runc run\` and \`crun run\` of the
same config.json over a plain copy of the root (no overlay to mount), and \`docker run --rm\` (docker $(docker -H "$sock" version --format '{{.Server.Version}}'),
its own dockerd on a temporary data root). hyperfine, $RUNS runs after 5 warm-ups, one run of this script.
Everything on $BENCH_FSDESC; load average at the end: $(loadavg).

crun refuses this host's hybrid cgroup layout: it was measured inside \`unshare -m\` with cgroup2 mounted on
/sys/fs/cgroup and without \`linux.resources\` in its config, and ctr-spawn was measured again in that same
environment for the comparison.

Like for like: docker's default is a bridge network, so the docker ratio uses ctr-spawn's default (bridge: a veth,
an address lease, a route); runc's and crun's config gives a new network namespace with nothing in it, so their
ratios use \`ctr-spawn --network none\`. The whole script runs in a private network namespace.

| command | median | ctr-spawn / peer |
|---|---|---|
| \`ctr-spawn --rm -- true\` (bridge, the default) | $(ms "$ks") | 1 |
| \`docker run --rm\` (bridge, the default) | $(ms "$ds") | $(ratio "$ks" "$ds") |
| \`ctr-spawn --rm --network none -- true\` | $(ms "$kn") | 1 |
| \`runc run\` (a new, empty network namespace) | $(ms "$rs") | $(ratio "$kn" "$rs") |
| \`ctr-spawn --rm --network none -- true\` (unshare -m, cgroup2) | $(ms "$k2") | 1 |
| \`crun run\` (unshare -m, cgroup2, no resources) | $(ms "$cs") | $(ratio "$k2" "$cs") |

Goal: below crun's median, at most 1/20 (0.05) of docker's.

EOF
