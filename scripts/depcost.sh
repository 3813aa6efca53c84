#!/usr/bin/env bash
# Measures what a dependency costs a Go program at start, and what hitless
# costs as a binary: for each package below, a program that imports only
# it (and os, time) is built static, and compared with the same program
# importing nothing more: the binary's size, the CPU time of a start (the
# runtime and every package's init; perf stat, 40 runs), the heap its
# inits allocate (GODEBUG=inittrace=1), and the resident and anonymous
# memory of the process at rest. Then hitless itself, built as the README
# says and with the flags that change its size. Prints a markdown table;
# docs/footprint.md quotes a run.
#
#   ./scripts/depcost.sh            # the packages hitless links, and those it dropped
#   ./scripts/depcost.sh PKG[@VER]... # others
#
# Packages outside the standard library are fetched into a scratch module
# (the Go module proxy), not into hitless's go.mod.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
root=$PWD
command -v perf >/dev/null || { echo "depcost.sh: perf is needed (Debian: linux-perf)" >&2; exit 1; }

pkgs=("$@")
if [ ${#pkgs[@]} -eq 0 ]; then
	pkgs=(
		# What hitless links.
		github.com/spf13/cobra@v1.10.2 go.yaml.in/yaml/v3@v3.0.6 golang.org/x/sys/unix@v0.49.0
		net/http encoding/json log/slog net os/user regexp text/template
		# What it dropped (issue 18): the Prometheus client as hitless used it.
		"github.com/prometheus/client_golang/prometheus@v1.25.0 github.com/prometheus/client_golang/prometheus/promhttp github.com/prometheus/client_golang/prometheus/collectors"
	)
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
go mod init depcost >/dev/null 2>&1

# build DIR IMPORTS...: a program that imports IMPORTS and, given an
# argument, sleeps so that its memory can be read.
build() {
	local dir=$1
	shift
	mkdir -p "$dir"
	{
		echo "package main"
		echo 'import ("os"; "time")'
		for p in "$@"; do echo "import _ \"$p\""; done
		echo 'func main() { if len(os.Args) > 1 { time.Sleep(time.Minute) } }'
	} >"$dir/main.go"
	CGO_ENABLED=0 go build -o "$dir/bin" "./$dir"
}

# cpu BIN [ARGS...]: the CPU time of one run, in ms.
cpu() {
	perf stat -x, -e task-clock "$@" 2>&1 >/dev/null | awk -F, '/task-clock/ {printf "%.3f", $1}'
}

# startcpu BASE BIN [ARGS...]: the medians of 41 runs of each, taken in
# turn so that the machine's drift hits both alike: BASE's and BIN's
# CPU time of a start, in ms.
startcpu() {
	local base=$1 bin=$2 i
	shift 2
	: >"$tmp/b" && : >"$tmp/c"
	for i in $(seq 41); do
		cpu "$base" >>"$tmp/b" && echo >>"$tmp/b"
		cpu "$bin" "$@" >>"$tmp/c" && echo >>"$tmp/c"
	done
	echo "$(sort -n "$tmp/b" | sed -n 21p) $(sort -n "$tmp/c" | sed -n 21p)"
}

# startup BIN [ARGS...]: size KiB, init heap KiB.
startup() {
	local bin=$1
	shift
	local size heap
	size=$(($(stat -c %s "$bin") / 1024))
	heap=$(GODEBUG=inittrace=1 "$bin" "$@" 2>&1 >/dev/null | awk '$1 == "init" {for (i = 1; i <= NF; i++) if ($(i) == "bytes,") b += $(i-1)} END {printf "%d", b / 1024}')
	echo "$size $heap"
}

# atrest BIN: RSS and anonymous KiB of BIN sleeping.
atrest() {
	local pid
	"$1" sleep >/dev/null 2>&1 &
	pid=$!
	sleep 0.5
	awk '/^Rss:/ {r = $2} /^Anonymous:/ {a = $2} END {print r, a}' /proc/$pid/smaps_rollup
	kill $pid
	wait $pid 2>/dev/null || true
}

build base
read -r bsize bheap < <(startup base/bin)
read -r brss banon < <(atrest base/bin)
echo "| package | binary | start, CPU | heap of its inits | RSS at rest | of which anonymous |"
echo "|---|--:|--:|--:|--:|--:|"
n=0
for spec in "${pkgs[@]}"; do
	n=$((n + 1))
	imports=()
	for p in $spec; do
		if [[ $p == *@* ]]; then
			go get "$p" >/dev/null 2>&1
			p=${p%@*}
		fi
		imports+=("$p")
	done
	build "p$n" "${imports[@]}"
	read -r size heap < <(startup "p$n/bin")
	read -r rss anon < <(atrest "p$n/bin")
	read -r bcpu ccpu < <(startcpu base/bin "p$n/bin")
	printf "| %s | +%d KiB | +%.2f ms | +%d KiB | +%d KiB | +%d KiB |\n" "${imports[*]}" $((size - bsize)) "$(awk "BEGIN {print $ccpu - $bcpu}")" \
		$((heap - bheap)) $((rss - brss)) $((anon - banon))
done
printf "| (the program importing only os and time, for scale) | %d KiB | %s ms | %d KiB | %d KiB | %d KiB |\n" "$bsize" "$bcpu" "$bheap" "$brss" "$banon"

# hitless itself: as the README builds it, static, and stripped. The
# start is --version's: every init, and cobra printing a line.
echo
echo "| hitless built with | binary | start (--version), CPU | heap of its inits |"
echo "|---|--:|--:|--:|"
for v in "go build:" "CGO_ENABLED=0 go build:CGO_ENABLED=0" "go build -trimpath -ldflags='-s -w':-trimpath -ldflags=-s\ -w" \
	"CGO_ENABLED=0 go build -trimpath -ldflags='-s -w':CGO_ENABLED=0 -trimpath -ldflags=-s\ -w"; do
	label=${v%%:*}
	eval "set -- ${v#*:}"
	env=() args=()
	for f in "$@"; do
		if [[ $f == CGO_ENABLED=* ]]; then env+=("$f"); else args+=("$f"); fi
	done
	(cd "$root" && env "${env[@]}" go build "${args[@]}" -o "$tmp/hitless" ./cmd/hitless)
	read -r size heap < <(startup "$tmp/hitless" --version)
	read -r _ ccpu < <(startcpu base/bin "$tmp/hitless" --version)
	printf "| \`%s\` | %.1f MiB | %s ms | %d KiB |\n" "$label" "$(awk "BEGIN {print $size / 1024}")" "$ccpu" "$heap"
done
