"""
Exercise 7 (medium-hard): a new reversible dynamic, and the proof that its backward is exact.

Heavy-ball momentum adds a fraction gamma_m of the last increment to the next one:

    p_{l+1} = p_l + gamma_m * (p_l - p_{l-1}) + h * f_l(p_l)

1. `momentum_steps(model, gamma_m, h)`: write this dynamic as a list of revgpt `Step`s, one per
   block of model.transformer.h (g = the block, params = the block's parameters). Raise ValueError
   for gamma_m == 0: then there is nothing to invert.
2. Run it through the project's hand-written backward (revgpt.ReversibleStack, which the check
   does): in float64 its gradients must equal plain autograd's through revgpt.integrate to 1e-9.
   That is the "gradient test" that proves a reversible dynamic exact.
3. `equivalent_midpoint(gamma_m, h)`: this is not really new. Which Midpoint(a) with which step
   size (revgpt's convention: z = a*x + (1 - a)*y + 2h*f(y)) is it? Return (a, h_midpoint).

Check: python exercises/check.py 7
"""
import sys
from pathlib import Path

ROOT = next((p for p in Path(__file__).resolve().parents if (p / "revgpt.py").exists()), Path.cwd())
sys.path.insert(0, str(ROOT))  # so that `import revgpt` works when you run this file directly

from revgpt import Step  # noqa: E402


def momentum_steps(model, gamma_m, h):
    """The momentum dynamic as revgpt Steps over model.transformer.h."""
    # SOLUTION: z = y + gamma_m*(y - x) + h*f(y) = (-gamma_m)*x + (1 + gamma_m)*y + h*f(y).
    if gamma_m == 0:
        raise ValueError("gamma_m=0: z = y + h f(y) is Euler; alpha = -gamma_m = 0 cannot be divided by")
    return [Step(b, -gamma_m, 1 + gamma_m, h, list(b.parameters())) for b in model.transformer.h]


def equivalent_midpoint(gamma_m, h):
    """(a, h_midpoint) such that revgpt's Midpoint(a) with step h_midpoint is this momentum step."""
    # SOLUTION: match alpha = a = -gamma_m (then beta = 1 - a = 1 + gamma_m matches too) and
    # gamma = 2 h_midpoint = h. So momentum is Midpoint(a = -gamma_m): by exercise 5 its backward
    # amplifies rounding errors by 1/gamma_m per layer for 0 < gamma_m < 1 (the usual momentum
    # range), and is stable only for |gamma_m| >= 1.
    return -gamma_m, h / 2
