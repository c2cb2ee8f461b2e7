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
    # SOLUTION. Move everything that does not involve x to the left-hand side:
    #     a*x = z - (1 - a)*y - 2h*fy   ->   x = (z - (1 - a)*y - 2h*fy) / a
    # With a = 0 the update forgets x entirely (z = y + 2h f(y), which is Euler with step 2h), so no
    # formula can recover it: that is why Euler is not reversible.
    if a == 0:
        raise ValueError("a=0: z = y + 2h f(y) does not depend on x, so x cannot be recovered")
    return (z - (1 - a) * y - 2 * h * fy) / a
