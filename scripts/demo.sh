#!/bin/sh
# The main job: install, build, and run `kapsel run busybox echo hello` on the embedded default
# image (Debian's busybox-static, built with kapsel) with no network.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
bin=$(./scripts/build.sh)
exec "$bin" run busybox echo hello
