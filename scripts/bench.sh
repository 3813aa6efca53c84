#!/usr/bin/env bash
# Measures what hitless claims and writes the figures to docs/benchmarks.md:
# the test server alone and under hitless, reloads under load (with the lame
# duck off and a naive stop-then-start restart beside them), reload latency,
# hitless's own cost, a crash under load, 10,000 connections and event
# streams across reloads, h2c clients across reloads, a bad release
# reloaded with and without a trial window, and hitless upgrading its own
# binary beside a server on cloudflare/tableflip's upgrade, the gRPC
# example (examples/grpc) across reloads, deploys under load compared:
# hitless beside blue/green switches behind nginx, HAProxy and Caddy
# (Debian's packages, installed when missing), and WebSocket connections
# handed over across reloads (examples/wsecho). Every figure comes from
# the run; all traffic goes to 127.0.0.1 and every scenario is bounded in
# time (about 12 minutes in all, 3.5 with --quick).
#
#   ./scripts/bench.sh            # full run, prints the table, writes docs/benchmarks.md
#   ./scripts/bench.sh --quick    # shorter runs, same table
#   ./scripts/bench.sh --only 3,4 # some scenarios; does not touch docs/benchmarks.md
#   ./scripts/bench.sh --no-write # print only
#   ./scripts/bench.sh --no-peers # neither install nor run nginx, HAProxy, Caddy
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

quick=() only=() write=1 peers=1
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) quick=(-quick) ;;
	--only) only=(-only "$2"); write=0; shift ;;
	--no-write) write=0 ;;
	--no-peers) peers=0 ;;
	-h|--help) sed -n '2,19p' "$0"; exit 0 ;;
	*) echo "bench.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
	esac
	shift
done

# wrk and h2load come from Debian's packages, and so do the peers of
# scenario 12, nginx, HAProxy and Caddy (scripts/peers.sh). A peer that
# cannot be installed is skipped, and the table says so.
PATH="$PATH:/usr/sbin:/sbin"
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
if [ ${#need[@]} -gt 0 ]; then
	echo "== installing ${need[*]}" >&2
	sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ "$peers" -eq 0 ] || scripts/peers.sh
peer_args=()
if [ "$peers" -eq 1 ]; then
	for p in nginx haproxy caddy; do
		peer_args+=("-$p" "$(command -v "$p" || true)")
	done
fi
command -v go >/dev/null || { echo "bench.sh: Go 1.26 is required (expected at /usr/local/go)" >&2; exit 1; }

# 10,000 connections need that many descriptors in the client and in the
# server: raise the limit for this script and what it starts, not for the
# machine. Root may raise the hard limit too.
want=30000
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want" ]; then
	ulimit -Hn "$want" 2>/dev/null || true
fi
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge "$want" ]; then ulimit -n "$want"; else ulimit -n "$hard"; fi
if [ "$(ulimit -n)" -lt 12000 ]; then
	echo "bench.sh: the open-files limit is $(ulimit -n) (hard $(ulimit -Hn)); 10,000 connections need 12000" >&2
	exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "== building" >&2
# hitless as the README builds it: static (see docs/footprint.md).
CGO_ENABLED=0 go build -o "$tmp/hitless" ./cmd/hitless
go build -o "$tmp/testserver" ./internal/e2e/testserver
go build -o "$tmp/hitless-bench" ./cmd/hitless-bench
go build -o "$tmp/tableflipserver" ./cmd/hitless-bench/tableflipserver
(cd examples/grpc && go build -o "$tmp/grpcserver" . && go build -o "$tmp/grpcload" ./cmd/grpcload)
(cd examples/wsecho && go build -o "$tmp/wsecho" . && go build -o "$tmp/wsload" ./cmd/wsload)

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && ! git diff --quiet HEAD -- cmd supervisor childproc upgrade internal 2>/dev/null; then
	commit="$commit (with uncommitted changes)"
fi
out=()
[ "$write" -eq 1 ] && out=(-out docs/benchmarks.md)
timeout 30m "$tmp/hitless-bench" -hitless "$tmp/hitless" -server "$tmp/testserver" -tableflip "$tmp/tableflipserver" -wrk "$(command -v wrk)" \
	-h2load "$(command -v h2load)" -grpc-server "$tmp/grpcserver" -grpc-load "$tmp/grpcload" "${peer_args[@]}" \
	-ws-server "$tmp/wsecho" -ws-load "$tmp/wsload" \
	-commit "$commit" "${quick[@]}" "${only[@]}" "${out[@]}"
[ "$write" -eq 1 ] && echo "== written to docs/benchmarks.md" >&2
exit 0
