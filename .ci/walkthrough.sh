#!/usr/bin/env bash
# Runs the README's walkthroughs exactly as written (the shell blocks between
# the `walkthrough:start` and `walkthrough:end` markers), twice in a row,
# against a release `serve` on the README's address, and checks what the
# README says they print. Run by .ci/test.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Every marked block, fences dropped, in README order.
awk '/<!-- walkthrough:start -->/{on=1; next} /<!-- walkthrough:end -->/{on=0; next}
     on && !/^```/' README.md > "$work/walkthrough.sh"
test -s "$work/walkthrough.sh" || { echo "README has no walkthrough block" >&2; exit 1; }

if (exec 3<>/dev/tcp/127.0.0.1/8787) 2>/dev/null; then
  echo "127.0.0.1:8787 is taken; the README's walkthrough needs it" >&2
  exit 1
fi

# The README's own commands, on a database of this run (the secrets file
# is the working directory's, shared by serve and the walkthrough, as the
# README says).
export DATABASE_URL="sqlite://$work/walkthrough.db"
cargo build -q --release
cargo run -q --release -- serve > "$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
  curl -fs http://127.0.0.1:8787/health > /dev/null 2>&1 && break
  sleep 0.2
done

before=$(git -C "$root" status --porcelain --untracked-files=all)
for run in 1 2; do
  echo "== README walkthrough, run $run"
  out="$work/run$run.txt"
  (cd "$root" && bash -euo pipefail "$work/walkthrough.sh") > "$out" 2>&1 || {
    cat "$out"; echo "the walkthrough failed (run $run)" >&2; exit 1; }
  cat "$out"
  grep -q '"paymentStatus":"paid"' "$out" || { echo "run $run: the booking is not paid" >&2; exit 1; }
  grep -q '{"received":true}' "$out" || { echo "run $run: the webhook was not applied" >&2; exit 1; }
  grep -q '"reason":"unknown_payment_intent"\|"replay":true' "$out" || {
    echo "run $run: the hand-sent webhook did not answer as the README says" >&2; exit 1; }
done
if [ "$(git -C "$root" status --porcelain --untracked-files=all)" != "$before" ]; then
  echo "the walkthrough left files in the repository:" >&2
  git -C "$root" status --porcelain --untracked-files=all >&2
  exit 1
fi
echo "README walkthrough ok (twice)"
