#!/bin/sh
# Install everything kapsel needs to build and test on Debian 12. Idempotent, non-interactive.
set -eu
export DEBIAN_FRONTEND=noninteractive
pkgs="meson ninja-build pkg-config gcc clang clang-format libclang-rt-14-dev
  libjson-c-dev libcmocka-dev libseccomp-dev libcap-dev libmnl-dev libnftables-dev nftables
  busybox-static python3 python3-pytest iproute2 util-linux procps
  podman containerd crun runc conmon
  libcurl4-openssl-dev libarchive-dev libssl-dev libzstd-dev libisal-dev zstd
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
