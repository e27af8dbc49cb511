#!/usr/bin/env bash
# Headless Chromium for the browser-rendering tests and static figure export (kaleido).
# Installs Debian's chromium where it is missing and we may use apt-get; otherwise says so and
# leaves the rendering tests to skip with that reason. Never fails the caller.
set -u
for b in chromium chromium-browser google-chrome; do
  command -v "$b" >/dev/null 2>&1 && exit 0
done
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    echo "installing Debian's chromium for the rendering tests (apt-get)..."
    $SUDO apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
      && exit 0
  fi
fi
echo "note: no Chromium installed (apt-get install chromium); browser-rendering tests will skip." >&2
exit 0
