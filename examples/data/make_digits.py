"""The digits example's inputs, generated (no download): a small CNN trained on scikit-learn's
8x8 digits, saved as TorchScript, and its training and held-out data as .npz.

    python examples/data/make_digits.py examples

writes models/digits-cnn.ts, its weights alone as models/digits-cnn.safetensors (for
examples/custom-cnn-prune.yaml, whose network digits_nets builds), data/digits-train.npz
(1400 samples) and data/digits-eval.npz (397 samples), each .npz with `pixel_values`
[N, 1, 8, 8] float32 and `labels` int64. The CNN is the one the tests use
(tests/fixtures/models.py), trained the same way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def write(folder: Path) -> None:
    import torch
    from safetensors.torch import save_model

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    from fixtures.models import DIGITS_INPUT, load_digits_arrays, train_digits_cnn

    data = load_digits_arrays()
    (folder / "models").mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    model = train_digits_cnn(data)
    scripted = torch.jit.trace(model, torch.zeros(1, 1, 8, 8))
    torch.jit.save(scripted, str(folder / "models" / "digits-cnn.ts"))
    save_model(model, str(folder / "models" / "digits-cnn.safetensors"))
    for name, x, y in (("train", "x_train", "y_train"), ("eval", "x_test", "y_test")):
        np.savez(
            folder / "data" / f"digits-{name}.npz", **{DIGITS_INPUT: data[x], "labels": data[y]}
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("folder", type=Path, help="the examples folder")
    write(parser.parse_args().folder)


if __name__ == "__main__":
    main()
