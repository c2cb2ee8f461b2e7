"""Tests of bench.py's measuring functions on tiny configs (no timing assertions)."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench  # noqa: E402
from revgpt import GPT, GPTConfig, activation_bytes  # noqa: E402

SHAPE = dict(block_size=16, vocab_size=37, n_embd=16, n_head=2, bias=True)


def tiny_model(dyn="midpoint", backward=None, n_layer=2, dtype=torch.float32, **kw):
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=n_layer, dynamics=dyn, backward=backward, **dict(SHAPE, **kw))
    return GPT(cfg).to(dtype)


def batch(B=3, T=11, seed=0, ignore_some=False):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, SHAPE["vocab_size"], (B, T), generator=g)
    tgt = torch.randint(0, SHAPE["vocab_size"], (B, T), generator=g)
    if ignore_some:
        tgt[0, :3] = -1  # ignore_index
    return idx, tgt


def model_loss64(model, idx, tgt):
    """The model's own logits with the cross-entropy in float64 (GPT.forward computes its loss in
    float32 via .float(), which would limit a float64 comparison to ~1e-7)."""
    logits, _ = model(idx)
    return torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), tgt.view(-1), ignore_index=-1)


def loss_and_grads(model, fn):
    model.zero_grad(set_to_none=True)
    loss = fn()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_same(a, b, rtol):
    (la, ga), (lb, gb) = a, b
    assert abs(la.item() - lb.item()) <= rtol * abs(lb.item())
    assert ga.keys() == gb.keys()
    for n in gb:
        assert ((ga[n] - gb[n]).norm() <= rtol * gb[n].norm() + 1e-300), n


# saved bytes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dyn,bw", [("euler", "autograd"), ("midpoint", "reversible"), ("midpoint", "autograd"),
                                    ("leapfrog", "reversible"), ("hamiltonian", "reversible")])
def test_saved_bytes_matches_core_helper(dyn, bw):
    model = tiny_model(dyn, bw, n_layer=3)
    idx, tgt = batch()
    sb = bench.saved_bytes(model, idx, tgt)
    assert sb["total"] == activation_bytes(model, idx, tgt)
    assert sb["total"] == sb["stack"] + sb["head"] and sb["head"] > 0 and sb["stack"] > 0


def test_saved_bytes_depth_behaviour():
    """Reversible: flat in depth; euler: linear; checkpoint: one (B, T, C) state per block."""
    idx, tgt = batch()
    B, T, C = idx.size(0), idx.size(1), SHAPE["n_embd"]
    rev = [bench.saved_bytes(tiny_model("midpoint", "reversible", L), idx, tgt)["total"] for L in (2, 4, 8)]
    eul = [bench.saved_bytes(tiny_model("euler", "autograd", L), idx, tgt)["total"] for L in (2, 4, 8)]
    ck = [bench.saved_bytes(tiny_model("euler", "autograd", L), idx, tgt, checkpoint_blocks=True)["total"]
          for L in (2, 4, 8)]
    assert rev[0] == rev[1] == rev[2]
    assert eul[2] - eul[1] == 2 * (eul[1] - eul[0]) > 0
    # each extra block costs checkpoint exactly its float32 input state
    assert ck[1] - ck[0] == 2 * B * T * C * 4 and ck[2] - ck[1] == 4 * B * T * C * 4
    assert ck[2] < eul[2]


def test_chunked_head_saves_less_head_memory():
    idx, tgt = batch()
    model = tiny_model("midpoint", "reversible", vocab_size=500)
    full = bench.saved_bytes(model, idx, tgt)
    chunked = bench.saved_bytes(model, idx, tgt, head_chunk=8)
    assert chunked["stack"] == full["stack"] and chunked["head"] < full["head"] / 4


# the bench's own forwards equal the model's --------------------------------------------------

def test_checkpoint_path_equals_plain_euler():
    model = tiny_model("euler", "autograd", n_layer=3, dtype=torch.float64)
    idx, tgt = batch(ignore_some=True)
    ref = loss_and_grads(model, lambda: model(idx, tgt)[1])
    ck = loss_and_grads(model, lambda: bench.bench_loss(model, idx, tgt, checkpoint_blocks=True))
    assert_same(ck, ref, 1e-12)


def test_checkpoint_path_non_default_h():
    model = tiny_model("euler", "autograd", n_layer=2, dtype=torch.float64, h=0.5)
    idx, tgt = batch()
    ref = loss_and_grads(model, lambda: model(idx, tgt)[1])
    ck = loss_and_grads(model, lambda: bench.bench_loss(model, idx, tgt, checkpoint_blocks=True))
    assert_same(ck, ref, 1e-12)


def test_checkpoint_refused_for_reversible():
    model = tiny_model("midpoint", "reversible")
    idx, tgt = batch()
    with pytest.raises(ValueError, match="euler"):
        bench.bench_loss(model, idx, tgt, checkpoint_blocks=True)


@pytest.mark.parametrize("dyn,bw", [("euler", "autograd"), ("midpoint", "reversible"), ("leapfrog", "reversible"),
                                    ("hamiltonian", "reversible"), ("hamiltonian", "autograd")])
def test_chunked_head_equals_model_loss_and_grads(dyn, bw):
    model = tiny_model(dyn, bw, n_layer=2, dtype=torch.float64)
    idx, tgt = batch(ignore_some=True)
    ref = loss_and_grads(model, lambda: model_loss64(model, idx, tgt))
    for chunk in (5, 7, 1000):  # chunks that do and do not divide B*T = 33
        got = loss_and_grads(model, lambda: bench.bench_loss(model, idx, tgt, head_chunk=chunk))
        assert_same(got, ref, 1e-10)
    # the tap put the real head back
    assert isinstance(model.lm_head, torch.nn.Linear) and model.lm_head.weight is model.transformer.wte.weight


def test_checkpoint_with_chunked_head():
    model = tiny_model("euler", "autograd", n_layer=2, dtype=torch.float64)
    idx, tgt = batch()
    ref = loss_and_grads(model, lambda: model_loss64(model, idx, tgt))
    got = loss_and_grads(model, lambda: bench.bench_loss(model, idx, tgt, checkpoint_blocks=True, head_chunk=4))
    assert_same(got, ref, 1e-10)


# max-batch search ------------------------------------------------------------------------------

def test_max_batch_search_linear():
    calls = []
    peak = lambda b: 1000 + 37 * b  # noqa: E731

    def fake(b):
        calls.append(b)
        return peak(b)

    for budget in (1000 + 37 * 4, 1000 + 37 * 4 + 36, 1000 + 37 * 333 + 5):
        calls.clear()
        best, probes = bench.max_batch_search(fake, budget)
        assert best == (budget - 1000) // 37
        assert peak(best) <= budget < peak(best + 1)
        assert best + 1 in probes  # the next batch up was measured not to fit
        assert len(calls) == len(set(calls)) <= 8  # no batch measured twice; few probes


def test_max_batch_search_noisy_and_failures():
    """Noise, out-of-memory failures (None) and a non-linear curve: it still ends, and the answer
    is a batch that was measured to fit."""
    import random
    rng = random.Random(0)

    def fake(b):
        if b > 300:
            return None  # "out of memory" before the budget is reached
        return 500 + 3 * b + 0.02 * b * b + rng.uniform(-20, 20)

    def true_max(budget):  # the largest batch whose noiseless peak fits, and at most 300
        return max(b for b in range(1, 301) if 500 + 3 * b + 0.02 * b * b <= budget)

    for budget in (900, 2000, 10 ** 6):
        best, probes = bench.max_batch_search(fake, budget)
        assert probes[best] is not None and probes[best] <= budget  # measured to fit
        assert len(probes) <= 16
        if best + 1 in probes:
            assert probes[best + 1] is None or probes[best + 1] > budget
        # noise of +-20 moves the answer by at most a few batches around the noiseless one
        assert abs(best - true_max(budget)) <= max(3, 0.05 * true_max(budget))
    assert bench.max_batch_search(fake, 10 ** 6)[0] == 300  # out of memory above 300: the largest that ran


def test_max_batch_search_nothing_fits_and_limit():
    best, probes = bench.max_batch_search(lambda b: 10 ** 9, budget=100)
    assert best == 0 and list(probes) == [1]
    best, probes = bench.max_batch_search(lambda b: b, budget=10 ** 9, limit=50)
    assert best == 50 and max(probes) == 50


# measurement of one configuration -------------------------------------------------------------

SPEC = dict(shape=SHAPE, n_layer=2, combo="midpoint/reversible", batch=2, steps=2, amp=None, threads=1)


def test_run_steps_in_process_and_budget():
    out = bench.run_steps(SPEC, "cpu")
    model = bench.make_model(SHAPE, 2, "midpoint/reversible")
    n_bytes = sum(p.numel() * 4 for p in model.parameters())
    st = out["static"]
    assert st["weights"] == st["grads"] == n_bytes
    assert st["optimizer"] >= 2 * n_bytes  # AdamW: two moments per weight (+ step counters)
    assert len(out["step_times"]) == 2
    assert bench.run_steps(SPEC, "cpu", budget=-1) is None  # over any budget: does not fit


def test_probe_subprocess_respects_budget():
    """A fresh process per measurement: peak resident memory counted above its own baseline. Euler
    autograd saves every layer's activations, so its peak grows with the batch by at least what
    autograd saves (saved_bytes), and stays within that plus the static memory and some slack."""
    shape = dict(block_size=64, vocab_size=37, n_embd=64, n_head=2, bias=True)
    spec = dict(SPEC, shape=shape, n_layer=4, combo="euler/autograd", budget=None)
    small, big = (bench.probe_subprocess(dict(spec, batch=b)) for b in (2, 32))
    model = bench.make_model(shape, 4, "euler/autograd")
    saved = [bench.saved_bytes(model, *bench.make_batch(shape, b, "cpu"))["total"] for b in (2, 32)]
    assert big["peak"] - small["peak"] >= 0.9 * (saved[1] - saved[0])
    assert big["peak"] <= big["static"]["total"] + 3 * saved[1] + 32 * bench.MiB
    assert bench.probe_subprocess(dict(SPEC, budget=1)) is None  # 1 byte: nothing fits


def executed_ops(fn):
    """(op name, shapes of its tensor arguments) of every aten op that ran inside fn, recorded at
    dispatch once it returned: a kernel that checkpoint's early stop skips never gets there."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.ops.append((func.overloadpacket.__name__,
                             [a.shape if isinstance(a, torch.Tensor) else None for a in args]))
            return out

    with Record() as r:
        fn()
    return r.ops


def executed_flops(fn):
    """Matmul and attention FLOPs of the kernels that actually run inside fn."""
    n = 0
    for name, shapes in executed_ops(fn):
        if name in ("mm", "addmm", "bmm"):  # (.., M, K) @ (.., K, N): 2 M K N per batch entry
            a, b = shapes[-2], shapes[-1]
            n += 2 * a.numel() * b[-1]
        elif name == "_scaled_dot_product_flash_attention_for_cpu":  # q k^T and att v
            B, H, T, hs = shapes[0]
            n += 4 * B * H * T * T * hs
        elif name == "_scaled_dot_product_flash_attention_for_cpu_backward":  # twice the forward
            B, H, T, hs = shapes[1]
            n += 8 * B * H * T * T * hs
    return n


@pytest.mark.parametrize("combo,recompute", [("euler/autograd", None), ("midpoint/autograd", None),
                                             ("euler/checkpoint", "checkpoint"), ("midpoint/reversible", "reversible"),
                                             ("leapfrog/reversible", "reversible"),
                                             ("hamiltonian/reversible", "reversible")])
def test_flops_formula_equals_executed_kernels(combo, recompute):
    """bench's FLOPs per token (nanoGPT's 6N + 12LTC, plus each combo's recompute) equals, exactly,
    the matmul and attention FLOPs that a forward + backward executes, at full context."""
    L, B, T = 3, 2, SHAPE["block_size"]
    model = bench.make_model(SHAPE, L, combo)
    idx, tgt = bench.make_batch(SHAPE, B, "cpu")
    n = executed_flops(lambda: bench.bench_loss(model, idx, tgt, combo.endswith("/checkpoint")).backward())
    assert n == bench.flops_per_token(SHAPE, L, recompute) * B * T
    with pytest.raises(ValueError, match="recompute"):
        bench.flops_per_token(SHAPE, L, "everything")


def test_paired_ratio():
    """Per-round ratios: a slow round that hits both combos alike cancels; the median is exact."""
    ref = [1.0, 2.0, 1.0, 1.0, 1.0]  # round 2 twice as slow for everything
    r = bench.paired_ratio([1.1, 2.2, 1.0, 1.2, 1.1], ref)
    assert r["median"] == pytest.approx(1.1) and r["q1"] == pytest.approx(1.1) and r["q3"] == pytest.approx(1.1)
    assert bench.paired_ratio([3.0], [2.0]) == {"median": 1.5, "q1": 1.5, "q3": 1.5}
    with pytest.raises(ValueError, match="equal"):
        bench.paired_ratio([1.0, 2.0], [1.0])


def count_ops(fn):
    """How many times each aten op runs inside fn."""
    from collections import Counter
    return Counter(name for name, _ in executed_ops(fn))


def test_checkpoint_early_stop_skips_last_matmul():
    """The README's account of why reversible is a little slower than checkpointing: in backward,
    PyTorch's checkpoint (early stop on, its default) recomputes each block only up to its last
    saved tensor, so it runs one matmul (MLP c_proj) per block fewer than the reversible backward,
    which needs the whole forcing; with early stop off the counts are equal."""
    from torch.utils.checkpoint import set_checkpoint_early_stop
    L, (idx, tgt) = 3, batch()
    counts = {}
    for name, dyn, ckpt, early in [("ckpt", "euler", True, True), ("ckpt_full", "euler", True, False),
                                   ("rev", "midpoint", False, True)]:
        model = tiny_model(dyn, n_layer=L)
        with set_checkpoint_early_stop(early):
            loss = bench.bench_loss(model, idx, tgt, checkpoint_blocks=ckpt)
            counts[name] = count_ops(loss.backward)
    assert counts["rev"]["addmm"] == 4 * L  # the recompute runs all 4 Linears of every block (grads use mm)
    assert counts["ckpt"]["addmm"] == counts["rev"]["addmm"] - L
    assert counts["ckpt_full"]["addmm"] == counts["rev"]["addmm"]


def test_parse_combo_errors():
    assert bench.parse_combo("leapfrog/autograd") == ("leapfrog", "autograd")
    with pytest.raises(ValueError, match="midpoint/checkpoint"):
        bench.parse_combo("midpoint/checkpoint")


# the whole sweep, tiny and in-process, down to the report -----------------------------------

@pytest.fixture
def one_thread():
    """Tiny ops on a shared 2-core machine run faster on one thread; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_run_bench_and_report_smoke(tmp_path, monkeypatch, one_thread):
    tiny = dict(shape=SHAPE, batch=2, amp=None, warmup=1, steps=1, maxbatch_steps=2, maxbatch_time_steps=2,
                bytes_depths=[1, 2], time_depths=[2], peak_depths=[1], maxbatch_depths=[2],
                maxbatch_combos=["euler/autograd", "midpoint/reversible"], headline_depth=2, head_depth=1,
                head_vocabs=[37], head_chunk=8, budget_gb=1.0, gpt2=None)
    monkeypatch.setattr(bench, "settings", lambda device, quick: dict(tiny))
    # in-process stand-in for the subprocess probe: a linear fake peak, so the search is exercised
    monkeypatch.setattr(bench, "measure", lambda spec, device, budget=None: (
        None if budget is not None and spec["batch"] > 5 else
        dict(peak=spec["batch"], static={"total": 1}, step_times=[0.1] * spec["steps"])))
    args = bench.build_parser().parse_args(["--device", "cpu"])
    R = bench.run_bench(args, "cpu")
    m = R["maxbatch"]["midpoint/reversible"]["2"]
    assert m["max_batch"] == 5
    # tokens/s at the max batch come from real interleaved steps in this process, not the (fake) probe
    assert m["timed_in"] == "interleaved" and len(m["times_s"]) == 2 and m["probe_step_s"] == 0.1
    assert m["tokens_per_s"] == pytest.approx(5 * SHAPE["block_size"] / m["step_s"])
    assert set(R["bytes"]) == {bench.combo_name(*c) for c in bench.COMBOS}
    json.dumps(R)  # serialisable
    bench.write_report(R, tmp_path, "t")
    md = (tmp_path / "t.md").read_text()
    assert "midpoint/reversible" in md and "all combos interleaved in one process" in md
    # a run that died after some sections still renders what it finished
    partial = {k: v for k, v in R.items() if k not in ("loadavg_end", "wall_s", "maxbatch", "head")}
    bench.write_report(partial, tmp_path, "partial")
    md = (tmp_path / "partial.md").read_text()
    assert "unfinished run" in md and "Step time" in md and "Max batch" not in md


def test_only_some_sections(tmp_path, monkeypatch, one_thread):
    tiny = dict(shape=SHAPE, batch=2, amp=None, warmup=0, steps=1, maxbatch_steps=2, bytes_depths=[1, 2],
                time_depths=[1], peak_depths=[1], maxbatch_depths=[1], maxbatch_combos=["euler/autograd"],
                headline_depth=1, head_depth=1, head_vocabs=[37], head_chunk=8, budget_gb=1.0, gpt2=None)
    monkeypatch.setattr(bench, "settings", lambda device, quick: dict(tiny))
    args = bench.build_parser().parse_args(["--only", "bytes,time", "--time_combos",
                                            "euler/autograd,midpoint/reversible", "--sweep_head_chunk", "8"])
    R = bench.run_bench(args, "cpu")
    assert set(R) >= {"bytes", "time"} and not set(R) & {"peak", "maxbatch", "head"}
    assert set(R["time"]) == {"euler/autograd", "midpoint/reversible"}
    bench.write_report(R, tmp_path, "part")
    assert "Step time" in (tmp_path / "part.md").read_text()
    with pytest.raises(SystemExit, match="unknown section"):
        bench.run_bench(bench.build_parser().parse_args(["--only", "bytes,speed"]), "cpu")


def test_cuda_settings_are_the_papers_shapes(monkeypatch):
    """The GPU sweep cannot run here; its settings are checked against the paper's Tables 3 and 4:
    width 512, 8 heads, 16-96 layers, bf16, and GPT-2 small (d=768, 12 heads, 12 layers, T=1024)."""
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: type("P", (), {"total_memory": 80 * 2 ** 30}))
    S = bench.settings("cuda", False)
    assert (S["shape"]["n_embd"], S["shape"]["n_head"], S["amp"]) == (512, 8, "bfloat16")
    assert S["time_depths"] == S["maxbatch_depths"] == [16, 32, 64, 96]
    assert S["budget_gb"] == 80.0  # the whole GPU
    g = S["gpt2"]
    assert (g["shape"]["n_embd"], g["shape"]["n_head"], g["n_layer"], g["shape"]["block_size"]) == (768, 12, 12, 1024)
    for c in S["maxbatch_combos"] + g["combos"]:
        bench.parse_combo(c)


def test_cuda_requested_without_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["bench.py", "--device", "cuda"])
    with pytest.raises(SystemExit, match="CUDA is not available"):
        bench.main()


def test_time_sweep_out_of_memory_skips_that_depth(tmp_path, monkeypatch):
    """On a GPU too small for every combo side by side at the deepest setting, the time sweep
    records the depth as out of memory and goes on; the report shows the depths that ran."""
    tiny = dict(shape=SHAPE, batch=2, amp=None, warmup=0, steps=1, maxbatch_steps=2, bytes_depths=[1],
                time_depths=[1, 2], peak_depths=[1], maxbatch_depths=[1], maxbatch_combos=["euler/autograd"],
                headline_depth=1, head_depth=1, head_vocabs=[37], head_chunk=8, budget_gb=1.0, gpt2=None)
    monkeypatch.setattr(bench, "settings", lambda device, quick: dict(tiny))
    real = bench.time_combos

    def fake(shape, n_layer, *a, **k):
        if n_layer == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(shape, n_layer, *a, **k)

    monkeypatch.setattr(bench, "time_combos", fake)
    R = bench.run_bench(bench.build_parser().parse_args(["--only", "time", "--time_combos",
                                                         "euler/autograd,midpoint/reversible"]), "cpu")
    assert R["time_out_of_memory"] == [2] and set(R["time"]["euler/autograd"]) == {"1"}
    bench.write_report(R, tmp_path, "oom")
    md = (tmp_path / "oom.md").read_text()
    assert "L=1 ms" in md and "L=2 ms" not in md
