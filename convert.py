"""
convert.py: bring GPT-2 checkpoints into revgpt, take revgpt models back out to Hugging Face, and turn a
pretrained (Euler) GPT into a reversible one with a light KL-distillation fine-tune.

Reference: Gal et al., "Reversing Large Language Models for Efficient Training and Fine-Tuning",
arXiv 2512.02056: existing LLMs are converted to reversible ones "through fine-tuning", about two
epochs on auxiliary data, distilling to the original model's next-token distribution.

Four parts:
1. load_model(path_or_name) reads a local Hugging Face GPT-2 directory, a nanoGPT ckpt.pt, or a revgpt
   checkpoint into a revgpt GPT (dynamics="euler" is plain GPT-2), checking every key and shape.
2. export_hf(model, out_dir) writes a revgpt euler model as a Hugging Face GPT-2 directory.
3. convert(model, dynamics) re-reads the same pretrained blocks as a reversible integrator (the mapping,
   its equations and the measurements that chose it are in section 3 below).
4. The command line converts, then fine-tunes through train.py (KL to the original, reversible backward)
   and prints held-out perplexity of the original, the converted model before, and after fine-tuning:

    python convert.py --init_from=out/ckpt.pt --dynamics=midpoint --out_dir=out-convert-midpoint
    python convert.py --init_from=path/to/hf_gpt2_dir --dynamics=leapfrog --dataset=milton
    python convert.py --out_dir=out-convert-midpoint --resume=True           # continue an interrupted fine-tune
    python convert.py --export=out/ckpt.pt --export_dir=hf-shakespeare-char   # revgpt euler -> HF
    torchrun --standalone --nproc_per_node=2 convert.py --init_from=...       # DDP, as train.py

   The experiment that chose the mapping and measures the fine-tune: experiments/convert_experiment.py.

   Any other --key=value is passed on to train.py (batch_size, learning_rate, device, compile, ...).
"""

import dataclasses
import json
import math
import os
import sys
import warnings
from pathlib import Path

import torch

import train  # the fine-tune, data preparation and evaluation protocol are train.py's
from revgpt import GPT, GPTConfig

# ----------------------------------------------------------------------------------------------
# 1. Loading


class ConvertError(ValueError):
    """Bad input to the loader or converter; the message names the file, key or value."""


GPT2_SIZES = {  # the four OpenAI GPT-2 checkpoints on the Hugging Face hub (for --init_from=<name>)
    "gpt2": "openai-community/gpt2",  # 124M: 12 layers, 12 heads, 768 wide
    "gpt2-medium": "openai-community/gpt2-medium",  # 350M: 24, 16, 1024
    "gpt2-large": "openai-community/gpt2-large",  # 774M: 36, 20, 1280
    "gpt2-xl": "openai-community/gpt2-xl",  # 1558M: 48, 25, 1600
}
# HF's GPT-2 stores these four as Conv1D, whose weight is (in, out): the transpose of nn.Linear's (out, in)
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# per-layer buffers HF keeps in some files (the causal mask and its fill value); not weights, skipped
HF_BUFFERS = (".attn.bias", ".attn.masked_bias")
# config.json fields that change the computation, and the value our GPT-2 block implements
HF_REQUIRED = {
    "layer_norm_epsilon": 1e-5,  # revgpt's nn.LayerNorm default
    "scale_attn_weights": True,  # softmax(q k^T / sqrt(head_size))
    "scale_attn_by_inverse_layer_idx": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,  # lm_head = wte
}
HF_GELU = ("gelu_new", "gelu_pytorch_tanh")  # both are the tanh approximation revgpt uses


def load_model(path_or_name, device="cpu", **overrides):
    """Load a model into revgpt. Returns (model in eval mode, tokenizer name or None when unknown).

    path_or_name: a Hugging Face GPT-2 directory (config.json + model.safetensors / pytorch_model.bin),
    a nanoGPT ckpt.pt, a revgpt checkpoint, or one of gpt2, gpt2-medium, gpt2-large, gpt2-xl (downloaded
    with huggingface_hub when it is installed and the hub is reachable).
    overrides: GPTConfig fields. dynamics=<reversible> converts a Euler model with the mapping of
    convert() (h and a default to the measured choice); block_size=<smaller> crops the position table;
    dropout and backward as in GPTConfig.
    """
    path = Path(path_or_name)
    if not path.exists() and str(path_or_name) in GPT2_SIZES:
        path = download_gpt2(str(path_or_name))
    if path.is_dir():
        model, tokenizer = load_hf(path)
    elif path.is_file():
        model, tokenizer = load_checkpoint(path)
    else:
        raise FileNotFoundError(f"{path_or_name}: no such file or directory (expected a Hugging Face GPT-2 "
                                f"directory, a nanoGPT/revgpt checkpoint file, or one of {sorted(GPT2_SIZES)})")
    model = apply_overrides(model, overrides, source=str(path_or_name))
    return model.to(device).eval(), tokenizer


def download_gpt2(name):
    """Fetch an OpenAI GPT-2 checkpoint through huggingface_hub (cache first); fail fast when offline."""
    hint = (f"download it where the hub is reachable (`hf download {GPT2_SIZES[name]} "
            f"config.json model.safetensors --local-dir {name}`) and pass --init_from=<that directory>")
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")  # seconds (read when huggingface_hub is imported):
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")  # an unreachable hub fails at once
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ConvertError(f"init_from={name}: huggingface_hub is not installed; {hint}") from None
    files = ["config.json", "model.safetensors"]
    try:  # a copy already in the local HF cache needs no network
        return Path(snapshot_download(GPT2_SIZES[name], allow_patterns=files, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ConvertError(f"init_from={name}: HF_HUB_OFFLINE is set and it is not in the cache; {hint}")
    try:
        return Path(snapshot_download(GPT2_SIZES[name], allow_patterns=files))
    except Exception as e:
        raise ConvertError(f"init_from={name}: cannot download from the Hugging Face hub "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); {hint}") from None


def read_hf_config(d: Path) -> dict:
    """Read and check a GPT-2 config.json; a foreign architecture fails naming the field."""
    f = d / "config.json"
    if not f.is_file():
        raise FileNotFoundError(f"{f}: missing; a Hugging Face model directory needs config.json")
    try:
        hf = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ConvertError(f"{f}: not valid JSON ({e})") from None
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ConvertError(f"{f}: model_type={hf['model_type']!r}; only GPT-2 ('gpt2') can be loaded")
    for arch in hf.get("architectures") or []:
        if arch not in ("GPT2LMHeadModel", "GPT2Model"):
            raise ConvertError(f"{f}: architectures={hf['architectures']!r}; only GPT2LMHeadModel/GPT2Model")
    act = hf.get("activation_function", "gelu_new")
    if act not in HF_GELU:
        raise ConvertError(f"{f}: activation_function={act!r}; revgpt's GPT-2 block uses the tanh GELU "
                           f"({' or '.join(HF_GELU)})")
    for key, want in HF_REQUIRED.items():
        got = hf.get(key, want)
        if got != want:
            raise ConvertError(f"{f}: {key}={got!r}; revgpt's GPT-2 block needs {want!r}")
    for key in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size"):
        if not isinstance(hf.get(key), int):
            raise ConvertError(f"{f}: {key}={hf.get(key)!r}; expected an integer")
    if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
        raise ConvertError(f"{f}: n_inner={hf['n_inner']}; revgpt's MLP is 4*n_embd={4 * hf['n_embd']} wide")
    return hf


def read_hf_weights(d: Path) -> dict:
    """The raw tensors of an HF directory: model.safetensors (single or sharded) or pytorch_model.bin."""
    from safetensors.torch import load_file  # a runtime requirement (requirements.txt)

    def read_st(f):
        try:
            return load_file(str(f))
        except Exception as e:  # a truncated or corrupt file fails inside the header/offset checks
            raise ConvertError(f"{f}: cannot read safetensors ({type(e).__name__}: {e}); the file is "
                               "truncated or corrupt, download it again") from None

    if (d / "model.safetensors").is_file():
        return read_st(d / "model.safetensors")
    if (d / "model.safetensors.index.json").is_file():  # sharded: weight_map names the shard of every key
        index = json.loads((d / "model.safetensors.index.json").read_text())
        sd = {}
        for shard in sorted(set(index["weight_map"].values())):
            sd.update(read_st(d / shard))
        return sd
    if (d / "pytorch_model.bin").is_file():
        f = d / "pytorch_model.bin"
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ConvertError(f"{f}: cannot read ({type(e).__name__}: {e}); truncated or corrupt?") from None
    raise FileNotFoundError(f"{d}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def load_hf(d: Path):
    """A Hugging Face GPT-2 directory -> (revgpt euler GPT, tokenizer name)."""
    hf = read_hf_config(d)
    cfg = GPTConfig(block_size=hf["n_positions"], vocab_size=hf["vocab_size"], n_layer=hf["n_layer"],
                    n_head=hf["n_head"], n_embd=hf["n_embd"], dropout=0.0, bias=True, dynamics="euler")
    model = GPT(cfg)
    sd = hf_state_to_revgpt(read_hf_weights(d), model.state_dict(), src=str(d))
    model.load_state_dict(sd)
    # tokenizer: ours when we exported it, else GPT-2's BPE for GPT-2's vocabulary, else unknown (None)
    tokenizer = hf.get("revgpt_tokenizer") or ("gpt2" if hf["vocab_size"] in (50257, 50304) else None)
    return model, tokenizer


def hf_state_to_revgpt(sd: dict, target: dict, src: str) -> dict:
    """Map HF GPT-2 tensor names and layouts onto revgpt's state dict `target`, asserting every key
    and shape. HF names are revgpt's with or without the leading 'transformer.'; Conv1D weights are
    transposed; lm_head is tied to wte (checked, then dropped); attention mask buffers are skipped."""
    out = {}
    for k, v in sd.items():
        if k.endswith(HF_BUFFERS):
            continue  # causal-mask buffers, not weights
        if k == "lm_head.weight":
            wte = sd.get("transformer.wte.weight", sd.get("wte.weight"))
            if wte is not None and not torch.equal(v, wte):
                raise ConvertError(f"{src}: lm_head.weight differs from wte.weight; revgpt ties them")
            continue
        name = k if k.startswith("transformer.") else "transformer." + k
        if name in out:
            raise ConvertError(f"{src}: key {k!r} appears twice (with and without 'transformer.')")
        out[name] = v
    want = [k for k in target if k != "lm_head.weight"]  # lm_head is the same tensor as wte
    missing = [k for k in want if k not in out]
    unexpected = [k for k in out if k not in target]
    if missing:
        raise ConvertError(f"{src}: missing key {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if unexpected:
        raise ConvertError(f"{src}: unexpected key {unexpected[0]!r}" + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    for k in want:
        v = out[k]
        if k.endswith(CONV1D):
            expect = tuple(target[k].shape[::-1])  # Conv1D (in, out)
            if tuple(v.shape) != expect:
                raise ConvertError(f"{src}: key {k!r} has shape {tuple(v.shape)}, expected {expect} (Conv1D)")
            v = v.t()
        elif tuple(v.shape) != tuple(target[k].shape):
            raise ConvertError(f"{src}: key {k!r} has shape {tuple(v.shape)}, expected {tuple(target[k].shape)}")
        out[k] = v.to(target[k].dtype).contiguous()
    out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def load_checkpoint(f: Path):
    """A revgpt checkpoint ({"format": "revgpt-ckpt-v1", ...}) or a nanoGPT ckpt.pt -> (GPT, tokenizer)."""
    try:  # weights_only: tensors and plain Python values, which is all revgpt and nanoGPT checkpoints hold
        ckpt = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConvertError(f"{f}: cannot read checkpoint ({type(e).__name__}: {str(e).strip()[:200]}); "
                           "is it truncated, or not a torch.save file?") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise ConvertError(f"{f}: not a revgpt or nanoGPT checkpoint (needs the keys 'model' and 'model_args')")
    args = dict(ckpt["model_args"])
    sd = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in ckpt["model"].items()}
    if ckpt.get("format") == "revgpt-ckpt-v1":
        fields = {fl.name for fl in dataclasses.fields(GPTConfig)}
        bad = sorted(set(args) - fields)
        if bad:
            raise ConvertError(f"{f}: model_args has unknown field {bad[0]!r}")
        tokenizer = ckpt.get("tokenizer")
    else:  # nanoGPT: model_args = n_layer, n_head, n_embd, block_size, bias, vocab_size, dropout
        for key in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
            if key not in args:
                raise ConvertError(f"{f}: model_args lacks {key!r} (not a nanoGPT checkpoint?)")
        args = {k: args[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias", "dropout")
                if k in args}
        args["dynamics"] = "euler"
        sd = {k: v for k, v in sd.items() if not k.endswith(".attn.bias")}  # nanoGPT's causal-mask buffer
        warnings.warn(f"{f}: nanoGPT's MLP uses the exact (erf) GELU, revgpt the tanh approximation of "
                      "GPT-2; the two differ by at most 4.8e-4 per activation, so the logits differ slightly")
        tokenizer = "gpt2" if args["vocab_size"] in (50257, 50304) else None
    try:
        cfg = GPTConfig(**args)
    except (TypeError, ValueError) as e:
        raise ConvertError(f"{f}: model_args: {e}") from None
    model = GPT(cfg)
    target = model.state_dict()
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    if missing or unexpected:
        what = f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}"
        raise ConvertError(f"{f}: {what}")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(target[k].shape):
            raise ConvertError(f"{f}: key {k!r} has shape {tuple(v.shape)}, expected {tuple(target[k].shape)}")
    model.load_state_dict(sd)
    return model, tokenizer


def apply_overrides(model, overrides, source=""):
    """GPTConfig overrides on a loaded model: dynamics (conversion), block_size (crop), dropout, backward."""
    if not overrides:
        return model
    fields = {fl.name for fl in dataclasses.fields(GPTConfig)}
    for k in overrides:
        if k not in fields:
            raise ConvertError(f"override {k}={overrides[k]!r}: not a GPTConfig field ({sorted(fields)})")
    for k in ("vocab_size", "n_layer", "n_head", "n_embd", "bias"):
        if k in overrides and overrides[k] != getattr(model.config, k):
            raise ConvertError(f"override {k}={overrides[k]!r}: {source} has {k}={getattr(model.config, k)!r}; "
                               "it is fixed by the weights")
    overrides = dict(overrides)
    dyn = overrides.pop("dynamics", model.config.dynamics)
    if dyn != model.config.dynamics:
        model = convert(model, dyn, **{k: overrides.pop(k) for k in ("h", "a", "a_random", "a_seed", "backward")
                                       if k in overrides})
    block_size = overrides.pop("block_size", model.config.block_size)
    if block_size > model.config.block_size:
        raise ConvertError(f"override block_size={block_size}: larger than {source}'s {model.config.block_size}")
    args = dataclasses.asdict(model.config)
    args.update(overrides, block_size=block_size)
    try:
        new = GPT(GPTConfig(**args))
    except ValueError as e:
        raise ConvertError(f"override: {e}") from None
    sd = model.state_dict()
    sd["transformer.wpe.weight"] = sd["transformer.wpe.weight"][:block_size]  # crop the position table
    w = next(model.parameters())
    new.to(device=w.device, dtype=w.dtype).load_state_dict(sd)
    return new


# ----------------------------------------------------------------------------------------------
# 2. Exporting a revgpt euler model to the Hugging Face GPT-2 format


def export_hf(model: GPT, out_dir, tokenizer=None, dataset=None):
    """Write config.json + model.safetensors that transformers.GPT2LMHeadModel.from_pretrained loads.

    Only dynamics="euler" with h=1 is a GPT-2; any other model is refused. A model without biases
    (bias=False) is written with zero biases, which computes the same function."""
    from safetensors.torch import save_file

    c = model.config
    if c.dynamics != "euler":
        raise ConvertError(f"export: dynamics={c.dynamics!r}; only 'euler' models are GPT-2s (a reversible "
                           "model has no Hugging Face architecture to load it)")
    if c.h != 1.0:
        raise ConvertError(f"export: h={c.h}; GPT-2 is Euler with h=1 (h scales the whole block, which GPT-2 "
                           "cannot express)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight":
            continue  # tied to wte; transformers re-ties it on load
        v = v.detach().to("cpu", torch.float32)
        tensors[k] = (v.t() if k.endswith(CONV1D) else v).contiguous()  # nn.Linear (out, in) -> Conv1D
    if not c.bias:  # GPT-2 always has biases: zeros are the same function
        for i in range(c.n_layer):
            for name, n in (("ln_1", c.n_embd), ("ln_2", c.n_embd), ("attn.c_attn", 3 * c.n_embd),
                            ("attn.c_proj", c.n_embd), ("mlp.c_fc", 4 * c.n_embd), ("mlp.c_proj", c.n_embd)):
                tensors[f"transformer.h.{i}.{name}.bias"] = torch.zeros(n)
        tensors["transformer.ln_f.bias"] = torch.zeros(c.n_embd)
    eot = {"byte": 256, "gpt2": 50256}.get(tokenizer)
    eot = eot if eot is not None and eot < c.vocab_size else None  # unknown tokenizer: no special ids
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": c.vocab_size, "n_positions": c.block_size, "n_ctx": c.block_size,
        "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head, "n_inner": None,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
        "initializer_range": 0.02, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "tie_word_embeddings": True, "use_cache": True,
        "bos_token_id": eot, "eos_token_id": eot, "torch_dtype": "float32",
        "revgpt_tokenizer": tokenizer,  # ours: load_model reads it back (GPT-2's own configs lack it)
        "revgpt_dataset": dataset,  # the corpus it was trained on (its val split is convert.py's default eval)
    }
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


# ----------------------------------------------------------------------------------------------
# 3. Converting to a reversible dynamic: the mapping
#
# A trained pre-LN GPT is forward Euler (eq. 2.2). With e_l its residual stream after l blocks and
# f_l block l without its skip (eq. 2.5):
#
#     e_{l+1} = e_l + f_l(e_l),   e_0 = embedding,   logits = lm_head(ln_f(e_L))
#
# The conversion keeps EVERY weight where it is: block l becomes layer l's forcing, with the same
# embedding, ln_f and tied head, and revgpt's initial states p_{-1} = p_0 = embedding (q_0 = p_0 for
# hamiltonian). What is left to choose is the step size h (and a for Midpoint(a)). We scored the
# candidates on a trained 6-layer model (experiments/convert_experiment.py; the table is in
# results/convert/table.md and the README) by KL(original || converted) on held-out text, and keep
# the closest one whose float32 reversible-backward gradients match autograd within 1e-3.
# The chosen mappings (L = number of layers):
#
#   midpoint: Midpoint(a), eq. 3.6, with a = -2^(-6/L) (= -1/2 at L = 6) and h = 1/2:
#       p_{l+1} = a p_{l-1} + (1 - a) p_l + f_l(p_l)                          (2h = 1)
#     The recurrence has two modes, 1 and -a. Plain midpoint (a = 1) makes the second one the
#     undamped even/odd oscillation: p_L = e + the f_l of every OTHER layer, and half the blocks never
#     reach the read-out directly (the worst candidate we measured). With a < 0 the second mode -a is
#     a smooth memory of the previous state that decays, and a -> 0 is Euler exactly. The inverse
#     divides by a, which multiplies rounding errors by up to 1/|a| per layer; a = -2^(-6/L) caps that
#     at (1/|a|)^L = 64 whatever the depth (a deeper model gets an a closer to -1).
#   leapfrog (eq. 2.6) with h = 1:
#       p_{l+1} = 2 p_l - p_{l-1} + f_l(p_l)                                 (Midpoint(a = -1), 2h = 1)
#     The first step is exactly Euler's, p_1 = e + f_0(e); after it the velocity v_l = p_l - p_{l-1}
#     carries every earlier increment, v_{l+1} = v_l + f_l, so p_L = e + sum_l (L - l) f_l: early blocks
#     count more than in Euler, yet h = 1 measured closest of h^2 in [1/6, 2].
#   hamiltonian (eqs. 2.8-2.9) with h = 3/4:
#       q_{l+1} = q_l + h Attn_l(LN1 p_l),   p_{l+1} = p_l + h MLP_l(LN2 q_{l+1})
#     h = 1 is GPT-2's coefficients in GPT-2's attention-then-MLP order, but the streams split the two
#     sums: attention reads p = e + sum MLP (without the attention outputs), the MLP reads q = e + sum
#     Attn, and the read-out p_L has no attention output. No h repairs that (the largest gap of the
#     three before fine-tuning); a slightly smaller h measured closest.
#
# Measured but not expressible with a GPTConfig (each layer would have to run TWO blocks): paper.md's
# reading, two Euler steps ~ one midpoint step forced by f_{l-1} + f_l at the middle state, and its
# leapfrog analogue forced by f_l - f_{l-1}; both are in the experiment's table, and neither was
# closer than the forms above.
CONVERT_DEFAULTS = {  # chosen by measurement (see above); h/a passed to convert() override them
    "midpoint": dict(a="-2^(-6/L)", h=0.5),
    "leapfrog": dict(h=1.0),
    "hamiltonian": dict(h=0.75),
}


def default_midpoint_a(n_layer):
    """a = -2^(-6/L): -1/2 at the measured depth L = 6, and (1/|a|)^L = 64 at any depth."""
    return -(2.0 ** (-6.0 / n_layer))


def convert(model: GPT, dynamics, h=None, a=None, a_random=False, a_seed=0, backward=None):
    """A reversible GPT with `model`'s weights (a Euler GPT) and the mapping above.
    h, a default to CONVERT_DEFAULTS[dynamics]; backward defaults to "reversible"."""
    c = model.config
    if c.dynamics != "euler":
        raise ConvertError(f"convert: the model has dynamics={c.dynamics!r}; only a Euler (ordinary GPT-2) "
                           "model can be converted")
    if c.h != 1.0:
        raise ConvertError(f"convert: the Euler model has h={c.h}; the mapping assumes GPT-2's h=1")
    if dynamics not in CONVERT_DEFAULTS:
        raise ConvertError(f"convert: dynamics={dynamics!r}; must be one of {sorted(CONVERT_DEFAULTS)}")
    h = CONVERT_DEFAULTS[dynamics]["h"] if h is None else h
    if a is None:
        a = default_midpoint_a(c.n_layer) if dynamics == "midpoint" else 1.0
    args = dataclasses.asdict(c)
    args.update(dynamics=dynamics, h=h, a=a, a_random=a_random, a_seed=a_seed,
                dropout=0.0, backward=backward)  # the reversible backward needs dropout = 0
    try:
        new = GPT(GPTConfig(**args))
    except ValueError as e:
        raise ConvertError(f"convert: {e}") from None
    w = next(model.parameters())
    new.to(device=w.device, dtype=w.dtype).load_state_dict(model.state_dict())  # every weight stays in place
    return new


# ----------------------------------------------------------------------------------------------
# 4. Perplexity, checkpoints, and the convert-then-fine-tune command line


def revgpt_checkpoint(model: GPT, tokenizer, dataset=""):
    """The minimal revgpt checkpoint (what train.py's --init_from and --teacher read)."""
    return {"format": "revgpt-ckpt-v1", "model": model.state_dict(), "model_args": dataclasses.asdict(model.config),
            "tokenizer": tokenizer, "dataset": dataset, "iter_num": 0, "best_val_loss": float("inf")}


def save_atomic(obj, path):
    """torch.save through a temp file and a rename. The temp name is unique per process, so the
    identical writes of every torchrun process cannot interleave."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def dataset_folder(name):
    """data/<name> (prepared on first use through the data package, as train.py does), or a folder
    holding train.bin, val.bin and meta.json."""
    if Path(name).is_dir():
        return Path(name)
    return train.prepare_data({"data_dir": "", "dataset": name})


def dataset_args(name):
    """train.py's options for a dataset name or folder."""
    return [f"--data_dir={name}"] if Path(name).is_dir() else [f"--dataset={name}"]


@torch.no_grad()
def perplexity(model, dataset, split="val", batch_size=32, max_tokens=0, device="cpu"):
    """exp(mean cross-entropy) on data/<dataset>/<split>.bin with train.py's evaluation protocol: the
    whole split in non-overlapping windows of the model's block_size, every token after the first scored
    once, token-weighted mean. Returns (perplexity, loss in nats/token, tokens scored)."""
    from contextlib import nullcontext
    data = train.open_split(dataset_folder(dataset), split)
    loss, n = train.evaluate(model.to(device), data, model.config.block_size, batch_size, torch.device(device),
                             nullcontext(), max_tokens)
    model.eval()  # train.evaluate leaves the model in train mode
    return math.exp(loss), loss, n


def source_dataset(path):
    """The corpus a model was trained on, when it says: a revgpt checkpoint's "dataset", or the
    "revgpt_dataset" of a HF directory export_hf wrote; "" otherwise."""
    path = Path(path)
    if path.is_file():
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # mmap: no full read
        return (ckpt.get("dataset") or "") if isinstance(ckpt, dict) else ""
    if (path / "config.json").is_file():
        return json.loads((path / "config.json").read_text()).get("revgpt_dataset") or ""
    return ""


# convert.py's own settings; every other --key=value goes to train.py unchanged
CLI_DEFAULTS = dict(
    init_from="",  # the original: HF GPT-2 dir, nanoGPT/revgpt checkpoint, gpt2[-medium|-large|-xl]
    dynamics="midpoint",  # the reversible dynamic to convert to
    h=0.0,  # 0 = the measured mapping's step size (CONVERT_DEFAULTS)
    a=0.0,  # Midpoint(a) coefficient; 0 = the mapping's
    a_random=False,  # Midpoint(a) with a random a per layer (from a_seed)
    a_seed=0,
    out_dir="out-convert",  # converted.pt, teacher.pt, then train.py's ckpt.pt/best.pt/log.jsonl, convert.json
    dataset="",  # auxiliary fine-tuning corpus; "" = milton_char (byte models) or milton (gpt2 models)
    eval_dataset="",  # held-out perplexity on its val split; "" = the original's corpus (else shakespeare[_char])
    epochs=2.0,  # passes over the auxiliary corpus (train.py's epochs); 0 = convert and evaluate only
    learning_rate=3e-4,  # fine-tuning peak learning rate (train.py's default is for training from scratch)
    min_lr=3e-5,
    warmup_iters=20,
    eval_max_tokens=0,  # 0 = whole val splits; N = only their first N tokens (quicker, logged)
    eval_original=True,  # False: skip the original's perplexity (when it is already known)
    resume=False,  # continue the fine-tune in out_dir (train.py's --init_from=resume)
    export="",  # write this revgpt euler checkpoint (or any loadable model) as a HF GPT-2 directory...
    export_dir="",  # ...here, and stop
)


def parse_cli(argv):
    """--key=value for convert.py's keys (typed like their defaults); the rest is returned for train.py."""
    c, rest = dict(CLI_DEFAULTS), []
    for arg in argv:
        key, eq, text = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key not in c:
            rest.append(arg)  # train.py checks it (and names it if unknown)
            continue
        if not eq:
            raise ConvertError(f"malformed option {arg!r}: expected --{key}=value")
        kind = type(CLI_DEFAULTS[key])
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                c[key] = text.lower() in ("true", "1")
            else:
                c[key] = kind(text)
        except ValueError:
            raise ConvertError(f"--{key}={text}: expected a {kind.__name__} (like {CLI_DEFAULTS[key]!r})") from None
    return c, rest


def main(argv=None):
    """Convert, fine-tune by distillation, and report perplexities. Returns the report dict."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(x in ("-h", "--help") for x in argv):
        print(__doc__ + "\nconvert.py keys and defaults:\n" +
              "\n".join(f"  --{k}={v!r}" for k, v in CLI_DEFAULTS.items()) +
              "\nany other --key=value is passed to train.py (python train.py --help lists them)")
        return None
    c, train_args = parse_cli(argv)
    master = int(os.environ.get("RANK", 0)) == 0  # under torchrun only process 0 evaluates and prints
    say = print if master else (lambda *a, **k: None)
    out = Path(c["out_dir"])
    device = next((x.split("=", 1)[1] for x in train_args if x.startswith("--device=")), "cpu")
    device = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)

    if c["export"]:  # --- export only ---
        if not c["export_dir"]:
            raise ConvertError("--export needs --export_dir=<folder to write config.json + model.safetensors>")
        model, tok = load_model(c["export"])
        export_hf(model, c["export_dir"], tokenizer=tok, dataset=source_dataset(c["export"]) or None)
        say(f"wrote {c['export_dir']}/config.json and model.safetensors (transformers.GPT2LMHeadModel)")
        return {"export_dir": c["export_dir"]}

    report_path = out / "convert.json"
    if c["resume"]:  # --- continue an interrupted fine-tune: the conversion is already on disk ---
        if not report_path.is_file():
            raise ConvertError(f"--resume: {report_path} not found (no conversion was started in {out})")
        report = json.loads(report_path.read_text())
        train_args = ["--init_from=resume", f"--out_dir={out}"] + train_args
    else:  # --- load, convert, save both as revgpt checkpoints, evaluate ---
        if not c["init_from"]:
            raise ConvertError("--init_from is required: a HF GPT-2 directory, a nanoGPT/revgpt checkpoint, or gpt2")
        original, tok = load_model(c["init_from"])
        if tok is None:
            raise ConvertError(f"{c['init_from']}: unknown tokenizer (vocab_size={original.config.vocab_size}); "
                               "revgpt knows 'byte' (257) and 'gpt2' (50257/50304)")
        src_dataset = source_dataset(c["init_from"])
        if original.config.dynamics != "euler":
            raise ConvertError(f"{c['init_from']}: dynamics={original.config.dynamics!r}, already reversible")
        aux = c["dataset"] or {"byte": "milton_char", "gpt2": "milton"}[tok]
        eval_ds = c["eval_dataset"] or src_dataset or {"byte": "shakespeare_char", "gpt2": "shakespeare"}[tok]
        if aux == eval_ds:
            say(f"note: the auxiliary corpus is the evaluation corpus ({aux}); the paper fine-tunes on other data")
        converted = convert(original, c["dynamics"], h=c["h"] or None, a=c["a"] or None,
                            a_random=c["a_random"], a_seed=c["a_seed"])
        out.mkdir(parents=True, exist_ok=True)
        save_atomic(revgpt_checkpoint(original, tok, src_dataset), out / "teacher.pt")
        save_atomic(revgpt_checkpoint(converted, tok, src_dataset), out / "converted.pt")
        mc = converted.config
        report = {"init_from": str(c["init_from"]), "dynamics": mc.dynamics, "h": mc.h,
                  "a": "random" if mc.a_random else mc.a, "tokenizer": tok, "aux_dataset": aux,
                  "eval_dataset": eval_ds, "eval_split": "val", "epochs": c["epochs"]}
        if master:
            todo = [("original", original)] if c["eval_original"] else []
            for name, m in todo + [("converted_before", converted)]:
                ppl, loss, n = perplexity(m, eval_ds, max_tokens=c["eval_max_tokens"], device=device)
                report[name] = {"ppl": ppl, "loss": loss, "tokens": n}
                say(f"{name}: {eval_ds} val perplexity {ppl:.4f} (loss {loss:.4f}, {n:,} tokens)")
            report_path.write_text(json.dumps(report, indent=2) + "\n")
        del original, converted
        train_args = [f"--init_from={out / 'converted.pt'}", f"--teacher={out / 'teacher.pt'}", *dataset_args(aux),
                      f"--out_dir={out}", f"--epochs={c['epochs']}", f"--learning_rate={c['learning_rate']}",
                      f"--min_lr={c['min_lr']}", f"--warmup_iters={c['warmup_iters']}",
                      f"--eval_max_tokens={c['eval_max_tokens']}"] + train_args
    if c["epochs"] <= 0 and not c["resume"]:
        return report

    # --- fine-tune: train.py with the converted model as init and the original as frozen teacher ---
    say("fine-tuning: python train.py " + " ".join(train_args))
    summary = train.main(train_args)
    if not master:
        return report
    tuned, _ = load_model(out / "ckpt.pt")
    assert tuned.config.backward == "reversible", "the fine-tune must use the reversible backward"
    ppl, loss, n = perplexity(tuned, report["eval_dataset"], max_tokens=c["eval_max_tokens"], device=device)
    report["converted_after"] = {"ppl": ppl, "loss": loss, "tokens": n, "iters": summary["iter_num"],
                                 "epochs_done": summary.get("epoch"), "tokens_seen": summary.get("tokens_seen")}
    if "original" in report:
        report["gap_after_pct"] = 100 * (ppl / report["original"]["ppl"] - 1)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    say(f"\n{report['eval_dataset']} val perplexity ({n:,} tokens):")
    for name in ("original", "converted_before", "converted_after"):
        if name in report:
            say(f"  {name:17s} {report[name]['ppl']:8.4f}")
    if "gap_after_pct" in report:
        say(f"  gap after fine-tuning: {report['gap_after_pct']:+.2f}% of the original's perplexity")
    return report


if __name__ == "__main__":
    try:
        main()
    except (ConvertError, FileNotFoundError, train.TrainError) as e:  # bad input: one line, status 2
        print(f"convert.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
