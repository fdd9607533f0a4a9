"""`perceiver-ablate bench`: one JSON object whose figures are consistent and sane."""

import json

import pytest
import torch

from experiments.bench import PeakMemory, peak_matmul_flops
from experiments.cli import main

TINY = ["model.num_latents=16", "model.latent_channels=32", "model.num_blocks=1",
        "model.self_attends_per_block=1", "model.num_cross_attends=1", "model.latent_heads=2",
        "encoding.num_bands=4", "train.batch_size=8"]


def test_bench_json_has_consistent_sane_figures(capsys):
    assert main(["bench", *TINY, "--json", "--steps", "3", "--warmup", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("samples_per_s", "step_time_s", "flops_per_s", "peak_flops_per_s", "mfu",
                "peak_memory_bytes", "device", "threads"):
        assert key in result, key
    assert result["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert result["threads"] == torch.get_num_threads()
    assert len(result["step_times_s"]) == 3
    assert result["step_time_min_s"] <= result["step_time_s"] <= result["step_time_max_s"]
    assert result["samples_per_s"] == pytest.approx(8 / result["step_time_s"])
    # The paper's convention: 3 x forward FLOPs per example x batch; MFU against the peak.
    assert result["flops_per_step"] == 3 * 8 * result["forward_flops_per_example"]
    assert result["flops_per_s"] == pytest.approx(result["flops_per_step"] / result["step_time_s"])
    assert result["mfu"] == pytest.approx(result["flops_per_s"] / result["peak_flops_per_s"])
    assert 0 < result["mfu"] < 1.5
    assert result["peak_flops_per_s"] > 1e9
    assert 0 < result["peak_memory_bytes"] < 2**30
    assert result["params"] > 0 and result["dtype"] == "float32"


def test_bench_table_and_bad_arguments(capsys):
    assert main(["bench", *TINY, "--steps", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "samples/s" in out and "MFU" in out and "peak memory" in out
    assert main(["bench", *TINY, "--steps", "0"]) == 2
    assert "steps >= 1" in capsys.readouterr().err
    assert main(["bench", "model.num_latentz=3"]) == 2


def test_peak_memory_sees_an_allocation_after_start():
    memory = PeakMemory(torch.device("cpu"))
    memory.start()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    assert memory.peak() >= 60 * 2**20
    del block


def test_peak_matmul_rate_is_positive_and_finite():
    rate = peak_matmul_flops(torch.device("cpu"), torch.float32, seconds=0.2)
    assert 1e8 < rate < 1e14


@pytest.mark.parametrize("exponent", [1.0, 1.3, 2.0])
def test_scaling_fit_recovers_the_exponent_and_the_constant(exponent):
    """benchmarks/run.py fits t(M) = a + b M^p to the step times of its input-size sweep."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "run.py"
    spec = importlib.util.spec_from_file_location("bench_run", path)
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    inputs = [32**2, 45**2, 64**2, 91**2, 128**2, 181**2, 256**2]
    times = [0.5 + 2e-6 * m**exponent * (1 + 0.01 * (-1) ** i) for i, m in enumerate(inputs)]
    fit = run.fit_exponent(inputs, times)
    assert fit["exponent"] == pytest.approx(exponent, abs=0.02)
    assert fit["a_s"] == pytest.approx(0.5, rel=0.1)
    assert fit["rms_relative_error"] < 0.02
