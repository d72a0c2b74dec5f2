"""select_node_pool and the operator configuration file."""

from __future__ import annotations

from pathlib import Path

import pytest

from kondense.operator.config import ConfigError, load_config, parse_config
from kondense.operator.pools import UnknownPool, select_node_pool

CONFIG = parse_config(
    {
        "pools": {
            "cpu": {"nodeSelector": {"kondense.dev/pool": "cpu"}, "image": "cpu:1"},
            "gpu": {"nodeSelector": {"kondense.dev/pool": "gpu"}, "image": "gpu:1"},
            "big-cpu": {"image": "cpu:1"},
        }
    },
    "test",
)


def steps(*modes: str) -> list[dict[str, object]]:
    return [{"export": {}}] + [{"quantize": {"mode": m}} for m in modes]


def test_fp16_recipe_goes_to_the_gpu_pool() -> None:
    assert select_node_pool({"steps": steps("fp16")}, CONFIG)[0] == "gpu"


def test_int8_and_other_recipes_go_to_the_cpu_pool() -> None:
    assert select_node_pool({"steps": steps("dynamic")}, CONFIG)[0] == "cpu"
    assert select_node_pool({"steps": steps("static")}, CONFIG)[0] == "cpu"
    assert select_node_pool({"steps": [{"prune": {"amount": 0.5}}]}, CONFIG)[0] == "cpu"


def test_spec_node_pool_overrides_the_recipe() -> None:
    name, pool = select_node_pool({"steps": steps("dynamic"), "nodePool": "big-cpu"}, CONFIG)
    assert name == "big-cpu" and pool.image == "cpu:1"


def test_unknown_pool_is_refused_naming_the_field_and_the_choices() -> None:
    with pytest.raises(UnknownPool, match=r"spec.nodePool: .*'tpu'.*big-cpu, cpu, gpu"):
        select_node_pool({"steps": steps("dynamic"), "nodePool": "tpu"}, CONFIG)


def test_config_file_with_a_misspelled_key_names_it(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("pools:\n  cpu:\n    image: x\n    nodeSelecter: {a: b}\n")
    with pytest.raises(ConfigError, match=r"pools.cpu.nodeSelecter"):
        load_config(path)


def test_relative_working_dir_resolves_against_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("pools:\n  cpu:\n    image: x\n    workingDir: examples\n")
    assert load_config(path).pools["cpu"].working_dir == str(tmp_path / "examples")


def test_chart_pool_configuration_is_accepted() -> None:
    """The Helm chart renders values.pools into this format; the operator must read it."""
    import yaml

    values = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "charts/kondense/values.yaml").read_text()
    )
    config = parse_config({"pools": values["pools"]}, "values.yaml")
    assert config.pools["gpu"].resources["limits"]["nvidia.com/gpu"] == "1"
