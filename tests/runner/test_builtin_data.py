"""Built-in inputs for models without data: sentences for text models, generated images for
image models, synthetic inputs for the rest, and which one a model gets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kondense.api.outcome import EvaluationData
from kondense.runners.io import builtin
from kondense.runners.io.data import InputSignature

INT64 = np.dtype(np.int64)
FLOAT = np.dtype(np.float32)
TEXT = [
    InputSignature("input_ids", ("batch", "sequence"), INT64),
    InputSignature("attention_mask", ("batch", "sequence"), INT64),
    InputSignature("token_type_ids", ("batch", "sequence"), INT64),
]


def test_the_corpus_splits_are_disjoint_and_varied() -> None:
    tune, evaluate = builtin.sentences("tune"), builtin.sentences("evaluate")
    assert len(tune) >= 150 and len(evaluate) >= 250
    assert not set(tune) & set(evaluate)
    assert len(set(evaluate)) == len(evaluate)
    words = sorted(len(line.split()) for line in evaluate)
    # Short queries and long passages alike, not one sentence frame repeated.
    assert words[len(words) // 10] <= 7 and words[-len(words) // 10] >= 25


@pytest.mark.parametrize(
    ("signatures", "with_tokenizer", "kind"),
    [
        (TEXT, True, EvaluationData.builtin_text),
        (TEXT, False, EvaluationData.synthetic),
        ([InputSignature("pixel_values", ("n", 3, 224, 224), FLOAT)], False, "images"),
        ([InputSignature("image", (1, "h", "w", 3), FLOAT)], False, "images"),
        ([InputSignature("x", ("n", 1, 8, 8), FLOAT)], False, "images"),
        ([InputSignature("x", ("n", 16), FLOAT)], False, EvaluationData.synthetic),
        ([InputSignature("x", ("n", 3, 4, 4), FLOAT)], False, EvaluationData.synthetic),
        ([InputSignature("x", ("n", 3, 32, 32), np.dtype(np.int64))], False, "synthetic"),
    ],
)
def test_each_model_gets_the_built_in_inputs_that_fit_it(
    signatures: list[InputSignature], with_tokenizer: bool, kind: str, minilm_dir: Path
) -> None:
    expected = {"images": "builtin-images", "synthetic": "synthetic"}.get(kind, kind)
    assert builtin.data_kind(signatures, minilm_dir if with_tokenizer else None) == expected


def test_a_text_model_is_evaluated_on_tokenized_sentences(minilm_dir: Path) -> None:
    kind, batches = builtin.representative_batches(
        TEXT, minilm_dir, split="evaluate", batch_size=32, sequence_length=64
    )
    assert kind is EvaluationData.builtin_text
    assert sum(len(b) for b in batches) == len(builtin.sentences("evaluate"))
    first = batches[0].inputs
    assert set(first) == {"input_ids", "attention_mask", "token_type_ids"}
    assert first["input_ids"].shape == (32, 64) and first["input_ids"].dtype == np.int64
    # Real sentences: lengths differ, so the padding masks differ.
    assert len(set(first["attention_mask"].sum(axis=1).tolist())) > 5


def _spectrum_slope(image: np.ndarray) -> float:
    """The log-log slope of a grey image's radially averaged amplitude spectrum."""
    grey = image.mean(axis=-1)
    amplitude = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean())))
    h, w = grey.shape
    y, x = np.indices(grey.shape)
    radius = np.hypot(y - h // 2, x - w // 2).astype(int)
    sums = np.bincount(radius.ravel(), amplitude.ravel())
    counts = np.bincount(radius.ravel())
    band = np.arange(2, min(h, w) // 2)
    return float(np.polyfit(np.log(band), np.log(sums[band] / counts[band]), 1)[0])


def test_generated_images_have_the_spectrum_of_photographs_not_of_noise() -> None:
    images = builtin.natural_images(8, 96, 96, seed=3)
    assert images.shape == (8, 96, 96, 3) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    slopes = [_spectrum_slope(image) for image in images]
    noise = np.random.default_rng(0).random((96, 96, 3), dtype=np.float32)
    # Photographs fall off as about 1/f or a little steeper (slope -1 to -2); noise is flat.
    assert all(-2.6 < slope < -0.8 for slope in slopes), slopes
    assert abs(_spectrum_slope(noise)) < 0.3
    # Not one image repeated: the splits' seeds give different images.
    assert not np.allclose(images[0], images[1])
    assert not np.allclose(
        builtin.natural_images(1, 32, 32, seed=1), builtin.natural_images(1, 32, 32, seed=2)
    )


def test_images_take_the_models_layout_size_channels_and_normalization(tmp_path: Path) -> None:
    nchw = InputSignature("pixel_values", ("n", 3, "h", "w"), FLOAT)
    images = builtin.image_inputs(nchw, 4, seed=1)
    assert images.shape == (4, 3, builtin.DEFAULT_IMAGE_SIZE, builtin.DEFAULT_IMAGE_SIZE)
    grey = builtin.image_inputs(InputSignature("x", (1, 28, 28, 1), FLOAT), 2, seed=1)
    assert grey.shape == (2, 28, 28, 1) and grey.min() >= 0 and grey.max() <= 1

    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.25] * 3})
    )
    fixed = InputSignature("pixel_values", (1, 3, 32, 32), FLOAT)
    plain = builtin.image_inputs(fixed, 2, seed=1)
    normalized = builtin.image_inputs(fixed, 2, seed=1, assets=tmp_path)
    np.testing.assert_allclose(normalized, (plain - 0.5) / 0.25, rtol=1e-5, atol=1e-5)


def test_tune_and_evaluate_splits_never_share_inputs(minilm_dir: Path) -> None:
    image = [InputSignature("x", ("n", 3, 32, 32), FLOAT)]
    _, tune = builtin.representative_batches(
        image, None, split="tune", batch_size=8, sequence_length=1, samples=8
    )
    _, held_out = builtin.representative_batches(
        image, None, split="evaluate", batch_size=8, sequence_length=1, samples=8
    )
    assert not np.allclose(tune[0].inputs["x"], held_out[0].inputs["x"])
    kind, synthetic = builtin.representative_batches(
        [InputSignature("x", ("n", 16), FLOAT)], None, split="evaluate", batch_size=8,
        sequence_length=1, samples=16,
    )  # fmt: skip
    assert kind is EvaluationData.synthetic and sum(len(b) for b in synthetic) == 16
