"""ttc in one script: three strategies on the embedded model, a budget, and a small evaluation.

    python examples/quickstart.py                 # writes results under a temporary folder
    python examples/quickstart.py out/            # ... or under out/

Runs offline on a CPU in a few minutes (SmolLM2-135M-Instruct, short completions).
"""

import sys
import tempfile
from pathlib import Path

import ttc
from ttc.demo import DEMO_PROMPT, demo_problems


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="ttc-quickstart-"))
    out.mkdir(parents=True, exist_ok=True)

    llm = ttc.backends.Transformers()  # the embedded SmolLM2-135M-Instruct
    problem = ttc.Problem("Anna has 5 pencils. Anna gets 3 more pencils. How many pencils does Anna have now?",
                          answer="8", id="pencils")

    # short answers: this small model follows "give a number" better than \boxed{}
    params = ttc.SamplingParams(temperature=0.7, max_tokens=64, logprobs=True)
    sample = ttc.Sample(params=params, prompt=DEMO_PROMPT)

    # 1. one sample, a vote over 8, and best-of-8 chosen by the model's own confidence
    strategies = {
        "sample": sample,
        "majority of 8": ttc.MajorityVote(n=8, sample=sample),
        "best of 8": ttc.BestOfN(n=8, verifier=ttc.verifiers.LogprobConfidence(), sample=sample),
    }
    for name, strategy in strategies.items():
        result = strategy.solve(problem, llm, seed=0)
        extra = result.details.get("votes") or ""
        print(f"{name:>14}: answer={result.answer!r} correct={result.is_correct()} "
              f"tokens={result.usage.total_tokens} {extra}")

    # 2. a hard token budget: the vote gets no more than 400 tokens, whatever n asks for
    capped = ttc.MajorityVote(n=8, sample=sample).solve(problem, llm, budget=ttc.Budget(tokens=400), seed=0)
    print(f"budgeted vote: answer={capped.answer!r}, {capped.usage.total_tokens} tokens (cap 400)")

    # 3. a small evaluation, streamed to JSONL (re-running resumes it), with its summary and plot
    report = ttc.eval.evaluate(
        {"sample": sample, "majority@n=4": ttc.MajorityVote(n=4, sample=sample),
         "majority@n=8": ttc.MajorityVote(n=8, sample=sample)},
        demo_problems(10), llm, output=out / "results.jsonl", progress=False)
    print(report)
    print(f"results, summary and plot in {out}")


if __name__ == "__main__":
    main()
