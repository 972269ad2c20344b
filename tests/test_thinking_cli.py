"""The command line's reasoning-model options (`--thinking`, `--enable-thinking`,
`--sampling-extra`): parsed into the backend's `thinking=` and `SamplingParams` fields, bad JSON a
clear error; `ttc serve --thinking` reaches the upstream backend."""

from __future__ import annotations

import pytest

from ttc.cli import build_parser, main
from ttc.errors import InvalidInput
from ttc.thinking_cli import backend_options, sampling_options


def parsed(*argv: str):
    return build_parser().parse_args(["run", "What is 2 + 3?", *argv])


def test_the_options_become_backend_and_sampling_fields():
    args = parsed("--thinking", "qwen3", "--no-enable-thinking", "--sampling-extra", '{"thinking_token_budget": 64}')
    assert backend_options(args) == {"thinking": "qwen3"}
    assert sampling_options(args) == {"chat_template_kwargs": {"enable_thinking": False},
                                      "extra": {"thinking_token_budget": 64}}
    assert backend_options(parsed("--thinking", "none")) == {"thinking": False}
    assert backend_options(parsed()) == {} and sampling_options(parsed()) == {}  # defaults: nothing changes
    eval_args = build_parser().parse_args(["eval", "--enable-thinking", "--thinking", "deepseek_r1"])
    assert sampling_options(eval_args) == {"chat_template_kwargs": {"enable_thinking": True}}


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]"])
def test_sampling_extra_must_be_a_json_object(bad):
    with pytest.raises(InvalidInput, match="--sampling-extra must be a JSON object"):
        sampling_options(parsed("--sampling-extra", bad))


def test_an_unknown_format_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--upstream", "http://127.0.0.1:9/v1", "--thinking", "gpt5"])
    assert "invalid choice" in capsys.readouterr().err


def test_serve_passes_the_format_to_its_config(monkeypatch):
    seen = {}
    monkeypatch.setattr("ttc.serve.serve", lambda config: seen.setdefault("config", config))
    assert main(["serve", "--upstream", "http://127.0.0.1:9/v1", "--thinking", "deepseek_r1"]) == 0
    assert seen["config"].thinking == "deepseek_r1"
