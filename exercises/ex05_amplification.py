"""
Exercise 5 (medium): why Midpoint(a) with |a| < 1 amplifies reconstruction error.

The reversible backward recomputes every hidden state from the last pair (exercise 3). In float32
each step rounds, and the backward recurrence can amplify those rounding errors. Measure it, and
predict it.

1. `error_vs_depth(a, depths)`: for each depth L, build the model `make_model(a, L)` (given below),
   run the stack forwards from (p0, p0) and back again in float32, and return the relative error
   max|reconstructed - p0| / max|p0| (over both reconstructed states). This is what
   revgpt.reconstruction_error measures: write it yourself, the check uses that one as the oracle.
2. `growth_per_layer(errors, depths)`: fit err ~ c * r**L (least squares on log err) and return r.
3. `predicted_growth_per_layer(a)`: the factor by which the backward recurrence can amplify an
   error per layer, from theory. Linearise, and drop the forcing (it is small at initialisation):
   what are the eigenvalues of the backward map (y, z) -> (x, y)?

Check: python exercises/check.py 5
"""
import math  # noqa: F401
import sys
from pathlib import Path

import torch

ROOT = next((p for p in Path(__file__).resolve().parents if (p / "revgpt.py").exists()), Path.cwd())
sys.path.insert(0, str(ROOT))  # so that `import revgpt` works when you run this file directly

from revgpt import GPT, GPTConfig, integrate, integrate_back  # noqa: E402,F401


def make_model(a, n_layer, seed=0):
    """GIVEN (do not change): a small float32 Midpoint(a) model at initialisation."""
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=16, vocab_size=37, n_layer=n_layer, n_head=2, n_embd=16,
                         dynamics="midpoint", a=a))


def make_batch(seed=0):
    """GIVEN (do not change): a (4, 16) batch of token ids for make_model's models."""
    return torch.randint(0, 37, (4, 16), generator=torch.Generator().manual_seed(seed))


def error_vs_depth(a, depths):
    """For each L in depths: the relative reconstruction error of make_model(a, L) on make_batch(),
    in float32. Returns a list of floats, one per depth."""
    # TODO: p0 = model.embed(idx); steps = model.steps(); forwards with integrate, back with
    # integrate_back (under torch.no_grad()); compare both reconstructed states with p0.
    raise NotImplementedError("error_vs_depth")


def growth_per_layer(errors, depths):
    """Least-squares fit of log(err) = log(c) + L*log(r); return r."""
    # TODO: the slope of a straight line through the points (L, log err).
    raise NotImplementedError("growth_per_layer")


def predicted_growth_per_layer(a):
    """Theory: the largest |eigenvalue| of the linearised backward recurrence of Midpoint(a)."""
    # TODO: a formula in a. Try z = a*x + (1-a)*y with x = r^(l-1), y = r^l, z = r^(l+1).
    raise NotImplementedError("predicted_growth_per_layer")


if __name__ == "__main__":
    depths = [2, 4, 6, 8, 10]
    for a in (1.0, 0.5, 0.25):
        errors = error_vs_depth(a, depths)
        print(f"a={a:5}: errors {['%.1e' % e for e in errors]}, measured growth per layer "
              f"{growth_per_layer(errors, depths):.2f}, predicted {predicted_growth_per_layer(a):.2f}")
