"""Representative inputs kondense brings itself, for models that come without data.

Random token ids are far from real text and exaggerate quantization error (MiniLM's dynamic
INT8 lost 0.022 cosine on them and about 0.01 on real sentences), so a model without data
is measured on the closest thing kondense has to the user's inputs:

- text models with a tokenizer: kondense's own corpus of natural sentences (corpus/*.txt,
  written for the project: varied topics, lengths and forms, a few other languages),
  tokenized with the model's tokenizer;
- image models (one float input shaped N,C,H,W or N,H,W,C with 1 or 3 channels): images
  generated here with the statistics of photographs (see `natural_images`);
- anything else: synthetic random inputs of the declared shapes, which only show gross
  breakage; the result says so (`evaluationData: synthetic`).

Each built-in set has two disjoint splits: `tune` for calibration and sensitivity
measurement, `evaluate` held out for the quality metric, so no recipe is judged on the
inputs it was tuned on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np

from kondense.api.outcome import EvaluationData
from kondense.runners.io.data import (
    Batch,
    InputSignature,
    concrete_shape,
    load_tokenizer,
    synthetic_batches,
    tokenize_texts,
    vocab_size,
)
from kondense.runners.model.assets import tokenizer_dir

Split = Literal["tune", "evaluate"]
CORPUS = Path(__file__).parent / "corpus"
# Dynamic spatial dims of an image input are fixed to this unless spec.model.inputs says.
DEFAULT_IMAGE_SIZE = 224
# Generated images per split, and distinct seeds so the splits never share an image.
IMAGE_SAMPLES = 64
_IMAGE_SEEDS = {"tune": 1, "evaluate": 2}
_SYNTHETIC_SEEDS = {"tune": 1, "evaluate": 0}


def sentences(split: Split) -> list[str]:
    """The built-in corpus's sentences of one split, one per line."""
    return _read_corpus(split)


@cache
def _read_corpus(split: Split) -> list[str]:
    text = (CORPUS / f"{split}.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def data_kind(signatures: Sequence[InputSignature], assets: Path | None) -> EvaluationData:
    """Which built-in inputs fit a model with these inputs and (maybe) a folder of assets
    (tokenizer, preprocessor config) beside it."""
    if tokenizer_dir(assets) is not None and _is_text(signatures):
        return EvaluationData.builtin_text
    if len(signatures) == 1 and image_layout(signatures[0]) is not None:
        return EvaluationData.builtin_images
    return EvaluationData.synthetic


def _is_text(signatures: Sequence[InputSignature]) -> bool:
    names = {s.name for s in signatures}
    return "input_ids" in names and all(s.dtype.kind in "iu" for s in signatures)


def image_layout(signature: InputSignature) -> Literal["nchw", "nhwc"] | None:
    """nchw or nhwc when the input looks like a batch of 1- or 3-channel images."""
    shape = signature.shape
    if signature.dtype.kind != "f" or len(shape) != 4:
        return None
    if shape[1] in (1, 3) and not _small(shape[2]) and not _small(shape[3]):
        return "nchw"
    if shape[3] in (1, 3) and not _small(shape[1]) and not _small(shape[2]):
        return "nhwc"
    return None


def _small(dim: int | str | None) -> bool:
    # Fixed spatial dims below 8 pixels are features, not images.
    return isinstance(dim, int) and dim < 8


def representative_batches(
    signatures: Sequence[InputSignature],
    assets: Path | None,
    *,
    split: Split,
    batch_size: int,
    sequence_length: int,
    samples: int | None = None,
) -> tuple[EvaluationData, list[Batch]]:
    """The built-in inputs that fit the model, in batches, and which kind they are.

    `samples` caps the count (default: the whole split; 64 for synthetic inputs).
    """
    kind = data_kind(signatures, assets)
    if kind is EvaluationData.builtin_text:
        assert assets is not None
        texts = sentences(split)[:samples]
        tokenizer = load_tokenizer(assets)
        names = [s.name for s in signatures]
        batches = [
            tokenize_texts(
                tokenizer, texts[start : start + batch_size], [], names, sequence_length, "corpus"
            )
            for start in range(0, len(texts), batch_size)
        ]
        return kind, batches
    if kind is EvaluationData.builtin_images:
        (signature,) = signatures
        count = samples or IMAGE_SAMPLES
        images = image_inputs(signature, count, seed=_IMAGE_SEEDS[split], assets=assets)
        batches = [
            Batch(inputs={signature.name: images[start : start + batch_size]}, labels=None)
            for start in range(0, count, batch_size)
        ]
        return kind, batches
    count = samples or IMAGE_SAMPLES
    return kind, list(
        synthetic_batches(
            signatures,
            batches=max(1, count // batch_size),
            batch_size=batch_size,
            sequence_length=sequence_length,
            vocab=vocab_size(assets),
            seed=_SYNTHETIC_SEEDS[split],
        )
    )


# --- images ----------------------------------------------------------------------------------


def image_inputs(
    signature: InputSignature, count: int, *, seed: int, assets: Path | None = None
) -> np.ndarray:
    """`count` generated images in the layout, size, channels and scale the input expects.

    Values are in [0, 1], as torchvision's ToTensor gives; a Hugging Face preprocessor_config
    beside the model (image_mean, image_std) normalizes them as the model was trained.
    """
    layout = image_layout(signature)
    assert layout is not None
    fixed = concrete_shape(signature, 1, DEFAULT_IMAGE_SIZE)
    if layout == "nchw":
        channels, height, width = fixed[1], fixed[2], fixed[3]
    else:
        height, width, channels = fixed[1], fixed[2], fixed[3]
    images = natural_images(count, height, width, seed=seed)  # N, H, W, 3
    if channels == 1:
        images = images @ np.array([0.299, 0.587, 0.114], dtype=np.float32)[:, None]
    images = _normalize(images, assets)
    if layout == "nchw":
        images = images.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(images, dtype=signature.dtype)


def natural_images(count: int, height: int, width: int, *, seed: int) -> np.ndarray:
    """`count` RGB images [N, H, W, 3] in [0, 1] with the statistics of photographs.

    Each is a smooth lit background (two-colour gradient), a few soft-edged objects of their
    own colour (ellipses and rectangles, which give edges at every orientation), and
    texture with a 1/f amplitude spectrum, the power law natural images follow; uniform
    noise has a flat spectrum that no camera produces.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = y / max(height - 1, 1), x / max(width - 1, 1)
    out = np.empty((count, height, width, 3), dtype=np.float32)
    for index in range(count):
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.clip((x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle) + 0.5, 0, 1)
        top, bottom = rng.uniform(0.1, 0.9, size=(2, 3)).astype(np.float32)
        image = top * ramp[..., None] + bottom * (1 - ramp[..., None])
        for _ in range(int(rng.integers(2, 6))):
            mask = _soft_shape(rng, x, y, height, width)
            colour = rng.uniform(0, 1, size=3).astype(np.float32)
            image = image * (1 - mask[..., None]) + colour * mask[..., None]
        texture = _pink_noise(rng, height, width)
        image = image * (0.75 + 0.25 * texture[..., None]) + 0.1 * (texture[..., None] - 0.5)
        out[index] = np.clip(image, 0, 1)
    return out


def _soft_shape(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, height: int, width: int
) -> np.ndarray:
    cx, cy = rng.uniform(0.1, 0.9, size=2)
    rx, ry = rng.uniform(0.08, 0.35, size=2)
    edge = 1.5 / max(min(height, width), 1)  # about a pixel and a half of blur
    if rng.random() < 0.5:
        distance = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2) - 1
        distance *= min(rx, ry)
    else:
        distance = np.maximum(np.abs(x - cx) - rx, np.abs(y - cy) - ry)
    return np.asarray(np.clip(0.5 - distance / edge, 0, 1), dtype=np.float32)


def _pink_noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A [0, 1] field whose amplitude spectrum falls as 1/f."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    frequency = np.sqrt(fx**2 + fy**2)
    frequency[0, 0] = 1.0
    spectrum = (rng.normal(size=frequency.shape) + 1j * rng.normal(size=frequency.shape)) / (
        frequency
    )
    spectrum[0, 0] = 0
    field = np.fft.irfft2(spectrum, s=(height, width))
    span = field.max() - field.min()
    return np.asarray((field - field.min()) / (span if span > 0 else 1), dtype=np.float32)


def _normalize(images: np.ndarray, assets: Path | None) -> np.ndarray:
    """Apply a Hugging Face image processor's mean and std when the model has one."""
    config = assets / "preprocessor_config.json" if assets is not None else None
    if config is None or not config.is_file():
        return images
    try:
        settings = json.loads(config.read_text())
    except ValueError:
        return images
    if not settings.get("do_normalize", True):
        return images
    mean, std = settings.get("image_mean"), settings.get("image_std")
    channels = images.shape[-1]
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std)):
        return images
    if len(mean) != channels:
        return images
    return (images - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
