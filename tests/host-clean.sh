#!/bin/sh
# tests/host-clean.sh before|after STATE_FILE: what kist may leave in the
# host's own network namespace and mount table (bridges kist0/kist-*, veths
# vk*, the nftables table `ip kist`, mounts under a kist state root) is
# listed before the tests and again after them; `after` fails if the
# tests added any. Tests build networks only inside namespaces of their
# own, so a difference is a test that leaked onto the host.
set -eu
mode=$1
file=$2
list() {
    ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E '^(kist0|kist-|vk)' | sed 's/^/link /' || true
    nft list tables 2>/dev/null | grep -x 'table ip kist' || true
    grep -E ' [^ ]*/kist-test-[^ ]* ' /proc/mounts | awk '{print "mount " $2}' || true
}
case $mode in
    before) list | sort > "$file" ;;
    after)
        list | sort > "$file.after"
        added=$(comm -13 "$file" "$file.after")
        rm -f "$file.after"
        if [ -n "$added" ]; then
            echo "host-clean: the tests left this on the host:" >&2
            echo "$added" >&2
            exit 1
        fi
        ;;
    *) echo "usage: host-clean.sh before|after FILE" >&2; exit 2 ;;
esac
