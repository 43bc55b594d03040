# Sourced by the idle-memory benches: starts one plain and one TLS `stampede serve` on
# loopback (separate processes, so a harness's RSS is its own), ended by PID on exit, and
# sets `plain`, `tls` (their URLs) and `ca` (the --cacert the TLS one needs). Needs `bin`
# and `out` set.
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

"$bin" serve --listen 127.0.0.1:0 --ip-connect-limit 0 --rate 0 >"$out/plain.log" 2>&1 &
pids+=($!)
"$bin" serve --listen 127.0.0.1:0 --ip-connect-limit 0 --rate 0 --tls-self-signed >"$out/tls.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  grep -q '^listening on' "$out/plain.log" && grep -q -- '--cacert' "$out/tls.log" && break
  sleep 0.1
done
plain=$(sed -n 's/^listening on //p' "$out/plain.log")
tls=$(sed -n 's/^listening on //p' "$out/tls.log")
ca=$(grep -o -- '--cacert [^ ]*' "$out/tls.log" | head -1 | cut -d' ' -f2)
