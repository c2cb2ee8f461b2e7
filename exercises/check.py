"""
Automatic checks for the revgpt exercises (exercises/README.md).

    python exercises/check.py 3              # check your exercises/ex03_*.py
    python exercises/check.py 1 2 3          # several
    python exercises/check.py all            # every exercise
    python exercises/check.py all --solutions    # the reference solutions (teachers, CI)
    python exercises/check.py all --stubs        # the pristine stubs (these must all fail)
    REVGPT_EXERCISE_DIR=path/to/dir python exercises/check.py 3   # files in another folder

Each check imports YOUR file, runs it on small models (CPU, float64 where exactness matters) and
compares it with revgpt.py, the project's implementation, wherever revgpt.py has the same thing.
It prints "PASS exNN: ..." and exits 0, or "FAIL exNN: ..." with what went wrong and exits 1.
"""
import argparse
import importlib.util
import os
import sys
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import revgpt  # noqa: E402
from revgpt import GPT, GPTConfig, Step  # noqa: E402

FILES = {
    1: "ex01_midpoint_inverse.py",
    2: "ex02_leapfrog_inverse.py",
    3: "ex03_integrate.py",
    4: "ex04_memory.py",
    5: "ex05_amplification.py",
    6: "ex06_step_backward.py",
    7: "ex07_momentum.py",
    8: "ex08_dropout_replay.py",
    9: "ex09_conversion_gap.py",
}


class Fail(Exception):
    """A check failed; the message says what to look at."""


# ----------------------------------------------------------------------------------------------
# Helpers shared by the checks


def exercise_dir(args):
    if args.solutions:
        return HERE / "solutions"
    if args.stubs:
        return HERE / "stubs"
    if args.dir:
        return Path(args.dir).resolve()
    env = os.environ.get("REVGPT_EXERCISE_DIR")
    return Path(env).resolve() if env else HERE


def show(path):
    """path relative to the current folder when it is below it (shorter messages)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load(folder, n):
    """Import the exercise file from folder as a fresh module."""
    path = folder / FILES[n]
    if not path.exists():
        raise Fail(f"{show(path)} not found (restore the stub with: python exercises/reset.py {n})")
    spec = importlib.util.spec_from_file_location(f"exercise_{n:02d}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except NotImplementedError:
        raise
    except Exception as e:
        raise Fail(f"could not import {show(path)}: {type(e).__name__}: {e}") from e
    return module


def tiny(dynamics="midpoint", n_layer=2, dtype=torch.float64, seed=0, **kw):
    """A small GPT whose LayerNorm weights and biases are moved away from 1 and 0, so that every
    parameter influences the output (otherwise a wrong gradient could hide behind a zero)."""
    torch.manual_seed(seed)
    cfg = GPTConfig(block_size=16, vocab_size=37, n_layer=n_layer, n_head=2, n_embd=16, dynamics=dynamics, **kw)
    model = GPT(cfg).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def batch(B=3, T=11, V=37, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def want_tensor(v, like, what):
    if not isinstance(v, torch.Tensor):
        raise Fail(f"{what} returned {type(v).__name__}, expected a tensor of shape {tuple(like.shape)}")
    if v.shape != like.shape:
        raise Fail(f"{what} returned shape {tuple(v.shape)}, expected {tuple(like.shape)}")
    if v.dtype != like.dtype:
        raise Fail(f"{what} returned dtype {v.dtype}, expected {like.dtype} (keep the inputs' dtype)")


def want_close(v, ref, tol, what, against):
    want_tensor(v, ref, what)
    e = rel(v, ref)
    if not e <= tol:  # also catches NaN
        raise Fail(f"{what}: relative error {e:.2e} against {against} (allowed {tol:g})")
    return e


def number(v, what):
    """v as a float (a Python number or a one-element tensor), or Fail."""
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Fail(f"{what} returned {v!r}, expected a number")
    return float(v)


def want_pair(v, what):
    if not (isinstance(v, (tuple, list)) and len(v) == 2):
        raise Fail(f"{what} must return a pair (x, y), got {type(v).__name__}")
    return v


def info(msg):
    print("  " + msg)


# ----------------------------------------------------------------------------------------------
# The checks, one per exercise. Each gets the student's module and raises Fail (or lets the
# student's NotImplementedError through); it returns a one-line summary on success.


def check_ex01(m):
    torch.manual_seed(0)
    worst = 0.0
    for a in (1.0, 0.5, -1.0, 2.0, -0.3):
        for h in (0.5, 0.25):
            s = Step(None, a, 1 - a, 2 * h, [])
            x, y, fy = (torch.randn(3, 5, 8, dtype=torch.float64) for _ in range(3))
            z = revgpt.step_forward(s, x, y, fy)
            got = m.midpoint_inverse(z, y, fy, a, h)
            what = f"midpoint_inverse(z, y, fy, a={a}, h={h})"
            want_close(got, revgpt.step_inverse(s, y, z, fy), 1e-12, what, "revgpt.step_inverse")
            worst = max(worst, want_close(got, x, 1e-12, what, "the x that produced z"))
    try:
        m.midpoint_inverse(z, y, fy, 0.0, 0.5)
    except ValueError:
        pass
    else:
        raise Fail("midpoint_inverse(..., a=0, ...) must raise ValueError: with a = 0 the step "
                   "z = y + 2h f(y) does not depend on x at all")
    return f"midpoint inverse matches revgpt.step_inverse; round trip error {worst:.1e}"


def check_ex02(m):
    for h in (0.5, 0.3):
        ref = tiny("leapfrog", n_layer=1, h=h).steps()[0]
        got = m.leapfrog_coefficients(h)
        if not (isinstance(got, (tuple, list)) and len(got) == 3):
            raise Fail(f"leapfrog_coefficients({h}) must return (alpha, beta, gamma), got {got!r}")
        for name, g, r in zip(("alpha", "beta", "gamma"), got, (ref.alpha, ref.beta, ref.gamma)):
            if not abs(float(g) - r) <= 1e-12:
                raise Fail(f"leapfrog_coefficients({h}): {name} = {g}, but leapfrog's is {r} "
                           "(compare z = 2y - x + h^2 f(y) with z = alpha*x + beta*y + gamma*f(y))")
    torch.manual_seed(0)
    s = Step(None, -1, 2, 0.3 ** 2, [])
    x, y, fy = (torch.randn(3, 5, 8, dtype=torch.float64) for _ in range(3))
    z = revgpt.step_forward(s, x, y, fy)
    got = m.leapfrog_inverse(z, y, fy, 0.3)
    want_close(got, revgpt.step_inverse(s, y, z, fy), 1e-12, "leapfrog_inverse(z, y, fy, h=0.3)", "revgpt.step_inverse")

    # a whole leapfrog model, walked back layer by layer with your inverse
    model, idx = tiny("leapfrog", n_layer=4, h=0.7), batch()
    with torch.no_grad():
        p0 = model.embed(idx)
        x, y = revgpt.integrate(model.steps(), p0, p0)
        for block in reversed(model.transformer.h):
            x, y = m.leapfrog_inverse(y, x, block(x), 0.7), x
        want_close(x, p0, 1e-10, "walking a 4-layer leapfrog model back with leapfrog_inverse", "p_0")
        want_close(y, p0, 1e-10, "walking a 4-layer leapfrog model back with leapfrog_inverse", "p_0")

        # Hamiltonian: one layer is two steps of revgpt's recurrence, (q, p) -> (p, q+) -> (q+, p+)
        model = tiny("hamiltonian", n_layer=2, h=0.7)
        steps = model.steps()
        for layer, block in enumerate(model.transformer.h):
            q, p = torch.randn(2, 3, 11, 16, dtype=torch.float64)
            q_new, p_new = revgpt.integrate(steps[2 * layer:2 * layer + 2], q, p)
            got = want_pair(m.hamiltonian_inverse(block, q_new, p_new, 0.7), "hamiltonian_inverse")
            what = f"hamiltonian_inverse on layer {layer}"
            want_close(got[1], p, 1e-12, what + " (p)", "the p before the layer")
            want_close(got[0], q, 1e-12, what + " (q)", "the q before the layer")
    return ("leapfrog coefficients and inverse match revgpt; a 4-layer model walks back to p_0; "
            "Hamiltonian inverse exact")


def check_ex03(m):
    idx, worst = batch(), 0.0
    for dyn, L, kw in (("midpoint", 3, {"a": 0.7}), ("leapfrog", 3, {}), ("hamiltonian", 2, {"h": 0.6})):
        model = tiny(dyn, n_layer=L, **kw)
        steps = model.steps()
        with torch.no_grad():
            p0 = model.embed(idx)
            ref = revgpt.integrate(steps, p0, p0)
            got = want_pair(m.integrate(steps, p0, p0), "integrate")
            for i in (0, 1):
                want_close(got[i], ref[i], 1e-12, f"integrate on a {L}-layer {dyn} model (state {i} of the final pair)",
                           "revgpt.integrate")
            # go back from revgpt's final pair (fresh tensors: nothing your integrate stored can help)
            back = want_pair(m.integrate_back(steps, ref[0].clone(), ref[1].clone()), "integrate_back")
            for i in (0, 1):
                worst = max(worst, want_close(back[i], p0, 1e-10, f"integrate_back on a {L}-layer {dyn} model "
                                              f"(state {i} of the initial pair)", "p_0"))
    # float32: the reconstruction is no longer exact, but must stay close for a = 1
    model = tiny("midpoint", n_layer=6, dtype=torch.float32)
    with torch.no_grad():
        p0 = model.embed(idx)
        back = m.integrate_back(model.steps(), *revgpt.integrate(model.steps(), p0, p0))
        err32 = want_close(back[1], p0, 1e-5, "integrate_back on a 6-layer float32 midpoint model", "p_0")
    return f"integrate matches revgpt; integrate_back reconstructs p_0 (float64 {worst:.1e}, float32 {err32:.1e})"


def check_ex04(m):
    torch.manual_seed(0)
    idx, tgt = batch(2, 16, 100, seed=0), batch(2, 16, 100, seed=1)
    table = {}
    for dyn in ("euler", "midpoint", "hamiltonian"):
        for L in (1, 2, 4):
            torch.manual_seed(0)
            model = GPT(GPTConfig(block_size=16, vocab_size=100, n_layer=L, n_head=2, n_embd=32, dynamics=dyn))
            for targets in (tgt, None):
                got, ref = m.saved_bytes(model, idx, targets), revgpt.activation_bytes(model, idx, targets)
                got = number(got, "saved_bytes")
                if got != ref:
                    raise Fail(f"saved_bytes({dyn}, n_layer={L}, targets={'yes' if targets is not None else 'None'}) "
                               f"= {got:.0f}, revgpt.activation_bytes says {ref}. Count each storage once "
                               "(t.untyped_storage().data_ptr() identifies it; .nbytes() is its size) and skip "
                               "the model's parameters")
            table[dyn, L] = int(got)
    info("saved bytes (your counter, with the loss) by depth 1 / 2 / 4:")
    for dyn in ("euler", "midpoint", "hamiltonian"):
        info(f"  {dyn:12s}" + " / ".join(f"{table[dyn, L]:8d}" for L in (1, 2, 4)))
    per_layer = table["euler", 2] - table["euler", 1]
    info(f"Euler stores {per_layer} bytes per layer = {per_layer / (2 * 16 * 32 * 4):.1f} copies of the (B, T, C) "
         "stream; the reversible stacks store none")

    for B, T, C, V in ((2, 16, 64, 512), (1, 32, 64, 2048), (2, 16, 128, 50), (3, 8, 64, 1000)):
        torch.manual_seed(0)
        model = GPT(GPTConfig(block_size=32, vocab_size=V, n_layer=2, n_head=2, n_embd=C, dynamics="midpoint"))
        idx, tgt = batch(B, T, V, seed=0), batch(B, T, V, seed=1)
        for with_targets in (True, False):
            meas = revgpt.activation_bytes(model, idx, tgt if with_targets else None)
            pred = number(m.reversible_bytes_formula(B, T, C, V, with_targets), "reversible_bytes_formula")
            if not abs(pred - meas) <= 0.06 * meas:
                raise Fail(f"reversible_bytes_formula(B={B}, T={T}, C={C}, V={V}, with_targets={with_targets}) = "
                           f"{pred!r}, measured {meas} bytes (allowed: within 6%). Which (B, T, C) tensors does "
                           "ReversibleStack save, what does the LM head save, what does the loss save?")
    gpt2 = number(m.head_share(8, 1024, 768, 50257), "head_share")
    byte = number(m.head_share(8, 256, 384, 257), "head_share")
    for got, C, V in ((gpt2, 768, 50257), (byte, 384, 257)):
        ref = V / (V + 3 * C)
        if not abs(got - ref) <= 0.02:
            raise Fail(f"head_share(C={C}, V={V}) = {got!r}, expected about {ref:.3f}: the logits' B*T*V floats "
                       "divided by everything the reversible model saves")
    info(f"LM-head share of a reversible model's activations: GPT-2 small {gpt2:.1%}, byte-level C=384 {byte:.1%}")
    return "your counter matches revgpt.activation_bytes; reversible is flat in depth; formula and head share right"


def _make_model_05(a, n_layer, seed=0):  # the stub's make_model, kept here so the oracle cannot drift
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=16, vocab_size=37, n_layer=n_layer, n_head=2, n_embd=16,
                         dynamics="midpoint", a=a))


def _batch_05():  # the stub's make_batch
    return torch.randint(0, 37, (4, 16), generator=torch.Generator().manual_seed(0))


def check_ex05(m):
    for a in (1.0, -1.0, 0.5, -0.5, 0.25, 2.0, -4.0):
        got, ref = number(m.predicted_growth_per_layer(a), "predicted_growth_per_layer"), max(1.0, 1.0 / abs(a))
        if not abs(got - ref) <= 1e-9 * ref:
            raise Fail(f"predicted_growth_per_layer({a}) = {got!r}. Hint: drop g, find the roots r of the forward "
                       "recurrence's characteristic equation r^2 = a + (1 - a) r; the backward map has 1/r")
    depths = [2, 4, 6, 8]
    r = number(m.growth_per_layer([3.0 * 1.7 ** L for L in depths], depths), "growth_per_layer")
    if not abs(r - 1.7) <= 1e-9:
        raise Fail(f"growth_per_layer(3 * 1.7**L, L = {depths}) = {r!r}, expected 1.7")

    idx = _batch_05()
    errs = {}
    for a in (1.0, 0.5, 0.25):
        errs[a] = got = m.error_vs_depth(a, depths)
        if not (isinstance(got, (list, tuple)) and len(got) == len(depths)):
            raise Fail(f"error_vs_depth({a}, {depths}) must return a list of {len(depths)} floats, got {got!r}")
        got = errs[a] = [number(e, "error_vs_depth") for e in got]
        for L, e in zip(depths, got):
            ref = revgpt.reconstruction_error(_make_model_05(a, L), idx)
            if not (e >= 0 and (max(e, ref) < 1e-6 or 0.1 <= e / max(ref, 1e-300) <= 10)):
                raise Fail(f"error_vs_depth({a}) at depth {L}: {e!r}, but revgpt.reconstruction_error measures "
                           f"{ref:.2e} (allowed: within a factor 10). Measure max|rec - p0| / max|p0| in float32")
        r, pred = number(m.growth_per_layer(got, depths), "growth_per_layer"), max(1.0, 1 / a)
        info(f"a = {a:4}: error {'  '.join('%.1e' % e for e in got)} (depth {depths}); growth per layer "
             f"measured {r:.2f}, predicted {pred:.2f}")
        if a < 1 and not 0.7 * pred <= r <= 1.3 * pred:
            raise Fail(f"with a = {a} the measured growth per layer is {r:.2f}; the theory says about {pred}")
    if not errs[0.25][-1] > errs[0.5][-1] > errs[1.0][-1]:
        raise Fail("at depth 8 the error should grow as a shrinks: " + str({a: e[-1] for a, e in errs.items()}))
    return "predicted growth max(1, 1/|a|) per layer, and your measurement shows it"


def check_ex06(m):
    class Counted:  # g, counting its calls
        def __init__(self, g):
            self.g, self.calls = g, 0

        def __call__(self, y):
            self.calls += 1
            return self.g(y)

    torch.manual_seed(0)
    cases = (("midpoint", {"a": 0.7}, 0), ("leapfrog", {}, 1), ("hamiltonian", {}, 0), ("hamiltonian", {}, 1))
    for dyn, kw, k in cases:
        model = tiny(dyn, n_layer=2, **kw)
        s = model.steps()[k]
        s = Step(Counted(s.g), s.alpha, s.beta, s.gamma, s.params)
        what = f"step_backward on {dyn} step {k} (alpha={s.alpha:g}, beta={s.beta:g}, gamma={s.gamma:g})"
        # the oracle: autograd through the step, with the loss L = <gx, s_k> + <gy, s_{k+1}>
        older, middle = (0.5 * torch.randn(3, 11, 16, dtype=torch.float64) for _ in range(2))
        gx, gy = torch.randn(2, 3, 11, 16, dtype=torch.float64)
        o, mid = older.clone().requires_grad_(True), middle.clone().requires_grad_(True)
        newer = revgpt.step_forward(s, o, mid, s.g(mid))
        ref = torch.autograd.grad((gx * mid).sum() + (gy * newer).sum(), [o, mid] + s.params)
        s.g.calls = 0
        got = m.step_backward(s, middle.clone(), newer.detach().clone(), gx, gy)
        if not (isinstance(got, (tuple, list)) and len(got) == 4):
            raise Fail(f"{what} must return (x_prev, gx_prev, gy_prev, param_grads)")
        if s.g.calls != 1:
            raise Fail(f"{what} evaluated g {s.g.calls} times; evaluate it once, with grad enabled, and use that "
                       "one value both to reconstruct x_prev and for torch.autograd.grad")
        x_prev, gx_prev, gy_prev, pgrads = got
        want_close(x_prev, older, 1e-12, what + ": x_prev", "the state s_{k-1}")
        want_close(gx_prev, ref[0], 1e-10, what + ": gx_prev", "autograd's dL/ds_{k-1}")
        want_close(gy_prev, ref[1], 1e-10, what + ": gy_prev", "autograd's dL/ds_k")
        if len(pgrads) != len(s.params):
            raise Fail(f"{what}: {len(pgrads)} parameter gradients for {len(s.params)} parameters")
        for i, (g, r) in enumerate(zip(pgrads, ref[2:])):
            want_close(g, r, 1e-10, what + f": gradient of s.params[{i}] {tuple(r.shape)}", "autograd")

    # chain it: the whole model's gradients from your step_backward, against autograd
    model, idx = tiny("midpoint", n_layer=4, a=0.7), batch()
    steps, params = model.steps(), list(model.transformer.h.parameters())
    p0 = model.embed(idx).detach()
    w = torch.randn_like(p0)
    leaf = p0.clone().requires_grad_(True)
    ref = torch.autograd.grad((w * revgpt.integrate(steps, leaf, leaf)[1]).sum(), [leaf] + params)
    with torch.no_grad():
        x, y = revgpt.integrate(steps, p0, p0)
    gx, gy, grads = torch.zeros_like(p0), w, {}
    for s in reversed(steps):
        x_prev, gx, gy, pg = m.step_backward(s, x, y, gx, gy)
        for p, g in zip(s.params, pg):
            grads[p] = grads[p] + g if p in grads else g
        x, y = x_prev, x
    want_close(gx + gy, ref[0], 1e-9, "the chained step_backward: dL/dp_0", "autograd")  # p_{-1} = p_0 = embedding
    for (name, p), r in zip(model.transformer.h.named_parameters(), ref[1:]):
        want_close(grads[p], r, 1e-9, f"the chained step_backward: gradient of h.{name}", "autograd")
    return "one step and a whole 4-layer model: gradients equal autograd's in float64, one g call per step"


def check_ex07(m):
    model, idx = tiny("midpoint", n_layer=3), batch()
    gm, h = 0.9, 0.8
    for bad in (0, 0.0):
        try:
            m.momentum_steps(model, bad, h)
        except ValueError:
            pass
        else:
            raise Fail("momentum_steps(model, gamma_m=0, h) must raise ValueError: alpha = -gamma_m = 0")
    steps = m.momentum_steps(model, gm, h)
    if not (isinstance(steps, list) and len(steps) == 3 and all(isinstance(s, Step) for s in steps)):
        raise Fail(f"momentum_steps must return a list of revgpt.Step, one per block (3 here), got {steps!r}")
    p0 = model.embed(idx).detach()
    with torch.no_grad():  # the definition, written out
        x, y = p0, p0
        for block in model.transformer.h:
            x, y = y, y + gm * (y - x) + h * block(y)
        got = revgpt.integrate(steps, p0, p0)[1]
    want_close(got, y, 1e-12, "integrate(momentum_steps(...)) ", "p_{l+1} = p_l + gamma_m (p_l - p_{l-1}) + h f(p_l)")

    # the gradient test: the hand-written backward on your steps against autograd, float64
    params = list(model.transformer.h.parameters())
    w = torch.randn_like(p0)
    leaf = p0.clone().requires_grad_(True)
    out = revgpt.ReversibleStack.apply(leaf, leaf, m.momentum_steps(model, gm, h), None, *params)
    rev = torch.autograd.grad((w * out).sum(), [leaf] + params, allow_unused=True)
    leaf = p0.clone().requires_grad_(True)
    ag = torch.autograd.grad((w * revgpt.integrate(m.momentum_steps(model, gm, h), leaf, leaf)[1]).sum(),
                             [leaf] + params, allow_unused=True)
    names = ["p_0"] + [f"h.{n}" for n, _ in model.transformer.h.named_parameters()]
    worst = 0.0
    for name, r, a in zip(names, rev, ag):
        if r is None or a is None:
            raise Fail(f"no gradient for {name}: does each Step list its block's parameters in params?")
        worst = max(worst, want_close(r, a, 1e-9, f"ReversibleStack on your steps, gradient of {name}", "autograd"))

    got = m.equivalent_midpoint(gm, h)
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        raise Fail(f"equivalent_midpoint must return (a, h_midpoint), got {got!r}")
    try:
        cfg = GPTConfig(**{**vars(model.config), "a": float(got[0]), "h": float(got[1])})
    except ValueError as e:
        raise Fail(f"equivalent_midpoint({gm}, {h}) = {got}: not a valid Midpoint(a) config ({e})") from None
    mid = GPT(cfg).double()
    mid.load_state_dict(model.state_dict())
    with torch.no_grad():
        want_close(revgpt.integrate(mid.steps(), p0, p0)[1], y, 1e-12,
                   f"Midpoint(a={got[0]}, h={got[1]}) from equivalent_midpoint", "the momentum dynamic")
    return (f"momentum steps are reversible: ReversibleStack == autograd (worst {worst:.1e}); "
            f"it is Midpoint(a={got[0]:g})")


def check_ex08(m):
    model = tiny("midpoint", n_layer=3, a=0.7, dropout=0.3, backward="autograd").train()
    params = list(model.transformer.h.parameters())
    torch.manual_seed(1)
    p0 = 0.5 * torch.randn(2, 8, 16, dtype=torch.float64)
    w = torch.randn_like(p0)

    def run(reversible, wrap, seed):
        """One training pass from a fixed seed: output, gradients, and the RNG state afterwards."""
        torch.manual_seed(seed)
        steps = model.steps()
        if wrap:
            steps = m.replay_steps(steps)
            if not (isinstance(steps, list) and len(steps) == 3 and all(isinstance(s, Step) for s in steps)):
                raise Fail(f"replay_steps must return a list of revgpt.Step (one per input step), got {steps!r}")
        leaf = p0.clone().requires_grad_(True)
        if reversible:
            out = revgpt.ReversibleStack.apply(leaf, leaf, steps, None, *params)
        else:
            out = revgpt.integrate(steps, leaf, leaf)[1]
        grads = torch.autograd.grad((w * out).sum(), [leaf] + params)
        return out.detach(), grads, torch.get_rng_state()

    names = ["p_0"] + [f"h.{n}" for n, _ in model.transformer.h.named_parameters()]
    out_plain, g_plain, _ = run(False, False, seed=5)  # plain autograd with the raw blocks: the truth
    _, g_broken, _ = run(True, False, seed=5)  # what GPTConfig refuses: the recompute draws new masks
    info(f"without replay the reversible gradients are off by {max(rel(a, b) for a, b in zip(g_broken, g_plain)):.0%}")
    out_ag, g_ag, rng_ag = run(False, True, seed=5)
    out_rev, g_rev, rng_rev = run(True, True, seed=5)
    want_close(out_rev, out_ag, 1e-12, "the forward of ReversibleStack on your steps", "autograd's on your steps")
    worst = 0.0
    for name, a, b in zip(names, g_rev, g_ag):
        worst = max(worst, want_close(a, b, 1e-9, f"ReversibleStack on your steps, gradient of {name}",
                                      "autograd on your steps (the recompute drew different masks?)"))
    if not torch.equal(rng_rev, rng_ag):
        raise Fail("after the reversible backward the global RNG is not where a plain backward leaves it: "
                   "restore it after replaying (torch.random.fork_rng does that for you)")
    if rel(out_ag, out_plain) > 1e-12:
        info("(your first calls draw masks differently from the raw blocks; allowed, as long as they are random)")
    out_other, _, _ = run(False, True, seed=6)
    model.eval()
    out_eval, _, _ = run(False, True, seed=5)
    model.train()
    if rel(out_ag, out_eval) < 1e-6:
        raise Fail("in training mode your steps give the same output as in eval mode: dropout is not applied")
    if rel(out_ag, out_other) < 1e-6:
        raise Fail("two training passes from different seeds drew the same dropout masks: masks must be random "
                   "in each forward (draw from the global RNG), and only the recompute replays them")
    return f"dropout masks replay: reversible gradients == autograd's (worst {worst:.1e}) with dropout 0.3"


def _make_euler_09(n_layer, seed=0):  # the stub's make_euler_model, kept here so the oracle cannot drift
    args = dict(block_size=32, vocab_size=64, n_head=4, n_embd=32, dynamics="euler")
    torch.manual_seed(seed)
    state = GPT(GPTConfig(n_layer=8, **args)).double().state_dict()
    for k, v in state.items():
        if k.endswith("c_proj.weight"):
            state[k] = v * 2 * 16 ** 0.5
        elif k in ("transformer.wte.weight", "transformer.wpe.weight", "lm_head.weight"):
            state[k] = v * 10
    keep = {k: v for k, v in state.items() if not k.startswith("transformer.h.") or int(k.split(".")[2]) < n_layer}
    model = GPT(GPTConfig(n_layer=n_layer, **args)).double()
    model.load_state_dict(keep)
    return model.eval()


def _batch_09():  # the stub's make_batch
    return torch.randint(0, 64, (4, 32), generator=torch.Generator().manual_seed(1))


def _kl_09(t, s):
    logp, logq = torch.log_softmax(t, -1), torch.log_softmax(s, -1)
    return (logp.exp() * (logp - logq)).sum(-1).mean().item()


def _midpoint_09(euler, a, h):
    mid = GPT(GPTConfig(**{**vars(euler.config), "dynamics": "midpoint", "a": a, "h": h, "backward": None})).double()
    mid.load_state_dict(euler.state_dict())
    return mid.eval()


@torch.no_grad()
def check_ex09(m):
    torch.manual_seed(0)
    t, s = torch.randn(2, 3, 4, 64, dtype=torch.float64)
    for what, a, b in (("random logits", t, s), ("identical logits", t, t.clone()), ("shifted logits", t, t + 3.0)):
        got, ref = number(m.logits_kl(a, b), "logits_kl"), _kl_09(a, b)
        if not abs(got - ref) <= 1e-9 * max(ref, 1e-9):
            raise Fail(f"logits_kl on {what} = {got!r}, expected {ref:.6g}: the mean over (batch, position) of "
                       "sum_v p_v (log p_v - log q_v), p = softmax(teacher), q = softmax(student)")
    got = number(m.logits_kl(s, t), "logits_kl")
    if abs(got - _kl_09(s, t)) > 1e-9 * _kl_09(s, t):
        raise Fail("logits_kl(teacher, student) is not KL(teacher || student): check the argument order")

    idx = _batch_09()
    euler = _make_euler_09(3)
    conv = m.to_midpoint(euler, 0.5, 0.75)
    c = conv.config
    if not (isinstance(conv, GPT) and c.dynamics == "midpoint" and c.a == 0.5 and c.h == 0.75 and c.n_layer == 3):
        raise Fail("to_midpoint(euler, a=0.5, h=0.75) must return a revgpt GPT with dynamics='midpoint', a=0.5, h=0.75 "
                   "and the Euler model's other config fields")
    ref = _midpoint_09(euler, 0.5, 0.75)
    want_close(conv(idx)[0], ref(idx)[0], 1e-12, "to_midpoint(euler, 0.5, 0.75)'s logits",
               "the same weights under Midpoint(0.5)")

    def gap(L, a, h):
        e = _make_euler_09(L)
        got = number(m.conversion_gap(e, idx, a, h), "conversion_gap")
        teacher, student = e(idx)[0], _midpoint_09(e, a, h)(idx)[0]
        want = _kl_09(teacher, student)
        if not abs(got - want) <= 1e-9 * want + 1e-15:
            hint = ""
            if abs(got - _kl_09(student, teacher)) <= 1e-9 * want:
                hint = " = KL(converted || euler); the Euler model is the teacher, the first argument of logits_kl"
            raise Fail(f"conversion_gap at depth {L}, a={a}, h={h}: {got!r}{hint}, expected {want:.6g}")
        return got

    depth = {L: gap(L, 1.0, 0.5) for L in (1, 2, 4, 8)}
    info("gap KL(euler || midpoint a=1, h=1/2) by depth: " + ", ".join(f"{L}: {g:.1e}" for L, g in depth.items()))
    if depth[1] != 0.0:
        raise Fail(f"the gap at depth 1 with a=1, h=1/2 is {depth[1]:.2e}; it is exactly 0 (why?)")
    if not depth[8] > depth[4] > depth[2] > 0:
        raise Fail(f"the gap (a=1, h=1/2) should grow with depth, got {depth}")

    a_sweep = {a: gap(4, a, (1 + a) / 2) for a in (1.0, 0.5, 0.1)}
    info("gap at depth 4 with h = (1+a)/2: " + ", ".join(f"a={a}: {g:.1e}" for a, g in a_sweep.items()))
    if not a_sweep[1.0] > a_sweep[0.5] > a_sweep[0.1]:
        raise Fail(f"with h = (1+a)/2 the gap should shrink as a -> 0, got {a_sweep}")
    recon = {a: revgpt.reconstruction_error(_midpoint_09(_make_euler_09(8), a, (1 + a) / 2).float(), idx)
             for a in (1.0, 0.5, 0.1)}
    info("...and the price, float32 reconstruction error at depth 8: "
         + ", ".join(f"a={a}: {e:.1e}" for a, e in recon.items()))

    euler = _make_euler_09(2)
    p0 = euler.embed(idx)
    mid = _midpoint_09(euler, 1.0, 0.5)
    p2_euler = revgpt.integrate([Step(b, 0, 1, 1, []) for b in euler.transformer.h], p0, p0)[1]
    p2_mid = revgpt.integrate(mid.steps(), p0, p0)[1]
    want_close(m.layer2_difference(euler, idx), p2_euler - p2_mid, 1e-10, "layer2_difference(euler, idx)",
               "p_2(euler) - p_2(midpoint), measured")
    return "gap is 0 at depth 1, grows with depth, shrinks as a -> 0; layer-2 difference derived"


CHECKS = {1: check_ex01, 2: check_ex02, 3: check_ex03, 4: check_ex04, 5: check_ex05, 6: check_ex06,
          7: check_ex07, 8: check_ex08, 9: check_ex09}


# ----------------------------------------------------------------------------------------------


def run_one(n, folder):
    """Run exercise n's check on the file in folder; print PASS/FAIL; return True on PASS."""
    t0, tag = time.time(), f"ex{n:02d}"
    try:
        summary = CHECKS[n](load(folder, n))
    except NotImplementedError as e:
        where = show(folder / FILES[n])
        print(f"FAIL {tag}: {e or 'a function'} is not implemented yet (in {where}) -- see the hint for "
              f"exercise {n} in exercises/README.md")
        return False
    except Fail as e:
        print(f"FAIL {tag}: {e}")
        return False
    except Exception as e:  # the student's code crashed: show where
        traceback.print_exc(file=sys.stdout)
        print(f"FAIL {tag}: your code raised {type(e).__name__}: {e} (traceback above)")
        return False
    print(f"PASS {tag}: {summary} ({time.time() - t0:.1f} s)")
    return True


def main(argv=None):
    p = argparse.ArgumentParser(description="Check revgpt exercises (see exercises/README.md).")
    p.add_argument("exercises", nargs="+", help="exercise numbers (1-9) or 'all'")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--solutions", action="store_true", help="check exercises/solutions/ (reference solutions)")
    g.add_argument("--stubs", action="store_true", help="check exercises/stubs/ (pristine stubs; must fail)")
    g.add_argument("--dir", help="check the files in this folder (default: $REVGPT_EXERCISE_DIR or exercises/)")
    args = p.parse_args(argv)
    if args.exercises == ["all"]:
        numbers = sorted(CHECKS)
    else:
        try:
            numbers = [int(x) for x in args.exercises]
        except ValueError:
            p.error(f"exercises: expected numbers 1-{len(CHECKS)} or 'all', got {' '.join(args.exercises)}")
        bad = [n for n in numbers if n not in CHECKS]
        if bad:
            p.error(f"no exercise {bad[0]}: there are exercises 1-{len(CHECKS)}")
    folder = exercise_dir(args)
    if not folder.is_dir():
        p.error(f"{folder} is not a folder")
    print(f"checking {show(folder)}")
    torch.set_num_threads(1)  # the models are tiny: threads would only add overhead
    results = [run_one(n, folder) for n in numbers]
    if len(numbers) > 1:
        print(f"{sum(results)}/{len(results)} passed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
