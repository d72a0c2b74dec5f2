"""The task metric, baseline against result: pure metric functions and running them over data.

text-embedding: mean cosine of the result's sentence embeddings to the original's.
Classifiers: top-1 accuracy when the data has labels, else agreement with the original's argmax.
generic: agreement with the original (accuracy with labels) on the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kondense.api.errors import BadInput
from kondense.api.spec import Metric, Task
from kondense.runners.io.data import Batch
from kondense.runners.measure.inference import Device, open_session, run_batches

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
    """Run both models on the same batches and score them with the task's metric.

    Without labels the baseline scores 1.0 by definition (it agrees with itself) and the
    result scores its cosine or agreement to the baseline.
    """
    base_session = open_session(baseline, threads=threads, device=device)
    result_session = open_session(compressed, threads=threads, device=device)
    base_out: list[np.ndarray] = []
    result_out: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    batch_list = list(batches)
    if not batch_list:
        raise BadInput("spec.data.evaluation: the evaluation data has no samples")
    for (batch, base), (_, result) in zip(
        run_batches(base_session, batch_list), run_batches(result_session, batch_list), strict=True
    ):
        mask = batch.inputs.get("attention_mask") if task == Task.text_embedding else None
        if task == Task.text_embedding:
            base, result = mean_pool(base, mask), mean_pool(result, mask)
        base_out.append(base)
        result_out.append(result)
        if batch.labels is not None:
            labels.append(batch.labels)
    has_labels = len(labels) == len(batch_list)
    a, b = np.concatenate(base_out), np.concatenate(result_out)
    samples = len(a)
    name = metric_name(metric, task, has_labels, classes=a.reshape(len(a), -1).shape[1])
    if name == COSINE:
        if a.reshape(len(a), -1).shape[1] == 1:
            # One value per sample: the cosine of two scalars is only their sign, so the
            # outputs over all samples are compared as one vector.
            a, b = a.reshape(1, -1), b.reshape(1, -1)
        return Evaluation(name, 1.0, mean_cosine(a, b), samples)
    if name == AGREEMENT:
        return Evaluation(name, 1.0, agreement(a, b), samples)
    y = np.concatenate(labels)
    return Evaluation(name, top1_accuracy(a, y), top1_accuracy(b, y), samples)
