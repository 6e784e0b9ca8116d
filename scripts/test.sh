#!/bin/sh
# Install, build (ASan/UBSan, -Werror), and run every test: format check, unit tests,
# integration tests as root, and a short run of every fuzzer.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "== format"
bad=$(git ls-files '*.c' '*.h' | xargs clang-format --dry-run 2>&1 | grep -c warning || true)
if [ "$bad" != "0" ]; then
	git ls-files '*.c' '*.h' | xargs clang-format --dry-run 2>&1 | grep warning | head
	echo "clang-format: $bad problems" >&2
	exit 1
fi
echo "== build (ASan/UBSan)"
bin=$(./scripts/build.sh --sanitize)
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
echo "== unit tests"
meson test -C build-asan --print-errorlogs
export KAPSEL="$PWD/$bin"
# The VM tests need hardware-virtualization semantics: where /dev/kvm gives them they run with
# the rest; otherwise (no /dev/kvm, or one that emulates every instruction) in their own stage,
# inside an outer guest under QEMU TCG whose emulated SVM gives a real /dev/kvm
# (scripts/vm-tests.sh). Arguments, when given, choose the tests and run them here as they are.
vm_mode=direct
if [ $# -eq 0 ]; then
	vm_mode=$(scripts/vm-tests.sh --which)
fi
echo "== integration tests"
if [ "$vm_mode" = nested ]; then
	/usr/bin/python3 -m pytest -q -rs -p no:cacheprovider tests/integration \
		--ignore-glob='tests/integration/test_vm*.py'
	echo "== VM tests (nested SVM under QEMU TCG)"
	scripts/vm-tests.sh --nested
else
	/usr/bin/python3 -m pytest -q -rs -p no:cacheprovider tests/integration "$@"
fi
if [ -x tests/fuzz/run.sh ]; then
	echo "== fuzzers (short)"
	tests/fuzz/run.sh "${FUZZ_SECONDS:-10}"
fi
echo "== all tests passed"
