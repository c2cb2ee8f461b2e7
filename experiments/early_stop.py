"""
Why the reversible backward is a few percent slower than activation checkpointing on the CPU.

PyTorch's non-reentrant checkpoint stops its recompute as soon as it has every tensor the backward
needs ("early stop", on by default), so it never recomputes a block's last matmul (the MLP's c_proj;
tests/test_bench.py counts the kernels). The reversible
backward must evaluate the whole forcing f(p), because reconstructing the previous state needs its
value. This script times forward and backward separately, interleaved in one process, for euler +
autograd, euler + checkpoint with and without early stop, and midpoint + reversible.

    python experiments/early_stop.py     # writes results/bench/early_stop.{json,md}
"""
import contextlib
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.utils.checkpoint as tuc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import bench  # noqa: E402

SHAPE = dict(block_size=256, vocab_size=257, n_embd=256, n_head=4, bias=True)  # bench.py's CPU shape
LAYERS, BATCH, STEPS = 12, 8, 21


def main():
    runs = {"euler/autograd": ("euler/autograd", True), "euler/checkpoint": ("euler/checkpoint", True),
            "euler/checkpoint, early stop off": ("euler/checkpoint", False),
            "midpoint/reversible": ("midpoint/reversible", True)}
    models = {name: bench.make_model(SHAPE, LAYERS, combo) for name, (combo, _) in runs.items()}
    idx, tgt = bench.make_batch(SHAPE, BATCH, "cpu")
    times, rng = {name: {"forward": [], "backward": []} for name in runs}, random.Random(0)
    for i in range(STEPS + 1):  # the first round is warm-up; each round in a fresh random order
        order = list(runs)
        rng.shuffle(order)
        for name in order:
            combo, early = runs[name]
            model = models[name]
            ctx = contextlib.nullcontext() if early else tuc.set_checkpoint_early_stop(False)
            with ctx:
                t0 = time.perf_counter()
                loss = bench.bench_loss(model, idx, tgt, checkpoint_blocks=combo.endswith("/checkpoint"))
                t1 = time.perf_counter()
                loss.backward()
                t2 = time.perf_counter()
            model.zero_grad(set_to_none=True)
            if i:
                times[name]["forward"].append(t1 - t0)
                times[name]["backward"].append(t2 - t1)
    med = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
    out = {"shape": SHAPE, "n_layer": LAYERS, "batch": BATCH, "steps": STEPS, "threads": torch.get_num_threads(),
           "torch": torch.__version__, "median_s": med, "all_s": times}
    res = ROOT / "results" / "bench"
    res.mkdir(parents=True, exist_ok=True)
    (res / "early_stop.json").write_text(json.dumps(out, indent=1) + "\n")
    total = {n: [f + b for f, b in zip(t["forward"], t["backward"])] for n, t in times.items()}
    lines = [f"Forward and backward (no optimizer step), d=256, 4 heads, T=256, batch {BATCH}, {LAYERS} layers, "
             f"{torch.get_num_threads()} threads, median of {STEPS} rounds, each running every combo once in a "
             "random order (`python experiments/early_stop.py`). reversible / this: median over rounds of the "
             "ratio of the two totals in the same round (quartiles in brackets):", "",
             "| combo | forward ms | backward ms | total ms | reversible / this |", "|---|---:|---:|---:|---:|"]
    for name, m in med.items():
        r = bench.paired_ratio(total["midpoint/reversible"], total[name])
        lines.append(f"| {name} | {m['forward'] * 1e3:.0f} | {m['backward'] * 1e3:.0f} | "
                     f"{statistics.median(total[name]) * 1e3:.0f} | {r['median']:.3f} ({r['q1']:.3f}-{r['q3']:.3f}) |")
    (res / "early_stop.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
