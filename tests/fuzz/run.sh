#!/bin/sh
# Build the libFuzzer targets (clang, ASan+UBSan) and run each one for N seconds over its seed
# corpus: tests/fuzz/run.sh [SECONDS] [TARGET...]   (default 30 seconds, every fuzz-*.c).
# Inputs the fuzzer discovers go to a scratch directory, not into the tree; crashes are kept in
# build-fuzz/artifacts/<target>/ and make the script fail.
set -eu

secs=${1:-30}
[ $# -gt 0 ] && shift
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${KAP_FUZZ_BUILD:-$top/build-fuzz}
cd "$top"

if [ ! -f "$build/build.ninja" ]; then
	CC=clang meson setup "$build" -Dfuzz=true -Dtests=false
fi
if [ $# -gt 0 ]; then
	targets="$*"
else
	targets=$(for f in tests/fuzz/fuzz-*.c; do basename "$f" .c; done)
fi
# Only the fuzzers: the rest of the tree is not needed to fuzz.
# shellcheck disable=SC2046 # one word per target
ninja -C "$build" $(for t in $targets; do echo "tests/fuzz/$t"; done)

# Leaks inside third-party libraries we cannot fix are listed, with the reason, in lsan.supp.
export LSAN_OPTIONS="suppressions=$top/tests/fuzz/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
status=0
for name in $targets; do
	short=${name#fuzz-}
	corpus=tests/fuzz/corpus/$short
	artifacts=$build/artifacts/$name
	work=$(mktemp -d "${TMPDIR:-/tmp}/kapsel-$name.XXXXXX")
	mkdir -p "$artifacts"
	set -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$artifacts/"
	if [ -f "tests/fuzz/$short.dict" ]; then
		set -- "$@" -dict="tests/fuzz/$short.dict"
	fi
	echo "== $name: ${secs}s over $corpus"
	if ! "$build/tests/fuzz/$name" "$@" "$work" "$corpus"; then
		echo "== $name: FAILED, reproducer in $artifacts/" >&2
		status=1
	fi
	rm -rf "$work"
done
exit $status
