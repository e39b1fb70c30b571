#!/usr/bin/env bash
# Headless Chromium for tests/test_browser.py (the DVC plots page, the MLflow UI), run as root.
#
#   bash .ci/chromium.sh       install Debian's chromium when it is missing, then check that it
#                              starts headless and draws a page; exits 0 when it does. Safe to
#                              run again: an installed chromium is only checked.
#
# Debian's package, from the Debian mirror CI already reaches (Playwright's and Selenium's
# browser downloads come from other hosts). The tests drive it over the DevTools protocol on a
# pipe (no chromedriver, no Python package). `.ci/run` then sets FCA_REQUIRE_BROWSER=1, so
# the browser tests fail instead of skipping when it is missing.
set -euo pipefail

log() { echo "chromium.sh: $*" >&2; }

if ! command -v chromium >/dev/null; then
  [ "$(id -u)" -eq 0 ] || { log "chromium is not installed and this is not root: cannot apt-get install it"; exit 1; }
  log "installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  command -v chromium >/dev/null || { log "apt-get installed no chromium command"; exit 1; }
fi

# It must start headless and render: dump the DOM of a page whose script writes into it.
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo '<html><body><script>document.body.textContent = "rendered " + (6 * 7)</script></body></html>' >"$TMP/check.html"
if ! timeout 120 chromium --headless=new --disable-gpu --no-sandbox --disable-dev-shm-usage --no-first-run \
    --user-data-dir="$TMP/profile" --dump-dom "file://$TMP/check.html" >"$TMP/dom.html" 2>"$TMP/err.log" \
    || ! grep -q "rendered 42" "$TMP/dom.html"; then
  log "chromium does not render a page headless; its output:"
  tail -n 30 "$TMP/err.log" >&2 || true
  exit 1
fi
log "$(chromium --version 2>/dev/null | head -n1) renders headless"
