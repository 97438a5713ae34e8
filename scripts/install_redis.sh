#!/usr/bin/env bash
# The Celery test (tests/celery) runs the deployed topology natively: its broker is Debian's
# redis-server on a free loopback port (no Docker engine here). Installs it from apt once; does
# nothing when it is already there. The test starts and stops its own server: the package's
# system service is not needed and is not started here.
set -euo pipefail
command -v redis-server >/dev/null 2>&1 && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing Debian's redis-server for the Celery test (apt-get)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server
