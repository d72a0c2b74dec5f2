"""The one training loop, shared by fine-tuning after pruning and by distillation.

A caller gives a module, a way to stream batches, and a loss; the loop handles the optimizer,
seeding, the time budget, progress with the current loss, and keeping the best checkpoint.
"Best" is judged on a held-out slice of the training stream (every `HOLDOUT_EVERY`-th batch)
when the stream has enough batches, and on the mean training loss of the epoch otherwise.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from kondense.api.spec import FineTune
from kondense.runners.core import Progress, no_progress

if TYPE_CHECKING:
    import torch

# One batch in ten is held out to pick the best checkpoint; streams shorter than this many
# batches have no validation slice and fall back to the training loss.
HOLDOUT_EVERY = 10
# Batches shuffled together per epoch: bounded memory, yet no fixed batch order.
SHUFFLE_BUFFER = 64


class TrainingBatch(Protocol):
    """What the loop needs of a batch (`kondense.runners.io.data.Batch` has this shape)."""

    @property
    def inputs(self) -> Mapping[str, np.ndarray]: ...

    @property
    def labels(self) -> np.ndarray | None: ...


BatchStream = Callable[[], Iterable[TrainingBatch]]
LossFunction = Callable[["torch.nn.Module", TrainingBatch], "torch.Tensor"]


@dataclass(frozen=True)
class TrainResult:
    """What happened in training, for the step's report notes."""

    epochs: float  # fractional when the time budget ended an epoch early
    steps: int
    best_loss: float
    best_epoch: int
    criterion: str  # "validation loss" or "training loss"
    stopped_by_budget: bool
    seconds: float

    def notes(self, prefix: str) -> dict[str, float | int | str]:
        return {
            f"{prefix}Epochs": round(self.epochs, 2),
            f"{prefix}Steps": self.steps,
            f"{prefix}BestLoss": round(self.best_loss, 6),
            f"{prefix}BestEpoch": self.best_epoch,
            f"{prefix}Checkpoint": f"best {self.criterion}",
            f"{prefix}StoppedByBudget": str(self.stopped_by_budget).lower(),
            f"{prefix}Seconds": round(self.seconds, 2),
        }


def seed_everything(seed: int) -> None:
    """Same seed, same result: torch's and numpy's generators are reset."""
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)


def to_tensors(inputs: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    import torch

    return {name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in inputs.items()}


def accepted_inputs(module: torch.nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs `module.forward` takes by name (HF models reject unknown keyword arguments)."""
    try:
        parameters = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return dict(inputs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(inputs)
    return {name: value for name, value in inputs.items() if name in parameters}


def forward(module: torch.nn.Module, inputs: Mapping[str, np.ndarray]) -> torch.Tensor:
    """The model's task output as one tensor: logits for classifiers, mean-pooled embeddings
    for Hugging Face encoders (masked by `attention_mask`), the output itself otherwise."""
    tensors = to_tensors(inputs)
    output = module(**accepted_inputs(module, tensors))
    logits = getattr(output, "logits", None)
    if logits is not None:
        return logits
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is not None:
        return mean_pool(hidden, tensors.get("attention_mask"))
    if isinstance(output, tuple | list):
        output = output[0]
    return output


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Sentence embeddings as sentence-transformers makes them: the mean over real tokens."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def _shuffled(batches: Iterable[TrainingBatch], rng: np.random.Generator) -> Iterator[Any]:
    buffer: list[TrainingBatch] = []
    for batch in batches:
        buffer.append(batch)
        if len(buffer) >= SHUFFLE_BUFFER:
            yield buffer.pop(int(rng.integers(len(buffer))))
    rng.shuffle(buffer)
    yield from buffer


def _split(
    stream: BatchStream,
) -> tuple[Callable[[], Iterator[TrainingBatch]], list[TrainingBatch]]:
    """Training batches (a re-startable stream) and the held-out validation batches."""
    validation = [b for i, b in enumerate(stream()) if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1]

    def training() -> Iterator[TrainingBatch]:
        for i, batch in enumerate(stream()):
            if not (validation and i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1):
                yield batch

    return training, validation


def _mean_loss(
    module: torch.nn.Module, loss: LossFunction, batches: Iterable[TrainingBatch]
) -> float:
    import torch

    module.eval()
    with torch.no_grad():
        values = [float(loss(module, batch)) for batch in batches]
    return float(np.mean(values)) if values else float("inf")


def train(
    module: torch.nn.Module,
    stream: BatchStream,
    loss: LossFunction,
    settings: FineTune,
    *,
    seed: int = 0,
    progress: Progress = no_progress,
    description: str = "train",
) -> TrainResult:
    """Train `module` in place with Adam and leave it holding the best checkpoint seen.

    `stream()` must yield the same batches each time it is called (one call per epoch).
    Training stops after `settings.epochs` or when `settings.max_train_seconds` is spent,
    whichever comes first; the module ends in eval mode.
    """
    import torch

    seed_everything(seed)
    rng = np.random.default_rng(seed)
    training, validation = _split(stream)
    criterion = "validation loss" if validation else "training loss"
    optimizer = torch.optim.Adam(
        [p for p in module.parameters() if p.requires_grad], lr=settings.learning_rate
    )
    started = time.monotonic()
    deadline = started + settings.max_train_seconds if settings.max_train_seconds else None
    best_loss = _mean_loss(module, loss, validation) if validation else float("inf")
    best_state = copy.deepcopy(module.state_dict())
    best_epoch = 0
    steps = 0
    epochs_done = 0.0
    per_epoch: int | None = None
    stopped = False
    for epoch in range(1, settings.epochs + 1):
        module.train()
        losses: list[float] = []
        for batch in _shuffled(training(), rng):
            optimizer.zero_grad()
            value = loss(module, batch)
            value.backward()
            optimizer.step()
            losses.append(float(value.detach()))
            steps += 1
            total = per_epoch * settings.epochs if per_epoch else None
            progress(f"{description} epoch {epoch} loss {losses[-1]:.4f}", steps, total)
            if deadline is not None and time.monotonic() >= deadline:
                stopped = True
                break
        per_epoch = per_epoch or len(losses)
        epochs_done += len(losses) / max(per_epoch, 1)
        score = _mean_loss(module, loss, validation) if validation else float(np.mean(losses))
        if score < best_loss:
            best_loss, best_epoch = score, epoch
            best_state = copy.deepcopy(module.state_dict())
        if stopped:
            break
    module.load_state_dict(best_state)
    module.eval()
    return TrainResult(
        epochs=epochs_done,
        steps=steps,
        best_loss=best_loss,
        best_epoch=best_epoch,
        criterion=criterion,
        stopped_by_budget=stopped,
        seconds=time.monotonic() - started,
    )
