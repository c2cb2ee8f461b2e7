"""
Exercise 8 (hard): make dropout replay correctly under the reversible backward.

GPTConfig refuses dropout > 0 with backward="reversible", because ReversibleStack.backward calls
each step's forcing g a second time (the recompute) and dropout would draw NEW random masks there.
The reconstruction and the gradients would then belong to a different network than the forward's,
silently.

Fix it at the level of the steps: `replay_steps(steps)` returns the same steps with each g wrapped
so that

- its first call (the forward pass) draws its dropout masks from the random number generator as
  usual, and
- every later call (the backward's recompute) draws exactly the same masks again, and leaves the
  global random number generator where it was.

The check builds fresh steps for each pass, from a model with dropout in training mode, and compares
ReversibleStack's gradients on your steps with plain autograd's through revgpt.integrate (float64,
1e-9). It also checks that masks still change from one training step to the next.

Check: python exercises/check.py 8
"""
import sys
from pathlib import Path

import torch  # noqa: F401

ROOT = next((p for p in Path(__file__).resolve().parents if (p / "revgpt.py").exists()), Path.cwd())
sys.path.insert(0, str(ROOT))  # so that `import revgpt` works when you run this file directly

from revgpt import Step  # noqa: E402,F401


def replay_steps(steps):
    """The same steps, with every forcing wrapped so that its dropout masks replay."""
    # TODO: wrap each s.g in a callable object that remembers the random state on its first call and
    # replays it on later calls; rebuild each Step with the wrapped g (Step is a NamedTuple).
    raise NotImplementedError("replay_steps")
