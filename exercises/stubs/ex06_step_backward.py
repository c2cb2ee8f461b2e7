"""
Exercise 6 (medium-hard): the backward of one reversible step, by hand.

This is the heart of ReversibleStack.backward (docs/walkthrough.md, section 3). One step maps the
pair (s_{k-1}, s_k) to the pair (s_k, s_{k+1}):

    s_{k+1} = alpha*s_{k-1} + beta*s_k + gamma*g(s_k)

Going backwards you hold the newer pair (x, y) = (s_k, s_{k+1}) and its cotangents
(gx, gy) = (dL/dx, dL/dy): the gradient of the loss with respect to the pair, through everything
that comes after. Produce:

    x_prev                the older state s_{k-1}, reconstructed;
    (gx_prev, gy_prev)    the cotangents of the older pair (s_{k-1}, s_k);
    param_grads           dL/dp for each p in s.params (a list in the same order; None for a
                          parameter that g does not use).

Rules: evaluate s.g exactly ONCE, with grad enabled, and use that one value both to reconstruct
s_{k-1} and for the vector-Jacobian product (torch.autograd.grad with grad_outputs). Do not use
revgpt.ReversibleStack: you are writing its loop body.

Check: python exercises/check.py 6 (against autograd in float64, one step and a whole model)
"""
import sys
from pathlib import Path

import torch  # noqa: F401

ROOT = next((p for p in Path(__file__).resolve().parents if (p / "revgpt.py").exists()), Path.cwd())
sys.path.insert(0, str(ROOT))  # so that `import revgpt` works when you run this file directly


def step_backward(s, x, y, gx, gy):
    """s: a revgpt.Step; x, y: the newer pair (s_k, s_{k+1}); gx, gy: its cotangents.
    Returns (x_prev, gx_prev, gy_prev, param_grads)."""
    # TODO:
    #   1. a detached copy of x that requires grad; g of it, with torch.enable_grad()
    #   2. x_prev from the inverse formula, with that same g value (under torch.no_grad())
    #   3. torch.autograd.grad(g value, [x copy] + params, grad_outputs=...): which cotangent?
    #   4. the chain rule through the update: s_{k-1} enters s_{k+1} only; s_k enters the loss
    #      as itself (gx) and through s_{k+1}
    raise NotImplementedError("step_backward")
