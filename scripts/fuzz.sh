#!/usr/bin/env bash
# Runs every FuzzXxx target of the main module for a bounded number of
# inputs each (FUZZTIME, default 50000x; go test's -fuzztime syntax). A count,
# not a duration: with a duration, Go 1.26's fuzz coordinator can fail a
# target with a bare "context deadline exceeded" when the deadline fires while
# a starved worker is mid-call (go.dev/issue/75804, fixed in Go 1.27); a count
# has no deadline to race. The corpus the fuzzer builds lives in the Go cache
# and is never committed; the f.Add seeds in each target are the corpus that
# every "go test" replays. A crasher lands in the package's
# testdata/fuzz/<Target>/ and fails the run: commit that one file, it is a
# regression test from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

fuzztime=${FUZZTIME:-50000x}

grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./examples/' | sort | while read -r file; do
	dir=$(dirname "${file#./}")
	for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | cut -d' ' -f2); do
		echo "== fuzz ./$dir $target ($fuzztime)"
		if ! out=$(go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "./$dir" 2>&1); then
			printf '%s\n' "$out" | tail -40 >&2
			exit 1
		fi
	done
done
