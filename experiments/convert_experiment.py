"""
The conversion experiment: train a Euler GPT here, take it through the Hugging Face GPT-2 format like a
real GPT-2, convert it to each reversible dynamic, fine-tune by KL distillation on another corpus, and
report held-out perplexity before and after.

    python experiments/convert_experiment.py                    # all steps; finished steps are reused
    python experiments/convert_experiment.py --ft_epochs=0.25   # a shorter fine-tune (kept as a separate row)
    python experiments/convert_experiment.py --report           # only rewrite table.md from the JSON

Steps (outputs under out-convert-exp/, results in results/convert/):
1. baseline: train.py trains a 6-layer, 128-wide Euler GPT on shakespeare_char (bytes). Character level
   because on this 2-core CPU the 50,257-way GPT-2 BPE head would dominate the compute; the HF format
   holds any vocabulary size, so nothing else changes.
2. export: convert.export_hf writes it as a HF GPT-2 directory; everything below starts from that
   directory, exactly as it would from a downloaded GPT-2 (the reload is checked to give equal logits).
3. mapping: every candidate mapping (step size h, Midpoint's a, and two forms that are not expressible
   with a GPTConfig) is scored by KL(original || converted) and perplexity on a fixed sample of the
   Shakespeare val split, with its float32 reconstruction error and reversible-backward gradient error.
   convert.CONVERT_DEFAULTS holds the closest expressible candidate whose gradients stay within GRAD_MAX
   of autograd's (and, for Midpoint(a), whose rounding amplification (1/|a|)^L stays under AMP_MAX).
4. fine-tune: python convert.py --init_from=<hf dir> --dynamics=<d> for midpoint, leapfrog and
   hamiltonian: KL to the original, reversible backward, on milton_char; perplexity of the original,
   the converted model before and after on the WHOLE shakespeare_char val split (train.py's protocol).
Writes results/convert/convert_experiment.json and results/convert/table.md (for the README).
"""

import dataclasses
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import convert  # noqa: E402
import train  # noqa: E402
from revgpt import GPT, Step, integrate, reconstruction_error  # noqa: E402

OUT = ROOT / "out-convert-exp"
RESULTS = ROOT / "results" / "convert"
# 1. the baseline: 800 x 16 x 128 tokens = 0.36 epochs of shakespeare_char; 2.5 minutes of a quiet 2-core
# CPU (24 minutes when we ran it, sharing the CPU with other jobs)
BASELINE = ["--dynamics=euler", "--n_layer=6", "--n_head=4", "--n_embd=128", "--block_size=128", "--batch_size=16",
            "--max_iters=800", "--learning_rate=2e-3", "--min_lr=2e-4", "--warmup_iters=50", "--eval_interval=800",
            "--eval_max_tokens=50000", "--log_interval=50", "--sample_tokens=200"]
# 3. the mapping measurement: evenly spaced val windows, and the reversibility bound
MAP_WINDOWS = 128  # x 128 tokens
GRAD_WINDOWS = 16  # windows for the gradient check
GRAD_MAX = 1e-3  # reversible-vs-autograd gradient error (float32) a usable mapping must stay under
AMP_MAX = 64  # Midpoint(a): the bound on the rounding amplification (1/|a|)^L of the inverse
# 4. the fine-tune (convert.py's defaults otherwise); every run is kept, keyed by (dynamics, epochs, lr)
FT = {"ft_epochs": 2.0, "ft_batch_size": 16, "ft_lr": 3e-4, "dynamics": "midpoint,leapfrog,hamiltonian"}


def parse(argv):
    cfg = dict(FT, report=False)
    for arg in argv:
        key, _, val = arg.removeprefix("--").partition("=")
        if key not in cfg:
            sys.exit(f"unknown option {arg}; options: {', '.join('--' + k for k in cfg)}")
        cfg[key] = val in ("", "True", "true", "1") if key == "report" else type(cfg[key])(val)
    return cfg


def step_baseline():
    out = OUT / "baseline"
    ckpt = out / "ckpt.pt"
    if ckpt.is_file() and torch.load(ckpt, weights_only=True)["iter_num"] >= 800:
        print(f"baseline: reusing {ckpt}")
    else:
        t0 = time.time()
        train.main(BASELINE + [f"--out_dir={out}"])
        (out / "train_seconds.txt").write_text(f"{time.time() - t0:.0f}\n")
    secs = (out / "train_seconds.txt").read_text().strip() if (out / "train_seconds.txt").exists() else None
    return ckpt, secs


def step_export(ckpt):
    model, tok = convert.load_model(ckpt)
    hf_dir = OUT / "baseline_hf"
    convert.export_hf(model, hf_dir, tokenizer=tok, dataset="shakespeare_char")
    back, tok2 = convert.load_model(hf_dir)
    idx = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (back(idx)[0] - model(idx)[0]).abs().max().item()
    assert diff == 0.0 and tok2 == tok, "the HF export must reload to the same model"
    print(f"export: {hf_dir} (reloads with identical logits)")
    return hf_dir


# ----------------------------------------------------------------------------------------------
# 3. mapping candidates


def candidates(L):
    """(dynamics, description, convert() kwargs) for every expressible candidate."""
    out = []
    for a in (1.0, 0.75, 0.5, 0.25, -0.25, -0.5, -0.75):  # a = -1 is leapfrog (below)
        for h in (0.25, 0.5, 0.75, 1.0):
            out.append(("midpoint", f"a={a}, h={h}", dict(a=a, h=h)))
    out += [("midpoint", f"a=random(seed {s}), h=0.5", dict(a_random=True, a_seed=s, h=0.5)) for s in range(3)]
    for h2, why in ((1 / L, "h^2=1/L"), (0.25, "h^2=1/4"), (2 / (L + 1), "h^2=2/(L+1)"),
                    (0.5, "h^2=1/2"), (1.0, "h^2=1"), (1.5, "h^2=3/2"), (2.0, "h^2=2")):
        out.append(("leapfrog", f"{why}: h={math.sqrt(h2):.4g}", dict(h=math.sqrt(h2))))
    out += [("hamiltonian", f"h={h}", dict(h=h)) for h in (0.25, 0.5, 0.75, 1.0, 1.25)]
    return out


def summed_steps(blocks, sign, alpha, beta):
    """Not expressible with a GPTConfig: layer j forced by f_j + sign * f_{j-1} (two blocks per layer)."""
    def g(j):
        return lambda u: blocks[j](u) + sign * blocks[j - 1](u) if j > 0 else blocks[j](u)
    return [Step(g(j), alpha, beta, 1.0, []) for j in range(len(blocks))]


def gradient_error(model, x, y):
    """Relative error (global norm, float32) of the reversible backward's gradients against autograd's."""
    grads = []
    for backward in ("reversible", "autograd"):
        m = GPT(dataclasses.replace(model.config, backward=backward))
        m.load_state_dict(model.state_dict())
        _, loss = m(x, y)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    return ((grads[0] - grads[1]).norm() / grads[1].norm()).item()


def step_mapping(hf_dir):
    original, _ = convert.load_model(hf_dir)
    L, T = original.config.n_layer, original.config.block_size
    val = train.open_split(convert.dataset_folder("shakespeare_char"), "val")
    starts = np.linspace(0, len(val) - T - 2, MAP_WINDOWS).astype(np.int64)
    x, y = train.get_batch(val, starts, T, torch.device("cpu"))
    with torch.no_grad():
        t_logp = F.log_softmax(original(x)[0], -1)

    @torch.no_grad()
    def score(logits):
        logp = F.log_softmax(logits, -1)
        kl = (t_logp.exp() * (t_logp - logp)).sum(-1).mean().item()
        ce = F.cross_entropy(logits.flatten(0, 1), y.flatten()).item()
        return kl, math.exp(ce)

    with torch.no_grad():
        rows = [dict(dynamics="euler", mapping="original", expressible=True, kl=0.0, ppl=score(original(x)[0])[1],
                     rec_err=None, grad_err=None)]
    for dyn, desc, kw in candidates(L):
        m = convert.convert(original, dyn, **kw).eval()
        with torch.no_grad():
            kl, ppl = score(m(x)[0])
        rec = reconstruction_error(m, x[:8])
        gerr = gradient_error(m, x[:GRAD_WINDOWS], y[:GRAD_WINDOWS])
        amp = (1 / abs(m.config.a)) ** L if dyn == "midpoint" and not m.config.a_random else None
        rows.append(dict(dynamics=dyn, mapping=desc, kwargs=kw, expressible=True, kl=kl, ppl=ppl, rec_err=rec,
                         grad_err=gerr, a_amplification=amp))
        print(f"  {dyn:12s} {desc:34s} KL {kl:.4f}  ppl {ppl:7.3f}  rec {rec:.1e}  grad {gerr:.1e}", flush=True)
    blocks = original.transformer.h
    for dyn, desc, steps in (
            ("midpoint", "paper.md: f_{l-1}+f_l at the middle state, 2h=1", summed_steps(blocks, 1.0, 1.0, 0.0)),
            ("leapfrog", "f_l - f_{l-1}, h=1", summed_steps(blocks, -1.0, -1.0, 2.0))):
        with torch.no_grad():
            p = original.embed(x)
            kl, ppl = score(original.lm_head(original.transformer.ln_f(integrate(steps, p, p)[1])))
        rows.append(dict(dynamics=dyn, mapping=desc, expressible=False, kl=kl, ppl=ppl, rec_err=None, grad_err=None))
        print(f"  {dyn:12s} {desc:34s} KL {kl:.4f}  ppl {ppl:7.3f}  (needs two blocks per layer)", flush=True)
    chosen = {}
    for dyn in ("midpoint", "leapfrog", "hamiltonian"):
        ok = [r for r in rows if r["dynamics"] == dyn and r["expressible"] and r["grad_err"] <= GRAD_MAX
              and (r["a_amplification"] or 0) <= AMP_MAX]
        best = min(ok, key=lambda r: r["kl"])
        chosen[dyn] = best["kwargs"]
        best["chosen"] = True
    rule = (f"min KL among expressible candidates whose float32 reversible-backward gradients match autograd "
            f"within {GRAD_MAX} (relative, global norm, {GRAD_WINDOWS} windows) and, for Midpoint(a), "
            f"(1/|a|)^L <= {AMP_MAX}")
    return rows, chosen, dict(windows=MAP_WINDOWS, tokens=int(y.numel()), block_size=T, rule=rule)


def step_original(hf_dir):
    """The original's perplexity on the whole shakespeare_char val split, once for all three dynamics."""
    path = OUT / "original_ppl.json"
    if not path.is_file():
        model, _ = convert.load_model(hf_dir)
        ppl, loss, n = convert.perplexity(model, "shakespeare_char")
        path.write_text(json.dumps({"ppl": ppl, "loss": loss, "tokens": n}) + "\n")
    r = json.loads(path.read_text())
    print(f"original: shakespeare_char val perplexity {r['ppl']:.4f} ({r['tokens']:,} tokens)")
    return r


def run_name(dyn, ft):
    return f"{dyn}_e{ft['ft_epochs']:g}_lr{ft['ft_lr']:g}_b{ft['ft_batch_size']}"


def step_finetune(hf_dir, dyn, ft, original):
    out = OUT / f"ft_{run_name(dyn, ft)}"
    report_path = out / "convert.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        if "gap_after_pct" in report:
            print(f"fine-tune {dyn}: reusing {report_path}")
            return report
    t0 = time.time()
    report = convert.main([f"--init_from={hf_dir}", f"--dynamics={dyn}", f"--out_dir={out}",
                           f"--epochs={ft['ft_epochs']:g}", f"--batch_size={ft['ft_batch_size']}",
                           f"--learning_rate={ft['ft_lr']:g}", f"--min_lr={ft['ft_lr'] / 10:g}",
                           "--eval_interval=100000", "--log_interval=20", "--sample_tokens=0",
                           "--eval_original=False"])
    report.update(seconds=time.time() - t0, batch_size=ft["ft_batch_size"], learning_rate=ft["ft_lr"],
                  original=original)
    report["gap_before_pct"] = 100 * (report["converted_before"]["ppl"] / original["ppl"] - 1)
    report["gap_after_pct"] = 100 * (report["converted_after"]["ppl"] / original["ppl"] - 1)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def table_md(res):
    """The README tables (generated, never typed)."""
    lines = ["| dynamic | mapping | fine-tune (milton_char) | original ppl | converted, before | after | gap after |",
             "|---|---|---|---|---|---|---|"]
    order = {"midpoint": 0, "leapfrog": 1, "hamiltonian": 2}
    runs = sorted(res["finetune"].values(), key=lambda r: (-r["epochs"], order[r["dynamics"]], r["learning_rate"]))
    for r in runs:
        a = f"a={r['a']:g}, " if r["dynamics"] == "midpoint" else ""
        lines.append(f"| {r['dynamics']} | {a}h={r['h']:.4g} | {r['epochs']:g} epochs, lr {r['learning_rate']:g}, "
                     f"{r['converted_after']['iters']} iters, {r['seconds'] / 60:.0f} min | {r['original']['ppl']:.3f} | "
                     f"{r['converted_before']['ppl']:.3f} ({r['gap_before_pct']:+.1f}%) | "
                     f"{r['converted_after']['ppl']:.3f} | {r['gap_after_pct']:+.2f}% |")
    lines.append("")
    full = [r for r in runs if r["epochs"] == 2.0]
    if full:
        lines.append("After the default 2-epoch fine-tune, the converted models' perplexity differs from the original's by " + ", ".join(
            f"{r['gap_after_pct']:+.2f}% ({r['dynamics']})" for r in full) + " (target: within 3%).")
        lines.append("")
    lines.append(f"Perplexity on the whole shakespeare_char val split ({res['eval_tokens']:,} tokens, non-overlapping "
                 "128-token windows, train.py's protocol). Fine-tune: KL(original || converted) on milton_char, "
                 f"batch {FT['ft_batch_size']} x 128 tokens, cosine lr to lr/10, reversible backward; minutes are wall "
                 "time on a 2-core CPU shared with other jobs.")
    lines.append("")
    lines.append("| dynamic | candidate mapping | KL(original \\|\\| converted) | ppl | fp32 rec. error | fp32 grad error |")
    lines.append("|---|---|---|---|---|---|")
    for r in res["mapping"]["rows"]:
        rec, grad = ("-" if r[k] is None else f"{r[k]:.1e}" for k in ("rec_err", "grad_err"))
        name = r["mapping"] + (" **(chosen)**" if r.get("chosen") else "") + ("" if r["expressible"] else " (2 blocks/layer)")
        lines.append(f"| {r['dynamics']} | {name} | {r['kl']:.4f} | {r['ppl']:.3f} | {rec} | {grad} |")
    lines.append("")
    m = res["mapping"]["protocol"]
    lines.append(f"Mapping candidates (before any fine-tuning) scored on {m['windows']} evenly spaced {m['block_size']}-token "
                 f"windows of the shakespeare_char val split ({m['tokens']:,} tokens). rec. error: max |reconstructed - "
                 "true| / max |embedding| of the initial states after running the stack forwards and back. grad error: "
                 "relative error of the reversible backward's gradients against autograd's. Chosen: the "
                 f"{m['rule']}.")
    return "\n".join(lines) + "\n"


def main(argv):
    ft = parse(argv)
    if ft["report"]:
        res = json.loads((RESULTS / "convert_experiment.json").read_text())
        (RESULTS / "table.md").write_text(table_md(res))
        print(table_md(res))
        return
    torch.manual_seed(0)
    RESULTS.mkdir(parents=True, exist_ok=True)
    res = {"machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"}
    ckpt, secs = step_baseline()
    res["baseline"] = {"train_args": BASELINE, "train_seconds": secs,
                       "model_args": torch.load(ckpt, weights_only=True)["model_args"]}
    hf_dir = step_export(ckpt)
    cache = OUT / "mapping.json"
    if cache.is_file():
        print(f"mapping: reusing {cache}")
        res["mapping"] = json.loads(cache.read_text())
    else:
        rows, chosen, protocol = step_mapping(hf_dir)
        res["mapping"] = {"rows": rows, "chosen": chosen, "protocol": protocol}
        cache.write_text(json.dumps(res["mapping"], indent=2) + "\n")
    for dyn, kw in res["mapping"]["chosen"].items():  # convert.py's defaults must be the measured choice
        default = convert.convert(convert.load_model(hf_dir)[0], dyn).config
        if not (math.isclose(kw["h"], default.h) and math.isclose(kw.get("a", default.a), default.a)):
            print(f"NOTE: the measured best {dyn} mapping {kw} differs from convert.py's default "
                  f"(h={default.h}, a={default.a}): update CONVERT_DEFAULTS")
    original = step_original(hf_dir)
    res["eval_tokens"] = original["tokens"]
    path = RESULTS / "convert_experiment.json"
    runs = json.loads(path.read_text()).get("finetune", {}) if path.is_file() else {}
    res["finetune"] = runs  # earlier runs (other budgets) are kept
    for dyn in ft["dynamics"].split(","):
        res["finetune"][run_name(dyn, ft)] = step_finetune(hf_dir, dyn, ft, original)
        path.write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / "table.md").write_text(table_md(res))
    print(table_md(res))


if __name__ == "__main__":
    main(sys.argv[1:])
