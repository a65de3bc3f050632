#!/usr/bin/env bash
# Idempotent set-up of everything kubeaccel's tests and demo need, on a fresh Debian machine or a
# reused one: Debian packages, the Python venv, then every step in scripts/bootstrap.d/ in order
# (e.g. building Kubernetes from upstream into ~/.cache/kubeaccel). Re-running does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
log() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*"; }

# 1. Debian packages
mapfile -t wanted < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/apt-packages.txt)
missing=()
for pkg in "${wanted[@]}"; do
  pkg=$(echo "$pkg" | xargs)
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then echo "bootstrap: need root to apt-get install ${missing[*]}" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi

# 2. Python venv with kubeaccel (editable) and its dev extras; redone only when pyproject changes
PY=${PYTHON:-python3}
stamp=.venv/.kubeaccel-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing kubeaccel and dev dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[dev]"
  echo "$want" >"$stamp"
else
  log ".venv up to date"
fi

# 3. The real node's kubelet is reached by its hostname (it refuses a loopback node IP)
if [ "$(id -u)" = 0 ] && ! getent hosts "$(hostname)" >/dev/null; then
  log "mapping hostname $(hostname) to 127.0.0.1 in /etc/hosts (for the local real node)"
  echo "127.0.0.1 $(hostname)" >>/etc/hosts
fi

# `--venv`: stop here (enough for `make lint` and `make unit`)
if [ "${1:-}" = "--venv" ]; then log "venv ready (--venv: the cluster, images and Helm are left for \`make bootstrap\`)"; exit 0; fi

# 4. Further steps, each idempotent
for step in scripts/bootstrap.d/*.sh; do
  [ -e "$step" ] || continue
  log "step $(basename "$step")"
  ROOT="$ROOT" bash "$step"
done
log "done"
