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
echo "== go test -race ./..."
go test -race -count=1 -timeout 20m ./...

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
