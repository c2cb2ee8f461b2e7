"""
From-scratch comparison of the dynamics on the default corpus (shakespeare_char), and the step-size sweep.

    python experiments/scratch.py sweep    # 3 values of h per dynamic, Midpoint(a) with random a, and euler
    python experiments/scratch.py main     # each dynamic at its best h from the sweep, with a second seed
    python experiments/scratch.py long     # the headline comparison: a 6-layer model, 1,500 iterations, 2 seeds
    python experiments/scratch.py zeroshot FILE   # eval.py lambada_openai (FILE = OpenAI's lambada_test.jsonl)
    python experiments/scratch.py report   # results/scratch/*.json -> results/scratch/*.md and *.png

The short comparison ("main") uses the sweep's budget: seed 1337 is the sweep's own run at the best h of
each dynamic, and main.json adds seed 2024 (and more seeds if SEEDS grows). The headline comparison
("long") trains a deeper model (6 layers x 128, 1.2M parameters) for 1,500 iterations (3.1M tokens,
0.67 epochs), each dynamic at its sweep-best h, with seeds 1337 and 2024.

Every run is `python train.py` with the overrides listed in the JSON, so each row can be rerun alone.
All runs of a phase share data, tokens, optimizer and schedule; they differ only in the keys shown.
Runs go two at a time, one thread each (this machine has 2 cores), so their wall times are not a
speed measurement: bench.py is. Validation loss is train.py's deterministic whole-split evaluation.
"""
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "results" / "scratch"
OUT = ROOT / "out-experiments" / "scratch"  # checkpoints (gitignored); logs are copied into RES

# the shared settings: train.py's CPU defaults (4 layers x 4 heads x 128, context 128, batch 16, AdamW
# 2e-3 with warmup + cosine), with a shorter budget for the sweep
COMMON = ["--dataset=shakespeare_char", "--sample_tokens=0", "--compile=False", "--device=cpu"]
# train.py's defaults when these runs were made, pinned so that later changes to the defaults don't
# change a rerun (each run's full config is also the first record of its log.jsonl)
PINNED = ["--n_layer=4", "--n_head=4", "--n_embd=128", "--block_size=128", "--batch_size=16",
          "--learning_rate=2e-3", "--min_lr=2e-4", "--beta2=0.99", "--weight_decay=0.1"]
COMMON += PINNED
SWEEP = COMMON + ["--max_iters=400", "--warmup_iters=40", "--eval_interval=400", "--log_interval=50"]
SWEEP_RUNS = {
    "euler": ["--dynamics=euler"],
    **{f"midpoint_h{h}": ["--dynamics=midpoint", f"--h={h}"] for h in (0.25, 0.5, 1.0)},
    "midpoint_arandom_h0.5": ["--dynamics=midpoint", "--h=0.5", "--a_random=True"],
    **{f"leapfrog_h{h}": ["--dynamics=leapfrog", f"--h={h}"] for h in (0.25, 0.5, 1.0)},
    **{f"hamiltonian_h{h}": ["--dynamics=hamiltonian", f"--h={h}"] for h in (0.5, 1.0, 1.5)},
}
# the headline comparison: deeper (6 layers) and 3.75x longer than the sweep, evaluated every 500 iterations
LONG = [a for a in COMMON if not a.startswith("--n_layer=")] + [
    "--n_layer=6", "--max_iters=1500", "--warmup_iters=100", "--eval_interval=500", "--log_interval=50"]
SEEDS = (1337, 2024)  # 1337 is train.py's default seed: the sweep's runs
DYNAMICS = ("euler", "midpoint", "leapfrog", "hamiltonian")


def run(name, args, phase):
    """One train.py run; returns its record (overrides, final val loss, the eval curve, the train curve)."""
    out = OUT / phase / name
    cmd = [sys.executable, "train.py", *args, f"--out_dir={out}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed ({' '.join(cmd)}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    evals = [(r["iter"], r["val_loss"]) for r in log if r["type"] == "eval"]
    train_curve = [(r["iter"], r["loss"]) for r in log if r["type"] == "train"]
    done = next(r for r in log if r["type"] == "done")
    cfg = next(r for r in log if r["type"] == "config")
    rec = {"name": name, "command": "python train.py " + " ".join(args), "model_args": cfg["model_args"],
           "val_loss": done["val_loss"], "val_ppl": math.exp(done["val_loss"]), "evals": evals,
           "train_curve": train_curve, "tokens_seen": done["tokens_seen"], "wall_s": time.time() - t0}
    print(f"{phase}/{name}: val loss {rec['val_loss']:.4f} ({rec['wall_s'] / 60:.1f} min)", flush=True)
    return rec


def run_all(phase, runs):
    RES.mkdir(parents=True, exist_ok=True)
    path = RES / f"{phase}.json"
    done = json.loads(path.read_text())["runs"] if path.exists() else {}
    todo = {k: v for k, v in runs.items() if k not in done}  # rerunning the phase only fills the gaps
    with ThreadPoolExecutor(max_workers=2) as pool:
        for rec in pool.map(lambda kv: run(kv[0], kv[1], phase), todo.items()):
            done[rec["name"]] = rec
            tmp = path.with_suffix(".tmp")  # save after every run: an interrupted phase keeps its results
            tmp.write_text(json.dumps({"phase": phase, "machine": machine(), "runs": done}, indent=1))
            os.replace(tmp, path)


def machine():
    import platform
    import torch
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
            "threads_per_run": 1, "runs_in_parallel": 2}


def best_h():
    """The sweep's best run of each dynamic (lowest val loss), among runs with a fixed a = 1."""
    sweep = json.loads((RES / "sweep.json").read_text())["runs"]
    best = {}
    for name, r in sweep.items():
        d = r["model_args"]["dynamics"]
        if not r["model_args"]["a_random"] and (d not in best or r["val_loss"] < best[d]["val_loss"]):
            best[d] = r
    return best


def main_runs():
    """Seeds after the first for each dynamic at its best h (all of a dynamic's sweep runs must be done)."""
    best, runs = best_h(), {}
    sweep_names = set(json.loads((RES / "sweep.json").read_text())["runs"])
    for d in DYNAMICS:
        if d not in best or any(k.startswith(d) and k not in sweep_names for k in SWEEP_RUNS):
            print(f"main: skipping {d}, its sweep is not complete")
            continue
        h = best[d]["model_args"]["h"]
        for s in SEEDS[1:]:
            runs[f"{d}_s{s}"] = [f"--dynamics={d}", f"--h={h}", f"--seed={s}"] + SWEEP
    return runs


def long_runs():
    """Every dynamic at its sweep-best h, every seed, at the LONG budget."""
    return {f"{d}_s{s}": [f"--dynamics={d}", f"--h={r['model_args']['h']}", f"--seed={s}"] + LONG
            for d, r in best_h().items() for s in SEEDS}


def zeroshot(lambada_file):
    """eval.py lambada_openai on each dynamic's best sweep model and on every long-phase model. Byte-level
    models with a 128-token context can only score LAMBADA (the other tasks' continuations are longer
    than 128 bytes)."""
    models = {f"sweep/{r['name']}": r for r in best_h().values()}
    models.update({f"long/{name}": r for name, r in ((load("long") or {}).get("runs") or {}).items()})
    path = RES / "zeroshot.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    out = {(k if "/" in k else f"sweep/{v['run']}"): v for k, v in out.items()}  # older files: keyed by dynamic
    for k, v in out.items():
        v["run"] = k

    def one(key):  # runs two at a time, one thread each, like the training runs
        ckpt = OUT / key / "ckpt.pt"
        res = RES / f"zeroshot_tmp_{key.replace('/', '_')}.json"
        cmd = [sys.executable, "eval.py", f"--ckpt={ckpt}", f"--tasks=lambada_openai={lambada_file}", "--download=False",
               "--progress=False", "--batch_size=32", f"--out={res}"]
        subprocess.run(cmd, cwd=ROOT, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        rec = {"run": key, "command": " ".join(["python"] + cmd[1:]).replace(str(ROOT) + "/", ""),
               "results": json.loads(res.read_text())}
        res.unlink()
        return key, rec

    with ThreadPoolExecutor(max_workers=2) as pool:
        for key, rec in pool.map(one, [k for k in models if k not in out]):
            out[key] = rec
            path.write_text(json.dumps(out, indent=1))


def load(name):
    path = RES / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def report():
    """Write sweep.md, main.md, zeroshot.md, curves.png and results.md (the README's Results section)."""
    sweep, main, zs = (load("sweep") or {}).get("runs", {}), (load("main") or {}).get("runs", {}), load("zeroshot")
    long = (load("long") or {}).get("runs", {})
    md = []
    if sweep:
        rows = ["| run | overrides | val loss | val ppl |", "|---|---|---:|---:|"]
        for name, r in sweep.items():
            over = " ".join(a for a in r["command"].split()[2:] if a.split("=")[0] in ("--dynamics", "--h", "--a_random"))
            rows.append(f"| {name} | `{over}` | {r['val_loss']:.4f} | {r['val_ppl']:.3f} |")
        (RES / "sweep.md").write_text("\n".join(rows) + "\n")
    summary, long_summary = {}, {}
    if main:
        main = {**{f"{d}_s{SEEDS[0]}": r for d, r in best_h().items()}, **main}  # seed 1337 = the sweep's run
        summary = summarize(main, "main")
    if long:
        long_summary = summarize(long, "long")
        plot(long, "shakespeare_char, 6 layers, 1,500 iterations")
    elif main:
        plot(main, "shakespeare_char, 4 layers, 400 iterations")
    md += ["Hardware: this project's 2-core x86_64 CPU machine, torch 2.13.0 CPU, runs two at a time on one thread "
           "each. Every number below is read from `results/` JSON by `python experiments/scratch.py report`.", "",
           "### 1. From scratch", "",
           "`euler`, `midpoint`, `leapfrog` and `hamiltonian` trained with identical data order, tokens, optimizer "
           "and schedule on `shakespeare_char` (bytes), each dynamic at its best h from the sweep below, seeds 1337 "
           "and 2024. Final val loss on the whole val split (457,251 tokens). Each run's exact command is in "
           "`results/scratch/*.json`.", ""]
    if long:
        md += [f"**6 layers x 4 heads x 128 ({long_params(long)} parameters), context 128, batch 16, AdamW 2e-3 with "
               "warmup + cosine, 1,500 iterations (3.1M tokens, 0.67 epochs).** Rerun: `python experiments/scratch.py "
               "sweep && python experiments/scratch.py long`.", "", (RES / "long.md").read_text(), "",
               "![learning curves](results/scratch/curves.png)", ""]
    md += ["**Short budget: train.py's default shape (4 layers x 4 heads x 128, 0.83M parameters), 400 iterations "
           "(819,200 tokens, 0.18 epochs), AdamW 2e-3 with warmup + cosine.** Rerun: `python experiments/scratch.py "
           "sweep && python experiments/scratch.py main`. These runs were made when train.py's defaults were the values "
           "scratch.py now pins, so the commands recorded in sweep.json and main.json omit them; to rerun one by hand, "
           "add `" + " ".join(PINNED) + "`.", ""]
    md += [(RES / "main.md").read_text() if main else "(not run yet)", ""]
    if main and not long:
        md += ["![learning curves](results/scratch/curves.png)", ""]
    md += ["**On GPUs: the paper's setting** (GPT-2 small, GPT-2 BPE, OpenWebText, nanoGPT's hyperparameters; "
           "not run here). Per dynamic, in its own out_dir, then the zero-shot tasks:", "", "```sh",
           "python data/openwebtext/prepare.py    # needs HF datasets and the internet",
           "for d in euler midpoint leapfrog hamiltonian; do",
           "  torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_owt.py --dynamics=$d --out_dir=out-owt-$d",
           "  python eval.py --ckpt=out-owt-$d/ckpt.pt --tasks=lambada_openai,hellaswag,piqa,arc_easy,winogrande",
           "done", "```", ""]
    md += ["### 2. Step size", "",
           "Each dynamic at three values of h, and Midpoint(a) with a random per-layer a = ±1 + U(-1/2, 1/2) "
           "(h = 0.5), seed 1337, same settings as above. The best h of each dynamic is `revgpt.DEFAULT_H`.", "",
           (RES / "sweep.md").read_text() if sweep else "(not run yet)", "",
           "### 3. Conversion", "", "See [Converting GPT-2](#converting-gpt-2): the original, converted and fine-tuned "
           "perplexities on the same corpus.", "",
           "### 4. Zero-shot", ""]
    if zs:
        md += ["Models this small (0.8-1.2M parameters, byte-level, at most 0.67 epochs) score at or near zero: these numbers "
               "test the pipeline, not the method. Byte-level models with a 128-token context can only score "
               "LAMBADA: the other tasks' continuations are longer than 128 bytes, and eval.py refuses to truncate "
               "them (the harness scores a continuation in one window).", "",
               "| model | task | acc | perplexity | n |", "|---|---|---:|---:|---:|"]
        for d, z in zs.items():
            r = z["results"]["results"]["lambada_openai"]
            md.append(f"| {z['run']} | lambada_openai | {r['acc']:.4f} ± {r['acc_stderr']:.4f} | {r['perplexity']:.3g} | {r['n']} |")
        md += ["", f"Command (per model; each model's is in results/scratch/zeroshot.json): `{list(zs.values())[-1]['command']}`", ""]
    else:
        md += ["(not run yet)", ""]
    md += ["### 5. Memory and speed", "", "See [Benchmarks](#benchmarks-memory-and-speed).", "",
           "### Conclusion", "", conclusion(long_summary, f"{long_params(long)} parameters, 0.67 epochs") if long else
           conclusion(summary, "0.83M parameters, 0.18 epochs")]
    (RES / "results.md").write_text("\n".join(md) + "\n")


def summarize(runs, phase):
    """Mean and half-range of the final val loss per dynamic; writes <phase>.md and <phase>_summary.json."""
    summary = {}
    for d in DYNAMICS:
        rs = [r for r in runs.values() if r["model_args"]["dynamics"] == d]
        if rs:
            losses = [r["val_loss"] for r in rs]
            summary[d] = dict(mean=sum(losses) / len(losses), half_range=(max(losses) - min(losses)) / 2,
                              h=rs[0]["model_args"]["h"], seeds=len(rs), losses=losses)
    rows = ["| dynamics | h | seeds | val loss (mean ± half-range) | val ppl | vs euler |", "|---|---:|---:|---:|---:|---:|"]
    for d, v in summary.items():
        rel = (v["mean"] / summary["euler"]["mean"] - 1) * 100 if "euler" in summary else float("nan")
        v["vs_euler_pct"] = rel
        rows.append(f"| {d} | {v['h']} | {v['seeds']} | {v['mean']:.4f} ± {v['half_range']:.4f} | "
                    f"{math.exp(v['mean']):.3f} | {rel:+.2f}% |")
    (RES / f"{phase}.md").write_text("\n".join(rows) + "\n")
    (RES / f"{phase}_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def long_params(runs):
    """The LONG model's parameter count, from its model_args (every dynamic has the same weights)."""
    sys.path.insert(0, str(ROOT))
    from revgpt import GPT, GPTConfig
    model = GPT(GPTConfig(**next(iter(runs.values()))["model_args"]))
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M"


def conclusion(summary, scale):
    """One paragraph comparing ours with the paper, every number read from the JSON."""
    if not summary or "euler" not in summary:
        return "(the from-scratch comparison has not been run yet)"
    parts = [f"{d} {v['vs_euler_pct']:+.2f}%" for d, v in summary.items() if d != "euler"]
    spread = max(v["half_range"] / v["mean"] * 100 for v in summary.values())
    rev = {d: v["vs_euler_pct"] for d, v in summary.items() if d != "euler"}
    worse = [d for d, r in rev.items() if r > 2]
    better = [d for d, r in rev.items() if r < -2]
    text = (f"At equal steps, the reversible dynamics' mean validation loss relative to euler is: {', '.join(parts)} "
            f"(seed-to-seed half-range up to {spread:.2f}%). ")
    if worse:
        text += f"{' and '.join(worse)} {'is' if len(worse) == 1 else 'are'} more than 2% worse than euler, missing the target. "
    else:
        text += ("None is more than 2% worse than euler" + (f" ({' and '.join(better)} is more than 2% *better*, "
                 "outside the 2% band on the good side)" if better else "") + ", consistent with the paper's \"same "
                 "or slightly better\" validation loss, ")
    text += (f"but at a far smaller scale ({scale} of a 4.6M-token corpus) than the paper's GPT-2 "
             "runs, so this is a sanity check of the method, not a reproduction. ")
    text += bench_sentence()
    return text


def bench_sentence():
    """The memory and speed half of the conclusion, read from bench.py's CPU JSON."""
    path = ROOT / "results" / "bench" / "cpu.json"
    if not path.exists():
        return "(bench.py's CPU run, results/bench/cpu.json, is missing: run `python bench.py`)"
    R = json.loads(path.read_text())
    mb, tm = R.get("maxbatch", {}), R.get("time", {})
    sys.path.insert(0, str(ROOT))
    from bench import paired_ratio, tokens_per_s_change  # the same ratios as bench.py's report
    parts = []

    def tps(m, e):
        return 100 * tokens_per_s_change(m, e)

    for L in sorted(mb.get("euler/autograd", {}), key=int):
        e, m = mb["euler/autograd"][L], mb.get("midpoint/reversible", {}).get(L)
        k = mb.get("euler/checkpoint", {}).get(L)
        if m and e["max_batch"]:
            parts.append(f"at {L} layers midpoint's max batch is {m['max_batch'] / e['max_batch']:.1f}x euler's "
                         f"({m['max_batch']} vs {e['max_batch']} sequences, tokens/s {tps(m, e):+.0f}%)"
                         + (f", checkpointing's {k['max_batch'] / e['max_batch']:.1f}x ({k['max_batch']}, tokens/s "
                            f"{tps(k, e):+.0f}%)" if k else ""))

    def paired(c, ref, L):
        return paired_ratio(tm[c][L]["times_s"], tm[ref][L]["times_s"])["median"]
    depths = [L for L in sorted(tm.get("euler/autograd", {}), key=int) if L in tm.get("midpoint/reversible", {})]
    ratios = [f"{paired('midpoint/reversible', 'euler/autograd', L):.2f}x at {L} layers" for L in depths]
    ck = [f"{paired('midpoint/reversible', 'euler/checkpoint', L):.3f}x at {L} layers" for L in depths
          if L in tm.get("euler/checkpoint", {})]
    text = (f"Memory and speed on this CPU (bench.py, d=256, T=256, a {R['settings']['budget_gb']} GiB budget): "
            + "; ".join(parts) + ". A reversible training step costs " + ", ".join(ratios) + " the time of "
            "euler's" + (f", and {', '.join(ck)} the time of checkpointing's" if ck else "")
            + ". The paper reports about 10x max batch at GPT-2 scale on an H100, +20.7% to +101% throughput "
            "at max batch (16 to 96 layers) and 30-50% more compute per step. Our max-batch ratio depends on the "
            "budget, the depth and how much of the peak the weights, optimizer state and LM head take; our "
            "throughput at max batch is lower than euler's because a CPU is already saturated at small batches, "
            "whereas a GPU turns the larger batch into higher utilisation.")
    return text


def plot(runs, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: tables written, no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, d in enumerate(DYNAMICS):
        for j, r in enumerate(r for r in runs.values() if r["model_args"]["dynamics"] == d):
            it, loss = zip(*r["train_curve"])
            ax.plot(it, loss, color=f"C{i}", alpha=0.5, lw=1, label=d if j == 0 else None)
            ei, el = zip(*r["evals"])
            ax.plot(ei[1:], el[1:], "o", color=f"C{i}")
    lows = [r["val_loss"] for r in runs.values()]
    ax.set(xlabel="iteration", ylabel="loss (nats/byte)", ylim=(min(lows) - 0.15, 3.5),
           title=f"{title}: train loss (lines), val loss (dots)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RES / "curves.png", dpi=110)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "report"
    if what == "sweep":
        run_all("sweep", {k: v + SWEEP for k, v in SWEEP_RUNS.items()})
    elif what == "main":
        run_all("main", main_runs())
    elif what == "long":
        run_all("long", long_runs())
    elif what == "zeroshot":
        zeroshot(sys.argv[2])
    elif what != "report":
        sys.exit(f"unknown phase {what!r}: use sweep, main, long, zeroshot or report")
    report()
