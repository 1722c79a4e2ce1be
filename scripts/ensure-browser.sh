#!/bin/sh
# Make sure headless Chromium (Debian package `chromium`, /usr/bin/chromium) is present for the browser tests.
# Installs it with apt-get when missing and running as root; otherwise says what is missing.
# Exit status: 0 when chromium is available afterwards, 1 when it is not.
set -eu

CHROMIUM="${OUTBOXHUB_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
    echo "ensure-browser: $CHROMIUM present ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-browser: $CHROMIUM missing and not running as root; install it with:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y chromium" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-browser: $CHROMIUM missing and apt-get not available; install Chromium by hand" >&2
    exit 1
fi

echo "ensure-browser: $CHROMIUM missing; installing the Debian chromium package (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium
if [ -x "$CHROMIUM" ]; then
    echo "ensure-browser: installed $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
    exit 0
fi
echo "ensure-browser: apt-get finished but $CHROMIUM is still missing" >&2
exit 1
