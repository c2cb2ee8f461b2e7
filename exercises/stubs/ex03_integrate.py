"""
Exercise 3 (easy): run the recurrence forwards and backwards.

A list of revgpt `Step`s s_1 .. s_n describes the whole stack. Each step maps a pair of states to the
next pair:

    (x, y) -> (y, z),   z = alpha*x + beta*y + gamma*g(y)

Write `integrate` (forwards, from the initial pair to the final pair) and `integrate_back`
(backwards, from the final pair to the initial pair, recomputing g along the way). You may use
revgpt.step_forward and revgpt.step_inverse, or your own formulas from exercises 1 and 2.

Check: python exercises/check.py 3
"""
import sys
from pathlib import Path

ROOT = next((p for p in Path(__file__).resolve().parents if (p / "revgpt.py").exists()), Path.cwd())
sys.path.insert(0, str(ROOT))  # so that `import revgpt` works when you run this file directly

from revgpt import step_forward, step_inverse  # noqa: E402,F401


def integrate(steps, x, y):
    """Apply the steps in order to the pair (x, y); return the final pair (s_{n-1}, s_n)."""
    # TODO: one loop over the steps. Each step has s.g, s.alpha, s.beta, s.gamma.
    raise NotImplementedError("integrate")


def integrate_back(steps, x, y):
    """Undo `integrate`: from the final pair (x, y) = (s_{n-1}, s_n) return the initial pair.
    Only the steps and the final pair may be used (no states stored by `integrate`)."""
    # TODO: one loop over the steps in reverse. At which state of the pair do you evaluate g?
    raise NotImplementedError("integrate_back")
