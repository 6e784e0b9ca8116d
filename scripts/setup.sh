#!/bin/sh
# Install everything kapsel needs to build and test on Debian 12. Idempotent, non-interactive.
set -eu
export DEBIAN_FRONTEND=noninteractive
pkgs="meson ninja-build pkg-config gcc clang clang-format libclang-rt-14-dev
  libjson-c-dev libcmocka-dev libseccomp-dev libcap-dev libmnl-dev libnftables-dev nftables
  busybox-static python3 python3-pytest iproute2 util-linux procps
  podman containerd crun runc conmon
  libcurl4-openssl-dev libarchive-dev libssl-dev libzstd-dev liblzma-dev libisal-dev zstd
  docker-registry skopeo umoci buildah
  qemu-system-x86 time uidmap passwd
  qemu-utils cpio strace e2fsprogs
  seabios extlinux syslinux-common
  zsh fish passt"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
	apt-get update -q || true
	apt-get install -y -q --no-install-recommends $missing
fi

# The guest kernel of `kapsel run --vm` (docs/vm.md, run --vm; docs/DESIGN.md says why the
# generic flavour): Debian's linux-image-amd64, downloaded and unpacked with dpkg-deb -x into
# /usr/local/lib/kapsel/vm-kernel/VERSION (boot/vmlinuz-VERSION, lib/modules/VERSION), never
# installed on the host. kapsel finds it there without configuration.
vmk=/usr/local/lib/kapsel/vm-kernel
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
	sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1)
if [ -z "$pkg" ]; then
	echo "setup: linux-image-amd64 not known to apt: no guest kernel for run --vm" >&2
else
	ver=${pkg#linux-image-}
	if [ ! -e "$vmk/$ver/boot/vmlinuz-$ver" ]; then
		tmp=$(mktemp -d)
		trap 'rm -rf "$tmp"' EXIT
		(cd "$tmp" && apt-get download -q "$pkg")
		mkdir -p "$vmk"
		rm -rf "$vmk/$ver.tmp"
		dpkg-deb -x "$tmp"/"$pkg"_*.deb "$vmk/$ver.tmp"
		mv "$vmk/$ver.tmp" "$vmk/$ver"
	fi
fi
