#!/usr/bin/env bash
# Create (or update) a virtual environment with kondense (editable) and one extra, at exactly
# the versions uv.lock pins.
#
# Packages are installed with uv from its cache outside the repository (~/.cache/uv, or
# UV_CACHE_DIR), hard-linked into the environment: a second clone or a rebuilt .venv costs
# almost no download and no extra disk, which matters because PyTorch with its CUDA libraries
# is several GB.
#
# uv.lock pins every package for every Python and platform kondense supports, torch included
# (PyPI's build). `--locked` refuses a lock that no longer matches pyproject.toml: run
# `make lock` after changing the dependencies, and commit both files.
set -euo pipefail
venv=${1:?usage: install-venv.sh VENV [EXTRA]}
extra=${2:-test}
python=${PYTHON:-python3}
uv_version=0.13.9

# Trust the system's certificate store, as pip does (a proxy's CA lives there).
export UV_SYSTEM_CERTS=1

test -x "$venv/bin/python" || "$python" -m venv "$venv"
test -x "$venv/bin/uv" || "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "uv==$uv_version"

if ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  cache=$("$venv/bin/uv" cache dir)
  mkdir -p "$cache"
  free_gb=$(df -Pk "$cache" | awk 'NR==2 {print int($4 / 1048576)}')
  if [ "$free_gb" -lt 8 ]; then
    echo "install-venv: warning: $free_gb GB free for $cache; a first PyTorch download needs" \
      "about 7 GB there (the PyPI build carries CUDA libraries). Set UV_CACHE_DIR to a" \
      "roomier disk if the install runs out of space." >&2
  fi
fi
# --inexact: packages the lock doesn't name (uv itself, pip) stay.
UV_PROJECT_ENVIRONMENT="$venv" "$venv/bin/uv" sync --quiet --locked --inexact \
  --python "$venv/bin/python" --extra "$extra"
