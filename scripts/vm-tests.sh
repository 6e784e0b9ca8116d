#!/bin/sh
# Runs kapsel's VM tests (tests/integration/test_vm*.py and test_run_vm*.py: the freestanding
# guests of tests/guests and the Linux-guest tests) on real hardware-virtualization semantics,
# whatever this machine's /dev/kvm is:
#   - /dev/kvm runs guest code at hardware speed (the guest loop of test_vm_linux.guest_mips()
#     reaches 200 M instructions/s): the tests run here, directly;
#   - no /dev/kvm, or one that emulates every guest instruction: they run inside an outer
#     Linux guest booted under QEMU TCG with -cpu max, which emulates AMD SVM, so kvm-amd
#     loaded there gives a real /dev/kvm. The outer guest mounts this machine's root read-only
#     over virtio-9p (a tmpfs overlay takes the writes) and runs the same python3, pytest and
#     kapsel build (the approach of the virtme tools).
# The outer kernel and its modules come from Debian's linux-image-*-amd64 (the generic flavour:
# the cloud one has no 9p), fetched with `apt-get download` into $KAPSEL_NESTED_CACHE and
# unpacked with `dpkg -x` there, never installed; the Linux-guest tests boot the same kernel
# (KAPSEL_LINUX_DEB). Anything missing is one line saying what, and exit status 1.
#
# usage: scripts/vm-tests.sh [--direct | --nested] [PYTEST-ARGS... | TEST-FILES...]
#        scripts/vm-tests.sh --which     prints "direct" or "nested" (the reason on stderr)
#   KAPSEL                 the kapsel binary (default: build-asan/src/kapsel/kapsel)
#   KAPSEL_LINUX_DEB       a linux-image-*-amd64 .deb to use instead of downloading one
#   KAPSEL_NESTED_CACHE    where the .deb is kept and unpacked (default /var/cache/kapsel-nested)
#   KAPSEL_NESTED_TIMEOUT  seconds the whole nested stage may run (default 1500)
#   KAPSEL_NESTED_WEDGE    seconds without the outer guest's heartbeat that mean it wedged
#                          (default 90; scripts/nested/run.py then reruns in a fresh one)
#   KAPSEL_NESTED_MEM      outer guest memory (default 4G); KAPSEL_NESTED_CPUS (default 2)
#   KAPSEL_NESTED_TCG_THREAD  QEMU's TCG threading, multi (default) or single
#   KAPSEL_NESTED_QEMU     the QEMU binary for the outer guest (default qemu-system-x86_64),
#                          KAPSEL_NESTED_QEMU_DATA its firmware dirs (-L), colon-separated
#   KAPSEL_NESTED_KVM_AMD  kvm_amd's parameters in the outer guest (default "nested=0 vgif=0")
set -eu
cd "$(dirname "$0")/.."
repo=$PWD
export KAPSEL="${KAPSEL:-$repo/build-asan/src/kapsel/kapsel}"
mode=auto
which=false
case "${1:-}" in
--direct | --nested)
	mode=${1#--}
	shift
	;;
--which)
	which=true
	shift
	;;
esac
pytest_args="-q -rs -p no:cacheprovider"
# Without a test file or directory among the arguments (options only), all the VM tests.
have_tests=false
for a in "$@"; do
	case "$a" in
	-*) ;;
	*) have_tests=true ;;
	esac
done
if ! $have_tests; then
	set -- "$@" tests/integration/test_vm*.py tests/integration/test_run_vm*.py
fi

die() {
	echo "vm-tests: $*" >&2
	exit 1
}

[ -x "$KAPSEL" ] || die "kapsel binary $KAPSEL missing: build first (scripts/build.sh --sanitize)"

# The same probe and threshold as the Linux-guest tests use to decide they can boot Linux.
probe_mips() {
	/usr/bin/python3 -c 'import sys; sys.path.insert(0, "tests/integration")
from test_vm_linux import guest_mips
print(int(guest_mips()))' 2>/dev/null
}

if [ "$mode" = auto ]; then
	if [ ! -e /dev/kvm ]; then
		why="no /dev/kvm here: running the VM tests in nested SVM under QEMU TCG"
		mode=nested
	elif ! mips=$(probe_mips); then
		why="the guest-loop probe failed on this /dev/kvm: running the VM tests in nested SVM under QEMU TCG"
		mode=nested
	elif [ "$mips" -ge 200 ]; then
		why="/dev/kvm runs guests at hardware speed ($mips M instr/s): running the VM tests directly"
		mode=direct
	else
		why="/dev/kvm here emulates guest instructions ($mips M instr/s < 200): running the VM tests in nested SVM under QEMU TCG"
		mode=nested
	fi
	echo "vm-tests: $why" >&2
fi
if $which; then
	echo "$mode"
	exit 0
fi

if [ "$mode" = direct ]; then
	# shellcheck disable=SC2086
	exec /usr/bin/python3 -m pytest $pytest_args "$@"
fi

# ---- nested: everything the outer guest needs, or one line saying what is missing ----
command -v qemu-system-x86_64 >/dev/null ||
	die "nested stage cannot run: qemu-system-x86_64 not installed (scripts/setup.sh installs qemu-system-x86)"
[ -x /bin/busybox ] || die "nested stage cannot run: /bin/busybox missing (busybox-static)"
cache=${KAPSEL_NESTED_CACHE:-/var/cache/kapsel-nested}
mkdir -p "$cache" || die "nested stage cannot run: cannot create the cache dir $cache"
deb=${KAPSEL_LINUX_DEB:-}
if [ -z "$deb" ]; then
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1)
	[ -n "$pkg" ] ||
		die "nested stage cannot run: apt does not know linux-image-amd64 (run apt-get update, or set KAPSEL_LINUX_DEB to a linux-image-*-amd64 .deb)"
	deb=$(ls "$cache/${pkg}"_*_amd64.deb 2>/dev/null | tail -n 1 || true)
	if [ -z "$deb" ]; then
		echo "vm-tests: fetching $pkg into $cache (apt-get download, not installed)"
		# apt's sandbox user may not write the cache dir; the download is then done as root.
		if ! out=$(cd "$cache" && apt-get download "$pkg" 2>&1); then
			die "nested stage cannot run: apt-get download $pkg failed: $(echo "$out" | grep -v '^W:' | tail -n 1)"
		fi
		deb=$(ls "$cache/${pkg}"_*_amd64.deb 2>/dev/null | tail -n 1 || true)
		[ -n "$deb" ] || die "nested stage cannot run: apt-get download $pkg left no .deb in $cache"
	fi
fi
[ -f "$deb" ] || die "nested stage cannot run: KAPSEL_LINUX_DEB=$deb: no such file"
deb=$(readlink -f "$deb")
kroot="$cache/$(basename "$deb" .deb)"
if [ ! -f "$kroot/.unpacked" ]; then
	rm -rf "$kroot"
	dpkg-deb -x "$deb" "$kroot" || die "nested stage cannot run: dpkg-deb -x $deb failed"
	touch "$kroot/.unpacked"
fi
vmlinuz=$(ls "$kroot"/boot/vmlinuz-* 2>/dev/null | head -n 1 || true)
[ -n "$vmlinuz" ] || die "nested stage cannot run: $deb has no boot/vmlinuz-*"

job=$(mktemp -d /tmp/kapsel-nested.XXXXXX)
trap 'rm -rf "$job"' EXIT INT TERM
/usr/bin/python3 scripts/nested/mkinitramfs.py "$kroot" "$job/initrd.cpio" ||
	die "nested stage cannot run: building the outer initramfs failed"

# The outer guest's /tmp: ext4 on a sparse file (lazily initialised, so this is quick).
mke2fs -q -t ext4 -F "$job/scratch.img" "${KAPSEL_NESTED_SCRATCH:-16G}" ||
	die "nested stage cannot run: mke2fs of the scratch disk $job/scratch.img failed"

timeout=${KAPSEL_NESTED_TIMEOUT:-1500}
echo "vm-tests: booting the outer guest ($(basename "$vmlinuz"), QEMU TCG -cpu max, limit ${timeout}s)"
start=$(date +%s)
# scripts/nested/run.py writes the job (pytest on the chosen tests, chrooted into this machine's
# root: same paths, same tools), boots QEMU, and boots a fresh outer guest should one wedge.
rc=0
KAPSEL_LINUX_DEB="$deb" KAPSEL_LINUX_ROOT="$kroot" KAPSEL_NESTED_TIMEOUT="$timeout" \
	/usr/bin/python3 scripts/nested/run.py "$job" "$vmlinuz" "$repo" -- "$@" || rc=$?
echo "vm-tests: nested stage took $(($(date +%s) - start)) s of wall time (exit status $rc)"
exit "$rc"
