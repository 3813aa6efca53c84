#!/usr/bin/env bash
# Installs the peers that the benchmark (scenario 12) and its tests run
# beside hitless, nginx, HAProxy and Caddy, from Debian's packages when they
# are missing, without starting their services: each is run by the bench
# in the foreground, with a config of its own. A package that cannot be
# installed is reported and skipped; so is its row of the benchmark, and
# its test. Prints what it installs.
#
#   ./scripts/peers.sh    # needs root or sudo
set -uo pipefail
PATH="$PATH:/usr/sbin:/sbin"

missing=()
for p in nginx haproxy caddy; do
	command -v "$p" >/dev/null || missing+=("$p")
done
[ ${#missing[@]} -gt 0 ] || exit 0

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "== installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq || echo "peers.sh: apt-get update failed" >&2

# Where an init system runs, the packages would start their services
# (nginx on port 80): a policy-rc.d that refuses, for the install only,
# unless the machine has one of its own.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	trap '"${sudo[@]}" rm -f "$policy"' EXIT
	printf '#!/bin/sh\n# written by hitless scripts/peers.sh for its install only\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
	"${sudo[@]}" chmod 755 "$policy"
fi
for p in "${missing[@]}"; do
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$p" >/dev/null ||
		echo "peers.sh: could not install $p: what needs it is skipped" >&2
done
exit 0
