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

import torch

ROOT = next((p for p in Path(__file__).resolve().parents if (p / "revgpt.py").exists()), Path.cwd())
sys.path.insert(0, str(ROOT))  # so that `import revgpt` works when you run this file directly


def saved_bytes(model, idx, targets=None):
    """Bytes of distinct tensor storage that autograd saves during model(idx, targets), parameters
    excluded. Use torch.autograd.graph.saved_tensors_hooks."""
    # SOLUTION
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    sizes = {}  # storage address -> bytes: a storage saved twice (or through two views) counts once

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in param_storages:
            sizes[s.data_ptr()] = s.nbytes()
        return t  # keep the tensor itself: we only look

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(idx, targets)  # the graph (and what it saved) is freed when the result is dropped
    return sum(sizes.values())


def reversible_bytes_formula(B, T, C, V, with_targets=True):
    """Predicted saved bytes of a float32 reversible revgpt model (any depth) for a (B, T) batch of
    token ids; with_targets=True includes the loss. Within 6% of the measurement is enough."""
    # SOLUTION (exact to the byte on torch 2.13, CPU; the first line alone is within a few percent):
    stream = 3 * B * T * C * 4  # ReversibleStack saves the final pair (x_L, y_L); ln_f's input is y_L
    #                             itself (the same storage, counted once); lm_head saves ln_f's output
    small = 2 * B * T * 4 + B * T * 8 + T * 8  # ln_f's mean and 1/std; the int64 token ids and positions
    head = B * T * V * 4 + B * T * 8 + 4 if with_targets else 0  # cross_entropy saves its log-softmax
    #                                      output (B*T*V floats), the int64 targets and a scalar weight
    return stream + small + head


def head_share(B, T, C, V):
    """The fraction of the reversible model's saved bytes (with the loss) taken by the B x T x V
    logits of the LM head."""
    # SOLUTION: about V / (V + 3C). GPT-2 small (C = 768, V = 50257): 0.956, so 96% of what a
    # reversible GPT-2 saves is the head's. A byte-level model (V = 257, C = 384): 0.18. Chunking the
    # head and the loss over the sequence (bench.py, head_chunk) is the way around that floor.
    return B * T * V * 4 / reversible_bytes_formula(B, T, C, V, with_targets=True)
