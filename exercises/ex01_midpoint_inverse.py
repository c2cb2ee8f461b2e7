"""
Exercise 1 (easy): invert one Midpoint(a) step.

Midpoint(a) (eq. 3.6; the table at the top of revgpt.py) carries a pair of states from layer to layer:

    z = a*x + (1 - a)*y + 2h*f(y)          x = p_{l-1},  y = p_l,  z = p_{l+1}

Going backwards we know the newer pair (y, z), and we can evaluate the forcing at the middle state,
fy = f(y). That is enough to get the older state x back with an explicit formula.

Check: python exercises/check.py 1
"""
import sys
from pathlib import Path

ROOT = next((p for p in Path(__file__).resolve().parents if (p / "revgpt.py").exists()), Path.cwd())
sys.path.insert(0, str(ROOT))  # so that `import revgpt` works when you run this file directly


def midpoint_inverse(z, y, fy, a, h):
    """Return x such that z = a*x + (1 - a)*y + 2h*fy.

    z, y, fy: tensors of the same shape (B, T, C); a, h: floats.
    Raise ValueError when a == 0.
    """
    # TODO: solve the update for x (a few tensor operations; no loops, no revgpt).
    raise NotImplementedError("midpoint_inverse")
