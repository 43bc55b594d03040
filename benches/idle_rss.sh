#!/usr/bin/env bash
# Harness memory per idle peer, whole process: starts one plain and one TLS `stampede
# serve` (separate processes, so the harness's RSS is its own), runs idle-hold with N
# peers against each, reads the harness's VmRSS from /proc once every peer is connected
# and holding, and prints it divided by N (runtime floor included), next to the same at
# 100 peers (the floor). Only loopback; the servers are ended by PID.
#
#   cargo build --release && benches/idle_rss.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5000}
bin=target/release/stampede
out=$(mktemp -d)
# shellcheck source=serve_pair.sh
source benches/serve_pair.sh

# Ramp 3 s, hold until 12 s; VmRSS read at 9 s, every peer connected and idle.
hold_rss() {
  local peers=$1
  shift
  "$bin" run idle-hold --peers "$peers" --ramp 3s --duration 12s --quiet "$@" \
    --out "$out/run-$peers-$RANDOM" >/dev/null 2>&1 &
  local run=$!
  sleep 9
  awk '/^VmRSS/ {print $2 * 1024}' "/proc/$run/status"
  wait "$run" || true
}
for mode in ws wss; do
  case $mode in
    ws) args=(--target "$plain") ;;
    wss) args=(--target "$tls" --cacert "$ca") ;;
  esac
  floor=$(hold_rss 100 "${args[@]}")
  full=$(hold_rss "$n" "${args[@]}")
  python3 -c 'import sys; m,f,b,n=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),int(sys.argv[4]); print(f"{m}: {n} idle peers {b/1e6:.1f} MB whole process = {b/n:,.0f} B per peer; floor (100 peers) {f/1e6:.1f} MB; marginal {(b-f)/(n-100):,.0f} B per peer")' "$mode" "$floor" "$full" "$n"
done
