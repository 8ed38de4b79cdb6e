#!/usr/bin/env bash
# Reads at 64 connections: GET /api/bookings/:id against a fresh SQLite
# `serve`, measured with wrk (Debian's `wrk` package), and the server's own
# CPU per request from /proc. Used for docs/PERFORMANCE.md; not a test.
#
#   scripts/reads.sh target/release/klubz-ledger [seconds]
#
# Set PERF=1 to record a `perf` profile of the server meanwhile
# (/tmp/perf-reads.data).
set -euo pipefail
bin=$(realpath "$1")
seconds=${2:-8}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
cd "$dir"
BIND_ADDR=127.0.0.1:0 "$bin" serve >serve.log 2>&1 &
pid=$!
for _ in $(seq 1 200); do grep -q listening serve.log 2>/dev/null && break; sleep 0.1; done
addr=$(grep -o '"address":"[^"]*"' serve.log | head -1 | cut -d'"' -f4)
driver=$("$bin" token --sub 1001 --role user --org o1 2>/dev/null)
rider=$("$bin" token --sub 1002 --role user --org o1 2>/dev/null)
id() { python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
trip=$(curl -sf -X POST "http://$addr/api/trips" -H "authorization: Bearer $driver" \
  -H 'content-type: application/json' -H 'idempotency-key: reads-trip' \
  -d '{"title":"T","seats":3,"pricePerSeatCents":700,"currency":"zar","departureTime":"2030-01-01T08:00:00Z"}' | id)
booking=$(curl -sf -X POST "http://$addr/api/trips/$trip/bookings" -H "authorization: Bearer $rider" \
  -H 'content-type: application/json' -H 'idempotency-key: reads-booking' -d '{"passengers":1}' | id)
curl -sf "http://$addr/api/bookings/$booking" -H "authorization: Bearer $rider" >/dev/null
if [ -n "${PERF:-}" ]; then
  perf record -F 999 -g -p "$pid" -o /tmp/perf-reads.data -- sleep "$seconds" >/dev/null 2>&1 &
fi
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
t0=$(cpu)
out=$(wrk -t2 -c64 -d"${seconds}s" -H "authorization: Bearer $rider" "http://$addr/api/bookings/$booking")
t1=$(cpu)
if echo "$out" | grep -q Non-2xx; then echo "$out"; echo "FAILED: answers other than 2xx" >&2; exit 1; fi
n=$(echo "$out" | grep -o '[0-9]* requests in' | awk '{print $1}')
rps=$(echo "$out" | grep Requests/sec | awk '{print $2}')
ticks=$(getconf CLK_TCK)
echo "reads/s $rps; server CPU $(python3 -c "print(round(($t1 - $t0) * 1e6 / $ticks / $n, 1))") us/request"
