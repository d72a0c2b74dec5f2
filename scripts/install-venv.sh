#!/usr/bin/env bash
# Create (or update) a virtual environment with kondense and every extra the tests use.
#
# Packages are installed with uv from its cache outside the repository (~/.cache/uv, or
# UV_CACHE_DIR), hard-linked into the environment: a second clone or a rebuilt .venv costs
# almost no download and no extra disk, which matters because PyTorch with its CUDA libraries
# is several GB.
#
# PyTorch: the CPU-only build from PyTorch's CPU wheel index when that index is reachable (a
# GPU-less machine then pulls no CUDA libraries), the regular PyPI build otherwise.
set -euo pipefail
venv=${1:?usage: install-venv.sh VENV [EXTRAS]}
extras=${2:-test}
python=${PYTHON:-python3}
torch_spec=${TORCH_SPEC:-torch>=2.4}
cpu_index=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

# Trust the system's certificate store, as pip does (a proxy's CA lives there).
export UV_SYSTEM_CERTS=1

test -x "$venv/bin/python" || "$python" -m venv "$venv"
test -x "$venv/bin/uv" || "$venv/bin/python" -m pip install --quiet --disable-pip-version-check uv
uv=("$venv/bin/uv" pip install --quiet --python "$venv/bin/python")

if ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  cache=$("$venv/bin/uv" cache dir)
  mkdir -p "$cache"
  free_gb=$(df -Pk "$cache" | awk 'NR==2 {print int($4 / 1048576)}')
  if [ "$free_gb" -lt 8 ]; then
    echo "install-venv: warning: $free_gb GB free for $cache; a first PyTorch download needs" \
      "about 7 GB there (the PyPI build carries CUDA libraries). Set UV_CACHE_DIR to a" \
      "roomier disk if the install runs out of space." >&2
  fi
  if "$venv/bin/python" - "$cpu_index" >/dev/null 2>&1 <<'PY'
import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=10)
PY
  then
    echo "install-venv: PyTorch CPU build from $cpu_index"
    "${uv[@]}" --index-url "$cpu_index" "$torch_spec"
  else
    echo "install-venv: $cpu_index not reachable; installing PyTorch's regular PyPI build"
    "${uv[@]}" "$torch_spec"
  fi
fi
"${uv[@]}" -e ".[$extras]"
