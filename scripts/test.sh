#!/usr/bin/env bash
# Runs every test of the project: vet, the race-enabled test suites of the
# main module and of each example module, and each fuzz target for a
# bounded time (FUZZTIME, default 5s; FUZZTIME=0 skips fuzzing; see
# scripts/fuzz.sh).
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

if [ "${FUZZTIME:-5s}" != 0 ]; then
	scripts/fuzz.sh
fi
echo "all tests passed"
