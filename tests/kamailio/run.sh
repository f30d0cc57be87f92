#!/usr/bin/env bash
# Render tests/kamailio/registrar.cfg into RUNDIR and run Kamailio in the foreground.
#   tests/kamailio/run.sh RUNDIR KAM_PORT PRESENCE_URI [extra kamailio args...]
#   e.g. tests/kamailio/run.sh /tmp/kam 25070 sip:127.0.0.1:25060
# RUNDIR is created if needed; its dbtext/ is reset to the seed tables on every start.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
[ $# -ge 3 ] || { echo "usage: $0 RUNDIR KAM_PORT PRESENCE_URI [kamailio args...]" >&2; exit 2; }
rundir="$1" port="$2" presence="$3"; shift 3
mkdir -p "$rundir"
rundir="$(cd "$rundir" && pwd)"
rm -rf "$rundir/dbtext"
cp -r "$here/dbtext" "$rundir/dbtext"
sed -e "s|@@KAM_PORT@@|$port|g" -e "s|@@PRESENCE_URI@@|$presence|g" -e "s|@@RUNDIR@@|$rundir|g" \
  "$here/registrar.cfg" > "$rundir/registrar.cfg"
exec kamailio -f "$rundir/registrar.cfg" -DD -E -n 1 -m 32 -M 4 \
  -P "$rundir/kamailio.pid" -Y "$rundir" -w "$rundir" "$@"
