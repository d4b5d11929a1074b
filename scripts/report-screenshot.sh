#!/usr/bin/env bash
# Screenshot a `strata eval` report with headless Chromium (Debian package `chromium`).
#
#   scripts/report-screenshot.sh eval-report/report.html eval-report/report.png [WIDTHxHEIGHT]
#
# Fails (non-zero) when chromium is missing, the report does not exist, or no PNG results.
set -euo pipefail
html="${1:?usage: $0 REPORT.html OUT.png [WIDTHxHEIGHT]}"
png="${2:?usage: $0 REPORT.html OUT.png [WIDTHxHEIGHT]}"
size="${3:-1200x1800}"
browser="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$browser" ]; then
    echo "chromium not found: apt-get update && apt-get install -y chromium" >&2
    exit 2
fi
if [ ! -f "$html" ]; then
    echo "$html: no such report (run strata eval first)" >&2
    exit 2
fi
abs="$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
out_abs="$(cd "$(dirname "$png")" && pwd)/$(basename "$png")"
rm -f "$out_abs"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --user-data-dir="$profile" --window-size="${size/x/,}" \
    --screenshot="$out_abs" "file://$abs" >/dev/null 2>&1 || true
if [ ! -s "$out_abs" ]; then
    echo "chromium wrote no screenshot to $out_abs" >&2
    exit 1
fi
echo "wrote $out_abs"
