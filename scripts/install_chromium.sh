#!/usr/bin/env bash
# The browser tests (tests/e2e) drive Debian's Chromium headless through Playwright's pip
# package, which downloads no browser of its own (nothing may download at run time except from
# the package registries). Installs it from apt once; does nothing when it is already there.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing Debian's chromium for the browser tests (apt-get)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation
