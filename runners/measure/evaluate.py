"""The task metric, baseline against result: pure metric functions and running them over data.

text-embedding: mean cosine of the result's sentence embeddings to the original's.
Classifiers: top-1 accuracy when the data has labels, else agreement with the original's argmax.
generic: agreement with the original (accuracy with labels) on the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kondense.api.errors import BadInput
from kondense.api.spec import Metric, Task
from kondense.runners.io.data import Batch
from kondense.runners.measure.inference import Device, open_session, run_batches
from kondense.runners.memory_budget import release_freed_memory

COSINE = "cosine"
ACCURACY = "accuracy"
AGREEMENT = "agreement"


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity of matching rows (each row flattened)."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    # Two zero vectors are identical; one zero vector against another is not.
    same = np.all(a == b, axis=1)
    cosine = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1), same)
    return float(cosine.mean())


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose highest score is the label."""
    return float((logits.reshape(len(logits), -1).argmax(axis=1) == labels).mean())


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows where both models pick the same top class."""
    return float(
        (a.reshape(len(a), -1).argmax(axis=1) == b.reshape(len(b), -1).argmax(axis=1)).mean()
    )


def mean_pool(hidden: np.ndarray, attention_mask: np.ndarray | None) -> np.ndarray:
    """Sentence embeddings from token states [N, T, H]: the mean over real (unmasked) tokens."""
    if hidden.ndim != 3:
        return hidden
    if attention_mask is None:
        return hidden.mean(axis=1)
    mask = attention_mask[..., None].astype(hidden.dtype)
    return (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)


def metric_name(metric: Metric, task: Task, has_labels: bool, classes: int = 2) -> str:
    """The metric `auto` stands for, or the one asked for (accuracy needs labels).

    `classes` is the width of the model's output per sample: a generic model with a single
    output value (a regressor) has no top class to agree on, so it is compared by cosine.
    """
    if metric == Metric.auto:
        if task == Task.text_embedding or (task == Task.generic and classes < 2):
            return COSINE
        return ACCURACY if has_labels else AGREEMENT
    if metric == Metric.accuracy and not has_labels:
        raise BadInput(
            "spec.evaluation.metric: accuracy needs labelled evaluation data; add labels to "
            "spec.data.evaluation or use metric: agreement"
        )
    return str(metric.value)


@dataclass(frozen=True)
class Evaluation:
    metric_name: str
    baseline: float
    compressed: float
    samples: int

    @property
    def drop(self) -> float:
        return self.baseline - self.compressed


@dataclass(frozen=True)
class Outputs:
    """One model's first output on every evaluation batch (sentence embeddings for text
    embedding models), and the labels when every batch has them."""

    values: np.ndarray
    labels: np.ndarray | None


def batch_list(batches: Iterable[Batch]) -> list[Batch]:
    """The evaluation batches, read once so that each model runs on the same ones."""
    listed = list(batches)
    if not listed:
        raise BadInput("spec.data.evaluation: the evaluation data has no samples")
    return listed


def model_outputs(session: Any, batches: Sequence[Batch], *, task: Task) -> Outputs:
    """`session`'s outputs on `batches`, as the task's metric compares them."""
    values: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for batch, output in run_batches(session, batches):
        if task == Task.text_embedding:
            output = mean_pool(output, batch.inputs.get("attention_mask"))
        values.append(output)
        if batch.labels is not None:
            labels.append(batch.labels)
    return Outputs(
        np.concatenate(values), np.concatenate(labels) if len(labels) == len(batches) else None
    )


def score(baseline: Outputs, result: Outputs, *, task: Task, metric: Metric) -> Evaluation:
    """The task's metric for the baseline and the result, from their outputs on the same data.

    Without labels the baseline scores 1.0 by definition (it agrees with itself) and the
    result scores its cosine or agreement to the baseline.
    """
    a, b = baseline.values, result.values
    samples = len(a)
    has_labels = baseline.labels is not None
    name = metric_name(metric, task, has_labels, classes=a.reshape(len(a), -1).shape[1])
    if name == COSINE:
        if a.reshape(len(a), -1).shape[1] == 1:
            # One value per sample: the cosine of two scalars is only their sign, so the
            # outputs over all samples are compared as one vector.
            a, b = a.reshape(1, -1), b.reshape(1, -1)
        return Evaluation(name, 1.0, mean_cosine(a, b), samples)
    if name == AGREEMENT:
        return Evaluation(name, 1.0, agreement(a, b), samples)
    assert baseline.labels is not None  # metric_name gives accuracy only with labels
    y = baseline.labels
    return Evaluation(name, top1_accuracy(a, y), top1_accuracy(b, y), samples)


def evaluate_pair(
    baseline: Path,
    compressed: Path,
    batches: Iterable[Batch],
    *,
    task: Task,
    metric: Metric,
    threads: int,
    device: Device,
) -> Evaluation:
    """Run both models on the same batches and score them with the task's metric (see
    `score`). The baseline runs first and its session is closed before the result's opens,
    so the two models are never in memory together."""
    listed = batch_list(batches)
    outputs = []
    for path in (baseline, compressed):
        session = open_session(path, threads=threads, device=device)
        outputs.append(model_outputs(session, listed, task=task))
        del session
        release_freed_memory()
    return score(outputs[0], outputs[1], task=task, metric=metric)
