"""
Exercise 2 (easy): the leapfrog and Hamiltonian inverses.

Leapfrog (eq. 2.6) is a second-order scheme, p'' = f(p), written on a pair of states:

    z = 2y - x + h^2 f(y)                    x = p_{l-1},  y = p_l,  z = p_{l+1}

revgpt.py writes every reversible dynamic as one recurrence z = alpha*x + beta*y + gamma*g(y)
(`Step`, `step_forward`, `step_inverse`). Find leapfrog's (alpha, beta, gamma), and its inverse.

The Hamiltonian layer (eqs. 2.8-2.9) has two streams, q and p, and two half-steps:

    q+ = q + h * Attn(LN1 p)       (block.attn_forcing)
    p+ = p + h * MLP(LN2 q+)       (block.mlp_forcing)

Given (q+, p+), recover (q, p).

Check: python exercises/check.py 2
"""
import sys
from pathlib import Path

ROOT = next((p for p in Path(__file__).resolve().parents if (p / "revgpt.py").exists()), Path.cwd())
sys.path.insert(0, str(ROOT))  # so that `import revgpt` works when you run this file directly


def leapfrog_coefficients(h):
    """Return (alpha, beta, gamma) such that leapfrog's z = 2y - x + h^2 f(y) reads
    z = alpha*x + beta*y + gamma*f(y)."""
    # TODO: three numbers.
    raise NotImplementedError("leapfrog_coefficients")


def leapfrog_inverse(z, y, fy, h):
    """Return x such that z = 2y - x + h^2 fy (z, y, fy: tensors of one shape; h: float)."""
    # TODO: solve for x. (Compare your answer with the forward step: what do you notice?)
    raise NotImplementedError("leapfrog_inverse")


def hamiltonian_inverse(block, q_new, p_new, h):
    """Undo one Hamiltonian layer: given (q+, p+) return (q, p).

    block: a revgpt.Block (use block.attn_forcing and block.mlp_forcing); h: float.
    """
    # TODO: undo the two half-steps. Which one can you undo first, with what you know?
    raise NotImplementedError("hamiltonian_inverse")
