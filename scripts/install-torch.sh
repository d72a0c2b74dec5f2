#!/usr/bin/env bash
# Install PyTorch into the given Python environment: the CPU-only build where pip can reach it
# (PyTorch's CPU wheel index, or a local wheel folder in PIP_FIND_LINKS), the regular PyPI build
# otherwise. A GPU-less machine then does not pull several GB of CUDA libraries it cannot use.
set -euo pipefail
python=${1:?usage: install-torch.sh PYTHON}
spec=${TORCH_SPEC:-torch>=2.4}
cpu_index=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

if "$python" -c 'import torch' 2>/dev/null; then
  exit 0
fi
if "$python" - "$cpu_index" >/dev/null 2>&1 <<'PY'
import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=10)
PY
then
  echo "install-torch: CPU build from $cpu_index"
  exec "$python" -m pip install --quiet --index-url "$cpu_index" --extra-index-url https://pypi.org/simple "$spec"
fi
echo "install-torch: $cpu_index not reachable; installing the regular PyPI build"
exec "$python" -m pip install --quiet "$spec"
