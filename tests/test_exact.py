"""Exact mode (fixed-point stream): bit-identical reconstruction and straight-through gradients."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from revgpt import GPT, GPTConfig, Grid, integrate, integrate_back, reconstruction_error  # noqa: E402

EXACT = [("midpoint", {}), ("midpoint", {"a": -1.0}), ("leapfrog", {}), ("hamiltonian", {})]


def cfg(**kw):
    base = dict(block_size=32, vocab_size=41, n_layer=4, n_head=2, n_embd=32)
    base.update(kw)
    return GPTConfig(**base)


def data(c, B=2, T=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, c.vocab_size, (B, T), generator=g), torch.randint(0, c.vocab_size, (B, T), generator=g)


@pytest.mark.parametrize("dyn,kw", EXACT)
@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_bit_identical_reconstruction_depth96(dyn, kw, amp):
    torch.manual_seed(0)
    c = cfg(dynamics=dyn, n_layer=96, exact=True, **kw)
    model = GPT(c).eval()
    idx, _ = data(c, T=16)
    with torch.no_grad():
        grid, steps = model.grid(), model.steps()
        p0 = grid.quantize(model.embed(idx))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp is not None):
            x, y = integrate(steps, p0, p0, grid)
            x0, y0 = integrate_back(steps, x, y, grid)
    assert torch.equal(x0, p0) and torch.equal(y0, p0)
    assert reconstruction_error(model, idx, autocast_dtype=amp) == 0.0
    # and the float stream at the same depth is not exact (the reason for this mode)
    model_f = GPT(cfg(dynamics=dyn, n_layer=96, **kw)).eval()
    model_f.load_state_dict(model.state_dict())
    assert reconstruction_error(model_f, idx, autocast_dtype=amp) > 0.0


def grads(c, state, idx, tgt, dtype):
    model = GPT(c).to(dtype)
    model.load_state_dict(state)
    _, loss = model(idx, tgt)
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("dyn,kw", EXACT)
def test_exact_gradients_match_straight_through_oracle_float64(dyn, kw):
    torch.manual_seed(1)
    c = cfg(dynamics=dyn, n_layer=5, exact=True, **kw)
    state = GPT(c).double().state_dict()
    idx, tgt = data(c)
    l_rev, g_rev = grads(c, state, idx, tgt, torch.float64)
    l_ag, g_ag = grads(cfg(dynamics=dyn, n_layer=5, exact=True, backward="autograd", **kw), state, idx, tgt, torch.float64)
    assert torch.equal(l_rev, l_ag)  # the two modes run the very same forward
    assert ((g_rev - g_ag).norm() / g_ag.norm()).item() <= 1e-9


@pytest.mark.parametrize("dyn", ["midpoint", "leapfrog", "hamiltonian"])
def test_float32_gradient_error_does_not_grow_with_depth(dyn):
    errs = {}
    for exact in (True, False):
        for L in (8, 64):
            torch.manual_seed(0)
            c = cfg(dynamics=dyn, n_layer=L, exact=exact)
            state = GPT(c).state_dict()
            idx, tgt = data(c)
            _, g_rev = grads(c, state, idx, tgt, torch.float32)
            _, g_ag = grads(cfg(dynamics=dyn, n_layer=L, exact=exact, backward="autograd"), state, idx, tgt,
                            torch.float32)
            errs[exact, L] = ((g_rev - g_ag).norm() / g_ag.norm()).item()
    print(f"\n{dyn}: float32 grad rel. error vs autograd, L=8/64: exact {errs[True, 8]:.1e}/{errs[True, 64]:.1e}, "
          f"float stream {errs[False, 8]:.1e}/{errs[False, 64]:.1e}")
    assert errs[True, 64] <= 2 * errs[True, 8]
    assert errs[True, 64] < errs[False, 64]
    if dyn == "leapfrog":  # the float stream's error grows with depth (leapfrog amplifies it most)
        assert errs[False, 64] > 5 * errs[False, 8]


def test_recompute_mismatch_is_detected():
    """If the recomputed forcing differs from the forward's, backward raises instead of returning
    gradients of a different trajectory."""
    torch.manual_seed(0)
    c = cfg(dynamics="midpoint", exact=True)
    model = GPT(c)
    idx, tgt = data(c)
    _, loss = model(idx, tgt)
    with torch.no_grad():  # change a weight between forward and backward: the recompute differs
        model.transformer.h[1].mlp.c_fc.weight.add_(1e-3)
    with pytest.raises(RuntimeError, match="bit-identical"):
        loss.backward()


def test_overflow_raises_not_wraps():
    grid = Grid(40, torch.float32)  # range |p| < 2^11
    grid.check(torch.tensor([2047.0], dtype=torch.float64))
    for bad in (2048.0, float("nan"), float("inf")):
        with pytest.raises(OverflowError, match="range"):
            grid.check(torch.tensor([bad], dtype=torch.float64))
    torch.manual_seed(0)
    c = cfg(dynamics="leapfrog", h=3.0, n_layer=40, exact=True, exact_bits=48)  # explodes past 2^3
    with pytest.raises(OverflowError, match="exact_bits"):
        GPT(c)(data(c)[0])


@pytest.mark.parametrize("kw,field", [
    (dict(dynamics="midpoint", a=0.5, exact=True), "a=0.5"),
    (dict(dynamics="midpoint", a_random=True, exact=True), "random"),
    (dict(dynamics="euler", exact=True), "euler"),
    (dict(dynamics="midpoint", exact=True, exact_bits=60), "exact_bits"),
])
def test_exact_refusals(kw, field):
    with pytest.raises(ValueError, match=field):
        cfg(**kw)
