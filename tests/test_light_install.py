"""A deployment user's install (issue 20): `pip install ttc` with no extras has no torch, transformers or
vLLM, imports none of the heavy packages, reads the packaged datasets, says which extra a heavy part
needs, and runs strategies against a real vLLM server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from fresh_copy import copy_tracked_files, core_venv
from ttc import _extras
from ttc.errors import MissingExtra, TTCError

HEAVY = ("torch", "transformers", "vllm", "datasets", "matplotlib", "scipy", "prometheus_client")


def test_missing_extra_is_a_ttc_error_and_an_import_error_with_the_pip_line():
    with pytest.raises(MissingExtra) as info:
        _extras.require("ttc_no_such_module.sub", "serve", "`ttc serve` (its /metrics)")
    assert isinstance(info.value, TTCError) and isinstance(info.value, ImportError)
    assert str(info.value) == ('`ttc serve` (its /metrics) needs `ttc_no_such_module`, which is not installed: '
                               'pip install "ttc[serve]"')
    assert info.value.name == "ttc_no_such_module"
    assert _extras.require("json", "eval").dumps([]) == "[]"  # present: the module itself
    with pytest.raises(ValueError, match="unknown extra 'gpu'"):
        _extras.require("json", "gpu")


def test_a_broken_installed_package_is_not_reported_as_a_missing_extra(tmp_path, monkeypatch):
    """Only the module asked for being absent means the extra is missing; a module that is there but
    imports something missing is a broken install, and its own error goes through."""
    (tmp_path / "ttc_half_installed.py").write_text("import ttc_its_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        _extras.require("ttc_half_installed", "eval")
    assert not isinstance(info.value, MissingExtra) and info.value.name == "ttc_its_missing_dependency"


def test_every_extra_names_its_modules_and_pyproject_declares_it():
    import tomllib

    from fresh_copy import ROOT

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(_extras.EXTRAS) == set(_extras.MODULES) <= set(declared)
    assert set(declared["all"][0].split("[")[1].rstrip("]").split(",")) == set(_extras.EXTRAS) - {"vllm"}
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in core if d.split(">")[0].split("=")[0].split("[")[0] in
                {"torch", "transformers", "accelerate", "gguf", "vllm", "datasets", "matplotlib", "scipy",
                 "prometheus-client"}]


def test_import_ttc_loads_no_heavy_package():
    code = ("import sys, ttc, ttc.backends, ttc.eval, ttc.verifiers, ttc.probes, ttc.cli\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]"]


#: run in the fresh venv: what a deployment user does with the core install
CORE_SCRIPT = textwrap.dedent("""
    import importlib.util, json, sys
    import ttc

    url, model = sys.argv[1], sys.argv[2]
    out = {"ttc": ttc.__file__, "installed": [m for m in %(heavy)r if importlib.util.find_spec(m)]}
    out["loaded"] = sorted({m.split(".")[0] for m in sys.modules} & set(%(heavy)r))
    out["gsm8k"] = len(ttc.eval.load_dataset("gsm8k"))
    out["math500"] = len(ttc.eval.load_dataset("math500"))
    missing = {}
    for name in ("Transformers", "VLLMEngine"):
        try:
            getattr(ttc.backends, name)
        except ImportError as exc:
            missing[name] = [type(exc).__name__, isinstance(exc, ttc.TTCError), str(exc)]
    out["missing"] = missing

    llm = ttc.backends.OpenAICompatible(url, model=model)
    params = ttc.SamplingParams(temperature=0.8, max_tokens=64, logprobs=True, seed=0)
    sample = ttc.Sample(params=params, prompt=ttc.ChatPrompt("{question}\\nGive the final answer as a number."))
    problems = [ttc.Problem("What is 17 + 25?", answer="42", id="add"),
                ttc.Problem("Tom has 3 apples and gets 4 more. How many apples does he have?", answer="7", id="tom")]
    for name, strategy in [("majority", ttc.MajorityVote(n=4, sample=sample)),
                           ("best_of_n", ttc.BestOfN(n=4, verifier=ttc.verifiers.LogprobConfidence(), sample=sample))]:
        results = ttc.solve_many(strategy, problems, llm, progress=False)
        out[name] = [{"answer": r.answer, "error": r.error, "candidates": len(r.candidates),
                      "prompt_tokens": r.usage.prompt_tokens, "completion_tokens": r.usage.completion_tokens}
                     for r in results]
    out["loaded_after"] = sorted({m.split(".")[0] for m in sys.modules} & set(%(heavy)r))
    print("RESULT " + json.dumps(out))
""") % {"heavy": HEAVY}


@pytest.mark.slow
def test_a_core_install_runs_strategies_against_a_real_vllm_server(vllm_server, tmp_path):
    source = copy_tracked_files(tmp_path / "clone")
    python = core_venv(source)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    work = tmp_path / "work"  # not the clone: `import ttc` must find the installed package
    work.mkdir()
    done = subprocess.run([str(python), "-c", CORE_SCRIPT, vllm_server.url, vllm_server.model], cwd=work, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    assert "site-packages" in out["ttc"] and str(python.parent.parent) in out["ttc"]  # the installed copy
    assert out["installed"] == [] and out["loaded"] == [] and out["loaded_after"] == []
    assert (out["gsm8k"], out["math500"]) == (1319, 500)  # packaged data, offline
    assert out["missing"]["Transformers"][:2] == ["MissingExtra", True]
    assert 'pip install "ttc[transformers]"' in out["missing"]["Transformers"][2]
    assert 'pip install "ttc[vllm]"' in out["missing"]["VLLMEngine"][2]
    for name in ("majority", "best_of_n"):
        for r in out[name]:
            assert r["error"] is None and r["answer"] is not None, (name, r)
            assert r["candidates"] == 4 and r["prompt_tokens"] > 0 and 0 < r["completion_tokens"] <= 4 * 64, (name, r)


@pytest.mark.slow
def test_a_core_install_names_the_extra_each_heavy_command_needs(tmp_path):
    """In the core venv, commands that need an extra exit with one `ttc: error:` line that has the
    pip line (no traceback); the eval tables are saved without matplotlib."""
    python = core_venv(copy_tracked_files(tmp_path / "clone"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def ttc_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), "-m", "ttc.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)

    for args, line in [
        (("run", "What is 2 + 3?"), 'ttc: error: the transformers backend needs `torch`, which is not installed: '
                                    'pip install "ttc[transformers]"'),
        (("serve", "--upstream", "http://127.0.0.1:9/v1"),
         'ttc: error: `ttc serve` (its /metrics) needs `prometheus_client`, which is not installed: '
         'pip install "ttc[serve]"'),
        (("eval", "--dataset", "gsm8k", "--split", "train", "--backend", "openai", "--url", "http://127.0.0.1:9/v1"),
         "ttc: error: loading 'openai/gsm8k' from the Hugging Face hub needs `datasets`, which is not installed: "
         'pip install "ttc[eval]"')]:
        done = ttc_cli(*args)
        assert (done.returncode, done.stderr.strip().splitlines()[-1:]) == (2, [line]), done.stderr[-2000:]
        assert "Traceback" not in done.stderr

    code = textwrap.dedent("""
        import warnings, ttc
        from ttc.eval import EvalReport
        records = [{"problem_id": "a", "setting": "sample@n=1", "strategy": "sample", "n": 1, "answer": "5",
                    "gold": "5", "correct": True, "error": None, "usage": {"total_tokens": 10}, "latency_s": 0.1,
                    "candidates": []}]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            paths = EvalReport(records).save("out/results")
        print(sorted(paths), [str(w.message) for w in caught])
    """)
    done = subprocess.run([str(python), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ("['csv', 'markdown'] ['no plot saved: EvalReport.plot needs matplotlib: "
                                   "pip install \"ttc[eval]\"']")
    assert (tmp_path / "out" / "results.summary.md").is_file() and not (tmp_path / "out" / "results.png").exists()
