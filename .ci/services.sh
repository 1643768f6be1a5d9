#!/usr/bin/env bash
# Install the database servers the DLQ tests run against (Redis, PostgreSQL), and the openssl
# command (the real-client tests make a self-signed certificate with it), if missing.
# It only installs: the test fixtures (tests/conftest.py) start and stop the servers themselves.
set -euo pipefail

have_postgres() {
    command -v initdb >/dev/null 2>&1 && return 0
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

packages=()
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
have_postgres || packages+=(postgresql)
command -v openssl >/dev/null 2>&1 || packages+=(openssl)

if ((${#packages[@]} == 0)); then
    echo "services: redis-server, postgresql and openssl already installed"
    exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    sudo=(sudo)
fi
echo "services: installing ${packages[*]}"
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"
