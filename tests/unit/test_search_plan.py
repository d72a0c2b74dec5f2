"""The search's pure decisions (api/search.py): the candidate space, the two rounds, which
candidates are promoted, the best and the Pareto front, and idempotent planning."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kondense.api.search import (
    CompressionSearchSpec,
    Measured,
    Objective,
    Round,
    SearchObjective,
    best,
    candidates,
    child_name,
    child_spec,
    next_children,
    pareto,
    promoted,
    space_size,
    why_best,
)
from kondense.api.steps import DeviceClass

CPU = {DeviceClass.cpu}
MINILM: dict[str, Any] = {
    "model": {"uri": "models/minilm", "format": "huggingface", "task": "text-embedding"},
    "output": {"uri": "/out/search"},
}


def spec(**changes: Any) -> CompressionSearchSpec:
    return CompressionSearchSpec.model_validate({**MINILM, **changes})


def done(index: int, round_: Round, speedup: float, drop: float, **kw: Any) -> Measured:
    return Measured(
        candidate=index,
        round=round_,
        finished=True,
        succeeded=kw.get("succeeded", True),
        speedup=speedup,
        size_ratio=kw.get("size_ratio", 4.0),
        metric_drop=drop,
    )


def test_an_explicit_space_is_every_combination_in_a_fixed_order() -> None:
    search = spec(space={"quantize": {"modes": ["dynamic", "auto"], "perChannel": [True, False]}})
    names = [c.name for c in candidates(search, CPU)]
    assert names == ["int8-dynamic", "int8-dynamic-pt", "int8-auto", "int8-auto-pt"]
    # Transformers are exported and fused before quantization.
    assert candidates(search, CPU)[0].recipe == "export>optimize>int8-dynamic"


def test_fp16_is_left_out_without_a_gpu_and_kept_with_one() -> None:
    search = spec(space={"quantize": {}, "fp16": True})
    assert "fp16" not in [c.name for c in candidates(search, CPU)]
    with_gpu = candidates(search, {DeviceClass.cpu, DeviceClass.gpu})
    assert [c.device for c in with_gpu] == [DeviceClass.cpu, DeviceClass.gpu]


def test_max_candidates_cuts_the_space_and_the_size_says_by_how_much() -> None:
    search = spec(
        space={"quantize": {"modes": ["dynamic", "auto"], "perChannel": [True, False]}},
        budget={"maxCandidates": 3},
    )
    assert len(candidates(search, CPU)) == 3
    assert space_size(search, CPU) == 4


def test_auto_space_follows_the_task_and_the_data() -> None:
    no_data = [c.name for c in candidates(spec(), CPU)]
    assert no_data == ["int8-dynamic", "int8-dynamic-pt"]
    cnn = CompressionSearchSpec.model_validate(
        {
            "model": {"uri": "cnn.onnx", "task": "image-classification"},
            "data": {"calibration": {"uri": "calib.npz"}},
            "output": {"uri": "/out"},
        }
    )
    names = [c.name for c in candidates(cnn, CPU)]
    assert names == [
        "int8-dynamic",
        "int8-static-minmax",
        "int8-static-entropy",
        "int8-static-percentile",
    ]
    trained = spec(data={"training": {"uri": "train.jsonl"}})
    by_name = {c.name: c for c in candidates(trained, CPU)}
    assert "prune-magnitude-30" in by_name
    # A distilled transformer is exported and fused like the base model before INT8.
    assert by_name["distill-k2-int8-dynamic"].recipe == "distill>export>optimize>int8-dynamic"


def test_a_candidate_that_is_no_valid_job_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError, match=r"spec\.space\.distill: distillation needs training"):
        spec(space={"distill": {}})


def test_the_screening_child_evaluates_few_samples_and_the_full_child_all() -> None:
    search = spec(space={"quantize": {}}, objective={"maxMetricDrop": 0.02})
    (candidate,) = candidates(search, CPU)
    screen = child_spec(search, candidate, Round.screen)
    full = child_spec(search, candidate, Round.full)
    assert screen.evaluation.samples == 32 and full.evaluation.samples is None
    assert screen.evaluation.max_metric_drop == full.evaluation.max_metric_drop == 0.02
    assert screen.output.uri == "/out/search/00-int8-dynamic/screen"
    assert child_name("a" * 60, candidate, Round.full) == "a" * 40 + "-00-full"


def test_promotion_keeps_the_best_fraction_within_twice_the_budget() -> None:
    objective = SearchObjective(max_metric_drop=0.01)
    screened = [
        done(0, Round.screen, 1.5, 0.005),
        done(1, Round.screen, 3.0, 0.015),  # fastest; over budget but within twice it
        done(2, Round.screen, 9.0, 0.5),  # broken: never promoted
        done(3, Round.screen, 2.0, 0.001),
    ]
    assert promoted(screened, objective, keep=0.5) == [1, 3]
    assert promoted(screened, objective, keep=1.0) == [1, 3, 0]


def test_best_is_the_fastest_accepted_full_round_candidate() -> None:
    objective = SearchObjective(max_metric_drop=0.01)
    finals = [
        done(0, Round.full, 2.0, 0.004),
        done(1, Round.full, 3.0, 0.02),  # faster, over budget
        done(2, Round.screen, 5.0, 0.0),  # screening only: never best
        done(3, Round.full, 2.5, 0.008),
    ]
    winner = best(finals, objective)
    assert winner is not None and winner.candidate == 3
    by_size = SearchObjective(minimize=Objective.size, max_metric_drop=0.01)
    sized = [done(0, Round.full, 2.0, 0.004, size_ratio=3.9), done(3, Round.full, 2.5, 0.008)]
    winner = best(sized, by_size)
    assert winner is not None and winner.candidate == 3
    assert best([done(1, Round.full, 3.0, 0.02)], objective) is None


def test_why_the_best_won_names_its_figure_the_budget_and_the_runner_up() -> None:
    objective = SearchObjective(max_metric_drop=0.01)
    names = {0: "int8-dynamic", 1: "int8-static", 3: "int8-auto"}
    finals = [
        done(0, Round.full, 2.0, 0.004),
        done(1, Round.full, 3.0, 0.02),  # over budget: not the runner-up
        done(3, Round.full, 2.5, 0.008),
    ]
    winner = best(finals, objective)
    assert winner is not None
    assert why_best(winner, finals, objective, names) == (
        "fastest accepted: 2.50x speedup, drop 0.008 ≤ 0.01 (of 2 accepted; next: int8-dynamic"
        " at 2.00x)"
    )
    alone = [finals[2]]
    assert why_best(winner, alone, objective, names) == (
        "fastest accepted: 2.50x speedup, drop 0.008 ≤ 0.01"
    )
    by_size = SearchObjective(minimize=Objective.size, max_metric_drop=0.01)
    assert why_best(winner, alone, by_size, names).startswith("smallest accepted: 4.00x size")


def test_the_pareto_front_drops_dominated_candidates() -> None:
    finals = [
        done(0, Round.full, 2.0, 0.004, size_ratio=4.0),
        done(1, Round.full, 1.5, 0.006, size_ratio=3.0),  # worse on all three than 0
        done(2, Round.full, 2.5, 0.010, size_ratio=4.0),
    ]
    assert pareto(finals) == [0, 2]


def test_planning_respects_parallelism_and_is_idempotent() -> None:
    search = spec(
        space={"quantize": {"modes": ["dynamic", "auto"], "perChannel": [True, False]}},
        budget={"parallelism": 2},
        screening={"samples": 16, "keep": 0.5},
    )
    plan = next_children(search, 4, [])
    assert plan.start == [(0, Round.screen), (1, Round.screen)] and not plan.done
    running = [Measured(0, Round.screen, finished=False), Measured(1, Round.screen, False)]
    assert next_children(search, 4, running).start == []
    screened = [done(i, Round.screen, 1.0 + i, 0.001) for i in range(4)]
    plan = next_children(search, 4, screened)
    assert plan.start == [(3, Round.full), (2, Round.full)]
    # The same reports give the same plan: a restarted operator starts nothing twice.
    assert next_children(search, 4, screened) == plan
    finals = [*screened, done(3, Round.full, 4.0, 0.002), done(2, Round.full, 3.0, 0.002)]
    assert next_children(search, 4, finals).done


def test_no_screening_round_for_a_single_candidate_or_zero_samples() -> None:
    search = spec(space={"quantize": {}})
    assert next_children(search, 1, []).start == [(0, Round.full)]
    unscreened = spec(screening={"samples": 0}, budget={"parallelism": 4})
    assert next_children(unscreened, 2, []).start == [(0, Round.full), (1, Round.full)]


def test_a_timed_out_search_starts_nothing_and_ends() -> None:
    plan = next_children(spec(), 2, [], timed_out=True)
    assert plan.start == [] and plan.done
