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

from revgpt import Step  # noqa: E402,F401


def momentum_steps(model, gamma_m, h):
    """The momentum dynamic as revgpt Steps over model.transformer.h."""
    # TODO: rewrite the update as z = alpha*x + beta*y + gamma*g(y); Step(g, alpha, beta, gamma, params).
    raise NotImplementedError("momentum_steps")


def equivalent_midpoint(gamma_m, h):
    """(a, h_midpoint) such that revgpt's Midpoint(a) with step h_midpoint is this momentum step."""
    # TODO: match the coefficients.
    raise NotImplementedError("equivalent_midpoint")
