"""
Exercise 4 (medium): count the activation memory, and find the LM-head floor.

Between the forward and the backward pass, autograd keeps the tensors that each operation saved for
its backward ("activations"). torch.autograd.graph.saved_tensors_hooks(pack, unpack) lets you see
every one of them: pack(t) is called with each tensor as it is saved.

1. Write your own counter `saved_bytes`: the bytes of distinct storage that autograd saves during
   one forward, parameters excluded. (Several saved tensors can be views of one storage: count each
   storage once. Weights are saved too, e.g. by every Linear, but they are not activations.)
   The check compares it with revgpt.activation_bytes, and uses it to show that the reversible
   model's count is flat in depth while Euler's grows per layer.
2. The reversible model's count does not depend on depth, so what is it? Write it as a formula in
   the batch size B, the sequence length T, the width C and the vocabulary size V.
3. What share of it is the LM head's (the B x T x V logits that the loss saves)? That share is the
   "LM-head floor": memory that reversibility cannot remove.

Check: python exercises/check.py 4
"""
import sys
from pathlib import Path

import torch  # noqa: F401

ROOT = next((p for p in Path(__file__).resolve().parents if (p / "revgpt.py").exists()), Path.cwd())
sys.path.insert(0, str(ROOT))  # so that `import revgpt` works when you run this file directly


def saved_bytes(model, idx, targets=None):
    """Bytes of distinct tensor storage that autograd saves during model(idx, targets), parameters
    excluded. Use torch.autograd.graph.saved_tensors_hooks."""
    # TODO: a pack hook that records each saved tensor's storage (t.untyped_storage(): .data_ptr()
    # identifies it, .nbytes() is its size), skipping the parameters' storages; unpack returns t.
    raise NotImplementedError("saved_bytes")


def reversible_bytes_formula(B, T, C, V, with_targets=True):
    """Predicted saved bytes of a float32 reversible revgpt model (any depth) for a (B, T) batch of
    token ids; with_targets=True includes the loss. Within 6% of the measurement is enough."""
    # TODO: which (B, T, C) tensors does ReversibleStack keep? What do ln_f, lm_head and the loss save?
    raise NotImplementedError("reversible_bytes_formula")


def head_share(B, T, C, V):
    """The fraction of the reversible model's saved bytes (with the loss) taken by the B x T x V
    logits of the LM head."""
    # TODO: use your formula. Then try GPT-2 small (C = 768, V = 50257) and a byte-level model.
    raise NotImplementedError("head_share")
