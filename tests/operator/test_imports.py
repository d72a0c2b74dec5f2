"""The operator image has no torch or onnxruntime: importing the operator must not need them."""

from __future__ import annotations

import subprocess
import sys


def test_operator_imports_neither_torch_nor_onnxruntime() -> None:
    code = (
        "import sys\n"
        "import kondense.operator.main, kondense.operator.handlers, kondense.api.crd\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'onnxruntime', 'onnx', 'transformers', 'numpy'))\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == ""
