"""select_node_pool and the operator configuration file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kondense.api.spec import CompressionJobSpec
from kondense.api.steps import DeviceClass
from kondense.operator.config import ConfigError, load_config, parse_config
from kondense.operator.pools import PoolLacksDevice, UnknownPool, select_node_pool

CONFIG = parse_config(
    {
        "pools": {
            "cpu": {"nodeSelector": {"kondense.dev/pool": "cpu"}, "image": "cpu:1"},
            "gpu": {
                "device": "gpu",
                "nodeSelector": {"kondense.dev/pool": "gpu"},
                "image": "gpu:1",
            },
            "big-cpu": {"image": "cpu:1"},
        }
    },
    "test",
)
# A cluster whose pools are not called cpu and gpu: the contract names no pool.
RENAMED = parse_config(
    {
        "pools": {
            "a100": {"device": "gpu", "image": "gpu:1"},
            "cpu-small": {"image": "cpu:1"},
        },
        "devicePools": {"gpu": "a100", "cpu": "cpu-small"},
    },
    "test",
)


def spec(*modes: str, **fields: Any) -> CompressionJobSpec:
    return CompressionJobSpec.model_validate(
        {
            "model": {"uri": "s3://m/model.onnx"},
            "steps": [{"export": {}}] + [{"quantize": {"mode": m}} for m in modes],
            "output": {"uri": "s3://o/"},
            "data": {"calibration": {"uri": "s3://d/c.npz"}},
            **fields,
        }
    )


def test_fp16_recipe_goes_to_the_gpu_pool() -> None:
    assert select_node_pool(spec("fp16"), CONFIG)[0] == "gpu"


def test_int8_and_other_recipes_go_to_the_cpu_pool() -> None:
    assert select_node_pool(spec("dynamic"), CONFIG)[0] == "cpu"
    assert select_node_pool(spec("static"), CONFIG)[0] == "cpu"
    assert select_node_pool(spec(), CONFIG)[0] == "cpu"


def test_spec_node_pool_overrides_the_recipe() -> None:
    name, pool = select_node_pool(spec("dynamic", nodePool="big-cpu"), CONFIG)
    assert name == "big-cpu" and pool.image == "cpu:1"


def test_unknown_pool_is_refused_naming_the_field_and_the_choices() -> None:
    with pytest.raises(UnknownPool, match=r"spec.nodePool: .*'tpu'.*big-cpu, cpu, gpu"):
        select_node_pool(spec("dynamic", nodePool="tpu"), CONFIG)


def test_pools_with_any_names_are_picked_by_the_device_the_recipe_needs() -> None:
    assert select_node_pool(spec("fp16"), RENAMED)[0] == "a100"
    assert select_node_pool(spec("dynamic"), RENAMED)[0] == "cpu-small"
    assert select_node_pool(spec("fp16", nodePool="a100"), RENAMED)[0] == "a100"


def test_fp16_forced_onto_a_pool_without_a_gpu_fails_whatever_the_pool_is_called() -> None:
    for config, pool in ((RENAMED, "cpu-small"), (CONFIG, "cpu"), (CONFIG, "big-cpu")):
        with pytest.raises(PoolLacksDevice) as caught:
            select_node_pool(spec("fp16", nodePool=pool), config)
        assert caught.value.reason == "PoolLacksDevice"
        message = str(caught.value)
        assert message.startswith(f"spec.nodePool: fp16 needs a GPU; pool '{pool}' has none;")
        assert "mode: dynamic" in message
    # Naming a GPU pool for a CPU recipe is allowed: it only wastes the GPU.
    assert select_node_pool(spec("dynamic", nodePool="a100"), RENAMED)[0] == "a100"


def test_a_cluster_without_gpus_refuses_fp16_and_runs_the_rest() -> None:
    config = parse_config({"pools": {"cpu": {"image": "x"}}, "devicePools": {"cpu": "cpu"}}, "t")
    assert config.pool_for(DeviceClass.gpu) is None
    assert select_node_pool(spec("dynamic"), config)[0] == "cpu"
    with pytest.raises(PoolLacksDevice, match=r"maps no pool to gpu.*no GPU pool"):
        select_node_pool(spec("fp16"), config)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        # The default devicePools needs pools named gpu (providing a GPU) and cpu.
        (
            {"pools": {"cpu": {"image": "x"}}, "devicePools": {"gpu": "gpu"}},
            r"devicePools.gpu: no pool 'gpu'",
        ),
        (
            {"pools": {"cpu": {"image": "x"}, "gpu": {"image": "y"}}},
            r"devicePools.gpu: pool 'gpu' provides cpu, not gpu; set pools.gpu.device: gpu",
        ),
        (
            {"pools": {"cpu": {"image": "x"}}, "devicePools": {"cpu": "small"}},
            r"devicePools.cpu: no pool 'small' is configured; use one of cpu",
        ),
        (
            {"pools": {"cpu": {"image": "x", "device": "tpu"}}, "devicePools": {"cpu": "cpu"}},
            r"pools.cpu.device",
        ),
    ],
)
def test_device_pools_must_name_pools_that_provide_the_device(
    document: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_config(document, "config.yaml")


def test_a_cpu_only_config_maps_cpu_by_name_and_has_no_gpu_default() -> None:
    config = parse_config({"pools": {"cpu": {"image": "x"}}}, "config.yaml")
    assert config.pool_for(DeviceClass.cpu) == "cpu"
    assert config.pool_for(DeviceClass.gpu) is None


def test_config_file_with_a_misspelled_key_names_it(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("pools:\n  cpu:\n    image: x\n    nodeSelecter: {a: b}\n")
    with pytest.raises(ConfigError, match=r"pools.cpu.nodeSelecter"):
        load_config(path)


def test_relative_working_dir_resolves_against_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "pools:\n  cpu:\n    image: x\n    workingDir: examples\ndevicePools: {cpu: cpu}\n"
    )
    assert load_config(path).pools["cpu"].working_dir == str(tmp_path / "examples")


def test_chart_pool_configuration_is_accepted() -> None:
    """The Helm chart renders values.pools and devicePools into this format; the operator must
    read it."""
    values = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "charts/kondense/values.yaml").read_text()
    )
    config = parse_config(
        {"pools": values["pools"], "devicePools": values["devicePools"]}, "values.yaml"
    )
    assert config.pools["gpu"].resources["limits"]["nvidia.com/gpu"] == "1"
    assert config.pools["gpu"].device is DeviceClass.gpu
    assert config.pool_for(DeviceClass.gpu) == "gpu"
