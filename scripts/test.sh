#!/usr/bin/env bash
# Runs every test of the project: vet, the race-enabled test suites of the
# main module and of each example module, and each fuzz target for a
# bounded time (FUZZTIME, default 5s; FUZZTIME=0 skips fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

echo "== go vet"
go vet ./...
echo "== go test -race ./..."
go test -race -count=1 -timeout 20m ./...

for mod in examples/*/go.mod; do
	[ -e "$mod" ] || continue
	dir=$(dirname "$mod")
	echo "== $dir: go vet, go test -race"
	(cd "$dir" && go vet ./... && go test -race -count=1 -timeout 20m ./...)
done

fuzztime=${FUZZTIME:-5s}
if [ "$fuzztime" != 0 ]; then
	# Every FuzzXxx target, each for a bounded time; new crashers land in
	# testdata/fuzz and fail the run.
	grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./examples/' | sort | while read -r file; do
		pkg=./$(dirname "${file#./}")
		for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | cut -d' ' -f2); do
			echo "== fuzz $pkg $target ($fuzztime)"
			go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "$pkg" >/dev/null
		done
	done
fi
echo "all tests passed"
