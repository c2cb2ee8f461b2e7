"""
revgpt: a GPT-2 whose residual stream is a time-reversible ODE integrator.

Reference: Gal, Eliasof, Turek, Ascher, Treister, Haber, "Reversing Large Language Models for
Efficient Training and Fine-Tuning", arXiv 2512.02056 (2025). Equation numbers below are the paper's.

Depth is time. A pre-LN transformer layer is one forward-Euler step of the residual stream p,
forced by the block without its outer skip (eq. 2.5):

    f(p) = a + MLP(LN2(p + a)),   a = Attn(LN1(p))

| dynamics    | forward (layer l -> l+1)              | inverse                                  | eq.     |
|-------------|---------------------------------------|------------------------------------------|---------|
| euler       | p+ = p + h f(p)                       | none (needs f(p-), i.e. p- itself)       | 2.2     |
| midpoint    | p+ = a p- + (1-a) p + 2h f(p)         | p- = (p+ - (1-a) p - 2h f(p)) / a        | 2.4/3.6 |
| leapfrog    | p+ = 2p - p- + h^2 f(p)               | p- = 2p - p+ + h^2 f(p)                  | 2.6     |
| hamiltonian | q+ = q + h Attn(LN1 p)                | p- = p+ - h MLP(LN2 q+)                  | 2.8-2.9 |
|             | p+ = p + h MLP(LN2 q+)                | q- = q+ - h Attn(LN1 p-)                 |         |

(p-, p, p+ are the states at layers l-1, l, l+1.) Midpoint with a = 1 is plain midpoint (eq. 2.4);
other a give the paper's Midpoint(a) (eq. 3.6, which the transcription writes with h where we keep
2h, so that a = 1 is exactly eq. 2.4 and a = 0, h = 1/2 is exactly Euler). |a| != 1 divides by a on
the way back and amplifies rounding error by 1/|a| per layer.

Every reversible dynamic here is the same three-term recurrence on a pair of states (x, y):

    (x, y) -> (y, z),   z = alpha*x + beta*y + gamma*g(y),   inverse: x = (z - beta*y - gamma*g(y)) / alpha

  midpoint:    alpha = a,  beta = 1 - a, gamma = 2h, g = f           (one step per layer)
  leapfrog:    alpha = -1, beta = 2,     gamma = h^2, g = f          (one step per layer)
  hamiltonian: alpha = 1,  beta = 0,     gamma = h, g alternates Attn(LN1 .) and MLP(LN2 .):
               (q, p) -> (p, q+) -> (q+, p+), two half-steps per layer; h = 1 is the paper's a = b = 1.

Initial states [our choice, the paper is silent]: p_{-1} = p_0 = embedding (for hamiltonian
q_0 = p_0 = embedding). Read-out: the newest state (p_L; for hamiltonian the MLP stream p_L)
through the final LayerNorm and the weight-tied LM head.

Because the recurrence can be run backwards, ReversibleStack.backward recomputes every hidden state
from the final pair instead of storing it: activation memory is constant in depth.

Exact mode (exact=True, after BDIA, Zhang et al. 2024): in floating point, x = (z - beta*y - gamma*g(y))
/ alpha only approximately undoes z = alpha*x + beta*y + gamma*g(y), and the error grows with depth.
With exact=True the stream lives on the fixed-point grid 2^-exact_bits (stored in float64, where sums
of grid values below 2^(53 - exact_bits) are exact), every increment gamma*g(y) is rounded to that grid
before it is added, and alpha, beta are integers. Then each update and its inverse are exact additions,
and reconstruction is bit-identical at any depth, whatever precision g itself runs in, provided g is
recomputed bit-identically (same input bits, deterministic kernels). Gradients pass straight through
the rounding.

Chunked LM head (head_chunk=N): once the stack's activations are constant in depth, the (B*T, vocab)
logits are the largest thing left at GPT-2's vocabulary. ChunkedHeadLoss computes the loss N rows at a
time and recomputes each chunk's logits in backward: the same memory-for-compute trade as the stack.
"""

import math
import random
from dataclasses import dataclass
from typing import Callable, List, NamedTuple, Optional

import torch
import torch.nn as nn
from torch.nn import functional as F

DYNAMICS = ("euler", "midpoint", "leapfrog", "hamiltonian")
# step sizes: the best of experiments/scratch.py's sweep (README, Results); euler's 1 is GPT-2 itself
DEFAULT_H = {"euler": 1.0, "midpoint": 0.5, "leapfrog": 1.0, "hamiltonian": 0.5}


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for speed
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm, as GPT-2
    dynamics: str = "midpoint"  # one of DYNAMICS
    h: Optional[float] = None  # step size; None -> DEFAULT_H[dynamics]
    a: float = 1.0  # Midpoint(a) coefficient (eq. 3.6); 1.0 is plain midpoint (eq. 2.4)
    a_random: bool = False  # per-layer a_l = +-1 + U(-1/2, 1/2), drawn once from a_seed
    a_seed: int = 0
    backward: Optional[str] = None  # "reversible" | "autograd"; None -> reversible unless euler
    exact: bool = False  # fixed-point stream: bit-identical reconstruction (see the module docstring)
    exact_bits: int = 32  # fractional bits of that grid: resolution 2^-32, range |p| < 2^(51-32) ~ 5e5
    head_chunk: int = 0  # > 0: the training loss runs the LM head this many rows at a time (ChunkedHeadLoss)

    def __post_init__(self):
        # every check names the offending field, so a bad config fails loudly before any compute
        if self.dynamics not in DYNAMICS:
            raise ValueError(f"dynamics={self.dynamics!r}: must be one of {DYNAMICS}")
        if self.backward is None:
            self.backward = "autograd" if self.dynamics == "euler" else "reversible"
        if self.backward not in ("reversible", "autograd"):
            raise ValueError(f"backward={self.backward!r}: must be 'reversible' or 'autograd'")
        if self.dynamics == "euler" and self.backward == "reversible":
            raise ValueError("backward='reversible' with dynamics='euler': Euler (eq. 2.2) cannot be "
                             "inverted, so it has only backward='autograd'")
        if self.h is None:
            self.h = DEFAULT_H[self.dynamics]
        for field in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field}={getattr(self, field)}: must be >= 1")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout}: must be in [0, 1)")
        if self.dropout > 0 and self.backward == "reversible":
            raise ValueError(f"dropout={self.dropout} with backward='reversible': the recompute would "
                             "draw new dropout masks and silently give wrong gradients; use dropout=0.0")
        if self.h <= 0:
            raise ValueError(f"h={self.h}: the step size must be > 0")
        if self.head_chunk < 0:
            raise ValueError(f"head_chunk={self.head_chunk}: must be >= 0 (0 = the plain LM head)")
        if self.dynamics == "midpoint" and not self.a_random and self.a == 0:
            raise ValueError("a=0: Midpoint(a) divides by a on the way back (eq. 3.6), so a must be nonzero")
        if self.exact:
            if self.dynamics == "euler":
                raise ValueError("exact=True with dynamics='euler': Euler is not reversible, exactly or not")
            if self.dynamics == "midpoint" and (self.a_random or abs(self.a) != 1):
                raise ValueError(f"exact=True with midpoint a={'random' if self.a_random else self.a}: the "
                                 "inverse divides by a, which is exact on the grid only for |a| = 1")
            if not 8 <= self.exact_bits <= 48:
                raise ValueError(f"exact_bits={self.exact_bits}: must be in [8, 48]")

    def midpoint_a(self) -> List[float]:
        """The per-layer Midpoint(a) coefficients: fixed a, or random +-1 + U(-1/2, 1/2) per layer."""
        if not self.a_random:
            return [self.a] * self.n_layer
        rng = random.Random(self.a_seed)  # deterministic in the config, so checkpoints reproduce it
        return [rng.choice((-1.0, 1.0)) + rng.uniform(-0.5, 0.5) for _ in range(self.n_layer)]


# ----------------------------------------------------------------------------------------------
# The GPT-2 block, split into the pieces the dynamics need


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.dropout = config.n_head, config.dropout

    def forward(self, x):
        B, T, C = x.size()  # batch, time, channels (n_embd)
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """GPT-2 block without its outer skip connection: forward(p) is the forcing f(p) of eq. 2.5."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def attn_forcing(self, p):  # Attn(LN1 p): first half of f, and the q-update of eq. 2.8
        return self.attn(self.ln_1(p))

    def mlp_forcing(self, q):  # MLP(LN2 q): second half of f, and the p-update of eq. 2.9
        return self.mlp(self.ln_2(q))

    def forward(self, p):  # f(p) = a + MLP(LN2(p + a)), a = Attn(LN1 p)   (eq. 2.5)
        a = self.attn_forcing(p)
        return a + self.mlp_forcing(p + a)


# ----------------------------------------------------------------------------------------------
# The reversible stack: one recurrence, run forwards without a graph and backwards with recompute


class Step(NamedTuple):
    """One step z = alpha*x + beta*y + gamma*g(y) of the recurrence, and the parameters g uses."""
    g: Callable[[torch.Tensor], torch.Tensor]
    alpha: float
    beta: float
    gamma: float
    params: List[nn.Parameter]


class RoundToGrid(torch.autograd.Function):
    """v -> round(v * scale) / scale in float64; the gradient passes straight through."""

    @staticmethod
    def forward(ctx, v, scale):
        ctx.dtype = v.dtype
        # one float64 copy, rounded in place; scaling by a power of 2 is exact
        return v.to(torch.float64, copy=True).mul_(scale).round_().div_(scale)

    @staticmethod
    def backward(ctx, grad):
        return grad.to(ctx.dtype), None


class Grid:
    """Exact mode: the stream on the grid 2^-bits in float64. Sums of grid values stay exact while
    they are below 2^(53-bits); states are kept below limit = 2^(51-bits), so that z = alpha*x +
    beta*y + inc (|alpha| = 1, |beta| <= 2) can never round. Leaving the range raises, never wraps."""

    def __init__(self, bits, dtype):
        self.scale, self.limit, self.dtype = 2.0 ** bits, 2.0 ** (51 - bits), dtype

    def quantize(self, v):  # a float tensor -> float64 on the grid (straight-through gradient)
        return RoundToGrid.apply(v, self.scale)

    def decode(self, p):  # the grid state as the forcing's input, in the model's dtype
        return p.to(self.dtype)

    def check(self, z):
        lo, hi = torch.aminmax(z)  # one pass; NaN propagates, so this catches NaN and inf too
        if not (-self.limit < lo and hi < self.limit):
            raise OverflowError(f"exact mode: the residual stream left the grid's range |p| < {self.limit:g} "
                                f"(exact_bits={round(math.log2(self.scale))}); lower exact_bits or h")


def step_forward(s: Step, x, y, gy, grid=None):
    """z = alpha*x + beta*y + gamma*g(y), with g(y) already evaluated as gy."""
    z = s.alpha * x
    if s.beta != 0:
        z = torch.add(z, y, alpha=s.beta)
    if grid is None:  # z + gamma*gy in one pass; an fp32 stream + a bf16 forcing promotes to fp32
        return torch.add(z, gy, alpha=s.gamma)
    z = z + grid.quantize(s.gamma * gy)  # exact: the increment is put on the grid, so the sum is exact
    grid.check(z)
    return z


def step_inverse(s: Step, y, z, gy, grid=None):
    """x = (z - beta*y - gamma*g(y)) / alpha: recover the older state from the newer pair."""
    x = torch.add(z, gy, alpha=-s.gamma) if grid is None else z - grid.quantize(s.gamma * gy)
    if s.beta != 0:
        x = torch.add(x, y, alpha=-s.beta)
    return x / s.alpha if s.alpha != 1 else x


def integrate(steps: List[Step], x, y, grid=None):
    """Run the recurrence forwards from the pair (x, y); returns the final pair."""
    for s in steps:
        x, y = y, step_forward(s, x, y, s.g(y if grid is None else grid.decode(y)), grid)
    return x, y


def integrate_back(steps: List[Step], x, y, grid=None):
    """Run the recurrence backwards from the final pair; returns the initial pair (reconstructed)."""
    for s in reversed(steps):
        x, y = step_inverse(s, x, y, s.g(x if grid is None else grid.decode(x)), grid), x
    return x, y


def bits_checksum(t):
    """An order-independent checksum of a float64 tensor's exact bits (int64 sum, wrapping)."""
    return t.view(torch.int64).sum()


class ReversibleStack(torch.autograd.Function):
    """Forward: integrate without building a graph, keep only the final pair of states.
    Backward: walk the steps in reverse; per step evaluate g ONCE with grad enabled and use that one
    value both to reconstruct the older state and to back-propagate through the step."""

    @staticmethod
    def forward(ctx, x, y, steps, grid, *params):
        # autograd.Function.forward runs under no_grad: nothing per layer is kept for backward
        if grid is not None:  # exact mode: start on the grid, and remember the start's exact bits
            x, y = grid.quantize(x), grid.quantize(y)
            ctx.checksum = (bits_checksum(x), bits_checksum(y))
        x, y = integrate(steps, x, y, grid)
        ctx.save_for_backward(x, y)  # the ONLY saved activations: one pair, whatever the depth
        ctx.steps, ctx.grid, ctx.params = steps, grid, params
        dev = x.device.type  # the recompute must replay the forward's autocast exactly
        ctx.amp = (dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
        return y if grid is None else grid.decode(y)

    @staticmethod
    def backward(ctx, grad_y):
        x, y = ctx.saved_tensors  # final pair (s_{n-1}, s_n)
        gy = grad_y.to(x.dtype)  # cotangents live in the stream's dtype (float64 in exact mode)
        gx = torch.zeros_like(gy)  # x is not an output: its cotangent starts at zero
        grads = {}  # id(param) -> gradient
        grid, (dev, amp_on, amp_dtype) = ctx.grid, ctx.amp
        for s in reversed(ctx.steps):
            # pair (x, y) = (s_k, s_{k+1}) with s_{k+1} = alpha*s_{k-1} + beta*s_k + gamma*g(s_k)
            xd = (x if grid is None else grid.decode(x)).detach().requires_grad_(True)
            with torch.enable_grad(), torch.autocast(dev, dtype=amp_dtype, enabled=amp_on):
                gxd = s.g(xd)  # RECOMPUTE: the one evaluation of this step's forcing, with a graph
            with torch.no_grad():
                x_prev = step_inverse(s, x, y, gxd, grid)  # reconstruct s_{k-1} from the same g(s_k)
            trainable = [p for p in s.params if p.requires_grad]
            # vector-Jacobian product of gamma*g at s_k, for the state and the step's parameters;
            # autograd.grad frees this step's graph as soon as it returns
            go = s.gamma * gy.to(gxd.dtype) if grid is not None else s.gamma * gy  # rounds as autograd does
            vjp = torch.autograd.grad(gxd, [xd] + trainable, grad_outputs=go)
            for p, gp in zip(trainable, vjp[1:]):
                grads[id(p)] = grads[id(p)] + gp if id(p) in grads else gp
            # chain rule through z = alpha*x + beta*y + gamma*g(y), onto the older pair (s_{k-1}, s_k)
            gx, gy = s.alpha * gy, gx + vjp[0] + (s.beta * gy if s.beta != 0 else 0)
            x, y = x_prev, x  # the newer state y is dropped here: memory stays one pair
            del xd, gxd, vjp
        if grid is not None and not all(map(torch.equal, (bits_checksum(x), bits_checksum(y)), ctx.checksum)):
            raise RuntimeError("exact mode: the recomputed forcing was not bit-identical to the forward's, "
                               "so the reconstruction is not exact (nondeterministic kernels?)")
        # both initial states were passed in, so both get their cotangent (straight through the grid)
        gx, gy = gx.to(grad_y.dtype), gy.to(grad_y.dtype)
        return (gx, gy, None, None) + tuple(grads.get(id(p)) for p in ctx.params)


# ----------------------------------------------------------------------------------------------
# The model


class ChunkedHeadLoss(torch.autograd.Function):
    """loss = mean cross-entropy of logits x @ W^T, `chunk` rows at a time, so the (N, vocab) logits
    and their softmax never exist in full. Saves x and one logsumexp per row; backward recomputes
    each chunk's logits (one extra head matmul: the price of the memory)."""

    @staticmethod
    def forward(ctx, x, weight, targets, chunk):  # x (N, C), weight (V, C), targets (N,)
        acc = torch.promote_types(x.dtype, torch.float32)  # softmax in >= float32, as GPT.forward
        valid = targets != -1  # ignore_index=-1, as GPT.forward
        n_valid = valid.sum().clamp_min(1)
        lse = torch.empty(x.size(0), dtype=acc, device=x.device)  # (N,)
        total = torch.zeros((), dtype=acc, device=x.device)
        for i in range(0, x.size(0), chunk):
            logits = (x[i:i + chunk] @ weight.t()).to(acc)  # (n, V): the only logits alive
            lse[i:i + chunk] = torch.logsumexp(logits, dim=-1)
            t = targets[i:i + chunk]
            picked = logits.gather(1, t.clamp_min(0)[:, None])[:, 0]  # (n,) logit of the target
            total += ((lse[i:i + chunk] - picked) * valid[i:i + chunk]).sum()
        ctx.save_for_backward(x, weight, targets, lse)
        ctx.chunk, ctx.n_valid = chunk, n_valid
        dev = x.device.type  # replay the forward's autocast in the recompute, as ReversibleStack does
        ctx.amp = (dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
        return total / n_valid

    @staticmethod
    def backward(ctx, grad):
        x, weight, targets, lse = ctx.saved_tensors
        dev, amp_on, amp_dtype = ctx.amp
        gx, gw = torch.empty_like(x), torch.zeros_like(weight)
        scale = grad / ctx.n_valid
        for i in range(0, x.size(0), ctx.chunk):
            xc, t = x[i:i + ctx.chunk], targets[i:i + ctx.chunk]
            with torch.autocast(dev, dtype=amp_dtype, enabled=amp_on):
                logits = (xc @ weight.t()).to(lse.dtype)  # RECOMPUTE this chunk's logits
            g = torch.exp(logits - lse[i:i + ctx.chunk, None])  # softmax (n, V)
            g[torch.arange(len(t), device=t.device), t.clamp_min(0)] -= 1.0  # d loss / d logits
            g *= (t != -1)[:, None] * scale  # ignored rows get no gradient
            with torch.autocast(dev, dtype=amp_dtype, enabled=amp_on):
                gx[i:i + ctx.chunk] = (g.to(weight.dtype) @ weight).to(gx.dtype)  # (n, C)
                gw += (g.t().to(xc.dtype) @ xc).to(gw.dtype)  # (V, C)
        return gx, gw, None, None


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, as GPT-2
        # GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding=True):
        """Parameter count; the position embedding is left out by default (the token embedding is
        tied to the LM head, so it counts as head weights)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def steps(self) -> List[Step]:
        """The stack as a list of recurrence steps (see the module docstring for the coefficients)."""
        c, blocks = self.config, self.transformer.h
        if c.dynamics == "midpoint":  # eq. 2.4 / 3.6
            return [Step(b, a, 1 - a, 2 * c.h, list(b.parameters())) for b, a in zip(blocks, c.midpoint_a())]
        if c.dynamics == "leapfrog":  # eq. 2.6
            return [Step(b, -1, 2, c.h ** 2, list(b.parameters())) for b in blocks]
        if c.dynamics == "hamiltonian":  # eqs. 2.8-2.9: q-update by attention, then p-update by MLP
            steps = []
            for b in blocks:
                steps.append(Step(b.attn_forcing, 1, 0, c.h, [*b.ln_1.parameters(), *b.attn.parameters()]))
                steps.append(Step(b.mlp_forcing, 1, 0, c.h, [*b.ln_2.parameters(), *b.mlp.parameters()]))
            return steps
        raise ValueError(f"dynamics={c.dynamics!r} has no reversible steps")

    def grid(self):
        """The fixed-point grid of exact mode, or None for a floating-point stream."""
        c = self.config
        return Grid(c.exact_bits, self.transformer.wte.weight.dtype) if c.exact else None

    def embed(self, idx):
        B, T = idx.size()
        if T > self.config.block_size:
            raise ValueError(f"idx has length T={T} > block_size={self.config.block_size}")
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)  # (T,)
        return self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)

    def forward(self, idx, targets=None):
        p = self.embed(idx)  # (B, T, C): p_0, kept in the parameters' dtype (fp32) even under autocast
        c = self.config
        if c.dynamics == "euler":
            for block in self.transformer.h:  # p+ = p + h f(p)   (eq. 2.2), plain GPT-2 when h = 1
                p = p + block(p) if c.h == 1.0 else p + c.h * block(p)
        elif c.backward == "reversible" and torch.is_grad_enabled():
            # p_{-1} = p_0 = embedding; the Function stores no per-layer state
            p = ReversibleStack.apply(p, p, self.steps(), self.grid(), *self.transformer.h.parameters())
        else:
            # the same steps under plain autograd (stores every layer: the test oracle and the
            # ablation), or under no_grad for inference
            grid = self.grid()
            p0 = p if grid is None else grid.quantize(p)
            p = integrate(self.steps(), p0, p0, grid)[1]
            p = p if grid is None else grid.decode(p)
        x = self.transformer.ln_f(p)  # (B, T, C)
        if targets is not None and c.head_chunk:
            # the (B*T, vocab) logits are never materialised: at GPT-2's vocabulary they would be the
            # largest activation left once the stack's memory is constant. No logits are returned.
            return None, ChunkedHeadLoss.apply(x.view(-1, x.size(-1)), self.lm_head.weight, targets.view(-1),
                                               c.head_chunk)
        logits = self.lm_head(x)  # (B, T, vocab_size)
        loss = None
        if targets is not None:
            acc = torch.promote_types(logits.dtype, torch.float32)  # softmax in >= float32 (bf16 logits)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).to(acc), targets.view(-1), ignore_index=-1)
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW; matrices (dim >= 2: Linear weights, embeddings) decay, biases and LayerNorms do not."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        fused = device_type == "cuda"  # the fused CUDA kernel is faster; CPU uses the default
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Sample max_new_tokens tokens after idx (B, T); the context is cropped to block_size."""
        for _ in range(max_new_tokens):
            idx_cond = idx if idx.size(1) <= self.config.block_size else idx[:, -self.config.block_size:]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :] / temperature  # (B, vocab_size)
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx


# ----------------------------------------------------------------------------------------------
# Measuring helpers used by the tests, bench.py and the README


def activation_bytes(model, idx, targets=None):
    """Bytes of distinct tensor storage that autograd saves for backward during one forward,
    parameters excluded: the activation memory a training step holds between forward and backward."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in param_ptrs:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _, loss = model(idx, targets)
    del loss  # drop the graph
    return sum(seen.values())


@torch.no_grad()
def reconstruction_error(model, idx, autocast_dtype=None):
    """Run the reversible stack forwards from the embedding, then backwards all the way, and return
    the relative error max|p_rec - p_0| / max|p_0| of the reconstructed initial states.
    autocast_dtype (e.g. torch.bfloat16) runs the forcing under autocast; the stream keeps the
    model's dtype."""
    p0, steps, grid = model.embed(idx), model.steps(), model.grid()
    p0 = p0 if grid is None else grid.quantize(p0)  # exact mode starts on the grid
    dev = p0.device.type
    with torch.autocast(dev, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        x, y = integrate(steps, p0, p0, grid)
        x0, y0 = integrate_back(steps, x, y, grid)
    err = torch.maximum((x0 - p0).abs().max(), (y0 - p0).abs().max())
    return (err / p0.abs().max()).item()
