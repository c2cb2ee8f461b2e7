"""
bench.py: what a reversible GPT buys and costs, measured. Memory and speed of one training step
(forward + backward + AdamW) for the standard GPT-2 stack, the same stack with activation
checkpointing, and each reversible dynamic with its hand-written backward or with plain autograd.

    python bench.py            # full sweep (CPU: d=256, 4 heads, T=256; about 25 min on a quiet
                               #   2-core machine; CUDA: the paper's width-512 depth sweep and
                               #   GPT-2 small max batch)
    python bench.py --quick    # small CPU sweep, a few minutes, written to out/bench_quick/
    python bench.py --recon    # reconstruction-error table (depth x precision) for the README
    python bench.py --report results/bench/cpu.json   # rewrite the Markdown and plots from a JSON

Combinations ("combos"): euler/autograd (GPT-2), euler/checkpoint (torch.utils.checkpoint around
every block, use_reentrant=False), {midpoint, leapfrog, hamiltonian}/reversible (constant-memory
backward) and {midpoint, leapfrog, hamiltonian}/autograd (same architecture, memory trick off).

What is measured, per combo:
- activation bytes: distinct tensor storage autograd saves during the training forward (the hook
  method of revgpt.activation_bytes), split into the block stack and the head (ln_f, LM head, loss);
- peak memory: on CUDA torch.cuda.max_memory_allocated; on CPU the peak resident set (VmHWM) of a
  fresh subprocess per configuration, minus its resident set after loading the libraries. Weights,
  gradients and AdamW state ("static") are reported separately;
- step time: median over timed steps after warm-up; all combos live in one process and take turns
  step by step (interleaved), so machine noise hits them alike. A ratio between two combos is the
  median over rounds of the ratio of their steps in the same round (with its interquartile range):
  each round's steps ran seconds apart, so slow periods of the machine cancel in the ratio;
- max batch under --budget_gb: a batch counts only if every one of several full optimizer steps
  ran with peak memory within the budget (CUDA: no out-of-memory error either); the search's probes
  also give the memory per extra sequence. Tokens/s at each max batch: on CPU the found batches
  are timed again, interleaved in one process (the probes' allocator settings slow their steps);
  on CUDA they come from the probe's own steps;
- FLOPs per token: "model" FLOPs (6N + 12 L T d, as nanoGPT/PaLM count them, recompute NOT
  counted: the useful work, equal for all combos) and the FLOPs checkpoint and reversible execute
  (their recompute counted: one extra forward of every block, less the MLP's last matmul for
  checkpoint, whose early stop skips it).
"""

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from revgpt import GPT, ChunkedHeadLoss, GPTConfig, reconstruction_error

REVERSIBLE = ("midpoint", "leapfrog", "hamiltonian")
# (dynamics, backward): backward "checkpoint" means euler + torch.utils.checkpoint on every block
COMBOS = [("euler", "autograd"), ("euler", "checkpoint")] + \
         [(d, "reversible") for d in REVERSIBLE] + [(d, "autograd") for d in REVERSIBLE]
PROBE_TAG = "BENCH_PROBE "  # the line a probe subprocess prints its JSON result on
MiB = 2 ** 20

# ----------------------------------------------------------------------------------------------
# The training step under test


def combo_name(dyn, bw):
    return f"{dyn}/{bw}"


def parse_combo(name):
    dyn, bw = name.split("/")
    if (dyn, bw) not in COMBOS:
        raise ValueError(f"combo {name!r}: must be one of {[combo_name(*c) for c in COMBOS]}")
    return dyn, bw


def make_model(shape, n_layer, combo, device="cpu", seed=0):
    """The model of one combo. The same seed gives every combo the same initial weights."""
    dyn, bw = parse_combo(combo)
    torch.manual_seed(seed)
    cfg = GPTConfig(n_layer=n_layer, dynamics=dyn, backward="autograd" if bw == "checkpoint" else bw,
                    dropout=0.0, **shape)
    return GPT(cfg).to(device)


def checkpointed_euler(model, idx):
    """GPT.forward's euler stack with every block wrapped in torch.utils.checkpoint, up to ln_f:
    (B, T) -> (B, T, C). tests/test_bench.py checks it gives GPT.forward's loss and gradients."""
    c = model.config
    if c.dynamics != "euler":
        raise ValueError(f"checkpoint is benchmarked for dynamics='euler' only, not {c.dynamics!r}")
    p = model.embed(idx)  # (B, T, C)
    for block in model.transformer.h:
        # checkpoint saves only the block's input and recomputes the block during backward
        f = checkpoint(block, p, use_reentrant=False)
        p = p + f if c.h == 1.0 else p + c.h * f
    return model.transformer.ln_f(p)


def bench_loss(model, idx, targets, checkpoint_blocks=False, head_chunk=0):
    """The training loss of one combo: model(idx, targets) with the model's own head_chunk option
    (revgpt.GPTConfig.head_chunk; 0 = the plain LM head), or, for checkpoint, checkpointed_euler
    followed by the same head."""
    if not checkpoint_blocks:
        model.config.head_chunk = head_chunk
        return model(idx, targets)[1]
    x = checkpointed_euler(model, idx)  # (B, T, C)
    if head_chunk:
        return ChunkedHeadLoss.apply(x.view(-1, x.size(-1)), model.lm_head.weight, targets.view(-1), head_chunk)
    logits = model.lm_head(x)  # (B, T, vocab), as GPT.forward
    acc = torch.promote_types(logits.dtype, torch.float32)  # as GPT.forward
    return F.cross_entropy(logits.view(-1, logits.size(-1)).to(acc), targets.view(-1), ignore_index=-1)


def saved_bytes(model, idx, targets, checkpoint_blocks=False, head_chunk=0):
    """Bytes of distinct storage autograd saves for backward during one training forward,
    parameters excluded (revgpt.activation_bytes' method), split into "stack" (embedding + blocks)
    and "head" (ln_f, LM head, loss). A storage counts once, in the phase that first saved it."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen, phase = {}, ["stack"]

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in param_ptrs and s.data_ptr() not in seen:
            seen[s.data_ptr()] = (phase[0], s.nbytes())
        return t

    # the head starts where ln_f is entered
    hook = model.transformer.ln_f.register_forward_pre_hook(lambda *_: phase.__setitem__(0, "head"))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = bench_loss(model, idx, targets, checkpoint_blocks, head_chunk)
        del loss  # drop the graph
    finally:
        hook.remove()
    out = {ph: sum(n for q, n in seen.values() if q == ph) for ph in ("stack", "head")}
    out["total"] = out["stack"] + out["head"]
    return out


def train_step(model, opt, idx, targets, checkpoint_blocks, head_chunk, amp_dtype):
    """One full optimizer step: forward, backward, AdamW step, grads freed."""
    with torch.autocast(idx.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        loss = bench_loss(model, idx, targets, checkpoint_blocks, head_chunk)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)  # frees the gradients, as train.py does between steps
    return loss.detach()


def free_memory():
    """Hand freed memory back to the OS. glibc keeps freed heap memory for reuse, and over a long
    sweep of differently sized models the main process grew by gigabytes (one full CPU run was
    killed by the kernel's out-of-memory killer); malloc_trim(0) returns it."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def static_bytes(model, opt):
    """Weights, gradients (one per trainable weight) and optimizer state."""
    w = sum(p.numel() * p.element_size() for p in model.parameters())
    g = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    o = sum(t.numel() * t.element_size() for st in opt.state.values() for t in st.values()
            if torch.is_tensor(t))
    return {"weights": w, "grads": g, "optimizer": o, "total": w + g + o}


def make_batch(shape, batch, device, seed=1234):
    g = torch.Generator().manual_seed(seed)
    T, V = shape["block_size"], shape["vocab_size"]
    idx = torch.randint(0, V, (batch, T), generator=g)
    tgt = torch.randint(0, V, (batch, T), generator=g)
    return idx.to(device), tgt.to(device)


def make_opt(model, device):
    return model.configure_optimizers(weight_decay=0.1, learning_rate=1e-4, betas=(0.9, 0.95), device_type=device)


# ----------------------------------------------------------------------------------------------
# Memory: one configuration, several full steps, peak memory (and step times)


def reset_rss_peak():
    """Start a new peak: writing 5 to /proc/self/clear_refs resets VmHWM to the current resident
    set (Linux >= 4.0), so the peak counts from here, not from library loading."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # older kernels: the peak then also covers what happened before


def rss_now_and_peak():
    """(current, peak) resident set size of this process in bytes, from /proc (Linux)."""
    cur = peak = None
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return cur, peak


def run_steps(spec, device, budget=None, base=None):
    """Build the model of spec, run spec["steps"] full optimizer steps, return peak memory, static
    memory and step times; None if a step ran out of memory (CUDA) or went over `budget` bytes
    (the run then stops: later steps only grow). Peak memory is counted from `base`: on CUDA the
    allocated bytes before the model exists, on CPU the resident set before the model exists
    (VmHWM is a per-process peak, so every CPU measurement needs a fresh process)."""
    shape, amp = spec["shape"], (torch.bfloat16 if spec.get("amp") == "bfloat16" else None)
    ckpt = spec["combo"].endswith("/checkpoint")
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if base is None else base
    elif base is None:
        reset_rss_peak()
        base = rss_now_and_peak()[0]
    model = opt = None
    try:
        model = make_model(shape, spec["n_layer"], spec["combo"], device)
        opt = make_opt(model, device)
        idx, tgt = make_batch(shape, spec["batch"], device)
        times, peak = [], 0
        for _ in range(spec["steps"]):
            sync(device)
            t0 = time.perf_counter()
            train_step(model, opt, idx, tgt, ckpt, spec.get("head_chunk", 0), amp)
            sync(device)
            times.append(time.perf_counter() - t0)
            peak = (torch.cuda.max_memory_allocated() if device == "cuda" else rss_now_and_peak()[1]) - base
            if budget is not None and peak > budget:
                return None
        return {"peak": peak, "static": static_bytes(model, opt), "step_times": times}
    except torch.cuda.OutOfMemoryError:
        return None
    finally:
        del model, opt
        if device == "cuda":
            torch.cuda.empty_cache()


def probe_main(spec_json):
    """A CPU probe subprocess: load the libraries (one tiny step, so lazily loaded kernels and
    thread pools are in the baseline), then measure one configuration and print it as JSON.
    With a budget, a watchdog thread ends the process as soon as the peak passes it."""
    spec = json.loads(spec_json)
    torch.set_num_threads(spec["threads"])
    tiny = dict(block_size=8, vocab_size=16, n_embd=8, n_head=1, bias=True)
    run_steps(dict(shape=tiny, n_layer=1, combo=spec["combo"], batch=1, steps=1), "cpu")
    reset_rss_peak()
    base, budget = rss_now_and_peak()[0], spec.get("budget")
    answer_once = threading.Lock()  # the watchdog and the main thread must not both print

    def answer(out):
        with answer_once:
            print(PROBE_TAG + json.dumps(out), flush=True)
            os._exit(0)  # no teardown, and no second answer

    def watchdog():
        while True:
            if rss_now_and_peak()[1] - base > budget:
                answer(None)  # over budget: this batch does not fit
            time.sleep(0.01)

    if budget is not None:
        threading.Thread(target=watchdog, daemon=True).start()
    answer(run_steps(spec, "cpu", budget=budget, base=base))


def probe_subprocess(spec):
    """Run one CPU configuration in a fresh Python process and return its result (or None).
    MALLOC_MMAP_THRESHOLD_ makes glibc serve every allocation >= 1 MiB by mmap and give it back to
    the OS on free, so the resident set follows the live tensors, not the allocator's leftovers."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(2 ** 20))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", json.dumps(spec)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode == -9 and spec.get("budget") is not None:
        return None  # killed by the kernel's out-of-memory killer: this batch does not fit
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith(PROBE_TAG)]
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"probe {spec} failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    return json.loads(lines[0][len(PROBE_TAG):])


def measure(spec, device, budget=None):
    return run_steps(spec, device, budget) if device == "cuda" else probe_subprocess(dict(spec, budget=budget))


def max_batch_search(fits_at, budget, limit=4096, max_probes=16):
    """Largest batch b with fits_at(b) <= budget, where fits_at(b) is the measured peak memory of
    batch b (None: it failed, e.g. out of memory). Returns (b, {batch: peak}).
    Memory is close to linear in the batch, so the next probe is where the line through the
    smallest and largest fitting probes meets the budget; without a line the batch grows 8x, or
    the bracket (lo fits, hi does not) is halved. Each probe stays a quarter of the bracket away
    from its ends, so the bracket shrinks by at least a quarter and the search ends. The answer is
    always a batch measured to fit and, unless `limit` or `max_probes` stopped the search, the
    batch after it was measured not to."""
    probes = {}

    def ok(b):
        if b not in probes:
            probes[b] = fits_at(b)
        return probes[b] is not None and probes[b] <= budget

    if not ok(1):
        return 0, probes
    lo, hi = 1, None
    while (hi is None or hi - lo > 1) and lo < limit and len(probes) < max_probes:
        good = sorted(b for b in probes if probes[b] is not None and probes[b] <= budget)
        guess = None
        if len(good) >= 2:
            b1, b2 = good[0], good[-1]  # the widest pair: the least sensitive to measurement noise
            per_seq = (probes[b2] - probes[b1]) / (b2 - b1)
            if per_seq > 0:
                guess = b2 + math.floor((budget - probes[b2]) / per_seq)
        if hi is None:
            b = max(lo + 1, min(8 * lo if guess is None else guess, 8 * lo, limit))
        else:
            margin = max(1, (hi - lo) // 4)
            b = max(lo + margin, min((lo + hi) // 2 if guess is None else guess, hi - margin))
        if ok(b):
            lo = b
        else:
            hi = b
    return lo, probes


# ----------------------------------------------------------------------------------------------
# Speed: interleaved step times of several combos in one process


def time_combos(shape, n_layer, combos, batch, device, amp, warmup, steps, head_chunk=0):
    """Median step time of each combo. Every combo's model and optimizer live side by side; each
    round runs one step of every combo, in a freshly shuffled order (seeded), so that slow periods
    of a shared machine fall on all combos alike and no combo always follows the same other one.
    batch: one batch size for all, or a dict combo -> batch (tokens/s at each max batch)."""
    batches = batch if isinstance(batch, dict) else {c: batch for c in combos}
    runs = {}
    for c in combos:
        model = make_model(shape, n_layer, c, device)
        runs[c] = (model, make_opt(model, device), c.endswith("/checkpoint"), make_batch(shape, batches[c], device))
    times, rng = {c: [] for c in combos}, random.Random(0)
    for r in range(warmup + steps):
        order = list(combos)
        rng.shuffle(order)
        for c in order:
            model, opt, ckpt, (idx, tgt) = runs[c]
            sync(device)
            t0 = time.perf_counter()
            train_step(model, opt, idx, tgt, ckpt, head_chunk, amp)
            sync(device)
            if r >= warmup:
                times[c].append(time.perf_counter() - t0)
    del runs
    return {c: {"median_s": statistics.median(ts), "times_s": ts, "batch": batches[c],
                "tokens_per_s": batches[c] * shape["block_size"] / statistics.median(ts)} for c, ts in times.items()}


def paired_ratio(times, ref_times):
    """Median and quartiles over rounds of times[i] / ref_times[i]: two combos' steps of the same
    round (time_combos) ran seconds apart, so the ratio cancels most of what the machine did meanwhile."""
    if len(times) != len(ref_times) or not times:
        raise ValueError(f"paired_ratio: {len(times)} and {len(ref_times)} rounds; need equal, non-zero counts")
    r = sorted(t / u for t, u in zip(times, ref_times))
    q1, med, q3 = statistics.quantiles(r, n=4, method="inclusive") if len(r) > 1 else (r[0],) * 3
    return {"median": med, "q1": q1, "q3": q3}


def flops_per_token(shape, n_layer, recompute=None):
    """Training FLOPs per token, nanoGPT's estimate: 6 N (N = block and head weights, matmuls
    only) + 12 L T C (attention scores and values, the causal mask not discounted). recompute adds
    the backward's extra forward of the blocks: "reversible" all of it (2 N_blocks + 4 L T C), the
    cost of the reversible backward; "checkpoint" the same less each block's last matmul (the MLP's
    c_proj, 8 C^2 per layer), which PyTorch's checkpoint skips (early stop)."""
    C, T, V = shape["n_embd"], shape["block_size"], shape["vocab_size"]
    n_blocks = n_layer * 12 * C * C  # c_attn 3C^2 + c_proj C^2 + c_fc 4C^2 + c_proj 4C^2
    f = 6 * (n_blocks + V * C) + 12 * n_layer * T * C
    if recompute is None:
        return f
    if recompute not in ("reversible", "checkpoint"):
        raise ValueError(f"recompute={recompute!r}: must be None, 'reversible' or 'checkpoint'")
    extra = 2 * n_blocks + 4 * n_layer * T * C
    return f + extra - (8 * n_layer * C * C if recompute == "checkpoint" else 0)


# ----------------------------------------------------------------------------------------------
# Settings


def settings(device, quick):
    """The sweep. CPU: d=256, 4 heads, T=256 (the issue's shape). CUDA: the paper's Table 4 shape
    (width 512, 8 heads, 16-96 layers) and GPT-2 small at max batch (its Table 3)."""
    if device == "cuda":
        return dict(
            shape=dict(block_size=1024, vocab_size=50304, n_embd=512, n_head=8, bias=True),
            batch=8, amp="bfloat16", warmup=3, steps=10, maxbatch_steps=4,
            bytes_depths=[16, 32, 64, 96], time_depths=[16, 32, 64, 96], peak_depths=[16, 32, 64, 96],
            maxbatch_depths=[16, 32, 64, 96], maxbatch_combos=[combo_name(*c) for c in COMBOS],
            headline_depth=16, head_depth=16, head_vocabs=[50304], head_chunk=1024,
            budget_gb=torch.cuda.get_device_properties(0).total_memory / 2 ** 30, sweep_head_chunk=0,
            gpt2=dict(shape=dict(block_size=1024, vocab_size=50304, n_embd=768, n_head=12, bias=True),
                      n_layer=12, combos=["euler/autograd", "euler/checkpoint", "midpoint/reversible",
                                          "leapfrog/reversible", "hamiltonian/reversible"]))
    if quick:
        return dict(
            shape=dict(block_size=128, vocab_size=257, n_embd=128, n_head=4, bias=True),
            batch=4, amp=None, warmup=1, steps=5, maxbatch_steps=3, maxbatch_time_steps=3,
            bytes_depths=[2, 4, 8, 16], time_depths=[2, 4], peak_depths=[4],
            maxbatch_depths=[16], maxbatch_combos=["euler/autograd", "euler/checkpoint", "midpoint/reversible"],
            headline_depth=4, head_depth=4, head_vocabs=[50304], head_chunk=256,
            budget_gb=0.15, gpt2=None, sweep_head_chunk=0)
    return dict(
        shape=dict(block_size=256, vocab_size=257, n_embd=256, n_head=4, bias=True),
        batch=8, amp=None, warmup=2, steps=21, maxbatch_steps=3, maxbatch_time_steps=5,
        bytes_depths=[2, 4, 8, 12, 16, 24, 32], time_depths=[4, 12], peak_depths=[4, 12, 24],
        # leapfrog and hamiltonian save the same single pair as midpoint; on a 2-core CPU their
        # max-batch searches (steps at batch ~50) would double the run time, so --maxbatch_combos
        # adds them on request
        maxbatch_depths=[12, 24], maxbatch_combos=["euler/autograd", "euler/checkpoint", "midpoint/reversible",
                                               "midpoint/autograd"],
        headline_depth=12, head_depth=12, head_vocabs=[257, 50304], head_chunk=512,
        budget_gb=0.65, gpt2=None, sweep_head_chunk=0)


def int_list(text):
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 4,12,24")


def str_list(text):
    return text.split(",")


SECTIONS = ("bytes", "time", "peak", "maxbatch", "head", "gpt2")
OVERRIDES = {  # settings that --key=value can change, with their parser and help
    "budget_gb": (float, "memory budget of the max-batch search, GiB"),
    "batch": (int, "batch of the activation, step-time, peak and head sweeps"),
    "steps": (int, "timed steps per combo in the step-time sweep (median)"),
    "warmup": (int, "untimed warm-up steps per combo"),
    "maxbatch_steps": (int, "full steps that must fit for a batch to count"),
    "maxbatch_time_steps": (int, "CPU: interleaved timed steps at each max batch (tokens/s); 0 = the probes' times"),
    "bytes_depths": (int_list, "depths of the activation-bytes sweep, e.g. 2,4,8"),
    "time_depths": (int_list, "depths of the step-time sweep"),
    "time_combos": (str_list, "combos of the step-time sweep (default: all)"),
    "peak_depths": (int_list, "depths of the peak-memory sweep"),
    "maxbatch_depths": (int_list, "depths of the max-batch search"),
    "maxbatch_combos": (str_list, "combos of the max-batch search, e.g. euler/autograd,midpoint/reversible"),
    "sweep_head_chunk": (int, "rows per chunk of ChunkedHeadLoss in every sweep (0: the model's own head)"),
}


def machine_info(device, threads):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    info = dict(cpu=cpu, cpu_count=os.cpu_count(), torch=torch.__version__, python=platform.python_version(),
                threads=threads, device=device, platform=platform.platform())
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gb=props.total_memory / 2 ** 30)
    return info


def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# ----------------------------------------------------------------------------------------------
# The sweep


def run_bench(args, device, save=None):
    """The sweep; save(R), when given, is called as each section starts, so that a run that dies
    (out of memory, say) keeps the sections it finished."""
    S = settings(device, args.quick)
    for key in OVERRIDES:  # command-line overrides of the sweep
        if getattr(args, key) is not None:
            S[key] = getattr(args, key)
    for c in S["maxbatch_combos"] + (S.get("time_combos") or []):
        parse_combo(c)  # a clear error for a misspelt combo, before any compute
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    if only - set(SECTIONS):
        raise SystemExit(f"--only {args.only}: unknown section(s) {sorted(only - set(SECTIONS))}; "
                         f"choose from {','.join(SECTIONS)}")
    S["sections"] = [name for name in SECTIONS if name in only]
    combos = [combo_name(*c) for c in COMBOS]
    amp = torch.bfloat16 if S["amp"] == "bfloat16" else None
    shape, B, hc = S["shape"], S["batch"], S.get("sweep_head_chunk", 0)
    threads = torch.get_num_threads()
    R = dict(machine=machine_info(device, threads), settings=S, combos=combos,
             command=" ".join(["python"] + sys.argv), started=time.strftime("%Y-%m-%d %H:%M:%S"),
             loadavg_start=loadavg())
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    t_start, marks = time.time(), []

    def section(name, text):  # log a section, remember when it started, save what is done
        if save:
            save(R)
        marks.append((name, time.time()))
        log(f"== {text} (load average {loadavg()})")

    # 1. activation bytes vs depth (one forward each, in process)
    if "bytes" in only:
        section("bytes", f"activation bytes, batch {B}")
        R["bytes"] = {}
        for L in S["bytes_depths"]:
            for c in combos:
                model = make_model(shape, L, c, device)
                idx, tgt = make_batch(shape, B, device)
                with torch.autocast(device, dtype=amp or torch.bfloat16, enabled=amp is not None):
                    sb = saved_bytes(model, idx, tgt, checkpoint_blocks=c.endswith("/checkpoint"), head_chunk=hc)
                R["bytes"].setdefault(c, {})[str(L)] = sb
                del model
                free_memory()
            log(f"  L={L}: " + ", ".join(f"{c} {R['bytes'][c][str(L)]['total'] / MiB:.1f}" for c in combos) + " MiB")

    # 2. step time vs depth (interleaved, one process)
    if "time" in only:
        tcombos = S.get("time_combos") or combos
        section("time", f"step time, batch {B}, {S['warmup']} warm-up + {S['steps']} timed steps per combo")
        R["time"] = {}
        for L in S["time_depths"]:
            la = loadavg()
            try:  # all combos side by side: on a small GPU the deepest models may not fit together
                res = time_combos(shape, L, tcombos, B, device, amp, S["warmup"], S["steps"], head_chunk=hc)
            except torch.cuda.OutOfMemoryError:
                R.setdefault("time_out_of_memory", []).append(L)
                log(f"  L={L}: out of memory with {len(tcombos)} combos side by side (--time_combos picks fewer)")
                continue
            finally:
                free_memory()
            for c in tcombos:
                res[c]["loadavg_before"] = la
                R["time"].setdefault(c, {})[str(L)] = res[c]
            log(f"  L={L}: " + ", ".join(f"{c} {res[c]['median_s'] * 1e3:.0f}" for c in tcombos) + " ms")

    # 3. peak memory vs depth (CPU: fresh subprocess per configuration)
    if "peak" in only:
        section("peak", f"peak memory, batch {B}, {S['maxbatch_steps']} steps")
        R["peak"] = {}
        for L in S["peak_depths"]:
            for c in combos:
                spec = dict(shape=shape, n_layer=L, combo=c, batch=B, steps=S["maxbatch_steps"],
                            amp=S["amp"], threads=threads, head_chunk=hc)
                R["peak"].setdefault(c, {})[str(L)] = measure(spec, device)
            log(f"  L={L}: " + ", ".join(f"{c} {(R['peak'][c][str(L)] or {}).get('peak', float('nan')) / MiB:.0f}"
                                          for c in combos) + " MiB")

    # 4. max batch under the budget, and tokens/s at that batch
    budget = int(S["budget_gb"] * 2 ** 30)
    if "maxbatch" in only:
        section("maxbatch", f"max batch under {S['budget_gb']} GiB, {S['maxbatch_steps']} steps must fit")
        R["maxbatch"] = {}
        for L in S["maxbatch_depths"]:
            for c in S["maxbatch_combos"]:
                R["maxbatch"].setdefault(c, {})[str(L)] = maxbatch_one(shape, L, c, budget, S, device, threads)
                m = R["maxbatch"][c][str(L)]
                log(f"  L={L} {c}: max batch {m['max_batch']}, {m['tokens_per_s']:.0f} tok/s, probes {m['probes']}")
            if device == "cpu" and S.get("maxbatch_time_steps"):
                found = {c: R["maxbatch"][c][str(L)] for c in S["maxbatch_combos"]}
                retime_max_batches(shape, L, found, S, device, amp)
                free_memory()
                log(f"  L={L} interleaved at max batch: " + ", ".join(
                    f"{c} {m['tokens_per_s']:.0f} tok/s" for c, m in found.items() if m["max_batch"]))

    # 5. head memory: share of LM head + logits + loss, and the chunked head
    if "head" in only:
        section("head", "head memory")
        R["head"] = head_section(S, device, threads, amp)

    # 6. GPT-2 small max batch (CUDA only: the paper's Table 3)
    if S.get("gpt2") and "gpt2" in only:
        g = S["gpt2"]
        section("gpt2", f"GPT-2 small max batch under {S['budget_gb']:.1f} GiB")
        R["gpt2"] = {c: maxbatch_one(g["shape"], g["n_layer"], c, budget, S, device, threads) for c in g["combos"]}

    ends = [t for _, t in marks[1:]] + [time.time()]
    R["section_s"] = {name: round(end - t, 1) for (name, t), end in zip(marks, ends)}
    R["loadavg_end"], R["wall_s"] = loadavg(), time.time() - t_start
    return R


def maxbatch_one(shape, L, c, budget, S, device, threads):
    results = {}

    def fits_at(b):
        spec = dict(shape=shape, n_layer=L, combo=c, batch=b, steps=S["maxbatch_steps"], amp=S["amp"],
                    threads=threads, head_chunk=S.get("sweep_head_chunk", 0))
        results[b] = measure(spec, device, budget)
        return None if results[b] is None else results[b]["peak"]

    b, probes = max_batch_search(fits_at, budget)
    best = results.get(b)
    med = statistics.median(best["step_times"][1:]) if best else float("nan")  # step 1 is warm-up
    return {"max_batch": b, "peak": best["peak"] if best else None, "static": best["static"] if best else None,
            "step_s": med, "tokens_per_s": b * shape["block_size"] / med if best else 0.0,
            "timed_in": "probe", "probes": {str(k): v for k, v in sorted(probes.items())}}


def retime_max_batches(shape, L, found, S, device, amp):
    """CPU: time each combo's max batch again, interleaved in this process. The probes' own step
    times are slower (their allocator returns every freed tensor to the OS, so that the resident
    set follows the live tensors) and by different amounts for different combos."""
    fit = {c: m["max_batch"] for c, m in found.items() if m["max_batch"] > 0}
    res = time_combos(shape, L, list(fit), fit, device, amp, 1, S["maxbatch_time_steps"],
                      head_chunk=S.get("sweep_head_chunk", 0))
    for c, r in res.items():
        m = found[c]
        m.update(probe_step_s=m["step_s"], probe_tokens_per_s=m["tokens_per_s"], step_s=r["median_s"],
                 times_s=r["times_s"], tokens_per_s=r["tokens_per_s"], timed_in="interleaved")


def head_section(S, device, threads, amp):
    """At head_depth and the bench batch: how much of the activation bytes and of the peak the
    head (ln_f + LM head + logits + loss) takes, at each vocabulary size, with and without
    ChunkedHeadLoss."""
    out = []
    L, B = S["head_depth"], S["batch"]
    for V in S["head_vocabs"]:
        shape = dict(S["shape"], vocab_size=V)
        for c in ("euler/autograd", "midpoint/reversible"):
            for chunk in (0, S["head_chunk"]):
                model = make_model(shape, L, c, device)
                idx, tgt = make_batch(shape, B, device)
                with torch.autocast(device, dtype=amp or torch.bfloat16, enabled=amp is not None):
                    sb = saved_bytes(model, idx, tgt, head_chunk=chunk)
                del model
                free_memory()
                spec = dict(shape=shape, n_layer=L, combo=c, batch=B, steps=S["maxbatch_steps"], amp=S["amp"],
                            threads=threads, head_chunk=chunk)
                pk = measure(spec, device)
                out.append(dict(vocab_size=V, combo=c, head_chunk=chunk, bytes=sb, peak=pk and pk["peak"],
                                static=pk and pk["static"]["total"],
                                step_s=pk and statistics.median(pk["step_times"][1:])))
                print(f"  V={V} {c} chunk={chunk}: head {sb['head'] / MiB:.1f} of {sb['total'] / MiB:.1f} MiB "
                      f"saved, peak " + (f"{pk['peak'] / MiB:.0f} MiB" if pk else "out of memory"), flush=True)
    return out


# ----------------------------------------------------------------------------------------------
# Reconstruction error table


def run_recon(args):
    """Relative error of running each reversible stack forwards to depth L and back, from a
    random-init model at d=256, 4 heads, T=256: float32 throughout / bfloat16 autocast forcing with
    a float32 stream (what training uses) / bfloat16 stream (the whole model in bfloat16)."""
    shape = dict(block_size=256, vocab_size=257, n_embd=256, n_head=4, bias=True)
    variants = [("midpoint", {}), ("midpoint", {"a_random": True}), ("leapfrog", {}), ("hamiltonian", {}),
                ("midpoint", {"exact": True}), ("leapfrog", {"exact": True})]
    rows = []
    for dyn, kw in variants:
        for L in (12, 48):
            torch.manual_seed(0)
            model = GPT(GPTConfig(n_layer=L, dynamics=dyn, **shape, **kw)).eval()
            idx, _ = make_batch(shape, 2, "cpu")
            row = dict(dynamics=dyn + "".join(f" ({'a random' if k == 'a_random' else k})" for k in kw), n_layer=L,
                       float32=reconstruction_error(model, idx),
                       bf16_autocast=reconstruction_error(model, idx, autocast_dtype=torch.bfloat16),
                       bf16_stream=reconstruction_error(model.bfloat16(), idx))
            rows.append(row)
            print(row, flush=True)
    out = Path(args.out_dir or "results/bench")
    out.mkdir(parents=True, exist_ok=True)
    info = dict(machine=machine_info("cpu", torch.get_num_threads()), shape=shape, batch=2, weights="GPT-2 init, seed 0",
                command="python bench.py --recon", rows=rows)
    (out / "reconstruction.json").write_text(json.dumps(info, indent=1) + "\n")
    md = ["| dynamics | layers | float32 | bf16 autocast, fp32 stream | bf16 stream |", "|---|---|---|---|---|"]
    md += [f"| {r['dynamics']} | {r['n_layer']} | {r['float32']:.1e} | {r['bf16_autocast']:.1e} | "
           f"{r['bf16_stream']:.1e} |" for r in rows]
    md.append("\nRelative error max|p_rec - p_0| / max|p_0| after L layers forwards and back "
              "(revgpt.reconstruction_error), d=256, 4 heads, T=256, batch 2, GPT-2 init weights (seed 0), "
              "default h. float32: everything float32. bf16 autocast: the forcing under bfloat16 autocast, "
              "the stream float32 (how training on GPU runs). bf16 stream: the whole model in bfloat16. "
              "(a random): Midpoint(a) with a = +-1 + U(-1/2, 1/2) per layer. (exact): exact=True, the "
              "fixed-point stream. Regenerate: `python bench.py --recon`.")
    (out / "reconstruction.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out / 'reconstruction.json'} and {out / 'reconstruction.md'}")


# ----------------------------------------------------------------------------------------------
# Report: Markdown and plots from the JSON


def write_atomic(path, text):
    """Write via a temporary file and a rename, so an interrupted run never leaves half a JSON."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def fmt_mib(b):
    return "-" if b is None else f"{b / MiB:.1f}"


def write_report(R, out, stem):
    """The Markdown tables (out/stem.md) and plots, from the JSON of run_bench alone."""
    S, m, sh = R["settings"], R["machine"], R["settings"]["shape"]
    hc = S.get("sweep_head_chunk", 0)
    chunk_note = f", ChunkedHeadLoss ({hc} rows per chunk) in every sweep" if hc else ""
    # a run that died keeps the sections it finished (run_bench saves as it goes): report those
    wall = f"{R['wall_s'] / 60:.0f} min" if "wall_s" in R else "unfinished run"
    load_end = f"{R['loadavg_end']:.1f} at the end" if "loadavg_end" in R else "no end"
    md = [f"Machine: {m['cpu']} ({m['cpu_count']} cores, {m['threads']} torch threads), device {m['device']}"
          f"{' ' + m['gpu'] if 'gpu' in m else ''}, torch {m['torch']}. Shape: n_embd={sh['n_embd']}, "
          f"n_head={sh['n_head']}, T={sh['block_size']}, vocab={sh['vocab_size']}, {S['amp'] or 'float32'}"
          f"{chunk_note}. Load average {R['loadavg_start']:.1f} at the start, {load_end} "
          f"(step times are noisy; ratios come from steps interleaved in one process). "
          f"Command: `{R['command']}` ({wall}).", ""]
    for part in (report_bytes, report_time, report_peak, report_maxbatch, report_head, report_gpt2):
        md += part(R)
    md += ["Paper (Gal et al. 2025, GPUs): max batch 26 → 257 on H100-80GB at GPT-2 scale; width 512, 8 heads, "
           "16/32/64/96 layers: max batch 326/176/88/52 → 1550/1374/1076/874, throughput +20.7/+24.1/+48.8/+101.0%.",
           "", f"Regenerate: `{R['command']}`; the tables and plots from the JSON: "
           f"`python bench.py --report {out / stem}.json`."]
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    plots(R, out, stem)


def report_bytes(R):
    if "bytes" not in R:
        return []
    S, depths = R["settings"], R["settings"]["bytes_depths"]
    md = [f"### Activation memory (MiB saved for backward, batch {S['batch']})", "",
          "| combo | " + " | ".join(f"L={L}" for L in depths) + " | of which head |",
          "|---|" + "---|" * (len(depths) + 1)]
    for c, row in R["bytes"].items():
        md.append(f"| {c} | " + " | ".join(fmt_mib(row[str(L)]["total"]) for L in depths)
                  + f" | {fmt_mib(row[str(depths[-1])]['head'])} |")
    flat = [L for L in depths if L >= 4]
    if len(flat) >= 2:
        md.append("")
        for c, row in R["bytes"].items():
            v = [row[str(L)]["total"] for L in flat]
            spread = f" (max/min - 1 = {100 * (max(v) - min(v)) / min(v):.2f}%)" if c.endswith("/reversible") else ""
            md.append(f"- {c}: {v[-1] / v[0]:.2f}x from {flat[0]} to {flat[-1]} layers{spread}")
    return md + [""]


def report_time(R):
    if "time" not in R:
        return []
    S, T = R["settings"], R["time"]
    tdep = [L for L in S["time_depths"] if all(str(L) in t for t in T.values())]  # depths that fit
    L0 = str(S["headline_depth"])

    def ratio(c, ref):  # per-round ratio: median (quartiles)
        if c == ref:
            return "1"
        if ref not in T or L0 not in T[c] or L0 not in T[ref]:
            return "-"
        r = paired_ratio(T[c][L0]["times_s"], T[ref][L0]["times_s"])
        return f"{r['median']:.3f} ({r['q1']:.3f}-{r['q3']:.3f})"

    md = [f"### Step time (forward + backward + AdamW, batch {S['batch']}, median of {S['steps']} steps after "
          f"{S['warmup']} warm-up, combos interleaved in one process)", "",
          "| combo | " + " | ".join(f"L={L} ms" for L in tdep) + " | " + " | ".join(f"L={L} tok/s" for L in tdep)
          + f" | ×euler at L={L0} | ×checkpoint at L={L0} |", "|---|" + "---|" * (2 * len(tdep) + 2)]
    for c, t in T.items():
        md.append(f"| {c} | " + " | ".join(f"{t[str(L)]['median_s'] * 1e3:.0f}" for L in tdep) + " | "
                  + " | ".join(f"{t[str(L)]['tokens_per_s']:.0f}" for L in tdep)
                  + f" | {ratio(c, 'euler/autograd')} | {ratio(c, 'euler/checkpoint')} |")
    rev = [c for c in T if c.endswith("/reversible") and L0 in T[c]]
    if rev and "euler/checkpoint" in T and L0 in T["euler/checkpoint"]:
        ck = T["euler/checkpoint"][L0]["median_s"]
        md += ["", f"×: median over the {S['steps']} rounds of the ratio of the two combos' steps in the same round "
               "(interquartile range in brackets). The ratio of the median step times, ×checkpoint at "
               f"L={L0}: " + ", ".join(f"{c} {T[c][L0]['median_s'] / ck:.3f}" for c in rev) + "."]
    fl = {str(L): {k: flops_per_token(S["shape"], L, rc) for k, rc in
                   (("model", None), ("checkpoint", "checkpoint"), ("reversible", "reversible"))} for L in tdep}
    md += ["", "FLOPs per token executed by a training step, model (recompute not counted) / checkpoint / "
           "reversible (their recompute counted): "
           + ", ".join(f"L={L}: {fl[L]['model'] / 1e6:.1f}M / {fl[L]['checkpoint'] / 1e6:.1f}M / "
                       f"{fl[L]['reversible'] / 1e6:.1f}M" for L in fl)
           + " (matmuls and attention at full context, nanoGPT's count; tests/test_bench.py checks each against the "
           "kernels a step executes). The hand-written backward pays one extra forward of the blocks; checkpointing "
           "a little less, because PyTorch's non-reentrant checkpoint stops each block's recompute once it has what "
           "backward needs, while reversal needs the whole forcing f(p): one matmul (the MLP's c_proj) per block "
           "fewer for checkpoint (`python experiments/early_stop.py` times both)."]
    return md + [""]


def report_peak(R):
    if "peak" not in R:
        return []
    S, dev = R["settings"], R["machine"]["device"]
    how = "max_memory_allocated" if dev == "cuda" else "peak RSS of a fresh process above its RSS with torch loaded"
    md = [f"### Peak memory of a training step (MiB, batch {S['batch']}, {S['maxbatch_steps']} steps; {how})", "",
          "| combo | " + " | ".join(f"L={L} peak | L={L} static" for L in S["peak_depths"]) + " |",
          "|---|" + "---|---|" * len(S["peak_depths"])]
    for c, p in R["peak"].items():
        cells = [(fmt_mib(p[str(L)]["peak"]), fmt_mib(p[str(L)]["static"]["total"])) if p[str(L)] else ("OOM", "-")
                 for L in S["peak_depths"]]
        md.append(f"| {c} | " + " | ".join(f"{a} | {b}" for a, b in cells) + " |")
    md += ["", "static = weights + gradients + AdamW state; the rest of the peak is activations and workspace. "
           "Peak minus static, by depth:", ""]
    for c, p in R["peak"].items():
        if all(p[str(L)] for L in S["peak_depths"]):
            md.append(f"- {c}: " + " → ".join(fmt_mib(p[str(L)]["peak"] - p[str(L)]["static"]["total"])
                                              for L in S["peak_depths"]) + " MiB")
    md += ["", "Peak minus static also holds transient memory (during backward one block's recompute graph, and "
           "the head's activations, the optimizer's temporaries), so at a small batch a reversible step's need not "
           "be below checkpoint's; the clean view of what grows with depth is the memory per sequence in the "
           "max-batch table."]
    return md + [""]


def report_maxbatch(R):
    if "maxbatch" not in R:
        return []
    S, mdep, MB = R["settings"], R["settings"]["maxbatch_depths"], R["maxbatch"]
    interleaved = all(MB[c][str(L)].get("timed_in") == "interleaved" for c in MB for L in mdep
                      if MB[c][str(L)]["max_batch"])
    how = (f"median of {S.get('maxbatch_time_steps')} steps at each max batch, all combos interleaved in one process"
           if interleaved else "median of the probe's steps after the first, not interleaved")
    md = [f"### Max batch under a {S['budget_gb']:.2f} GiB budget ({S['maxbatch_steps']} full steps must fit; "
          f"tokens/s: {how})", "",
          "| combo | " + " | ".join(f"L={L} max batch | L={L} peak MiB | L={L} MiB/sequence | L={L} tok/s"
                                   for L in mdep) + " |",
          "|---|" + "---|---|---|---|" * len(mdep)]
    for c, mb in MB.items():
        md.append(f"| {c} | " + " | ".join(f"{mb[str(L)]['max_batch']} | {fmt_mib(mb[str(L)]['peak'])} | "
                                           f"{fmt_mib(per_sequence_bytes(mb[str(L)]))} | "
                                           f"{mb[str(L)]['tokens_per_s']:.0f}" for L in mdep) + " |")
    md += ["", "MiB/sequence: (peak at the max batch - peak at batch 1) / (max batch - 1), from the search's own "
           "probes: what each extra sequence costs, weights and optimizer state excluded."]
    if "euler/autograd" in MB:
        md.append("")
        for L in mdep:
            e = MB["euler/autograd"][str(L)]
            for c, mb in MB.items():
                m = mb[str(L)]
                if c == "euler/autograd" or not (e["max_batch"] and e["tokens_per_s"] and m["max_batch"]):
                    continue
                md.append(f"- L={L} {c}: max batch {m['max_batch'] / e['max_batch']:.1f}x euler's, "
                          f"tokens/s {100 * tokens_per_s_change(m, e):+.0f}%")
    return md + [""]


def tokens_per_s_change(m, ref):
    """Relative tokens/s of max-batch result m over ref (e.g. +0.1 = 10% more). When both were
    timed interleaved, per round: time per sequence of ref over that of m, median over rounds."""
    if "times_s" in m and "times_s" in ref:
        r = paired_ratio([t / m["max_batch"] for t in m["times_s"]], [t / ref["max_batch"] for t in ref["times_s"]])
        return 1 / r["median"] - 1
    return m["tokens_per_s"] / ref["tokens_per_s"] - 1


def per_sequence_bytes(m):
    """Memory per extra sequence, from the max-batch search's probes (None below batch 2)."""
    p, b = m["probes"], m["max_batch"]
    if b < 2 or p.get("1") is None or p.get(str(b)) is None:
        return None
    return (p[str(b)] - p["1"]) / (b - 1)


def report_head(R):
    if "head" not in R:
        return []
    S = R["settings"]
    md = [f"### Head memory (L={S['head_depth']}, batch {S['batch']}; head = ln_f + LM head + logits + loss; "
          "chunked = GPTConfig(head_chunk=...), revgpt.ChunkedHeadLoss: logits never materialised in full)", "",
          "| vocab | combo | chunk rows | saved MiB | head share of saved | peak MiB | static MiB | probe step ms |",
          "|---|---|---|---|---|---|---|---|"]
    for h in R["head"]:
        b = h["bytes"]
        md.append(f"| {h['vocab_size']} | {h['combo']} | {h['head_chunk'] or 'none'} | {fmt_mib(b['total'])} | "
                  f"{100 * b['head'] / b['total']:.0f}% | {fmt_mib(h['peak'])} | {fmt_mib(h['static'])} | "
                  f"{'-' if h['step_s'] is None else round(h['step_s'] * 1e3)} |")
    md += ["", "probe step ms: timed inside the memory probe, whose allocator hands every freed tensor back to the "
           "OS; compare these with each other, not with the interleaved step times above."]
    return md + [""]


def report_gpt2(R):
    if not R.get("gpt2"):
        return []
    md = ["### GPT-2 small (12 layers, d=768, 12 heads, T=1024) max batch", "",
          "| combo | max batch | peak MiB | tok/s |", "|---|---|---|---|"]
    md += [f"| {c} | {v['max_batch']} | {fmt_mib(v['peak'])} | {v['tokens_per_s']:.0f} |" for c, v in R["gpt2"].items()]
    return md + [""]


def plots(R, out, stem):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: tables written, plots skipped")
        return
    S = R["settings"]
    style = lambda c: dict(marker="o", linestyle="--" if c.endswith("/autograd") and not c.startswith("euler") else "-")  # noqa: E731

    def fig(title, ylabel, series, name):
        f, ax = plt.subplots(figsize=(6.4, 4.2))
        for c, xs, ys in series:
            ax.plot(xs, ys, label=c, **style(c))  # the autograd ablations (dashed) may hide under euler
        ax.set(title=title, xlabel="layers", ylabel=ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        f.tight_layout()
        f.savefig(out / f"{stem}_{name}.png", dpi=110)
        plt.close(f)

    sh = S["shape"]
    tag = f"d={sh['n_embd']}, T={sh['block_size']}, batch {S['batch']}"
    if "bytes" in R:
        fig(f"Activation memory saved for backward ({tag})", "MiB",
            [(c, S["bytes_depths"], [row[str(L)]["total"] / MiB for L in S["bytes_depths"]])
             for c, row in R["bytes"].items()], "memory_vs_depth")
    if "time" in R:
        fig(f"Training step time ({tag})", "seconds per step",
            [(c, [L for L in S["time_depths"] if str(L) in t], [t[str(L)]["median_s"] for L in S["time_depths"]
                                                                if str(L) in t]) for c, t in R["time"].items()],
            "step_time_vs_depth")
    if "maxbatch" not in R:
        return
    mdep, mcombos = S["maxbatch_depths"], list(R["maxbatch"])
    title = f"Throughput at max batch under {S['budget_gb']:.2f} GiB"
    if len(mdep) > 1:
        fig(title, "tokens/s", [(c, mdep, [R["maxbatch"][c][str(L)]["tokens_per_s"] for L in mdep])
                                for c in mcombos], "throughput_vs_depth")
        return
    # one depth: bars, labelled with the max batch
    L = str(mdep[0])
    f, ax = plt.subplots(figsize=(6.4, 4.2))
    vals = [R["maxbatch"][c][L]["tokens_per_s"] for c in mcombos]
    bars = ax.bar(range(len(mcombos)), vals, color="tab:blue")
    for bar, c in zip(bars, mcombos):
        ax.annotate(f"batch {R['maxbatch'][c][L]['max_batch']}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(mcombos)), mcombos, rotation=20, fontsize=8)
    ax.set(title=f"{title}, {L} layers", ylabel="tokens/s")
    f.tight_layout()
    f.savefig(out / f"{stem}_throughput_vs_depth.png", dpi=110)
    plt.close(f)


# ----------------------------------------------------------------------------------------------


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small CPU sweep (a few minutes)")
    ap.add_argument("--recon", action="store_true", help="write the reconstruction-error table and exit")
    ap.add_argument("--report", metavar="JSON", help="rewrite Markdown and plots from a bench JSON and exit")
    ap.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available")
    ap.add_argument("--only", help=f"comma-separated sections to run (default all): {','.join(SECTIONS)}")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    for key, (typ, text) in OVERRIDES.items():
        ap.add_argument(f"--{key}", type=typ, help=text)
    ap.add_argument("--out_dir", help="default results/bench (out/bench_quick with --quick)")
    ap.add_argument("--name", help="file stem of the outputs (default: cpu, cuda or quick)")
    ap.add_argument("--probe", help=argparse.SUPPRESS)  # internal: one CPU measurement in a fresh process
    return ap


def main():
    args = build_parser().parse_args()
    if args.probe:
        return probe_main(args.probe)
    if args.recon:
        return run_recon(args)
    if args.report:
        path = Path(args.report)
        if not path.exists():
            sys.exit(f"--report {path}: no such file")
        return write_report(json.loads(path.read_text()), path.parent, path.stem)
    # --quick is the small CPU sweep; otherwise CUDA is used when present
    device = args.device or ("cpu" if args.quick or not torch.cuda.is_available() else "cuda")
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available")
    if args.quick and device == "cuda":
        sys.exit("--quick is the small CPU sweep: drop --device cuda")
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out_dir or ("out/bench_quick" if args.quick else "results/bench"))
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or ("quick" if args.quick else device)
    save = lambda R: write_atomic(out / f"{stem}.json", json.dumps(R, indent=1) + "\n")  # noqa: E731
    R = run_bench(args, device, save)
    save(R)
    write_report(R, out, stem)
    print(f"wrote {out / stem}.json, {out / stem}.md and plots")


if __name__ == "__main__":
    main()
