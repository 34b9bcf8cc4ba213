#!/usr/bin/env bash
# make parity: Docker's cheat sheet played twice in one run, once with
# `docker` (a private dockerd of this script's own) and once with `kist`,
# each observation recorded (exit codes, file contents, ps columns and
# states, the HTTP reply of the published port), then printed side by side.
# Exits 1 when an observation that matters differs.
#
# Everything runs in a private network namespace (unshare --net), so
# dockerd's bridge and iptables rules and kist's never touch the host's. The
# image is busybox from the host's busybox-static, built with umoci and
# served by a loopback docker-registry inside the namespace, so both sides
# `pull` the same image the same way; no registry on the internet is used.
#
# Environment: KIST_BIN_DIR (default target/debug), PARITY_KEEP=1 keeps the
# work directory.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
. bench/lib.sh
bench_private_netns "$0" "$@"

BIN=${KIST_BIN_DIR:-$PWD/target/debug}
KIST="sh $PWD/tools/kist/kist"
need dockerd docker.io
need skopeo skopeo
need umoci umoci
need docker-registry docker-registry
need script bsdutils
[ -x "$BIN/ctr-spawn" ] || { echo "parity: tools not built in $BIN (cargo build --workspace --bins)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/kist-parity.XXXXXX)
export KIST_BIN_DIR=$BIN KIST_ROOT=$WORK/kist-root
REG_PID=
cleanup() {
    "$BIN/ctr-list" -a -q --no-trunc 2>/dev/null | "$BIN/ctr-kill" --rm -f >/dev/null 2>&1 || true
    stop_dockerd
    [ -z "$REG_PID" ] || { kill "$REG_PID" 2>/dev/null; wait "$REG_PID" 2>/dev/null; }
    umount -R "$WORK/docker" 2>/dev/null || true
    [ -n "${PARITY_KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

# --- the image, on a loopback registry ------------------------------------
L=$WORK/layout
umoci init --layout "$L" && umoci new --image "$L:latest" &&
    umoci unpack --rootless --image "$L:latest" "$WORK/bundle" >/dev/null || exit 1
R=$WORK/bundle/rootfs
mkdir -p "$R/bin" "$R/etc" "$R/tmp" "$R/root"
chmod 1777 "$R/tmp"
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$R/etc/passwd"
echo 'root:x:0:' > "$R/etc/group"
umoci repack --image "$L:latest" "$WORK/bundle" >/dev/null &&
    umoci config --image "$L:latest" --config.cmd sh --config.env PATH=/bin || exit 1
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: 127.0.0.1:$PORT}
YML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do busybox nc -z 127.0.0.1 "$PORT" 2>/dev/null && break; sleep 0.1; done
IMG=127.0.0.1:$PORT/parity/busybox:latest
skopeo copy --quiet --dest-tls-verify=false "oci:$L:latest" "docker://$IMG" || exit 1

start_dockerd "$WORK" --iptables=true >&2 || exit 1
DOCKER="docker -H $DOCKER_SOCK"

# --- the cheat sheet, one side ----------------------------------------------
# obs SIDE KEY VALUE: one observation (newlines folded).
obs() { printf '%s\t%s\n' "$2" "$(printf '%s' "$3" | tr '\n\t' '|  ')" >> "$WORK/$1.obs"; }

# The columns of a table's header line.
cols() { head -1 | sed 's/   */|/g'; }

http_get() {
    for _ in $(seq 50); do
        body=$(busybox wget -q -O- "http://127.0.0.1:$1/index.html" 2>/dev/null) && { printf '%s' "$body"; return 0; }
        sleep 0.2
    done
    echo "(no answer)"
}

play() {
    local side=$1 d=$2 dir
    dir=$WORK/$side
    mkdir -p "$dir/data" "$dir/data2" "$dir/cwd"
    echo "served from DIR" > "$dir/data/index.html"
    : > "$WORK/$side.obs"
    cd "$dir/cwd" || return 1
    echo "parity: playing the cheat sheet with $side" >&2

    $d pull "$IMG" >"$dir/pull.out" 2>"$dir/pull.err"; obs "$side" "pull: exit" $?
    obs "$side" "pull: last line" "$(tail -1 "$dir/pull.out" | sed 's/^docker.io\///')"
    obs "$side" "images: columns" "$($d images | cols)"
    obs "$side" "images: tag of IMG" "$($d images --format '{{.Repository}}:{{.Tag}}' | grep -c "^${IMG}$")"
    obs "$side" "images: SIZE" "$($d images --format '{{.Size}}')"

    id=$($d run --restart="always" --name "web" -p 18081:80 -d -t -v "$dir/data:/home:ro" -v "$dir/data2:/home2" \
        "$IMG" httpd -f -p 80 -h /home 2>"$dir/run.err")
    rc=$?
    obs "$side" "run -d: exit" $rc
    obs "$side" "run -d: stderr" "$(head -2 "$dir/run.err")"
    obs "$side" "run -d: id length" "${#id}"
    obs "$side" "GET :18081 (published port)" "$(http_get 18081)"
    obs "$side" "GET inside the container" "$($d exec web wget -q -O- http://127.0.0.1/index.html 2>&1)"
    $d exec web sh -c 'echo x > /home/new' 2>/dev/null; obs "$side" "write to :ro volume: exit" $?
    obs "$side" "write to :ro volume: on host" "$([ -e "$dir/data/new" ] && echo present || echo absent)"
    $d exec web sh -c 'echo written > /home2/new'; obs "$side" "write to rw volume: exit" $?
    obs "$side" "write to rw volume: on host" "$(cat "$dir/data2/new" 2>&1)"

    obs "$side" "ps -a: columns" "$($d ps -a | cols)"
    obs "$side" "ps -a: names state" "$($d ps -a --format '{{.Names}} {{.State}}')"
    obs "$side" "ps -a: command" "$($d ps -a --format '{{.Command}}')"
    obs "$side" "ps -a: status word" "$($d ps -a --format '{{.Status}}' | cut -d' ' -f1)"
    ports=$($d ps --format '{{.Ports}}')
    obs "$side" "ps: ports (IPv4)" "$(printf '%s' "$ports" | tr ',' '\n' | sed 's/^ *//' | grep -v '^\[' | paste -sd,)"
    obs "$side" "ps: ports (all)" "$ports"
    obs "$side" "stop web: output" "$($d stop web)"
    obs "$side" "after stop: state" "$($d ps -a --format '{{.State}} {{.Status}}' | sed 's/) .* ago$/)/')"
    obs "$side" "start web: output" "$($d start web)"
    sleep 1
    obs "$side" "after start: state" "$($d ps -a --format '{{.State}}')"
    obs "$side" "GET after start" "$(http_get 18081)"

    # port and inspect -f (kist publishes IPv4 only: docker's [::] lines are left out).
    obs "$side" "port web" "$($d port web | grep -v '\[::\]')"
    obs "$side" "port web 80" "$($d port web 80 | grep -v '\[::\]')"
    $d port web 81 >/dev/null 2>&1; obs "$side" "port web 81: exit" $?
    $d port nosuch >/dev/null 2>&1; obs "$side" "port nosuch: exit" $?
    $d exec nosuch true >/dev/null 2>&1; obs "$side" "exec nosuch: exit" $?
    obs "$side" "inspect -f State, Name, RestartPolicy" \
        "$($d inspect -f '{{.State.Running}} {{.State.Status}} {{.Name}} {{.HostConfig.RestartPolicy.Name}}' web 2>&1)"
    obs "$side" "inspect -f Mounts" \
        "$($d inspect -f '{{range .Mounts}}{{.Type}}:{{.Destination}}:{{.RW}} {{end}}' web 2>&1 | tr ' ' '\n' | sort | paste -sd' ')"
    obs "$side" "inspect -f Ports" "$($d inspect -f '{{(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort}}' web 2>&1)"
    obs "$side" "inspect IMG: .Os" "$($d inspect -f '{{.Os}}' "$IMG" 2>&1)"
    $d inspect nosuch >/dev/null 2>&1; obs "$side" "inspect nosuch: exit" $?
    out=$(printf 'tty; exit 3\n' | script -qec "$d exec -it web sh" /dev/null 2>&1)
    obs "$side" "exec -it under a pty: exit" $?
    obs "$side" "exec -it: tty" "$(printf '%s' "$out" | grep -o '/dev/pts/[0-9]*' | head -1 | sed 's/[0-9]*$/N/')"

    $d cp web:/etc/hostname ./h; obs "$side" "cp web:/etc/hostname ./h: exit" $?
    obs "$side" "./h is the short id" "$([ "$(cat h 2>/dev/null)" = "${id:0:12}" ] && echo yes || echo "no: $(cat h 2>&1)")"
    echo "from the host" > f
    $d cp ./f web:/tmp/; obs "$side" "cp ./f web:/tmp/: exit" $?
    obs "$side" "cat /tmp/f inside" "$($d exec web cat /tmp/f 2>&1)"
    echo "piped in" > file
    $d exec -i web sh -c 'cat > /tmp/g' < file; obs "$side" "exec -i < file: exit" $?
    obs "$side" "cat /tmp/g inside" "$($d exec web cat /tmp/g 2>&1)"

    obs "$side" "stats --no-stream: columns" "$($d stats --no-stream | cols)"
    obs "$side" "stats --no-stream: name" "$($d stats --no-stream --format '{{.Name}}')"
    $d logs web >"$dir/logs.out" 2>&1; obs "$side" "logs web: exit" $?
    obs "$side" "logs web: bytes" "$(wc -c < "$dir/logs.out")"

    # A stopped container's volume, read and written by cp; then pruned.
    $d run --name vt -v pvol:/data "$IMG" sh -c 'echo in the volume > /data/v; echo to the log' >/dev/null 2>&1
    obs "$side" "run vt (volume): exit" $?
    obs "$side" "logs of an attached run" "$($d logs vt 2>&1)"
    $d cp vt:/data/v ./v >/dev/null 2>&1; obs "$side" "cp stopped vt:/data/v: exit" $?
    obs "$side" "cp stopped vt:/data/v: content" "$(cat v 2>&1)"
    $d cp ./f vt:/data/ >/dev/null 2>&1; obs "$side" "cp ./f stopped vt:/data/: exit" $?
    obs "$side" "the volume holds f" "$($d run --rm -v pvol:/data "$IMG" cat /data/f 2>&1)"
    obs "$side" "ps -a --format Mounts of vt" "$($d ps -a --filter name=vt --format '{{.Mounts}}')"
    $d system prune -f --volumes >"$dir/prune.out" 2>&1; obs "$side" "system prune -f --volumes: exit" $?
    obs "$side" "prune: sections" "$(grep '^Deleted\|^Total' "$dir/prune.out" | sed 's/:.*//' | paste -sd,)"
    obs "$side" "volume after prune" "$($d run --rm -v pvol:/data "$IMG" ls /data 2>&1)"
    obs "$side" "vt after prune" "$($d ps -a --filter name=vt -q | wc -l)"
    # shellcheck disable=SC2046 # the ids, one word each
    { $d stop $($d ps -a -q) && $d rm $($d ps -a -q); } >"$dir/stoprm.out" 2>&1
    obs "$side" "stop \$(ps -a -q) && rm \$(ps -a -q): exit" $?
    obs "$side" "containers left" "$($d ps -a -q | wc -l)"
    $d rmi "$IMG" >"$dir/rmi.out" 2>&1; obs "$side" "rmi IMG: exit" $?
    obs "$side" "rmi: first word" "$(head -1 "$dir/rmi.out" | cut -d' ' -f1)"
    obs "$side" "images left" "$($d images -q | wc -l)"
    cd "$WORK" || return 1
}

play docker "$DOCKER"
DOCKER_VERSION=$($DOCKER version --format '{{.Server.Version}}' 2>/dev/null)
# dockerd goes before kist plays: the same host port is published by both.
stop_dockerd
play kist "$KIST"

# --- side by side -------------------------------------------------------------
# Observations whose value is informational (the texts differ by design).
informational='^(pull: last line|rmi: first word|logs web: bytes|run -d: stderr|ps: ports \(all\))$'
# Differences known and reported, not yet fixed (they do not fail the run):
# none at present ('^$' matches no observation).
known='^$'
differ=0
{
    echo "## make parity: the cheat sheet with docker $DOCKER_VERSION and kist"
    echo
    echo "| observation | docker | kist | |"
    echo "|---|---|---|---|"
    # Joined by observation, in the order docker's side made them.
    awk -F'\t' 'NR == FNR { k[$1] = $2; next } { print $1 "\t" $2 "\t" (($1 in k) ? k[$1] : "(none)") }' \
        "$WORK/kist.obs" "$WORK/docker.obs" | while IFS=$'\t' read -r k dv kv; do
        if [ "$dv" = "$kv" ]; then mark=same
        elif printf '%s' "$k" | grep -Eq "$informational"; then mark="differs (informational)"
        elif printf '%s' "$k" | grep -Eq "$known"; then mark="differs (known)"
        else mark="**DIFFERS**"; fi
        printf '| %s | %s | %s | %s |\n' "$k" "$dv" "$kv" "$mark"
    done
} | tee "$WORK/parity.md"
if grep -q 'DIFFERS\*\*' "$WORK/parity.md"; then differ=1; fi
[ -z "${PARITY_KEEP:-}" ] || echo "parity: work directory kept: $WORK" >&2
exit $differ
