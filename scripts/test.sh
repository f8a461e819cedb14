#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing, checks formatting and
# lints, builds, and runs every test (unit, operator oracles, golden and whole-file tests on
# ../shared/data, the CLI), then stops whatever it started.
#
#   scripts/test.sh            everything
#   SKIP_INSTALL=1 scripts/test.sh   do not try to install system packages
#
# Tests on the real data read ../shared/data beside the checkout; with CI=true a missing file
# fails the run instead of being skipped.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }

# --- what the build and the servers need ------------------------------------------------------
need_pkgs=()
command -v cc >/dev/null 2>&1 || need_pkgs+=(build-essential)
command -v make >/dev/null 2>&1 || need_pkgs+=(make)
command -v pkg-config >/dev/null 2>&1 || need_pkgs+=(pkg-config)
command -v cmake >/dev/null 2>&1 || need_pkgs+=(cmake)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
command -v java >/dev/null 2>&1 || need_pkgs+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_pkgs+=(maven)
[ -e /usr/include/openssl/ssl.h ] || need_pkgs+=(libssl-dev)
# The PNG charts' font, and the dashboard test's browser and driver.
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_pkgs+=(fonts-dejavu-core)
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v node >/dev/null 2>&1 || need_pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || need_pkgs+=(npm)
if [ ${#need_pkgs[@]} -gt 0 ] && [ -z "${SKIP_INSTALL:-}" ]; then
  step "installing ${need_pkgs[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy 2>/dev/null || true

# The dashboard test drives Chromium with the npm package playwright-core (pinned in
# pipelines/tests/browser/package-lock.json).
if [ ! -d pipelines/tests/browser/node_modules/playwright-core ]; then
  step "npm ci (pipelines/tests/browser: playwright-core)"
  npm ci --prefix pipelines/tests/browser --no-audit --no-fund
fi
export WATTFLOW_CHROMIUM=${WATTFLOW_CHROMIUM:-$(command -v chromium || echo /usr/bin/chromium)}

# --- checks -----------------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "building the tests (release)"
cargo test --workspace --release --no-run

step "starting the real Kafka, Cassandra and Toxiproxy (scripts/services.sh up)"
# Stop only what this run started, whatever happens next.
started_services=""
if ! scripts/services.sh status >/dev/null 2>&1; then started_services=yes; fi
cleanup() { if [ -n "$started_services" ]; then scripts/services.sh down || true; fi; }
trap cleanup EXIT
scripts/services.sh up
export WATTFLOW_KAFKA=127.0.0.1:9092 WATTFLOW_CASSANDRA=127.0.0.1:9042 WATTFLOW_TOXIPROXY=127.0.0.1:8474

step "cargo test (release: the whole-file tests replay 2 million rows)"
cargo test --workspace --release

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "README's first command, as written: the demo starts, serves the dashboard, stops on SIGINT"
# Run where the README runs it (the checkout), into its default folder ./wattflow-demo.
rm -rf wattflow-demo
mkdir -p target/test-artefacts
demo_log=target/test-artefacts/demo.log
cargo run --release -p wattflow-pipelines --bin wattflow -- demo >"$demo_log" 2>&1 &
demo_pid=$!
url=""
for _ in $(seq 1 600); do
  url=$(grep -o 'http://127\.0\.0\.1:[0-9]*/' "$demo_log" | head -n 1 || true)
  [ -n "$url" ] && break
  if ! kill -0 "$demo_pid" 2>/dev/null; then cat "$demo_log"; echo "the demo exited early" >&2; exit 1; fi
  sleep 0.5
done
if [ -z "$url" ]; then cat "$demo_log"; kill "$demo_pid" 2>/dev/null || true; echo "the demo printed no address" >&2; exit 1; fi
curl -fsS "$url" | grep -q '<title>wattflow</title>'
curl -fsS "${url}api/v1/meters" | grep -q '"household-3"'
# The page in a real browser draws the demo's live data.
node pipelines/tests/browser/screenshot.mjs "$url" target/test-artefacts/demo.png 1400 1800
kill -INT "$demo_pid"
demo_rc=0
wait "$demo_pid" || demo_rc=$?
cat "$demo_log"
if [ "$demo_rc" != 0 ]; then echo "the demo exited with $demo_rc after SIGINT" >&2; exit 1; fi
for g in minute hour day; do test -s "wattflow-demo/$g/_manifest.json"; done
grep -q '^stopped after' "$demo_log"
rm -rf wattflow-demo

step "README command: the history replay on the embedded default"
demo_out=$(mktemp -d)
cargo run --release --quiet -p wattflow-pipelines --bin wattflow -- replay --out "$demo_out" --quiet
test -f "$demo_out/hour/_manifest.json"
rm -rf "$demo_out"

echo
echo "all checks passed"
