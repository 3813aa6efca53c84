#!/usr/bin/env bash
# deploy.sh: install a release, switch the "current" symlink to it, reload
# hitless, and switch back if the reload fails. Run with --help for usage.
set -euo pipefail

prog=deploy.sh

usage() {
	cat <<'EOF'
Usage: deploy.sh --releases DIR --current LINK [options] ARTIFACT

Install ARTIFACT as a new release and make hitless serve it:

  1. copy ARTIFACT into DIR/NAME (a directory's contents, or a single file,
     such as a binary, into DIR/NAME/);
  2. point LINK at DIR/NAME, atomically (a new symlink renamed over LINK);
  3. run "hitless reload", which starts a new child from LINK, waits until it
     is ready and reports whether the reload worked;
  4. if the reload failed: point LINK back at the previous release and exit 1,
     printing why; the previous release is still being served, since hitless
     keeps the old child when a reload fails;
  5. if it worked: delete old releases beyond --keep.

hitless must run the release through LINK (command: [/srv/app/current/bin/app]
in its config), so that each new child starts from whatever LINK points to.

Options:
  --releases DIR   directory holding one subdirectory per release (created if missing)
  --current LINK   the symlink hitless runs the app through; must be a symlink if it exists
  --control SOCK   hitless control socket, passed to "hitless reload --control"
  --timeout D      how long "hitless reload" waits for the new child to be ready
                   (a Go duration such as 90s or 2m; default 90s)
  --keep N         releases to keep, newest first (default 5); the current and the
                   previous release are always kept, since the old child may still
                   be draining from the previous one
  --name NAME      release name (default: UTC timestamp, e.g. 20260102T150405Z)
  -h, --help       show this help

Environment:
  HITLESS          the hitless binary (default: hitless from PATH)

Exit status: 0 deployed; 1 not deployed (reload failed and LINK was switched
back, or the release could not be installed); 2 usage error; 3 the reload
failed AND switching back failed: LINK needs a look.

Example:
  deploy.sh --releases /srv/app/releases --current /srv/app/current \
      --control /run/hitless-app/control.sock --timeout 2m ./build/
EOF
}

usage_error() {
	echo "$prog: $*" >&2
	echo "Try '$prog --help'." >&2
	exit 2
}

fail() {
	echo "$prog: $*" >&2
	exit 1
}

log() {
	echo "$prog: $*" >&2
}

releases='' current='' control='' timeout=90s keep=5 name='' artifact=''

# value FLAG ARGC VALUE: check that FLAG was given a value.
# A value that looks like a flag is taken as a forgotten value, not a path.
value() {
	if (($2 < 2)) || [[ -z $3 || $3 == --* ]]; then
		usage_error "$1 needs a value"
	fi
}

while (($# > 0)); do
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	--releases | --current | --control | --timeout | --keep | --name)
		value "$1" $# "${2-}"
		flag=${1#--}
		printf -v "$flag" '%s' "$2"
		shift 2
		;;
	--releases=* | --current=* | --control=* | --timeout=* | --keep=* | --name=*)
		flag=${1%%=*}
		value "$flag" 2 "${1#*=}"
		printf -v "${flag#--}" '%s' "${1#*=}"
		shift
		;;
	--)
		shift
		break
		;;
	-*)
		usage_error "unknown flag $1"
		;;
	*)
		[[ -z $artifact ]] || usage_error "more than one ARTIFACT: '$artifact' and '$1'"
		artifact=$1
		shift
		;;
	esac
done
if (($# > 0)); then
	[[ -z $artifact ]] || usage_error "more than one ARTIFACT: '$artifact' and '$1'"
	artifact=$1
	shift
	(($# == 0)) || usage_error "more than one ARTIFACT: '$artifact' and '$1'"
fi

[[ -n $releases ]] || usage_error "--releases DIR is required"
[[ -n $current ]] || usage_error "--current LINK is required"
[[ -n $artifact ]] || usage_error "no ARTIFACT given (a directory or a file to deploy)"
[[ -e $artifact ]] || usage_error "ARTIFACT '$artifact' does not exist"
[[ $keep =~ ^[1-9][0-9]*$ ]] || usage_error "--keep '$keep': want a positive integer"
# Go's duration syntax, which "hitless reload --timeout" parses.
[[ $timeout =~ ^([0-9]+(\.[0-9]*)?(ns|us|ms|s|m|h))+$ ]] ||
	usage_error "--timeout '$timeout': want a duration such as 90s, 2m or 1m30s"
# Release names become directory names and are matched when pruning, so they
# are kept to characters that need no quoting anywhere.
safe_name='^[A-Za-z0-9][A-Za-z0-9._-]*$'
if [[ -n $name ]] && ! [[ $name =~ $safe_name ]]; then
	usage_error "--name '$name': want letters, digits, '.', '_' and '-', starting with a letter or digit"
fi
if [[ -e $current || -L $current ]] && ! [[ -L $current ]]; then
	usage_error "--current '$current' exists and is not a symlink; refusing to replace it"
fi
link_dir=$(dirname -- "$current")
[[ -d $link_dir ]] || usage_error "--current '$current': directory '$link_dir' does not exist"

hitless=${HITLESS:-hitless}
command -v -- "$hitless" >/dev/null ||
	usage_error "hitless binary '$hitless' not found: put it in PATH or set HITLESS"

mkdir -p -- "$releases" || fail "cannot create --releases '$releases'"
releases=$(cd -- "$releases" && pwd -P)

# One deploy at a time per releases directory: two interleaved deploys would
# each roll back to the wrong release.
if command -v flock >/dev/null; then
	exec 9>>"$releases/.deploy.lock"
	flock -n 9 || fail "another deploy is running (lock $releases/.deploy.lock)"
fi

staging='' tmp_link="$link_dir/.$(basename -- "$current").deploy.$$"
cleanup() {
	if [[ -n $staging ]]; then rm -rf -- "$staging"; fi
	rm -f -- "$tmp_link"
}
trap cleanup EXIT

# 1. Install. Copy into a hidden staging directory and rename it into place,
# so that a release directory is either complete or absent.
if [[ -z $name ]]; then
	name=$(date -u +%Y%m%dT%H%M%SZ)
	base=$name n=1
	while [[ -e $releases/$name ]]; do # two deploys within one second
		n=$((n + 1))
		name=$base-$n
	done
fi
target=$releases/$name
[[ ! -e $target ]] || usage_error "--name '$name': release $target already exists"
staging=$releases/.$name.partial.$$
mkdir -- "$staging"
if [[ -d $artifact ]]; then
	cp -a -- "$artifact/." "$staging/" || fail "copying '$artifact' into $staging failed"
else
	cp -p -- "$artifact" "$staging/" || fail "copying '$artifact' into $staging failed"
fi
# cp -a gave the directory the artifact's mtime; pruning orders releases by
# mtime, so stamp it with the deploy time.
touch -- "$staging"
mv -T -- "$staging" "$target"
staging=
log "installed $artifact as $target"

# switch TARGET: point $current at TARGET atomically. rename(2) replaces the
# old link in one step, so a child starting at any moment sees either the
# old release or the new one, never a missing link.
switch() {
	ln -sfn -- "$1" "$tmp_link" && mv -T -- "$tmp_link" "$current"
}

previous=
if [[ -L $current ]]; then
	previous=$(readlink -- "$current")
fi

# 2. Switch.
switch "$target" || fail "could not point $current at $target"
log "switched $current -> $target (was: ${previous:-nothing})"

# 3. Reload.
args=(reload --timeout "$timeout")
if [[ -n $control ]]; then
	args+=(--control "$control")
fi
log "running: $hitless ${args[*]}"
status=0
output=$("$hitless" "${args[@]}" 2>&1) || status=$?
if [[ -n $output ]]; then
	printf '%s\n' "$output" | sed 's/^/  hitless: /' >&2
fi

if ((status != 0)); then
	# 4. Roll back. The old child is still serving (hitless keeps it when a
	# reload fails), so only the link has to go back: the next reload or
	# restart must not pick up the failed release.
	reason="hitless reload exited with status $status"
	if [[ -n $previous ]]; then
		if ! switch "$previous"; then
			echo "$prog: $reason, and switching $current back to $previous FAILED;" \
				"$current still points at the failed release $target" >&2
			exit 3
		fi
		rolled="switched $current back to $previous"
	else
		if ! rm -f -- "$current"; then
			echo "$prog: $reason, and removing $current (there was no previous release) FAILED" >&2
			exit 3
		fi
		rolled="removed $current (there was no previous release)"
	fi
	fail "deploy of $name failed: $reason; $rolled; the failed release is kept in $target for inspection"
fi

# 5. Prune: keep the newest --keep releases, and always the current and the
# previous one. Only directories named like releases are considered.
keep_paths=("$(readlink -f -- "$target")")
if [[ -n $previous ]]; then
	# A relative link target is relative to the link's directory.
	keep_paths+=("$(cd -- "$link_dir" && { readlink -f -- "$previous" || true; })")
fi
i=0
while read -r _ entry; do
	[[ $entry =~ $safe_name ]] || continue
	i=$((i + 1))
	((i > keep)) || continue
	path=$releases/$entry
	resolved=$(readlink -f -- "$path")
	for k in "${keep_paths[@]}"; do
		[[ $resolved != "$k" ]] || continue 2
	done
	if rm -rf -- "$path"; then
		log "pruned old release $path"
	else
		log "warning: could not prune $path"
	fi
done < <(find "$releases" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %f\n' | sort -rn)

log "deployed $name: $current -> $target"
