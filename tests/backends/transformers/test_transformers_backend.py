"""The transformers backend on the real SmolLM2-135M-Instruct: batching, sampling, logprobs, stops.

Reference values come from plain forward passes and `model.generate` on the same weights, never
from hard-coded strings. Each test runs its own `asyncio.run`, so the backend also serves many
event loops over its life.
"""

import asyncio

import pytest
import torch

import ttc
from ttc.errors import InvalidInput, ModelNotFound, TTCError
from ttc.types import SamplingParams

COUNTING = "1, 2, 3, 4, 5,"


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def llm():
    from ttc.backends.transformers import Transformers

    # a wide batching window: on a loaded 2-core machine, requests issued together can arrive ms apart
    backend = Transformers(device="cpu", batch_window=0.1)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def chat(llm):
    return run(llm.chat_prompt([{"role": "user", "content": "Name three colors."}]))


def forward_logprobs(llm, prompt_ids, completion_ids):
    """log_softmax of a plain forward pass over prompt + completion, at each completion position."""
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    with torch.inference_mode():
        logits = llm.model(input_ids=ids).logits[0].float()
    start = len(prompt_ids) - 1
    return torch.log_softmax(logits[start:start + len(completion_ids)], dim=-1)


# -- batching and counters ----------------------------------------------------------------------
@pytest.mark.slow
def test_n8_is_one_prefill_and_finished_sequences_leave_the_batch(llm, chat):
    llm.reset_stats()
    gen = run(llm.generate(chat, SamplingParams(n=8, temperature=1.0, max_tokens=8, seed=3)))
    stats = llm.stats
    assert len(gen.completions) == 8 and gen.prompt_tokens == len(chat)
    assert (stats.prefill_calls, stats.batches, stats.requests, stats.sequences) == (1, 1, 1, 8)
    # the prompt once, not 8 times (from the prefix cache in part when an earlier test sent it)
    assert stats.prefill_tokens + stats.cached_tokens == len(chat)
    # usage: billed once, processed once per sequence, all but what was prefilled is cached
    u = gen.usage()
    assert (u.prompt_tokens, u.processed_prompt_tokens) == (len(chat), 8 * len(chat))
    assert u.cached_prompt_tokens == 8 * len(chat) - stats.prefill_tokens
    lengths = [c.num_tokens for c in gen.completions]
    assert all(1 <= n <= 8 for n in lengths)
    assert stats.generated_tokens == sum(lengths)
    # the first token of each candidate comes from the prefill; a sequence is fed back only while unfinished
    assert stats.decode_rows == sum(n - 1 for n in lengths)
    assert stats.decode_steps == max(lengths) - 1


@pytest.mark.slow
def test_concurrent_requests_share_batches_and_get_their_own_results(llm, chat):
    prompts = [COUNTING, chat, "The capital of France is", COUNTING]  # a repeated prompt is prefilled once
    greedy = SamplingParams(temperature=0, max_tokens=6)
    solo = [run(llm.generate(p, greedy)).completions[0].token_ids for p in prompts[:3]]
    llm.reset_stats()

    async def together():
        return await asyncio.gather(*[llm.generate(p, greedy.replace(n=2)) for p in prompts])

    gens = run(together())
    stats = llm.stats
    assert stats.requests == 4 and stats.batches < stats.requests
    assert stats.prefill_calls == stats.batches
    if stats.batches == 1:
        # the solo runs above left these prompts in the prefix cache: all but their last token is cached
        assert stats.prefill_tokens == 3
        assert stats.prefill_tokens + stats.cached_tokens == sum(
            len(p) for p in [run(llm.tokenize(COUNTING)), chat, run(llm.tokenize(prompts[2]))])
    # processed - cached is exactly what the model prefilled, however the requests were batched
    usages = [g.usage() for g in gens]
    assert sum(u.processed_prompt_tokens - u.cached_prompt_tokens for u in usages) == stats.prefill_tokens
    assert all(u.processed_prompt_tokens == 2 * u.prompt_tokens for u in usages)
    for gen, expected in zip(gens, solo + [solo[0]], strict=False):
        assert [c.token_ids for c in gen.completions] == [expected, expected]


@pytest.mark.slow
def test_a_short_request_is_answered_before_its_batch_ends(llm):
    async def main():
        llm.reset_stats()
        long = asyncio.ensure_future(llm.generate(COUNTING, SamplingParams(temperature=0, max_tokens=40)))
        short = asyncio.ensure_future(llm.generate(COUNTING, SamplingParams(temperature=0, max_tokens=2)))
        done, _ = await asyncio.wait([long, short], return_when=asyncio.FIRST_COMPLETED)
        first_done_long = long.done()
        await long
        return short in done, first_done_long, short.result(), long.result()

    short_first, long_was_done, short, long = run(main())
    assert llm.stats.batches == 1
    assert short_first and not long_was_done
    assert short.completions[0].token_ids == long.completions[0].token_ids[:2]


@pytest.mark.slow
def test_event_loops_in_two_threads_share_the_backend(llm, chat):
    import threading

    params = SamplingParams(n=2, temperature=1.0, max_tokens=6, seed=21)
    expected = run(llm.generate(chat, params))
    results, errors = {}, []

    def worker(name):
        try:
            results[name] = asyncio.run(llm.generate(chat, params))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 2
    for gen in results.values():
        assert [c.token_ids for c in gen.completions] == [c.token_ids for c in expected.completions]


@pytest.mark.slow
def test_requests_larger_than_max_batch_size_are_split_without_changing_results(llm):
    from ttc.backends.transformers import Transformers

    params = SamplingParams(n=5, temperature=1.0, max_tokens=4, seed=11)
    whole = run(llm.generate(COUNTING, params))
    small = Transformers.from_model(llm.model, llm.tokenizer, max_batch_size=2)
    try:
        split = run(small.generate(COUNTING, params))
        assert small.stats.batches == 3 and small.stats.sequences == 5
        u = split.usage()  # split over 3 batches: the prompt was run 3 times, the later two from the prefix cache
        assert u.processed_prompt_tokens - u.cached_prompt_tokens == small.stats.prefill_tokens
        assert small.stats.prefill_tokens + small.stats.cached_tokens == 3 * u.prompt_tokens
        assert small.stats.prefill_tokens < 3 * u.prompt_tokens
    finally:
        small.close()
    assert [c.token_ids for c in split.completions] == [c.token_ids for c in whole.completions]


# -- logprobs -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_logprobs_and_top_logprobs_match_a_plain_forward_pass(llm, chat):
    k = 5
    params = SamplingParams(n=2, temperature=0.7, top_p=0.95, max_tokens=10, seed=5, logprobs=True, top_logprobs=k)
    gen = run(llm.generate(chat, params))
    for completion in gen.completions:
        ids = completion.token_ids
        assert len(completion.logprobs) == len(ids) == len(completion.top_logprobs)
        reference = forward_logprobs(llm, chat, ids)
        for i, token in enumerate(ids):
            # raw model distribution: temperature 0.7 and top-p must not leak into the reported values
            assert completion.logprobs[i] == pytest.approx(reference[i, token].item(), abs=1e-4)
            top = completion.top_logprobs[i]
            assert len(top) == k
            values = list(top.values())
            assert values == sorted(values, reverse=True)
            assert values == pytest.approx(reference[i].topk(k).values.tolist(), abs=1e-4)
            for alternative, value in top.items():
                assert value == pytest.approx(reference[i, alternative].item(), abs=1e-4)
            if token in top:
                assert top[token] == pytest.approx(completion.logprobs[i], abs=1e-6)
            else:
                assert completion.logprobs[i] <= values[-1] + 1e-6


@pytest.mark.slow
def test_no_logprobs_unless_asked(llm):
    completion = run(llm.generate(COUNTING, SamplingParams(temperature=0, max_tokens=2))).completions[0]
    assert completion.logprobs is None and completion.top_logprobs is None
    completion = run(llm.generate(COUNTING, SamplingParams(temperature=0, max_tokens=2, logprobs=True))).completions[0]
    assert len(completion.logprobs) == 2 and completion.top_logprobs is None


# -- greedy, stops, length ----------------------------------------------------------------------
@pytest.mark.slow
def test_greedy_equals_model_generate(llm, chat):
    ours = run(llm.generate(chat, SamplingParams(n=2, temperature=0, max_tokens=16))).completions
    with torch.inference_mode():
        out = llm.model.generate(torch.tensor([chat]), attention_mask=torch.ones(1, len(chat), dtype=torch.long),
                                 do_sample=False, max_new_tokens=16, pad_token_id=llm.tokenizer.pad_token_id)
    reference = tuple(out[0, len(chat):].tolist())
    assert ours[0].token_ids == ours[1].token_ids == reference
    assert ours[0].text == llm.decode(reference)
    assert ours[0].finish_reason == ("stop" if reference[-1] in llm.eos_token_ids else "length")


@pytest.mark.slow
def test_max_tokens_gives_length(llm):
    full = run(llm.generate(COUNTING, SamplingParams(temperature=0, max_tokens=8))).completions[0]
    assert not set(full.token_ids) & llm.eos_token_ids  # counting goes on: no EOS in 8 tokens
    short = run(llm.generate(COUNTING, SamplingParams(temperature=0, max_tokens=3))).completions[0]
    assert short.finish_reason == "length" and short.token_ids == full.token_ids[:3]
    assert short.text == llm.decode(full.token_ids[:3])


@pytest.mark.slow
def test_stop_strings_cut_the_text_and_end_token_ids_at_the_completing_token(llm):
    full = run(llm.generate(COUNTING, SamplingParams(temperature=0, max_tokens=12))).completions[0]
    text = full.text
    stop = text[len(text) // 2: len(text) // 2 + 3]  # taken from the model's own output
    cut = text.find(stop)
    assert cut > 0
    late = text[cut + 1:cut + 4]  # a second stop string that completes later must not win
    got = run(llm.generate(COUNTING, SamplingParams(temperature=0, max_tokens=12, stop=(late, stop)))).completions[0]
    assert got.finish_reason == "stop"
    assert got.text == text[:cut]
    n = got.num_tokens
    assert got.token_ids == full.token_ids[:n]
    assert stop in llm.decode(got.token_ids) and stop not in llm.decode(got.token_ids[:-1])


@pytest.mark.slow
def test_sampled_stops_never_leave_the_stop_string(llm, chat):
    gen = run(llm.generate(chat, SamplingParams(n=4, temperature=1.0, max_tokens=12, seed=2, stop=(" ", "\n"))))
    for c in gen.completions:
        assert " " not in c.text and "\n" not in c.text
        if c.finish_reason == "stop" and c.token_ids[-1] not in llm.eos_token_ids:
            decoded = llm.decode(c.token_ids)
            assert " " in decoded or "\n" in decoded


@pytest.mark.slow
def test_tiny_top_p_is_greedy(llm, chat):
    greedy = run(llm.generate(chat, SamplingParams(temperature=0, max_tokens=8))).completions[0]
    nucleus = run(llm.generate(chat, SamplingParams(n=2, temperature=1.5, top_p=1e-6, max_tokens=8, seed=1)))
    assert all(c.token_ids == greedy.token_ids for c in nucleus.completions)


# -- seeds --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_seeded_sampling_is_reproducible_alone_or_batched(llm, chat):
    params = SamplingParams(n=3, temperature=1.0, max_tokens=10, seed=1234)
    alone = run(llm.generate(chat, params))

    async def crowded():
        others = [llm.generate("Write a haiku about the sea.", SamplingParams(n=2, temperature=0.9, max_tokens=7)),
                  llm.generate(COUNTING, SamplingParams(n=3, temperature=1.2, max_tokens=12, seed=1234)),
                  llm.generate(chat, SamplingParams(n=2, temperature=1.0, max_tokens=10, seed=99))]
        results = await asyncio.gather(llm.generate(chat, params), *others)
        return results[0], results[-1]

    llm.reset_stats()
    batched, other_seed = run(crowded())
    assert llm.stats.batches < llm.stats.requests  # it really shared a batch
    assert [c.token_ids for c in batched.completions] == [c.token_ids for c in alone.completions]
    assert [c.text for c in batched.completions] == [c.text for c in alone.completions]
    # the n samples of one seed differ from each other, and another seed gives other samples
    assert len({c.token_ids for c in alone.completions}) > 1
    assert {c.token_ids for c in other_seed.completions}.isdisjoint({c.token_ids for c in alone.completions})


# -- prompts ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_chat_prompt_is_the_templates_token_ids_and_ids_equal_text(llm, chat):
    messages = [{"role": "user", "content": "Name three colors."}]
    rendered = llm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    expected = llm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    expected = list(expected if isinstance(expected, list) else expected["input_ids"])
    assert chat == expected
    assert run(llm.tokenize(rendered)) == expected
    params = SamplingParams(n=2, temperature=0.8, max_tokens=6, seed=8)
    from_text = run(llm.generate(rendered, params))
    from_ids = run(llm.generate(chat, params))
    assert from_text.prompt_tokens == from_ids.prompt_tokens == len(chat)
    assert [c.token_ids for c in from_text.completions] == [c.token_ids for c in from_ids.completions]


@pytest.mark.slow
def test_token_id_prompts_are_used_verbatim(llm):
    # "Hello world" spelt one character per token: the tokenizer would never produce these ids
    odd = [t for ch in "Hello world" for t in run(llm.tokenize(ch))]
    assert llm.decode(odd) == "Hello world" and run(llm.tokenize("Hello world")) != odd
    gen = run(llm.generate(odd, SamplingParams(temperature=0, max_tokens=3, logprobs=True)))
    assert gen.prompt_tokens == len(odd)
    completion = gen.completions[0]
    reference = forward_logprobs(llm, odd, completion.token_ids)
    assert completion.token_ids[0] == reference[0].argmax().item()
    assert completion.logprobs[0] == pytest.approx(reference[0, completion.token_ids[0]].item(), abs=1e-4)


# -- errors, lifecycle, extras ------------------------------------------------------------------
@pytest.mark.slow
def test_bad_prompts_raise_ttc_errors(llm):
    from ttc.backends.transformers import Transformers

    for prompt in ("", [], [-1], [llm.vocab_size], [1.5], [1] * llm.max_model_len):
        with pytest.raises(InvalidInput):
            run(llm.generate(prompt, SamplingParams(max_tokens=2)))
    with pytest.raises(InvalidInput):
        run(llm.generate(COUNTING, {"n": 1}))
    with pytest.raises(InvalidInput):
        run(llm.chat_prompt([]))
    short = Transformers.from_model(llm.model, llm.tokenizer, max_model_len=16)
    try:
        with pytest.raises(InvalidInput, match="context"):
            run(short.generate("word " * 20, SamplingParams(max_tokens=2)))
        # a prompt that leaves room for two tokens stops at the context length
        gen = run(short.generate([1] * 14, SamplingParams(temperature=0, max_tokens=5)))
        assert gen.completions[0].num_tokens <= 2
        assert gen.completions[0].finish_reason == "length" or gen.completions[0].token_ids[-1] in llm.eos_token_ids
    finally:
        short.close()


def test_unknown_model_folder_raises_model_not_found(tmp_path):
    from ttc.backends.transformers import Transformers

    with pytest.raises(ModelNotFound):
        Transformers(str(tmp_path / "no-such-model"))
    with pytest.raises(ModelNotFound):
        Transformers(str(tmp_path))  # a folder without config.json
    with pytest.raises(ModelNotFound, match="hub"):
        Transformers("no-such-org/no-such-model", local_files_only=True)
    assert issubclass(ModelNotFound, TTCError)


@pytest.mark.slow
def test_cancelled_request_stops_and_backend_keeps_serving(llm, chat):
    async def cancel_then_generate():
        long = asyncio.ensure_future(llm.generate(chat, SamplingParams(n=2, temperature=1.0, max_tokens=400, seed=4)))
        await asyncio.sleep(0.5)
        long.cancel()
        with pytest.raises(asyncio.CancelledError):
            await long
        return await llm.generate(COUNTING, SamplingParams(temperature=0, max_tokens=2))

    llm.reset_stats()
    gen = run(cancel_then_generate())
    assert gen.completions[0].num_tokens == 2
    assert llm.stats.generated_tokens < 2 * 400


@pytest.mark.slow
def test_hidden_states_match_forward_pass(llm):
    ids = run(llm.tokenize(COUNTING))
    got = run(llm.hidden_states(ids, [0, len(ids) - 1]))
    with torch.inference_mode():
        ref = llm.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
    assert got.shape == (2, ref.shape[-1])
    assert torch.allclose(torch.from_numpy(got), ref[[0, len(ids) - 1]].float(), atol=1e-4)


@pytest.mark.slow
def test_lazy_export_and_close(llm):
    from ttc.backends.transformers import Transformers

    assert ttc.backends.Transformers is Transformers
    other = Transformers.from_model(llm.model, llm.tokenizer, name="smol")
    assert other.model_name == "smol" and "token_ids" in other.capabilities
    run(other.generate(COUNTING, SamplingParams(temperature=0, max_tokens=1)))
    run(other.aclose())
    run(other.aclose())  # idempotent
    with pytest.raises(TTCError):
        run(other.generate(COUNTING, SamplingParams(max_tokens=1)))
