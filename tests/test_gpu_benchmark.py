"""benchmarks/gpu.py keeps working: its tiny CPU run, in-process (GPU time is scarce; a typo must not spend it)."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.py"


def test_gpu_benchmark_runs_on_cpu_at_a_tiny_shape(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_benchmark", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "gpu.json"
    bench.main(["--device", "cpu", "--tiny", "--decode", "static", "--batches", "2", "--steps", "2", "--n", "2",
                "--step-tokens", "2", "--windows", "0", "--profile", "2", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["errors"] == {}
    (shape,) = report["shapes"]
    assert shape["shape"] == "tiny" and shape["decode_mode"] == "static"
    # the static path's greedy tokens and logprobs equal a plain float32 forward pass over them
    assert shape["check"]["greedy_argmax_agreement"] == 1.0
    assert shape["check"]["max_abs_logprob_diff"] < 1e-4
    (row,) = shape["steps"]
    assert row["batch"] == 2
    for key in ("floor_ms", "ttc_ms", "ttc_greedy_ms", "ttc_dynamic_ms", "hf_generate_ms", "ttc_x_floor"):
        assert row[key] >= 0, key
    assert shape["batch_vs_sequential"]["n"] == 2 and shape["batch_vs_sequential"]["sequential_s"] > 0
    assert shape["stepwise_vs_oneshot"]["steps"] == 2 and shape["stepwise_vs_oneshot"]["stepwise_s"] > 0
    assert shape["stepwise_vs_oneshot_by_window"]["0.0"]["stepwise_s"] > 0
    assert "error" not in shape["profile"] and shape["profile"]["kernels_per_step"] > 0
    assert report["machine"]["torch"] and report["bandwidth_measured"] > 0
