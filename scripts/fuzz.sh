#!/usr/bin/env bash
# Runs every FuzzXxx target of the main module for a bounded time each
# (FUZZTIME, default 5s). A crasher lands in the package's testdata/fuzz
# and fails the run. With --save, the corpus the fuzzer built up (in the Go
# cache) is copied into testdata/fuzz too, so that every later "go test"
# replays it: run "FUZZTIME=1m scripts/fuzz.sh --save" and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

save=false
[ "${1:-}" = --save ] && save=true
fuzztime=${FUZZTIME:-5s}
cache=$(go env GOCACHE)/fuzz/$(go list -m)

grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./examples/' | sort | while read -r file; do
	dir=$(dirname "${file#./}")
	for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | cut -d' ' -f2); do
		echo "== fuzz ./$dir $target ($fuzztime)"
		go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "./$dir" >/dev/null
		if $save && [ -d "$cache/$dir/$target" ]; then
			mkdir -p "$dir/testdata/fuzz/$target"
			cp -n "$cache/$dir/$target"/* "$dir/testdata/fuzz/$target/"
		fi
	done
done
