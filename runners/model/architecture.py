"""Models defined in code: a network built by a callable of the runner's environment
(spec.model.architecture, 'package.module:function'), its weights loaded from a safetensors
file (spec.model.uri). Nothing is unpickled. A distillation student can be given the same way
(distill.student.architecture and uri).

The callable is imported from the runner's own environment (the runner image, or the
environment `kondense run` runs in), never from the model's folder: code comes from whoever
built the image, weights from the model URI. Packages get into a cluster's runner image
through a derived image (examples/runner-derived.Dockerfile).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kondense.api.errors import BadInput
from kondense.api.spec import (
    ARCHITECTURE_NEEDS_SAFETENSORS,
    NEEDS_ARCHITECTURE,
    ModelFormat,
    ModelSource,
    StudentSource,
)

if TYPE_CHECKING:
    import torch

# Errors name fields under a prefix: spec.model, or distill.student for a student.
MODEL = "spec.model"
DERIVED_IMAGE_ADVICE = (
    "install the package that defines it into the runner's environment (on a cluster: a "
    "runner image derived from kondense's, see examples/runner-derived.Dockerfile)"
)
# How many key names an error lists before it says "and N more".
SHOWN = 5


def source_module(
    path: Path, detected: ModelFormat, source: ModelSource | StudentSource, *, at: str = MODEL
) -> torch.nn.Module | None:
    """The network of a safetensors model, in eval mode, with the weights at `path`; None
    for every other format (those load from their files). `at` is where `source` sits in
    the spec (spec.model, distill.student): errors name fields under it.

    BadInput when a safetensors model has no architecture, or an architecture is given for
    another format (the cross-field rules catch only a declared format; this is the detected
    one).
    """
    if detected is not ModelFormat.safetensors:
        if source.architecture is not None:
            raise _rule_broken(at, ARCHITECTURE_NEEDS_SAFETENSORS, f"{path.name} is {detected}")
        return None
    if source.architecture is None:
        raise _rule_broken(at, NEEDS_ARCHITECTURE, f"{path.name} is safetensors")
    module = build_architecture(source.architecture, source.architecture_args or {}, at=at)
    load_weights(module, path, at=at)
    return module.eval()


def build_architecture(name: str, args: Mapping[str, Any], *, at: str = MODEL) -> torch.nn.Module:
    """Call the callable `name` ('package.module:function') with `args` as keyword arguments.

    BadInput (field `at`.architecture or `at`.architectureArgs) when it cannot be imported,
    when the arguments do not fit its signature, when it raises, or when it returns anything
    but a torch.nn.Module.
    """
    import torch

    field = f"{at}.architecture"
    build = import_callable(name, field=field)
    _check_arguments(build, name, args, field=f"{at}.architectureArgs")
    try:
        module = build(**args)
    except Exception as error:
        raise BadInput(
            f"{name}(**architectureArgs) raised {type(error).__name__}: {error}; check "
            f"{at}.architectureArgs against what the function expects",
            field=field,
        ) from error
    if not isinstance(module, torch.nn.Module):
        raise BadInput(
            f"{name} returned a {type(module).__module__}.{type(module).__qualname__}, not a "
            "torch.nn.Module; name the function or class that builds the network",
            field=field,
        )
    return module


def import_callable(name: str, *, field: str = f"{MODEL}.architecture") -> Callable[..., Any]:
    """The callable 'package.module:function' names, imported from the runner's environment."""
    module_name, _, attribute = name.partition(":")
    package = module_name.split(".")[0]
    if package in sys.stdlib_module_names or package in runner_packages():
        raise BadInput(
            f"{name} is part of {package}, of the standard library or kondense's own "
            "dependencies, whose functions can run commands or load pickles; name a function "
            "of the package that defines your network",
            field=field,
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or whatever importing the module raised
        raise BadInput(
            f"cannot import {module_name} ({type(error).__name__}: {error}); "
            f"{DERIVED_IMAGE_ADVICE}",
            field=field,
        ) from error
    build = getattr(module, attribute, None)
    if build is None:
        raise BadInput(
            f"{module_name} has no attribute {attribute!r}; name the function or class that "
            "builds the network, as 'package.module:function'",
            field=field,
        )
    if not callable(build):
        raise BadInput(f"{name} is a {type(build).__name__}, not a function or class", field=field)
    result: Callable[..., Any] = build
    return result


@functools.cache
def runner_packages() -> frozenset[str]:
    """The import names of kondense and everything it depends on (all extras): never an
    architecture. Architectures come from packages added beside them (a derived image), so a
    spec cannot call, say, subprocess.run, torch.load or joblib.load with arguments of its
    choosing."""
    from importlib import metadata

    def key(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    dependencies: set[str] = set()
    pending = ["kondense"]
    while pending:
        name = pending.pop()
        if key(name) in dependencies:
            continue
        dependencies.add(key(name))
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        # Every requirement, whatever its extra or marker: refusing too much is the safe side.
        pending.extend(m.group(0) for r in requirements if (m := _REQUIREMENT_NAME.match(r)))
    distributions = metadata.packages_distributions()
    owned = {top for top, dists in distributions.items() if {key(d) for d in dists} & dependencies}
    return frozenset(owned | {"kondense"})


_REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _check_arguments(
    build: Callable[..., Any], name: str, args: Mapping[str, Any], *, field: str
) -> None:
    try:
        signature = inspect.signature(build)
    except (TypeError, ValueError):  # some builtins have none; calling them tells
        return
    try:
        signature.bind(**args)
    except TypeError as error:
        raise BadInput(
            f"{dict(args)} do not fit {name}{signature}: {error}", field=field
        ) from error


def load_weights(module: torch.nn.Module, path: Path, *, at: str = MODEL) -> None:
    """Load the safetensors file at `path` into `module`, every key accounted for.

    BadInput (field `at`.uri) naming the missing and unexpected keys and the shapes that
    differ: weights of another network, or of this one built with other arguments.
    Parameters tied to one another (saved once by safetensors) count as present when one of
    them is.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        weights = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise BadInput(
            f"cannot read {path.name} as safetensors: {error}", field=f"{at}.uri"
        ) from error
    expected = module.state_dict()
    tied = _tied_names(expected)
    missing = [k for k in expected if k not in weights and not tied.get(k, set()) & weights.keys()]
    unexpected = [k for k in weights if k not in expected]
    shapes = [
        f"{k} {list(weights[k].shape)} (the network has {list(expected[k].shape)})"
        for k in weights
        if k in expected and weights[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected {_listed(unexpected)}")
    if shapes:
        problems.append(f"other shapes: {_listed(shapes)}")
    if problems:
        raise BadInput(
            f"the weights in {path.name} do not fit the network {at}.architecture builds: "
            f"{'; '.join(problems)}. Check that the file was saved from this architecture with "
            f"the same {at}.architectureArgs",
            field=f"{at}.uri",
        )
    module.load_state_dict(weights, strict=False)  # the tied names left out are the same tensor


def _tied_names(state: Mapping[str, torch.Tensor]) -> dict[str, set[str]]:
    """Each name whose tensor shares storage with others, and those others' names."""
    by_storage: dict[tuple[int, int], set[str]] = {}
    for name, tensor in state.items():
        if tensor.numel():
            key = (tensor.untyped_storage().data_ptr(), int(tensor.storage_offset()))
            by_storage.setdefault(key, set()).add(name)
    return {n: group - {n} for group in by_storage.values() if len(group) > 1 for n in group}


def _rule_broken(at: str, rule: str, detail: str) -> BadInput:
    """A cross-field rule of the spec ('spec.model.field: advice') broken by the detected
    format, said in the rule's words, under `at` (a student's rules are the model's)."""
    field, _, advice = rule.replace(MODEL, at).partition(": ")
    return BadInput(f"{advice} ({detail})", field=field)


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return f"{len(names)} ({shown}{more})"
