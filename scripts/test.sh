#!/usr/bin/env bash
# Runs every test of the project: the tree's hygiene (gofmt and go mod tidy
# in every module, staticcheck, the module built and vetted for darwin, childproc
# built for windows), vet,
# the race-enabled test suites of the main module and of each example
# module, and each fuzz target for a bounded number of inputs (FUZZTIME,
# default 50000x; FUZZTIME=0 skips fuzzing; see scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
staticcheck="honnef.co/go/tools/cmd/staticcheck@v0.8.2"

# internal/e2e/testdata/tools is the end-to-end tests' own module (the
# PromQL parser): they build it, so it is kept tidy like the others.
modules=(. examples/*/ internal/e2e/testdata/tools/)
for mod in "${modules[@]}"; do
	echo "== $mod: gofmt, go mod tidy -diff, staticcheck"
	(cd "$mod" && unformatted=$(gofmt -l .) && if [ -n "$unformatted" ]; then
		echo "gofmt would change: $unformatted" >&2
		exit 1
	fi && go mod tidy -diff && go run "$staticcheck" ./...)
done

echo "== the module builds and vets for darwin; childproc builds for windows"
GOOS=darwin go build ./...
GOOS=darwin go vet ./...
# The reload machine is pure and builds everywhere: its tests, the model
# checker among them, build for darwin too.
GOOS=darwin go test -c -o /dev/null ./supervisor/internal/machine
GOOS=windows go build ./childproc

echo "== go vet"
go vet ./...
# The reload machine is pure (one goroutine, no I/O): the race detector
# has nothing to find there and makes its exhaustive interleaving test
# several times slower, so it runs without -race.
machine=github.com/hitless/hitless/supervisor/internal/machine
echo "== go test -race ./... (the reload machine without -race)"
go test -race -count=1 -timeout 20m $(go list ./... | grep -vx "$machine")
go test -count=1 -timeout 20m "$machine"

for mod in examples/*/go.mod; do
	[ -e "$mod" ] || continue
	dir=$(dirname "$mod")
	echo "== $dir: go vet, go test -race"
	(cd "$dir" && go vet ./... && go test -race -count=1 -timeout 20m ./...)
done

if [ "${FUZZTIME:-}" != 0 ]; then
	scripts/fuzz.sh
fi
echo "all tests passed"
