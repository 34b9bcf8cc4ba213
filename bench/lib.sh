# shellcheck shell=bash
# bench/lib.sh: what the bench scripts share, sourced by each of them.
# Every bench runs in a private network namespace of its own (loopback up),
# so that kist's bridge and nftables table, dockerd's bridge and iptables
# rules and podman's networks never touch the host's interfaces or firewall.

# Re-executes the calling script inside `unshare --net` unless it already
# runs in one made for it. Call as: bench_private_netns "$0" "$@", after
# what needs the host's network (apt-get, debootstrap) and before the
# script creates anything (the exec runs no EXIT trap): the re-executed
# script passes those steps again, finding them done.
bench_private_netns() {
    [ -n "${KIST_BENCH_NETNS:-}" ] && return 0
    local script=$1
    shift
    exec unshare --net -- env KIST_BENCH_NETNS=1 bash -c 'ip link set lo up && exec bash "$0" "$@"' "$script" "$@"
}

# need COMMAND PACKAGE: installs PACKAGE with apt-get when COMMAND is missing.
need() {
    command -v "$1" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }
}

# Median of the numbers on stdin, one per line.
median_of() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# hyperfine_median FILE NAME: the median of command NAME in a hyperfine
# --export-json FILE, in milliseconds.
hyperfine_median() { jq -r --arg n "$2" '.results[] | select(.command == $n) | .median * 1000' "$1"; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == "n/a" || b == 0) print "n/a"; else printf "%.3f", a / b }'; }
ms() { awk -v a="$1" 'BEGIN { printf "%.2f ms", a }'; }

# start_dockerd DIR [DOCKERD ARGS...]: a dockerd of the bench's own, on
# data root, exec root, pidfile and socket under DIR (in the bench's network
# namespace, so its default bridge and iptables stay there). Sets
# DOCKER_SOCK (for docker -H) and DOCKERD_PID; stop it with stop_dockerd.
start_dockerd() {
    local dir=$1
    shift
    DOCKER_SOCK=unix://$dir/d.sock
    dockerd --data-root "$dir/docker" --exec-root "$dir/exec" --pidfile "$dir/d.pid" -H "$DOCKER_SOCK" "$@" \
        >"$dir/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 150); do docker -H "$DOCKER_SOCK" info >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "bench: dockerd did not come up; its log:" >&2
    tail -5 "$dir/dockerd.log" >&2
    return 1
}

# stop_dockerd: removes its containers, stops it, unmounts its data root.
stop_dockerd() {
    [ -n "${DOCKERD_PID:-}" ] || return 0
    # shellcheck disable=SC2046
    docker -H "$DOCKER_SOCK" rm -f $(docker -H "$DOCKER_SOCK" ps -aq 2>/dev/null) >/dev/null 2>&1 || true
    kill "$DOCKERD_PID" 2>/dev/null || true
    wait "$DOCKERD_PID" 2>/dev/null || true
    DOCKERD_PID=
}

# podman_args DIR: podman's global options for a storage root of the bench's
# own. runc, because crun 1.8 refuses this host's hybrid cgroup layout.
podman_args() {
    echo "--root $1/podman --runroot $1/podman-run --storage-driver vfs --cgroup-manager cgroupfs --events-backend file --runtime runc"
}

# podman_ulimits: `--ulimit` options podman can apply without
# CAP_SYS_RESOURCE. By default podman asks for nofile 1048576, and it lowers
# its own nproc limit to 32768 before it runs the runtime, so both are
# capped: nofile at the current hard limit, nproc at min(hard, 32768).
podman_ulimits() {
    local n u
    n=$(ulimit -Hn)
    [ "$n" = unlimited ] && n=1048576
    [ "$n" -gt 1048576 ] && n=1048576
    u=$(ulimit -Hu)
    [ "$u" = unlimited ] && u=32768
    [ "$u" -gt 32768 ] && u=32768
    echo "--ulimit nofile=$n:$n --ulimit nproc=$u:$u"
}

# bench_busybox_snapshot ROOT RECORD: an unpacked image in state root ROOT,
# one snapshot holding busybox-static and its applets, and its `snapshot`
# record (reference docker.io/kist-bench/busybox:latest) in file RECORD,
# for `ctr-spawn < RECORD`. Sets SNAP to the snapshot's directory.
bench_busybox_snapshot() {
    local root=$1 record=$2 id a
    SNAP=$root/snapshots/$(printf 'kist-bench-busybox' | sha256sum | cut -d' ' -f1)
    mkdir -p "$SNAP/bin" "$SNAP/etc" "$SNAP/root" "$SNAP/tmp" "$SNAP/proc" "$SNAP/sys" "$SNAP/dev"
    chmod 1777 "$SNAP/tmp"
    cp /bin/busybox "$SNAP/bin/"
    for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$SNAP/bin/$a"; done
    printf 'root:x:0:0:root:/root:/bin/sh\n' > "$SNAP/etc/passwd"
    printf 'root:x:0:\n' > "$SNAP/etc/group"
    id=sha256:$(printf 'kist-bench-image' | sha256sum | cut -d' ' -f1)
    printf '{"type":"snapshot","schemaVersion":1,"id":"%s","reference":"docker.io/kist-bench/busybox:latest","snapshots":["%s"],"chainIds":["%s"],"platform":{"os":"linux","architecture":"amd64"},"config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"store":"%s"}\n' \
        "$id" "$SNAP" "$id" "$root" > "$record"
}

# bench_docker_archive DIR: the same busybox as an image for `docker load`,
# built without a registry (umoci makes an OCI layout, skopeo converts it):
# DIR/busybox.tar, tagged kist-bench/busybox:latest.
bench_docker_archive() {
    local dir=$1 a
    umoci init --layout "$dir/oci" >/dev/null
    umoci new --image "$dir/oci:latest" >/dev/null
    umoci unpack --rootless --image "$dir/oci:latest" "$dir/bundle" >/dev/null 2>&1 ||
        umoci unpack --image "$dir/oci:latest" "$dir/bundle" >/dev/null
    mkdir -p "$dir/bundle/rootfs/bin"
    cp /bin/busybox "$dir/bundle/rootfs/bin/"
    for a in sh sleep true; do ln -sf busybox "$dir/bundle/rootfs/bin/$a"; done
    umoci repack --image "$dir/oci:latest" "$dir/bundle" >/dev/null
    umoci config --image "$dir/oci:latest" --config.cmd sh >/dev/null
    skopeo copy -q "oci:$dir/oci:latest" "docker-archive:$dir/busybox.tar:kist-bench/busybox:latest" >/dev/null
}

# prio CMD...: runs CMD in a session of its own at autogroup priority -15
# when $PRIO is 1 and we are root, so that the measured commands (kist's and
# the peers' alike) are not starved by whatever else shares the CPUs;
# otherwise runs it plainly.
prio() {
    if [ "$PRIO" = 1 ] && [ "$(id -u)" = 0 ] && [ -w /proc/self/autogroup ]; then
        setsid bash -c 'echo -15 > /proc/self/autogroup 2>/dev/null; exec "$@"' prio "$@"
    else
        "$@"
    fi
}
# prio_exec CMD...: the same, replacing the current (background) shell, so that $! is CMD's pid.
prio_exec() {
    if [ "$PRIO" = 1 ] && [ "$(id -u)" = 0 ] && [ -w /proc/self/autogroup ]; then
        exec setsid bash -c 'echo -15 > /proc/self/autogroup 2>/dev/null; exec "$@"' prio "$@"
    else
        exec "$@"
    fi
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# bench_fs DIR [SIZE]: makes DIR (an empty directory) the file system the bench
# writes to, by $BENCH_FS: "loop" (the default) mounts a fresh ext4 (mkfs
# defaults, with a journal) on a loop device with direct I/O, backed by
# DIR.img (SIZE, default 8G, sparse) on the host disk; "host" leaves DIR
# on the host's file system.
# This machine's root is ext4 *without* a journal, where every inode
# created within seconds of many deletions scans the recently deleted ones
# (ext4 recently_deleted(): 16 % of a `ctr-spawn --rm` run's CPU, growing
# with the run count, and docker's overlay2 pays it as well); see the
# img-unpack bench. Sets BENCH_FSDESC; bench_fs_cleanup DIR undoes it
# (call it after everything under DIR is unmounted and removed).
bench_fs() {
    local dir=$1 size=${2:-8G} dev
    BENCH_FSDESC="the host's $(findmnt -no FSTYPE -T "$dir") file system under /tmp"
    [ "${BENCH_FS:-loop}" = loop ] || return 0
    truncate -s "$size" "$dir.img"
    mkfs.ext4 -q -F "$dir.img"
    if dev=$(losetup --direct-io=on -f --show "$dir.img" 2>/dev/null) && mount "$dev" "$dir"; then
        BENCH_FSDESC="a fresh ext4 file system (mkfs.ext4 defaults, journal) on a loop device with direct I/O, backed by a file on the host disk"
    else
        echo "bench: no loop device, measuring on the host file system" >&2
        [ -n "${dev:-}" ] && losetup -d "$dev" 2>/dev/null
        rm -f "$dir.img"
    fi
}
bench_fs_cleanup() {
    local dir=$1 dev
    if dev=$(findmnt -no SOURCE --mountpoint "$dir" 2>/dev/null) && [ -n "$dev" ]; then
        umount "$dir" 2>/dev/null || umount -l "$dir"
        losetup -d "$dev" 2>/dev/null || true
    fi
    rm -f "$dir.img"
}
