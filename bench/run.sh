#!/usr/bin/env bash
# make bench: runs every bench/<topic>.sh side by side with its peers and
# writes the figures into docs/benchmarks.md (machine, commands, medians,
# ratios). Each topic script prints its own markdown section on stdout and
# its progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

export KIST_BIN_DIR=${KIST_BIN_DIR:-$PWD/target/release}
export BENCH_OUT=${BENCH_OUT:-/tmp/kist-bench}
mkdir -p "$BENCH_OUT"
command -v hyperfine >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >/dev/null; }

topics=("$@")
if [ ${#topics[@]} -eq 0 ]; then
    for f in bench/*.sh; do
        t=$(basename "$f" .sh)
        [ "$t" = run ] || topics+=("$t")
    done
fi

out=$BENCH_OUT/benchmarks.md
{
    echo "# kist benchmarks"
    echo
    echo "Produced by \`make bench\` (bench/run.sh) on $(date -u +%Y-%m-%d)."
    echo "Every figure comes from one run in which kist and its peers ran side by side on the same machine."
    echo
    echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr), $(. /etc/os-release; echo "$PRETTY_NAME")."
    echo
} > "$out"

for t in "${topics[@]}"; do
    echo "bench: $t" >&2
    if ! bash "bench/$t.sh" >> "$out"; then
        echo "bench: $t failed" >&2
        printf '\n## %s\n\nThe benchmark script failed in this run; see its stderr.\n\n' "$t" >> "$out"
    fi
done

cp "$out" docs/benchmarks.md
echo "bench: wrote docs/benchmarks.md" >&2
