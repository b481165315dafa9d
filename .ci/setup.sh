#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine (as root) and starts the services the
# tests use. Idempotent: whatever is already installed or running is left alone.
#   .ci/setup.sh           system packages, uv, Python dependencies, pcscd
#   .ci/setup.sh services  also PostgreSQL and Redis (installed and started when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
export UV_PYTHON_DOWNLOADS=never
want_services="${1:-}"

need_pkgs=()
for pkg in pcscd vsmartcard-vpcd libpcsclite-dev swig chromium fonts-wqy-microhei; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
if [ "$want_services" = services ]; then
  command -v pg_ctlcluster >/dev/null 2>&1 || need_pkgs+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
fi
fresh_postgres=no
case " ${need_pkgs[*]:-} " in *" postgresql "*) fresh_postgres=yes ;; esac
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if ! command -v uv >/dev/null 2>&1; then
  echo "setup: installing uv"
  python3 -m pip install --quiet uv 2>/dev/null || python3 -m pip install --quiet --break-system-packages uv
fi
uv sync --locked --quiet

# pcscd with the vpcd virtual reader (its driver config is /etc/reader.conf.d/vpcd).
if ! pgrep -x pcscd >/dev/null 2>&1; then
  echo "setup: starting pcscd"
  /usr/sbin/pcscd || echo "setup: pcscd did not start"
  sleep 1
fi

if [ "$want_services" = services ]; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    echo "setup: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
  if [ "$fresh_postgres" = yes ]; then
    # A server we just installed for the tests: trust loopback, as on the development machines.
    hba="$(ls -d /etc/postgresql/*/main | sort -V | tail -1)/pg_hba.conf"
    sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main reload
  fi
  if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test"
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "setup: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
  fi
fi
