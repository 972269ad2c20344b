"""Interpreter exit waits for the Transformers worker thread to leave its batch, and cancels what
nobody waits for any more: a daemon worker still inside torch when Python finalizes is killed as it
retakes the GIL, which aborts the process ("terminate called without an active exception") after
the script's work is done. Each test runs a script in a fresh interpreter and reads what its worker
wrote after the main thread had finished."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[3] / "src")

SCRIPT = textwrap.dedent("""
    import asyncio, random, sys, time
    from ttc.backends.transformers.records import Request
    from ttc.backends.transformers.scheduler import Scheduler
    from ttc.types import SamplingParams

    out, mode = sys.argv[1], sys.argv[2]

    def decode_batch(batch, more):
        for request, _ in batch:
            if mode == "delivered":  # the caller has its answer; the worker still has work to finish
                request.deliver("done")
                time.sleep(0.5)
                open(out, "w").write("finished")
            else:  # nobody waits: the worker runs until the request is cancelled
                for _ in range(6000):
                    if request.cancelled.is_set():
                        open(out, "w").write("cancelled")
                        return
                    time.sleep(0.01)

    async def main():
        scheduler = Scheduler(decode_batch, max_batch_size=4, batch_window=0)
        request = Request.create((1, 2, 3), SamplingParams(n=1, max_tokens=4), 64, random.Random(0), stream=False)
        scheduler.submit(request)
        if mode == "delivered":
            print(await request.future)
        else:
            await asyncio.sleep(0.2)  # the worker has taken it; the script ends without its answer

    asyncio.run(main())
""")


def _run(tmp_path: Path, mode: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "worker.txt"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(out), mode], env=env, capture_output=True, text=True,
                          timeout=300)
    return done, out


def test_exit_waits_for_a_worker_that_is_finishing_a_delivered_batch(tmp_path):
    done, out = _run(tmp_path, "delivered")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "done"
    assert out.read_text() == "finished"  # without the exit hook the daemon worker is frozen mid-sleep


def test_exit_cancels_requests_nobody_waits_for(tmp_path):
    done, out = _run(tmp_path, "abandoned")
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.read_text() == "cancelled"
