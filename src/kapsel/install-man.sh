#!/bin/sh
# meson install: copy the man pages `kapsel __man` wrote (SRC/*.1) to DEST (mandir/man1).
set -eu
src=$1
dest="${DESTDIR:-}$2"
mkdir -p "$dest"
for page in "$src"/*.1; do
	install -m 0644 "$page" "$dest/"
done
