#!/usr/bin/env bash
# Draws the load benchmark's ramps as PNG charts (gnuplot; Debian: gnuplot-nox).
#
#   bash benches/charts.sh RAMPS.tsv OUTDIR
#
# RAMPS.tsv is what benches/load.sh writes: a "# machine: ..." line, then one row per ramp
# step: series (list100, single-sp, single-kam), asked/s, achieved/s, ok, failed, server CPU
# (% of one core), time to first NOTIFY p50 and p99 (ms). Steps with a failed call are left
# out (the ramp's last step). Writes OUTDIR/cpu.png and OUTDIR/latency.png.
set -euo pipefail
DATA=${1:?usage: charts.sh RAMPS.tsv OUTDIR}
OUT=${2:?usage: charts.sh RAMPS.tsv OUTDIR}
command -v gnuplot >/dev/null || { echo "missing gnuplot (apt-get install gnuplot-nox)" >&2; exit 1; }
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
MACHINE=$(sed -n 's/^# machine: //p' "$DATA" | head -1)

# One file per series, passing steps only; gnuplot reads a series it has no rows for as empty.
for series in list100 single-sp single-kam; do
  awk -F'\t' -v s="$series" '!/^#/ && $1 == s && $5 == 0 {print $3 "\t" $6 "\t" $7 "\t" $8}' "$DATA" | sort -n > "$TMP/$series.tsv"
done
plots() { # plots COLUMN TITLE_SUFFIX DASHTYPE: the plot clauses of the series that have rows
  local col=$1 suffix=$2 dt=$3 sep=""
  local -A label=([list100]="smart-presence, 100-number lists" [single-sp]="smart-presence, single presentity" [single-kam]="Kamailio 5.6, single presentity")
  local -A colour=([list100]="#1f77b4" [single-sp]="#2ca02c" [single-kam]="#d62728")
  for series in list100 single-sp single-kam; do
    [ -s "$TMP/$series.tsv" ] || continue
    printf '%s"%s" using 1:%s with linespoints lw 2 pt 7 ps 0.6 dt %s lc rgb "%s" title "%s%s"' \
      "$sep" "$TMP/$series.tsv" "$col" "$dt" "${colour[$series]}" "${label[$series]}" "$suffix"
    sep=", "
  done
}
[ -n "$(plots 2 "" 1)" ] || { echo "no passing ramp step in $DATA: no charts" >&2; exit 1; }

gnuplot <<GP
set terminal pngcairo size 1100,520 enhanced font "sans,10" background rgb "white"
set grid
set key outside right top vertical Left reverse width -2
set bmargin 5
set xlabel "achieved SUBSCRIBE cycles per second (no failed call)"
set label 1 "${MACHINE//\"/}" at screen 0.01, screen 0.015 font "sans,9" tc rgb "#666666"


set output "$OUT/cpu.png"
set title "Server CPU against rate (SIPp on the same machine)"
set ylabel "server CPU, % of one core"
set yrange [0:*]
plot $(plots 2 "" 1)

set output "$OUT/latency.png"
set title "Time to first NOTIFY against rate (SIPp rtd, 1 ms resolution)"
set ylabel "ms (solid: p50, dashed: p99)"
set yrange [0:*]
plot $(plots 3 " p50" 1), $(plots 4 " p99" 2)
GP
echo "charts: $OUT/cpu.png $OUT/latency.png"
