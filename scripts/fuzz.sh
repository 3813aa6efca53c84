#!/usr/bin/env bash
# Runs every FuzzXxx target of the main module for a bounded time each
# (FUZZTIME, default 5s). The corpus the fuzzer builds lives in the Go cache
# and is never committed; the f.Add seeds in each target are the corpus that
# every "go test" replays. A crasher lands in the package's
# testdata/fuzz/<Target>/ and fails the run: commit that one file, it is a
# regression test from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

fuzztime=${FUZZTIME:-5s}

grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./examples/' | sort | while read -r file; do
	dir=$(dirname "${file#./}")
	for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | cut -d' ' -f2); do
		echo "== fuzz ./$dir $target ($fuzztime)"
		go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "./$dir" >/dev/null
	done
done
