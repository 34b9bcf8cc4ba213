#!/bin/bash
# Captures what a default `docker run` container sees, as reference values
# for ctr-spawn's conformance test. Run as root on a host with docker.io;
# starts its own dockerd on a temporary data root and stops it (by pid).
# Usage: capture.sh OCI_LAYOUT_DIR [OUT_DIR]
#   OCI_LAYOUT_DIR: the busybox fixture built by kist_tests::image::busybox()
#                   (e.g. target/debug/kist-fixtures/busybox-v1)
set -euo pipefail
layout=$1
out=${2:-$(dirname "$0")}
tmp=$(mktemp -d /tmp/kist-docker-probe.XXXXXX)
sock=unix://$tmp/d.sock
dockerd --data-root "$tmp/data" --exec-root "$tmp/exec" --pidfile "$tmp/d.pid" -H "$sock" \
    >"$tmp/dockerd.log" 2>&1 &
dpid=$!
cleanup() { kill "$dpid" 2>/dev/null || true; wait "$dpid" 2>/dev/null || true; umount -R "$tmp/data" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
d() { docker -H "$sock" "$@"; }
for _ in $(seq 100); do d info >/dev/null 2>&1 && break; sleep 0.2; done
skopeo copy --quiet "oci:$layout:latest" "docker-archive:$tmp/bb.tar:kist-probe/busybox:latest"
d load -q -i "$tmp/bb.tar" >/dev/null
run() { d run --rm kist-probe/busybox:latest "$@"; }
run sh -c "grep -E 'Cap|NoNewPrivs|Seccomp' /proc/self/status" > "$out/status.txt"
run cat /proc/self/mountinfo > "$out/mountinfo.txt"
run ls -l /dev > "$out/dev.txt"
run id > "$out/id.txt"
run pwd > "$out/pwd.txt"
run env > "$out/env.txt"
run hostname > "$out/hostname.txt"
run cat /proc/self/limits > "$out/limits.txt"
run cat /etc/hosts > "$out/hosts.txt"
run cat /etc/resolv.conf > "$out/resolv.conf.txt"
run sh -c 'ls -l /dev/pts /dev/shm /dev/mqueue; stat -c "%n %a" /dev/shm /dev/mqueue /tmp' > "$out/dev-extra.txt"
run sh -c 'cat /proc/self/cgroup; ls /sys/fs/cgroup' > "$out/cgroup.txt"
{ d version --format 'docker {{.Server.Version}} (containerd {{range .Server.Components}}{{if eq .Name "containerd"}}{{.Version}}{{end}}{{end}}, runc {{range .Server.Components}}{{if eq .Name "runc"}}{{.Version}}{{end}}{{end}})'
  d info --format 'cgroup driver {{.CgroupDriver}}, cgroup v{{.CgroupVersion}}, storage {{.Driver}}, kernel {{.KernelVersion}}, seccomp {{.SecurityOptions}}'
  echo "host: $(uname -srm); dockerd limits: NOFILE $(awk '/open files/ {print $4"/"$5}' /proc/$dpid/limits)"
  date -u +"captured %Y-%m-%dT%H:%M:%SZ"; } > "$out/README.txt"
