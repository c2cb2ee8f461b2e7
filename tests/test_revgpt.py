"""Tests of the core model (issue: reversible GPT core). Everything runs on the CPU in seconds."""
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from revgpt import GPT, GPTConfig, activation_bytes, reconstruction_error  # noqa: E402

REVERSIBLE = ["midpoint", "leapfrog", "hamiltonian"]


def tiny(**kw):
    base = dict(block_size=16, vocab_size=37, n_layer=2, n_head=2, n_embd=16, dynamics="midpoint")
    base.update(kw)
    return GPTConfig(**base)


def batch(cfg, B=3, T=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
    tgt = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
    return idx, tgt


def loss_and_grads(cfg, state, idx, tgt):
    torch.manual_seed(0)
    model = GPT(cfg).double()
    model.load_state_dict(state)
    _, loss = model(idx, tgt)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


# 1. Gradients are exact ------------------------------------------------------------------------
CASES = [(d, L, kw) for d in REVERSIBLE for L in (1, 2, 5) for kw in ({},)]
CASES += [("midpoint", 3, {"h": 0.3}), ("midpoint", 3, {"a": 0.7}), ("midpoint", 4, {"a": -1.0, "h": 0.4}),
          ("midpoint", 4, {"a_random": True, "a_seed": 3}), ("leapfrog", 3, {"h": 0.8}),
          ("hamiltonian", 3, {"h": 0.6})]


@pytest.mark.parametrize("dyn,L,kw", CASES)
def test_reversible_gradients_match_autograd_float64(dyn, L, kw):
    cfg_rev = tiny(dynamics=dyn, n_layer=L, backward="reversible", **kw)
    cfg_ag = tiny(dynamics=dyn, n_layer=L, backward="autograd", **kw)
    torch.manual_seed(1)
    state = GPT(cfg_rev).double().state_dict()
    # perturb LayerNorm weights and biases away from 1/0 so that every parameter matters
    for k, v in state.items():
        if v.dim() == 1:
            state[k] = v + 0.1 * torch.randn_like(v)
    idx, tgt = batch(cfg_rev)
    l_rev, g_rev = loss_and_grads(cfg_rev, state, idx, tgt)
    l_ag, g_ag = loss_and_grads(cfg_ag, state, idx, tgt)
    assert abs(l_rev - l_ag) <= 1e-12 * abs(l_ag)
    assert g_rev.keys() == g_ag.keys() and len(g_rev) == len(list(GPT(cfg_rev).parameters()))
    for name in g_ag:
        assert g_ag[name].abs().max() > 0, f"{name} has zero gradient: the test would be vacuous"
        assert rel(g_rev[name], g_ag[name]) <= 1e-9, name


def test_reversible_grad_of_input_via_autograd_grad():
    """torch.autograd.grad (not only .backward) sees the parameter gradients: the Function returns
    them instead of writing .grad as a side effect."""
    cfg = tiny(dynamics="leapfrog", n_layer=3)
    model = GPT(cfg).double()
    idx, tgt = batch(cfg)
    _, loss = model(idx, tgt)
    params = list(model.parameters())
    grads = torch.autograd.grad(loss, params)
    model_ag = GPT(tiny(dynamics="leapfrog", n_layer=3, backward="autograd")).double()
    model_ag.load_state_dict(model.state_dict())
    _, loss_ag = model_ag(idx, tgt)
    grads_ag = torch.autograd.grad(loss_ag, list(model_ag.parameters()))
    for g, ga in zip(grads, grads_ag):
        assert rel(g, ga) <= 1e-9


# 2. Memory is constant in depth -----------------------------------------------------------------
@pytest.mark.parametrize("dyn", REVERSIBLE)
def test_saved_bytes_constant_in_depth(dyn):
    rev, ag = [], []
    for L in (2, 8, 32):
        for mode, out in (("reversible", rev), ("autograd", ag)):
            torch.manual_seed(0)
            cfg = tiny(dynamics=dyn, n_layer=L, backward=mode, n_embd=32, block_size=32)
            idx, tgt = batch(cfg, B=2, T=32)
            out.append(activation_bytes(GPT(cfg), idx, tgt))
    assert rev[0] == rev[1] == rev[2], rev
    # autograd grows linearly: equal increments per added layer, and much more than reversible
    per_layer_1 = (ag[1] - ag[0]) / 6
    per_layer_2 = (ag[2] - ag[1]) / 24
    assert per_layer_1 > 0 and per_layer_1 == per_layer_2, ag
    assert ag[2] > 10 * rev[2]


def test_euler_saved_bytes_grow():
    sizes = []
    for L in (2, 8):
        cfg = tiny(dynamics="euler", n_layer=L)
        idx, tgt = batch(cfg)
        sizes.append(activation_bytes(GPT(cfg), idx, tgt))
    assert sizes[1] > sizes[0]


# 3. Reconstruction ------------------------------------------------------------------------------
def test_reconstruction_float32_depth12():
    rows = []
    for dyn in REVERSIBLE:
        row = [dyn]
        for L in (12, 48):
            torch.manual_seed(0)
            cfg = tiny(dynamics=dyn, n_layer=L, n_embd=64, n_head=4, block_size=64)
            model = GPT(cfg).eval()
            idx, _ = batch(cfg, B=2, T=64)
            e32 = reconstruction_error(model, idx)
            ebf = reconstruction_error(model, idx, autocast_dtype=torch.bfloat16)
            row += [e32, ebf]
            if L == 12:
                assert e32 <= 1e-4, (dyn, e32)
        rows.append(row)
    print("\n| dynamic | fp32, 12 | bf16 forcing, 12 | fp32, 48 | bf16 forcing, 48 |")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.1e} | {r[2]:.1e} | {r[3]:.1e} | {r[4]:.1e} |")


# 4. Causality -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dyn", ["euler"] + REVERSIBLE)
def test_causality(dyn):
    cfg = tiny(dynamics=dyn, n_layer=3)
    model = GPT(cfg).double().eval()
    idx, _ = batch(cfg, B=2, T=12)
    t = 7
    idx2 = idx.clone()
    idx2[:, t] = (idx2[:, t] + 1) % cfg.vocab_size
    l1, _ = model(idx)
    l2, _ = model(idx2)
    assert torch.equal(l1[:, :t], l2[:, :t])
    assert not torch.allclose(l1[:, t:], l2[:, t:])


# 5. Euler is GPT-2 ------------------------------------------------------------------------------
def reference_gpt2(model, idx):
    """A straightforward pre-LN GPT-2 forward, written independently of revgpt's code paths."""
    sd = {k: v for k, v in model.state_dict().items()}
    c = model.config
    B, T = idx.shape
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:T]
    hs = c.n_embd // c.n_head
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(c.n_layer):
        pre = f"transformer.h.{i}."
        ln = lambda z, n: F.layer_norm(z, (c.n_embd,), sd[pre + n + ".weight"], sd[pre + n + ".bias"], 1e-5)
        qkv = ln(x, "ln_1") @ sd[pre + "attn.c_attn.weight"].T + sd[pre + "attn.c_attn.bias"]
        q, k, v = [t.reshape(B, T, c.n_head, hs).transpose(1, 2) for t in qkv.split(c.n_embd, -1)]
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hs)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, c.n_embd)
        x = x + y @ sd[pre + "attn.c_proj.weight"].T + sd[pre + "attn.c_proj.bias"]
        hdn = ln(x, "ln_2") @ sd[pre + "mlp.c_fc.weight"].T + sd[pre + "mlp.c_fc.bias"]
        hdn = 0.5 * hdn * (1 + torch.tanh(math.sqrt(2 / math.pi) * (hdn + 0.044715 * hdn ** 3)))
        x = x + hdn @ sd[pre + "mlp.c_proj.weight"].T + sd[pre + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (c.n_embd,), sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"], 1e-5)
    return x @ sd["transformer.wte.weight"].T


def test_euler_is_gpt2():
    cfg = tiny(dynamics="euler", n_layer=3)
    torch.manual_seed(0)
    model = GPT(cfg).double().eval()
    idx, _ = batch(cfg)
    logits, _ = model(idx)
    ref = reference_gpt2(model, idx)
    assert torch.allclose(logits, ref, rtol=0, atol=1e-10)


def test_tied_weights_and_init():
    model = GPT(tiny(n_layer=4))
    assert model.lm_head.weight is model.transformer.wte.weight
    n_all = sum(p.numel() for p in model.parameters())
    assert model.get_num_params(non_embedding=False) == n_all
    assert model.get_num_params() == n_all - model.transformer.wpe.weight.numel()


def test_configure_optimizers_groups():
    model = GPT(tiny())
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_generate_shapes_and_crop():
    cfg = tiny()
    model = GPT(cfg).eval()
    idx = torch.zeros((2, 3), dtype=torch.long)
    out = model.generate(idx, 20, temperature=0.8, top_k=5)  # 23 > block_size 16: context is cropped
    assert out.shape == (2, 23) and torch.equal(out[:, :3], idx)
    assert int(out.max()) < cfg.vocab_size


def test_autocast_bf16_keeps_fp32_stream_and_grads_close():
    """Under CPU bf16 autocast the reversible backward replays autocast and matches autograd."""
    torch.manual_seed(0)
    cfg = tiny(dynamics="midpoint", n_layer=3)
    m_rev = GPT(cfg)
    m_ag = GPT(tiny(dynamics="midpoint", n_layer=3, backward="autograd"))
    m_ag.load_state_dict(m_rev.state_dict())
    idx, tgt = batch(cfg)
    out = []
    for m in (m_rev, m_ag):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            p = m.embed(idx)
            assert p.dtype == torch.float32
            _, loss = m(idx, tgt)
        loss.backward()
        out.append([p.grad for p in m.parameters()])
    for g_rev, g_ag in zip(*out):
        assert rel(g_rev, g_ag) < 0.05  # bf16 forcing: same math, rounding differs by recompute order


# 6. Bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,field", [
    (dict(n_embd=30, n_head=4), "n_embd"),
    (dict(dynamics="rk4"), "dynamics"),
    (dict(backward="checkpoint"), "backward"),
    (dict(dynamics="euler", backward="reversible"), "backward"),
    (dict(dropout=0.1), "dropout"),
    (dict(h=0.0), "h"),
    (dict(a=0.0), "a"),
    (dict(head_chunk=-1), "head_chunk"),
])
def test_bad_config(kw, field):
    with pytest.raises(ValueError, match=field):
        tiny(**kw)


def test_dropout_allowed_with_autograd():
    cfg = tiny(dropout=0.1, backward="autograd")
    assert cfg.dropout == 0.1


def test_idx_longer_than_block_size():
    model = GPT(tiny())
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros((1, 17), dtype=torch.long))


# 7. Chunked LM head ----------------------------------------------------------------------------
@pytest.mark.parametrize("dyn,chunk", [("euler", 4), ("midpoint", 7), ("hamiltonian", 64)])
def test_head_chunk_gives_the_same_loss_and_gradients(dyn, chunk):
    """head_chunk > 0 computes the same cross-entropy (ignored targets included) and gradients as the
    plain head, in float64, and returns no logits; its saved bytes hold no (rows, vocab) tensor."""
    plain = tiny(dynamics=dyn, n_layer=3)
    idx, tgt = batch(plain)
    tgt[0, :4] = -1  # ignore_index, as train.py's padding would use
    state = GPT(plain).double().state_dict()
    loss_p, grads_p = loss_and_grads(plain, state, idx, tgt)
    chunked = tiny(dynamics=dyn, n_layer=3, head_chunk=chunk)
    loss_c, grads_c = loss_and_grads(chunked, state, idx, tgt)
    assert abs(loss_c - loss_p) <= 1e-12 * abs(loss_p)
    for name, g in grads_p.items():
        assert rel(grads_c[name], g) < 1e-10, name
    model = GPT(chunked)
    logits, loss = model(idx, tgt)
    assert logits is None and loss.dim() == 0
    assert model(idx)[0].shape == (*idx.shape, chunked.vocab_size)  # no targets: full logits, as usual
    big = tiny(dynamics=dyn, n_layer=3, vocab_size=4096)  # the head's share must dominate to be visible
    idx_b, tgt_b = batch(big)
    m_plain, m_chunk = GPT(big), GPT(tiny(dynamics=dyn, n_layer=3, vocab_size=4096, head_chunk=chunk))
    m_chunk.load_state_dict(m_plain.state_dict())
    logits_bytes = idx_b.numel() * big.vocab_size * 4
    assert activation_bytes(m_plain, idx_b, tgt_b) - activation_bytes(m_chunk, idx_b, tgt_b) > 0.9 * logits_bytes
