#!/bin/sh
# Build the liblinphone 5.1 interop client.
#   tests/interop/build.sh [OUTPUT]     (default: <repo>/target/interop/linphone_smart_client)
# Needs Debian 12's liblinphone-dev (5.1.x): apt-get install -y liblinphone-dev
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/target/interop/linphone_smart_client}

die() { echo "build.sh: ERROR: $*" >&2; exit 1; }

command -v gcc >/dev/null 2>&1 || die "gcc not found (apt-get install -y gcc)"
if [ ! -f /usr/include/linphone/core.h ]; then
	die "liblinphone headers not found (/usr/include/linphone/core.h). Install them: apt-get install -y liblinphone-dev"
fi
# linphone.pc exists but has an empty Libs:, so link flags are given explicitly.
# Note: belle-sip's library is libbellesip.so (-lbellesip), not -lbelle-sip.
for lib in linphone bctoolbox bellesip mediastreamer ortp; do
	found=
	for f in /usr/lib/*/lib$lib.so /usr/lib/lib$lib.so /usr/local/lib/lib$lib.so; do
		[ -e "$f" ] && found=$f && break
	done
	[ -n "$found" ] || die "lib$lib.so not found: install liblinphone-dev (it pulls libbctoolbox-dev, libbellesip-dev, libmediastreamer-dev, libortp-dev)"
done
ver=$(dpkg-query -W -f='${Version}' liblinphone-dev 2>/dev/null || echo unknown)
case "$ver" in
	5.1.*) ;;
	*) echo "build.sh: warning: liblinphone-dev version '$ver', this harness was written against 5.1.65" >&2 ;;
esac

mkdir -p "$(dirname "$out")"
set -x
gcc -std=gnu11 -O1 -g -Wall -Wextra -Wno-unused-parameter -Wno-deprecated-declarations \
	-o "$out" "$here/linphone_smart_client.c" \
	-llinphone -lbctoolbox -lbellesip -lmediastreamer -lortp
