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
# The VM tests need KVM. With a /dev/kvm (hardware, or one that emulates every instruction:
# there the freestanding guests run and the Linux guests skip with the measured rate) they run
# with the rest. Without one, the freestanding-guest suites run in a stage of their own inside
# an outer guest under QEMU TCG, whose emulated SVM gives a real /dev/kvm (scripts/vm-tests.sh).
# The Linux-guest suites under nested SVM are the longer target `scripts/vm-tests.sh --nested`
# (README: QEMU 7.2's SVM emulation is not yet dependable enough for them to gate every run).
echo "== integration tests"
if [ $# -eq 0 ] && [ ! -e /dev/kvm ]; then
	/usr/bin/python3 -m pytest -q -rs -p no:cacheprovider tests/integration \
		--ignore-glob='tests/integration/test_vm*.py'
	echo "== VM tests on the soft CPU (--accel soft: no KVM needed)"
	# The soft CPU's suites, and the soft column of the Linux-guest and S3 tests (-m "not kvm":
	# their kvm column goes to scripts/vm-tests.sh --nested).
	/usr/bin/python3 -m pytest -q -rs -p no:cacheprovider -m "not kvm" \
		tests/integration/test_vm_soft.py tests/integration/test_vm_soft_jit.py \
		tests/integration/test_vm_soft_lifecycle.py tests/integration/test_vm_linux.py \
		tests/integration/test_vm_linux_virtio.py tests/integration/test_vm_linux_lifecycle.py \
		tests/integration/test_vm_s3.py
	echo "== VM tests: no /dev/kvm here, so the freestanding guests run in nested SVM under QEMU TCG"
	echo "   (the Linux guests: scripts/vm-tests.sh --nested; test_vm_soft_diff.py goes there too:"
	echo "   its reference side is KVM)"
	# shellcheck disable=SC2046
	scripts/vm-tests.sh --nested $(ls tests/integration/test_vm*.py |
		grep -v -e _linux -e _soft.py -e _soft_jit.py -e _soft_lifecycle.py)
else
	/usr/bin/python3 -m pytest -q -rs -p no:cacheprovider tests/integration "$@"
fi
if [ -x tests/fuzz/run.sh ]; then
	echo "== fuzzers (short)"
	tests/fuzz/run.sh "${FUZZ_SECONDS:-10}"
fi
echo "== all tests passed"
