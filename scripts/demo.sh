#!/bin/sh
# The main job: install, build, and run a container from the embedded default (Debian's
# busybox-static) with no network.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
bin=$(./scripts/build.sh)
work=$(mktemp -d /tmp/kapsel-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
./scripts/mkbundle.sh "$work/bundle" echo "hello from kapsel" >/dev/null
exec "$bin" run --bundle "$work/bundle" "demo-$$"
