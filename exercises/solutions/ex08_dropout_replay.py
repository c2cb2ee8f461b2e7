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

import torch

ROOT = next((p for p in Path(__file__).resolve().parents if (p / "revgpt.py").exists()), Path.cwd())
sys.path.insert(0, str(ROOT))  # so that `import revgpt` works when you run this file directly

from revgpt import Step  # noqa: E402


class ReplayForcing:
    """Wraps a forcing g: the first call records the RNG state, later calls replay it.
    (The CUDA lines do for the GPU's generator what the CPU lines do; the checks run on the CPU.)"""

    def __init__(self, g):
        self.g = g
        self.cpu_state = self.cuda_state = None

    def __call__(self, y):
        if self.cpu_state is None:  # the forward pass: remember where the generators stand, then draw
            self.cpu_state = torch.get_rng_state()
            if y.is_cuda:
                self.cuda_state = torch.cuda.get_rng_state(y.device)
            return self.g(y)
        # the recompute: rewind to the recorded state inside fork_rng, which puts the global
        # generators back afterwards, so the rest of training draws as if nothing had happened
        with torch.random.fork_rng(devices=[y.device.index] if y.is_cuda else []):
            torch.set_rng_state(self.cpu_state)
            if y.is_cuda:
                torch.cuda.set_rng_state(self.cuda_state, y.device)
            return self.g(y)


def replay_steps(steps):
    """The same steps, with every forcing wrapped so that its dropout masks replay."""
    # SOLUTION
    return [Step(ReplayForcing(s.g), s.alpha, s.beta, s.gamma, s.params) for s in steps]
