#!/bin/sh
# Run "$@" as on a machine without /dev/kvm: in a private mount namespace whose /dev is a
# tmpfs holding binds of every host /dev entry except kvm (the host's /dev is untouched).
# Used to check that the test command passes where KVM is absent:
#   tests/without-kvm.sh ./scripts/test.sh
exec unshare -m --propagation private sh -c '
set -e
real=$(mktemp -d /tmp/without-kvm.XXXXXX)
mount --rbind /dev "$real"
mount -t tmpfs -o mode=755 devtmp /dev
for e in "$real"/* "$real"/.[!.]*; do
	[ -e "$e" ] || [ -L "$e" ] || continue
	n=${e##*/}
	# A bound devtmpfs ptmx finds no "pts" beside it: the devpts instance own one instead.
	[ "$n" = kvm ] || [ "$n" = ptmx ] && continue
	if [ -L "$e" ]; then cp -a "$e" "/dev/$n"
	elif [ -d "$e" ]; then mkdir "/dev/$n"; mount --rbind "$e" "/dev/$n"
	else touch "/dev/$n"; mount --bind "$e" "/dev/$n"; fi
done
ln -s pts/ptmx /dev/ptmx
"$@"
' sh "$@"
