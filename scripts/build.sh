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
[ -f "$dir/build.ninja" ] || meson setup "$dir" $opts >/dev/null
ninja -C "$dir" >/dev/null
echo "$dir/src/kapsel/kapsel"
