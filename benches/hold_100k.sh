#!/usr/bin/env bash
# 100,000 concurrent peers from this one machine: SERVERS reference servers on their own
# loopback ports, `stampede run idle-hold` with WORKERS worker processes (each binds its own
# 127.x.y.z source address: one source address reaches one server port at most 28,232
# times, one process holds at most ~19.9k sockets), a ramp, then a hold long enough for
# two rounds of the servers' heartbeat Pings (every 30 s, HB-1) that every peer must answer.
# Prints the run's connect figures, the harness's RSS and CPU, and each server's
# pings / pongs / heartbeat drops and RSS at the end of the hold. Only loopback; the servers
# are ended by PID.
#
#   cargo build --release && benches/hold_100k.sh [PEERS] [WORKERS] [SERVERS] [RAMP_S] [HOLD_S]
set -euo pipefail
cd "$(dirname "$0")/.."
peers=${1:-100000}
workers=${2:-6}
servers=${3:-6}
ramp=${4:-25}
hold=${5:-65}
bin=target/release/stampede
out=$(mktemp -d)
token=bench-$$
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

for i in $(seq "$servers"); do
  "$bin" serve --listen 127.0.0.1:0 --ip-connect-limit 0 --rate 0 --admin-token "$token" \
    >"$out/server-$i.log" 2>&1 &
  pids+=($!)
done
targets=()
for i in $(seq "$servers"); do
  for _ in $(seq 100); do grep -q '^listening on' "$out/server-$i.log" && break; sleep 0.1; done
  targets+=(--target "$(sed -n 's/^listening on //p' "$out/server-$i.log")")
done

duration=$((ramp + hold))
echo "$peers peers, $workers workers, $servers servers, ramp ${ramp}s, duration ${duration}s; files in $out"
/usr/bin/time -v "$bin" run idle-hold --peers "$peers" --workers "$workers" --ramp "${ramp}s" \
  --duration "${duration}s" --quiet "${targets[@]}" --out "$out/run" \
  >"$out/run.txt" 2>"$out/time.txt" &
run=$!
# The servers' memory near the end of the hold, every peer connected.
sleep $((duration - 5))
server_rss=0
for p in "${pids[@]}"; do
  kb=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status")
  server_rss=$((server_rss + kb))
done
wait "$run" || true

python3 - "$out" "$token" "$server_rss" "${targets[@]}" <<'EOF'
import json, sys, urllib.request
out, token, server_rss_kb = sys.argv[1], sys.argv[2], int(sys.argv[3])
urls = [a for a in sys.argv[4:] if a != "--target"]
s = json.load(open(f"{out}/run/summary.json"))
c, h, l = s["connections"], s["harness"], s["latency"]["connect_us"]
print(f"peers connected {c['peers_connected']:,} of {s['peers']:,}; failed attempts {c['failed']:,}; "
      f"all up after {c['all_connected_after_s']:.1f} s ({c['connect_rate_per_s']:,.0f}/s)")
print(f"connect p50 {l['p50']/1e3:.1f} ms, p99 {l['p99']/1e3:.1f} ms, max {l['max']/1e3:.1f} ms")
print(f"closes {s['closes'] or 'none'}; checks {'passed' if s['checks_passed'] else 'FAILED'}; outcome {s['outcome']}")
print(f"harness RSS peak {h['rss_peak_bytes']/1e6:.1f} MB ({h['rss_peak_bytes']/max(c['peak_connected'],1):,.0f} B per peer, "
      f"whole processes); peak - baseline {h['rss_per_peer_bytes']:,} B per peer; CPU {h['cpu_s']:.1f} s "
      f"({h['cpu_percent']:.0f} % of one core on average)")
tot = {"pings": 0, "pongs": 0, "heartbeatDrops": 0, "connections": 0}
for u in urls:
    base = u.replace("ws://", "http://").rsplit("/v1", 1)[0]
    req = urllib.request.Request(f"{base}/_admin/stats", headers={"Authorization": f"Bearer {token}"})
    st = json.load(urllib.request.urlopen(req, timeout=10))
    for k in tot:
        tot[k] += st.get(k, 0)
print(f"servers: {tot['pings']:,} heartbeat pings sent, {tot['pongs']:,} pongs back, "
      f"{tot['heartbeatDrops']:,} dropped for silence; RSS {server_rss_kb/1e3:.1f} MB at the hold "
      f"({server_rss_kb*1e3/max(c['peak_connected'],1):,.0f} B per connection)")
EOF
grep -E "Elapsed|Maximum resident|User time|System time" "$out/time.txt"
