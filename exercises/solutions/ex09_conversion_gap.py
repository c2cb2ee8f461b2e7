"""
Exercise 9 (hard): convert an Euler model to Midpoint(a), and explain the gap before fine-tuning.

convert.py turns an ordinary GPT-2 (revgpt dynamics "euler", h = 1) into a reversible one by keeping
every weight and changing only the dynamics (docs/walkthrough.md, section 5). The converted model is
close to the original, but not equal: that difference is the "pre-fine-tune gap", which the
distillation fine-tune then closes. Measure it, and find where it comes from.

1. `logits_kl(teacher_logits, student_logits)`: KL(teacher || student) of the next-token
   distributions, in nats, averaged over all (batch, position) pairs.
2. `to_midpoint(euler_model, a, h)`: a revgpt GPT with dynamics "midpoint", that a and h, and the
   Euler model's weights (everything else in its config unchanged).
3. `conversion_gap(euler_model, idx, a, h)`: logits_kl of the Euler model's logits (teacher) and
   the converted model's (student) on idx, in eval mode without gradients.
4. `layer2_difference(euler_model, idx)`: with a = 1, h = 1/2 (convert.py's default) the converted
   model equals the Euler model after one layer. Work out by hand what p_2(euler) - p_2(midpoint)
   is, and return it computed from that formula (a (B, T, C) tensor; p_0 = euler_model.embed(idx)).

The check runs these on the models of `make_euler_model` (given): it expects the gap to be exactly
zero at depth 1 (a = 1, h = 1/2), to grow with depth, and, with h = (1 + a)/2, to shrink as a -> 0.
Then it prints the price of small a: the reconstruction error of exercise 5.

Check: python exercises/check.py 9
"""
import dataclasses
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = next((p for p in Path(__file__).resolve().parents if (p / "revgpt.py").exists()), Path.cwd())
sys.path.insert(0, str(ROOT))  # so that `import revgpt` works when you run this file directly

from revgpt import GPT, GPTConfig  # noqa: E402

MAX_LAYER = 8


def make_euler_model(n_layer, seed=0):
    """GIVEN (do not change): a float64 Euler GPT that stands in for a trained one. Its blocks are
    the first n_layer of one 8-layer random network, with weights scaled up so that the blocks
    matter and the predictions are far from uniform, as in a trained model."""
    if not 1 <= n_layer <= MAX_LAYER:
        raise ValueError(f"n_layer={n_layer}: must be in 1..{MAX_LAYER}")
    args = dict(block_size=32, vocab_size=64, n_head=4, n_embd=32, dynamics="euler")
    torch.manual_seed(seed)
    state = GPT(GPTConfig(n_layer=MAX_LAYER, **args)).double().state_dict()
    for k, v in state.items():
        if k.endswith("c_proj.weight"):
            state[k] = v * 2 * (2 * MAX_LAYER) ** 0.5  # undo GPT-2's 1/sqrt(2 n_layer), times 2
        elif k in ("transformer.wte.weight", "transformer.wpe.weight", "lm_head.weight"):
            state[k] = v * 10
    keep = {k: v for k, v in state.items() if not k.startswith("transformer.h.") or int(k.split(".")[2]) < n_layer}
    model = GPT(GPTConfig(n_layer=n_layer, **args)).double()
    model.load_state_dict(keep)
    return model.eval()


def make_batch(seed=1):
    """GIVEN (do not change): a (4, 32) batch of token ids for make_euler_model's models."""
    return torch.randint(0, 64, (4, 32), generator=torch.Generator().manual_seed(seed))


def logits_kl(teacher_logits, student_logits):
    """Mean over (batch, position) of KL(softmax(teacher) || softmax(student)), in nats (a float)."""
    # SOLUTION: KL(p || q) = sum_v p_v (log p_v - log q_v), with log-softmax for stability.
    logp = F.log_softmax(teacher_logits.double(), dim=-1)
    logq = F.log_softmax(student_logits.double(), dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1).mean().item()


def to_midpoint(euler_model, a, h):
    """The Euler model's weights under Midpoint(a) with step h."""
    # SOLUTION: a GPT is its config plus its state_dict; only the dynamics fields change.
    args = dataclasses.asdict(euler_model.config)
    args.update(dynamics="midpoint", a=a, h=h, backward=None)  # backward: the default for midpoint
    model = GPT(GPTConfig(**args)).to(next(euler_model.parameters()).dtype)
    model.load_state_dict(euler_model.state_dict())
    return model.eval()


@torch.no_grad()
def conversion_gap(euler_model, idx, a, h):
    """logits_kl(Euler logits, converted logits) on idx."""
    # SOLUTION
    euler_model.eval()
    return logits_kl(euler_model(idx)[0], to_midpoint(euler_model, a, h)(idx)[0])


@torch.no_grad()
def layer2_difference(euler_model, idx):
    """p_2 under Euler minus p_2 under Midpoint(a=1, h=1/2), computed from your closed form."""
    # SOLUTION. Both start from p_0 (and midpoint also from p_{-1} = p_0). With a = 1, h = 1/2 the
    # midpoint step is p_{l+1} = p_{l-1} + f_l(p_l), so
    #     layer 1: p_1 = p_{-1} + f_0(p_0) = p_0 + f_0(p_0)    = Euler's p_1 exactly (gap 0 at depth 1)
    #     layer 2: p_2 = p_0 + f_1(p_1),   Euler: p_2 = p_1 + f_1(p_1) = p_0 + f_0(p_0) + f_1(p_1)
    # so p_2(euler) - p_2(midpoint) = f_0(p_0). In general the midpoint update skips over a state:
    # even states collect the forcing of odd layers and vice versa, so each state carries about half
    # of the updates the trained network expects, and the gap grows with depth. Choosing h = (1+a)/2
    # with |a| < 1 damps that even/odd split (the mode (-a)^l) and approaches Euler as a -> 0, at the
    # price of a backward that amplifies rounding by 1/|a| per layer (exercise 5). The fine-tune
    # teaches the blocks to work under the new dynamics instead.
    p0 = euler_model.embed(idx)
    return euler_model.transformer.h[0](p0)


if __name__ == "__main__":
    idx = make_batch()
    for L in (1, 2, 4, 8):
        print(f"depth {L}: gap (a=1, h=1/2) = {conversion_gap(make_euler_model(L), idx, 1.0, 0.5):.2e} nats")
