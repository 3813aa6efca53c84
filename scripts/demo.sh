#!/usr/bin/env bash
# demo.sh: the bug hitless exists to fix, shown end to end.
#
# Builds hitless and the orders demo (Gin + SQLite, POST /orders answers 202
# and a background writer stores the order later), runs the demo under
# hitless, sends a bounded stream of orders while reloading it several
# times (SIGHUP), stops everything, counts the stored rows and prints one
# line ending in "failed=F acknowledged=A stored=S".
#
# Correct means F=0 and S=A: no request failed and every acknowledged
# order was stored. --no-graceful runs the same demo with the drain off (the
# classic service that dies on SIGTERM with its queue) to show the loss.
#
# Usage: scripts/demo.sh [--no-graceful] [--reloads N] [--requests N]
#                        [--rate R] [--concurrency C] [--keepalive on|off]
#                        [--write-delay D] [--no-idempotency-key] [--keep]
#
# The load generator sends an Idempotency-Key with each POST, as a careful
# client does: a keep-alive connection that sat idle can be closed by the
# server exactly as the client sends on it (HTTP/1.1 has no way around
# that; the lame duck makes it rare), and Go's client retries such a POST
# only when it carries that key. --no-idempotency-key shows the raw race.
# Needs only Go (and bash). Exit status: 0 when correct (or, with
# --no-graceful, when the run completed), 1 otherwise.
set -euo pipefail

graceful=true
reloads=5
requests=4000
rate=500
concurrency=8
keepalive=on
write_delay=200ms
keep=false
idempotency=true

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
	case "$1" in
	--no-graceful) graceful=false ;;
	--reloads) reloads=$2; shift ;;
	--requests) requests=$2; shift ;;
	--rate) rate=$2; shift ;;
	--concurrency) concurrency=$2; shift ;;
	--keepalive) keepalive=$2; shift ;;
	--write-delay) write_delay=$2; shift ;;
	--keep) keep=true ;;
	--no-idempotency-key) idempotency=false ;;
	-h | --help) usage; exit 0 ;;
	*) echo "demo.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
case "$keepalive" in on) ka=true ;; off) ka=false ;; *) echo "demo.sh: --keepalive on|off" >&2; exit 2 ;; esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/hitless-demo.XXXXXX")
hitless_pid=""
load_pid=""

log() { printf 'demo: %s\n' "$*" >&2; }

cleanup() {
	local rc=$?
	[[ -n "$load_pid" ]] && kill "$load_pid" 2>/dev/null || true
	if [[ -n "$hitless_pid" ]] && kill -0 "$hitless_pid" 2>/dev/null; then
		kill -TERM "$hitless_pid" 2>/dev/null || true
		wait "$hitless_pid" 2>/dev/null || true
	fi
	if [[ $rc -ne 0 && -f "$tmp/hitless.log" ]]; then
		log "last lines of $tmp/hitless.log:"
		tail -n 40 "$tmp/hitless.log" >&2 || true
	fi
	if [[ "$keep" == true || $rc -ne 0 ]]; then
		log "files kept in $tmp"
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT

log "building hitless, the orders demo and its load generator"
(cd "$root" && CGO_ENABLED=0 go build -o "$tmp/hitless" ./cmd/hitless)
(cd "$root/examples/orders" && go build -o "$tmp/orders" . && go build -o "$tmp/loadgen" ./cmd/loadgen)

# A free port: nothing accepts on it (bash's /dev/tcp, no extra tools).
port=""
for _ in $(seq 100); do
	p=$((20000 + RANDOM % 40000))
	if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		port=$p
		break
	fi
done
[[ -n "$port" ]] || { log "no free port found"; exit 1; }
url="http://127.0.0.1:$port"

log "running the demo under hitless on $url (graceful=$graceful, write delay $write_delay)"
"$tmp/hitless" run --listen "http=tcp://127.0.0.1:$port" --ready notify --drain-timeout 30s -- \
	"$tmp/orders" -listen "127.0.0.1:$port" -db "$tmp/orders.db" -write-delay "$write_delay" -graceful="$graceful" \
	>"$tmp/hitless.log" 2>&1 &
hitless_pid=$!

pid=$("$tmp/loadgen" -url "$url" -wait-new-pid 0 -deadline 30s)
log "generation 1 is pid $pid"

log "sending $requests orders ($concurrency clients, $rate/s, keep-alive $keepalive) while reloading $reloads times"
"$tmp/loadgen" -url "$url" -n "$requests" -c "$concurrency" -rate "$rate" -keepalive="$ka" -idempotency-key="$idempotency" >"$tmp/load.txt" &
load_pid=$!

# Spread the reloads over the stream: pacing, not waiting for an effect.
interval=$(awk -v n="$requests" -v r="$rate" -v k="$reloads" 'BEGIN { printf "%.2f", n / r / (k + 1) }')
for i in $(seq "$reloads"); do
	sleep "$interval"
	kill -HUP "$hitless_pid"
	# The effect of the reload: a new process answers.
	pid=$("$tmp/loadgen" -url "$url" -wait-new-pid "$pid" -deadline 30s)
	log "reload $i: pid $pid serving"
done

wait "$load_pid"
load_pid=""
summary=$(cat "$tmp/load.txt")
log "load: $summary"

log "stopping hitless (SIGTERM: children drain, then it exits)"
kill -TERM "$hitless_pid"
hitless_rc=0
wait "$hitless_pid" || hitless_rc=$?
hitless_pid=""
[[ $hitless_rc -eq 0 ]] || log "hitless exited with status $hitless_rc"

stored=$("$tmp/orders" -db "$tmp/orders.db" -count)
field() { [[ "$summary" =~ (^| )$1=([0-9]+) ]] && echo "${BASH_REMATCH[2]}"; }
failed=$(field failed)
acknowledged=$(field acknowledged)
sent=$(field sent)

mode=graceful
[[ "$graceful" == true ]] || mode=no-graceful
echo "demo: mode=$mode reloads=$reloads keepalive=$keepalive sent=$sent lost=$((acknowledged - stored)) failed=$failed acknowledged=$acknowledged stored=$stored"

if [[ "$graceful" == true ]]; then
	[[ "$failed" -eq 0 && "$stored" -eq "$acknowledged" && $hitless_rc -eq 0 ]] || exit 1
fi
