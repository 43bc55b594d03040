#!/usr/bin/env bash
# Harness memory per idle peer, plain ws:// next to wss://: starts one plain and one TLS
# `stampede serve` (separate processes, so the harness's RSS is its own), runs the
# idle-hold scenario with N peers against each RUNS times, and prints the harness RSS per
# connected peer from each run's summary.json. Only loopback; the servers are ended by PID.
#
#   cargo build --release && benches/tls_idle.sh [N] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5000}
runs=${2:-3}
bin=target/release/stampede
out=$(mktemp -d)
# shellcheck source=serve_pair.sh
source benches/serve_pair.sh

per_peer() { python3 -c 'import json,sys; h=json.load(open(sys.argv[1]))["harness"]; print(h["rss_per_peer_bytes"])' "$1/summary.json"; }
for mode in ws wss wss-per-peer; do
  for i in $(seq "$runs"); do
    case $mode in
      ws) args=(--target "$plain") ;;
      wss) args=(--target "$tls" --cacert "$ca") ;;
      wss-per-peer) args=(--target "$tls" --cacert "$ca" --tls-resumption per-peer) ;;
    esac
    "$bin" run idle-hold --peers "$n" --ramp 5s --duration 20s --quiet "${args[@]}" \
      --out "$out/$mode-$i" >/dev/null
    echo "$mode run $i: $(per_peer "$out/$mode-$i") B per connected peer"
  done
done
echo "reports in $out"
