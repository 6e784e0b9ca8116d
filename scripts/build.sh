#!/bin/sh
# Configure and build kapsel into ./build (release-ish) or, with --sanitize, ./build-asan.
set -eu
cd "$(dirname "$0")/.."
dir=build
opts=""
if [ "${1:-}" = "--sanitize" ]; then
	dir=build-asan
	opts="-Db_sanitize=address,undefined -Db_lundef=false -Dwerror=true"
fi
# Quiet on success; the whole log on failure (CI shows why).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { [ -f "$dir/build.ninja" ] || meson setup "$dir" $opts; } >"$log" 2>&1 ||
	! ninja -C "$dir" >>"$log" 2>&1; then
	cat "$log" >&2
	echo "build failed ($dir)" >&2
	exit 1
fi
echo "$dir/src/kapsel/kapsel"
