#!/bin/sh
# make demo: the main story of kist on a fresh machine, printed as a person
# would type it. Builds a small image from the host's busybox-static with
# umoci, serves it from Debian's docker-registry on loopback, and plays the
# story: pull, unpack, run attached, run detached, exec, cp both ways,
# stats, logs, stop, rm, first with the tools and then with the `kist`
# wrapper's Docker verbs (with a published port once ctr-spawn has -p).
set -eu

BIN=${KIST_BIN_DIR:-$(pwd)/target/release}
PATH=$BIN:$PATH
KIST_SCRIPT="$(pwd)/tools/kist/kist"
kist() { sh "$KIST_SCRIPT" "$@"; }
export KIST_BIN_DIR="$BIN"

# With bridge networking the demo publishes a port: it then runs in a
# private network namespace of its own, so the host's network is untouched.
PUBLISH=""
if "$BIN/ctr-spawn" --help 2>/dev/null | grep -q -- '--publish'; then
    PUBLISH=1
    if [ -z "${KIST_DEMO_NETNS:-}" ]; then
        exec unshare --net -- env KIST_DEMO_NETNS=1 sh -c 'ip link set lo up && exec sh "$0" "$@"' "$0" "$@"
    fi
fi
WORK=$(mktemp -d /tmp/kist-demo.XXXXXX)
export KIST_ROOT="$WORK/root"
REG_PID=""

cleanup() {
    ctr-kill --rm -f web web2 >/dev/null 2>&1 || true
    if [ -n "$REG_PID" ]; then
        kill "$REG_PID" 2>/dev/null || true
        wait "$REG_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -t 1 ]; then B=$(printf '\033[1m'); N=$(printf '\033[0m'); else B=; N=; fi
say() { printf '\n%s$ %s%s\n' "$B" "$*" "$N"; }
run() { say "$*"; "$@"; }

echo "kist demo: state root $KIST_ROOT"

# An image from the host's busybox-static, built with umoci.
run umoci init --layout "$WORK/layout"
run umoci new --image "$WORK/layout:latest"
run umoci unpack --rootless --image "$WORK/layout:latest" "$WORK/bundle" >/dev/null
say "copy /bin/busybox and its applet links into the image"
mkdir -p "$WORK/bundle/rootfs/bin" "$WORK/bundle/rootfs/etc" "$WORK/bundle/rootfs/tmp" "$WORK/bundle/rootfs/var/www"
cp /bin/busybox "$WORK/bundle/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$WORK/bundle/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$WORK/bundle/rootfs/etc/passwd"
echo 'root:x:0:' > "$WORK/bundle/rootfs/etc/group"
echo 'hello from a kist container' > "$WORK/bundle/rootfs/var/www/index.html"
run umoci repack --image "$WORK/layout:latest" "$WORK/bundle"
run umoci config --image "$WORK/layout:latest" --config.cmd sh --config.env PATH=/bin

# A registry on a free loopback port.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: 127.0.0.1:$PORT}
YML
say "docker-registry serve registry.yml &    # on 127.0.0.1:$PORT"
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
python3 - "$PORT" <<'PY'
import socket, sys, time
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close(); break
    except OSError:
        time.sleep(0.05)
PY
run skopeo copy --quiet --dest-tls-verify=false "oci:$WORK/layout:latest" "docker://127.0.0.1:$PORT/demo/busybox:latest"

IMG=127.0.0.1:$PORT/demo/busybox:latest
run img-fetch "$IMG"
run skopeo inspect --format '{{.Digest}} {{.Architecture}}' "oci:$KIST_ROOT:$IMG"
say "img-fetch $IMG    # again: everything is present"
img-fetch --quiet "$IMG" >/dev/null && echo "(nothing downloaded)"

run img-unpack "$IMG"
run img-list --format table

say "img-unpack $IMG | ctr-spawn --rm -- cat /var/www/index.html"
img-unpack "$IMG" | ctr-spawn --rm -- cat /var/www/index.html

say "img-unpack $IMG | ctr-spawn -d --name web -- httpd -f -v -p 80 -h /var/www"
img-unpack "$IMG" | ctr-spawn -d --name web -- httpd -f -v -p 80 -h /var/www
run ctr-list --format table
run ctr-exec web wget -q -O- http://127.0.0.1/
run ctr-kill --stop -t 2 web
run ctr-kill --rm web

echo
echo "# The same with kist, Docker's command line over the tools:"
if [ -n "$PUBLISH" ]; then
    run kist run -d --name web2 -p 8080:80 "$IMG" httpd -f -v -p 80 -h /var/www
    run kist port web2
    say "busybox wget -q -O- http://127.0.0.1:8080/"
    for _ in 1 2 3 4 5 6 7 8 9 10; do busybox wget -q -O- http://127.0.0.1:8080/ 2>/dev/null && break; sleep 0.3; done
else
    run kist run -d --name web2 "$IMG" httpd -f -v -p 80 -h /var/www
fi
run kist ps
run kist exec web2 wget -q -O- http://127.0.0.1/
echo "a file from the host" > "$WORK/f"
run kist cp "$WORK/f" web2:/tmp/
run kist exec web2 cat /tmp/f
run kist cp web2:/etc/hostname "$WORK/hostname"
say "cat $WORK/hostname"
cat "$WORK/hostname"
run kist stats --no-stream
run kist logs web2
run kist ps -a --format 'table {{.Names}}\t{{.Image}}\t{{.Status}}'
run kist stop -t 2 web2
run kist rm web2
run kist ps -a
run kist help logs
echo
echo "kist demo: done"
