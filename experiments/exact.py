"""
Exact mode (revgpt.py, exact=True): the measurements behind its defaults and claims.

    python experiments/exact.py grid    # loss and range vs exact_bits on a trained model
    python experiments/exact.py cost    # step time exact vs float reversible stack (interleaved medians)
    python experiments/exact.py train   # train.py with exact=True vs the float stream, same seed and steps
    python experiments/exact.py report  # results/exact/*.json -> results/exact/exact.md

`grid` and `train` use the from-scratch sweep's midpoint checkpoint and settings
(experiments/scratch.py sweep); run that first.
"""
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from revgpt import GPT, GPTConfig  # noqa: E402

RES = ROOT / "results" / "exact"
CKPT = ROOT / "out-experiments" / "scratch" / "sweep" / "midpoint_h0.5" / "ckpt.pt"


def save(name, obj):
    RES.mkdir(parents=True, exist_ok=True)
    (RES / f"{name}.json").write_text(json.dumps(obj, indent=1))


def grid():
    """Val loss of the same trained weights with a float stream and with exact_bits = 8..40, on the first
    64 windows of 128 tokens of shakespeare_char val, and the largest |state| seen (the range needed)."""
    ck = torch.load(CKPT, map_location="cpu", weights_only=False)
    val = np.memmap(ROOT / "data" / "shakespeare_char" / "val.bin", dtype=np.uint16, mode="r")
    T, n = 128, 64
    x = torch.from_numpy(np.stack([val[i * T:(i + 1) * T] for i in range(n)]).astype(np.int64))
    y = torch.from_numpy(np.stack([val[i * T + 1:(i + 1) * T + 1] for i in range(n)]).astype(np.int64))
    rows = []
    for bits in (None, 8, 12, 16, 20, 24, 32, 40):
        args = dict(ck["model_args"], exact=bits is not None, exact_bits=bits or 32)
        model = GPT(GPTConfig(**args)).eval()
        model.load_state_dict(ck["model"])
        with torch.no_grad():
            _, loss = model(x, y)
            p = model.embed(x)
            steps = model.steps()
            peak = p.abs().max().item()
            prev = p
            for s in steps:  # the float stream's largest value (same for every grid, up to rounding)
                prev, p = p, s.alpha * prev + s.beta * p + s.gamma * s.g(p)
                peak = max(peak, p.abs().max().item())
        rows.append({"exact_bits": bits, "val_loss": loss.item(), "max_abs_state": peak})
        print(rows[-1])
    save("grid", {"checkpoint": str(CKPT.relative_to(ROOT)), "windows": n, "T": T, "rows": rows})


def cost():
    """fwd+bwd+AdamW step time of the float reversible stack vs exact, d=256, 4 heads, T=256, batch 8,
    12 layers, midpoint; the two are interleaved and each reported as the median of 21 steps."""
    torch.manual_seed(0)
    base = dict(block_size=256, vocab_size=257, n_layer=12, n_head=4, n_embd=256, dynamics="midpoint")
    models = {k: GPT(GPTConfig(**base, exact=k == "exact")) for k in ("float", "exact")}
    models["exact"].load_state_dict(models["float"].state_dict())
    opts = {k: m.configure_optimizers(0.1, 1e-4, (0.9, 0.95), "cpu") for k, m in models.items()}
    x = torch.randint(0, 257, (8, 256))
    y = torch.randint(0, 257, (8, 256))
    times = {k: [] for k in models}
    for i in range(23):
        for k, m in models.items():
            t0 = time.perf_counter()
            _, loss = m(x, y)
            loss.backward()
            opts[k].step()
            opts[k].zero_grad(set_to_none=True)
            if i >= 2:  # two warm-up steps
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"shape": base, "batch": 8, "threads": torch.get_num_threads(), "median_s": med,
           "all_s": times, "overhead": med["exact"] / med["float"] - 1}
    print(out)
    save("cost", out)


def train():
    """The sweep's midpoint run again with exact=True: same seed, data order, steps and evaluation."""
    sweep = json.loads((ROOT / "results" / "scratch" / "sweep.json").read_text())["runs"]["midpoint_h0.5"]
    sys.path.insert(0, str(ROOT / "experiments"))
    from scratch import COMMON  # the model/optimizer settings the sweep ran with, pinned
    args = sweep["command"].split()[2:] + [a for a in COMMON if a not in sweep["command"]]
    out = ROOT / "out-experiments" / "exact" / "midpoint_h0.5_exact"
    cmd = [sys.executable, "train.py", *args, "--exact=True", f"--out_dir={out}"]
    subprocess.run(cmd, cwd=ROOT, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    done = next(r for r in log if r["type"] == "done")
    save("train", {"float": {"command": sweep["command"], "val_loss": sweep["val_loss"]},
                   "exact": {"command": "python train.py " + " ".join(args) + " --exact=True",
                             "val_loss": done["val_loss"]}})


def report():
    lines = []
    if (RES / "grid.json").exists():
        g = json.loads((RES / "grid.json").read_text())
        ref = g["rows"][0]["val_loss"]
        lines += ["| stream | val loss | difference from float32 |", "|---|---:|---:|"]
        for r in g["rows"]:
            name = "float32" if r["exact_bits"] is None else f"exact, {r['exact_bits']} fractional bits"
            lines.append(f"| {name} | {r['val_loss']:.6f} | {r['val_loss'] - ref:+.2e} |")
        lines.append(f"\nLargest |state| in the stream: {g['rows'][0]['max_abs_state']:.1f} (the grid's range at 32 bits "
                     f"is 2^19 = 524288). Model: `{g['checkpoint']}`, first {g['windows']} val windows of {g['T']} "
                     "tokens. Regenerate: `python experiments/exact.py grid`.\n")
    if (RES / "cost.json").exists():
        c = json.loads((RES / "cost.json").read_text())
        lines.append(f"Step time (fwd + bwd + AdamW, d=256, 4 heads, T=256, batch 8, 12 layers, midpoint, "
                     f"{c['threads']} threads, interleaved, median of {len(c['all_s']['float'])}): float stream "
                     f"{c['median_s']['float'] * 1e3:.0f} ms, exact {c['median_s']['exact'] * 1e3:.0f} ms, overhead "
                     f"{c['overhead'] * 100:+.1f}%. Regenerate: `python experiments/exact.py cost`.\n")
    if (RES / "train.json").exists():
        t = json.loads((RES / "train.json").read_text())
        sys.path.insert(0, str(ROOT / "experiments"))
        from scratch import PINNED  # train.py's defaults when the runs were made (the recorded command omits them)
        cmd = " ".join([t["float"]["command"], *PINNED])
        lines.append(f"Training (the step-size sweep's midpoint run, 400 iterations): float stream val loss "
                     f"{t['float']['val_loss']:.4f}, exact {t['exact']['val_loss']:.4f}. Commands: "
                     f"`{cmd}` and the same with `--exact=True`.\n")
    (RES / "exact.md").write_text("\n".join(lines))


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "report"
    if what not in ("grid", "cost", "train", "report"):
        sys.exit(f"unknown step {what!r}: use grid, cost, train or report")
    globals()[what]()
    if what != "report":
        report()
