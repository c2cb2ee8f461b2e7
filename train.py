"""
Train a revgpt model (a GPT-2 whose residual stream is a reversible integrator), nanoGPT style.

    python train.py                                    # small reversible model, shakespeare_char, CPU
    python train.py --dynamics=euler                   # the same with the ordinary (Euler) residual
    python train.py config/train_gpt2_owt.py --dynamics=leapfrog            # GPT-2 small, OpenWebText
    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_owt.py   # DDP on one node
    python train.py --init_from=resume                 # continue out_dir/ckpt.pt exactly
    python train.py --init_from=teacher.pt --teacher=teacher.pt --dynamics=midpoint   # distillation

Configuration: the defaults below, then config files (python files of `key = value` lines, applied
in the order given), then `--key=value` overrides. Every value is checked against the type of its
default and an unknown key is an error. In python: `main(["config/x.py", "--max_iters=10"])`.

Training data (the sampler). Epoch e cuts train.bin into non-overlapping windows of block_size + 1
tokens, starting at a random shift s_e in [0, block_size), and visits them in a random order; both
are drawn from numpy's PCG64 seeded with (seed, e). Every window of an epoch is used once before the
next epoch starts. The sampler's whole state is (epoch, position): it is saved in the checkpoint, so
a resumed run sees exactly the batches the uninterrupted run would have seen. Each iteration takes
batch_size * gradient_accumulation_steps consecutive windows; under DDP every process computes the
same order and takes its own slice of them (so the global batch does not depend on the number of
processes).

Evaluation protocol (at iteration 0, every eval_interval iterations and at the end): the WHOLE
validation split, cut into non-overlapping windows of block_size tokens starting at token 0. Window
k feeds tokens [kT, kT + T) and scores the next token at every position, so each val token after the
first is predicted exactly once (the last, shorter window covers the remainder), with at most T - 1
tokens of context. The reported val loss is the token-weighted mean cross-entropy (nats/token) over
all of them. It is deterministic: the same model gives the same number. `eval_max_tokens` > 0 scores
only a prefix of the split, and the log says so.

Checkpoints. out_dir/ckpt.pt is the latest state: written at each evaluation (always_save_checkpoint,
or only when the val loss improved), at the end, and on Ctrl-C. out_dir/best.pt is the state with the
best val loss so far, never replaced by a worse one. Both are written atomically (temp file in the
same folder, flush, fsync, rename): a crash during a save leaves the previous checkpoint intact.
They hold the model (un-compiled, un-DDP-wrapped), optimizer, iteration, config, RNG states and the
sampler's position, so --init_from=resume continues exactly. Ctrl-C finishes the current iteration,
saves ckpt.pt and exits (a second Ctrl-C quits at once, without saving).
"""

import builtins
import dataclasses
import difflib
import gc
import json
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from revgpt import DEFAULT_H, DYNAMICS, GPT, GPTConfig

REPO = Path(__file__).resolve().parent
CKPT_FORMAT = "revgpt-ckpt-v1"

# -----------------------------------------------------------------------------
# Default config. The defaults train a small reversible (midpoint) model on the character-level
# Shakespeare corpus on a 2-core CPU in under 10 minutes.
# I/O
out_dir = "out"  # ckpt.pt (latest), best.pt (best val loss) and log.jsonl (train + eval records)
init_from = "scratch"  # "scratch", "resume" (out_dir/ckpt.pt) or a checkpoint file to fine-tune
eval_interval = 500  # evaluate on the whole val split (and save ckpt.pt) every this many iterations
log_interval = 50  # print a training log line every this many iterations
eval_only = False  # evaluate once and exit
always_save_checkpoint = True  # ckpt.pt at every eval (True) or only when val loss improves (False)
eval_max_tokens = 0  # 0 = score the whole val split; N > 0 = only its first N tokens (logged)
eval_batch_size = 0  # windows per forward in the evaluation; 0 = batch_size
# data
dataset = "shakespeare_char"  # data/<dataset>/: train.bin, val.bin, meta.json (prepared on first use)
data_dir = ""  # "" = data/<dataset>; or any folder holding train.bin, val.bin, meta.json
batch_size = 16  # sequences per micro-step, per process
block_size = 128  # tokens per sequence; a new model's context length
gradient_accumulation_steps = 1  # micro-steps per optimizer step, over ALL processes (as nanoGPT)
epochs = 0.0  # > 0: train for this many passes over train.bin (sets max_iters)
# model
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0  # must be 0 with the reversible backward (its recompute would redraw the masks)
bias = True  # biases in Linear and LayerNorm, as GPT-2
vocab_size = 0  # 0 = the dataset's (meta.json); e.g. 50304 = GPT-2's 50257 padded for GPU speed
dynamics = "midpoint"  # euler (plain GPT-2), midpoint, leapfrog or hamiltonian (see revgpt.py)
h = 0.0  # step size; 0 = the dynamic's default, revgpt.DEFAULT_H (from the step-size sweep)
a = 1.0  # Midpoint(a) coefficient; 1 = plain midpoint
a_random = False  # per-layer a = +-1 + U(-1/2, 1/2), drawn from a_seed
a_seed = 0
backward = "auto"  # "reversible" (recompute, constant memory), "autograd" (store all), "auto"
exact = False  # fixed-point float64 stream: bit-identical reconstruction (revgpt.py, "Exact mode")
exact_bits = 32  # fractional bits of that fixed-point grid
head_chunk = 0  # > 0: the loss runs the LM head this many rows at a time; the full logits never exist
# optimizer (AdamW)
learning_rate = 3e-3  # peak learning rate (small models tolerate a high one)
max_iters = 1500  # optimizer steps in total
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.99  # a little below GPT-2's 0.999 because the batches are small
grad_clip = 1.0  # clip the gradient norm at this value; 0 = off
# learning-rate schedule: linear warmup, then cosine decay down to min_lr
decay_lr = True
warmup_iters = 100
lr_decay_iters = 0  # 0 = max_iters
min_lr = 3e-4  # ~ learning_rate / 10
# distillation: with a teacher, loss = kl_weight * KL(teacher || student) + ce_weight * cross-entropy
teacher = ""  # path of a revgpt checkpoint, loaded frozen; "" = no teacher, loss = cross-entropy
kl_weight = 1.0
ce_weight = 0.0
# the sample printed at the end
sample_tokens = 500  # 0 = no sample
sample_prompt = "\n"
temperature = 0.8
top_k = 200
# system
device = "auto"  # "auto" = cuda if available else cpu; or cpu, cuda, cuda:1, mps
dtype = "auto"  # "auto" = bfloat16 autocast on CUDA (if supported), float32 elsewhere; or float16
compile = False  # torch.compile each block's attention and MLP (not the whole model)
backend = "auto"  # DDP backend: "auto" = nccl on CUDA, gloo on CPU
seed = 1337  # model init, and the data order
# -----------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (bool, int, float, str))}
del DEFAULTS["CKPT_FORMAT"]

# model config fields that come from config keys of the same name (vocab_size, h, backward are resolved)
MODEL_KEYS = [f.name for f in dataclasses.fields(GPTConfig) if f.name in DEFAULTS]
ARCH_KEYS = ["n_layer", "n_head", "n_embd", "bias", "vocab_size", "block_size"]  # the shapes of the weights
# keys that may change when resuming; every other key must match the checkpoint's
RESUME_MUTABLE = {"out_dir", "init_from", "eval_interval", "log_interval", "eval_only", "always_save_checkpoint",
                  "eval_max_tokens", "eval_batch_size", "data_dir", "max_iters", "epochs", "lr_decay_iters",
                  "sample_tokens", "sample_prompt", "temperature", "top_k", "device", "dtype", "compile", "backend"}


class TrainError(Exception):
    """A problem with the user's input (config, data, checkpoint): printed as one line, exit status 2."""


class ConfigError(TrainError):
    pass


class CheckpointError(TrainError):
    pass


# -----------------------------------------------------------------------------
# Configuration


def parse_value(key, text):
    """Turn the text of --key=text into a value of the type of key's default."""
    kind = type(DEFAULTS[key])
    if kind is bool:
        low = text.strip().lower()
        if low in ("true", "1"):
            return True
        if low in ("false", "0"):
            return False
        raise ConfigError(f"--{key}={text}: expected a bool (True, False, true, false, 1 or 0)")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"--{key}={text}: expected an int (like {DEFAULTS[key]})") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"--{key}={text}: expected a float (like {DEFAULTS[key]})") from None
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]  # --dataset='x' and --dataset=x mean the same
    return text


def check_value(key, value, where):
    """A value set in a config file must have the type of key's default (an int is fine for a float)."""
    kind = type(DEFAULTS[key])
    if kind is float and type(value) is int:
        return float(value)
    if type(value) is not kind:
        raise ConfigError(f"{where}: {key} = {value!r} is a {type(value).__name__}, expected a {kind.__name__}")
    return value


def unknown_key(key, where):
    close = difflib.get_close_matches(key, DEFAULTS, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(f"{where}: unknown config key '{key}'{hint}; python train.py --help lists them")


def load_config_file(path, config, explicit):
    """Run a config file (plain python: `key = value` lines) and apply the keys it sets."""
    p = Path(path)
    if not p.is_file() and (REPO / path).is_file():
        p = REPO / path  # config/x.py also works from another working directory
    if not p.is_file():
        raise ConfigError(f"config file {path} not found")
    namespace = {}
    try:
        exec(builtins.compile(p.read_text(), str(p), "exec"), namespace)
    except Exception as e:
        raise ConfigError(f"config file {path} failed to run: {type(e).__name__}: {e}") from None
    for key, value in namespace.items():
        if key.startswith("_") or type(value).__name__ == "module":
            continue
        if key not in DEFAULTS:
            raise unknown_key(key, f"config file {path}")
        config[key] = check_value(key, value, f"config file {path}")
        explicit.add(key)


def get_config(argv):
    """Defaults <- config files <- --key=value overrides, in the order given.
    Returns (config dict, set of the keys the user set explicitly)."""
    config, explicit = dict(DEFAULTS), set()
    for arg in argv:
        if arg.startswith("--"):
            key, eq, text = arg[2:].partition("=")
            if not eq or not key:
                raise ConfigError(f"malformed override '{arg}': expected --key=value, e.g. --max_iters=100")
            if key not in DEFAULTS:
                raise unknown_key(key, f"override '{arg}'")
            config[key] = parse_value(key, text)
            explicit.add(key)
        elif arg.endswith(".py"):
            load_config_file(arg, config, explicit)
        else:
            raise ConfigError(f"unexpected argument '{arg}': expected a config file (.py) or --key=value")
    check_config(config)
    return config, explicit


def check_config(c):
    """Values that are of the right type but make no sense; each error names the key."""
    choices = dict(dynamics=DYNAMICS, backward=("auto", "reversible", "autograd"),
                   dtype=("auto", "float32", "bfloat16", "float16"), backend=("auto", "nccl", "gloo"))
    for key, allowed in choices.items():
        if c[key] not in allowed:
            raise ConfigError(f"{key}={c[key]!r}: must be one of {', '.join(allowed)}")
    for key in ("batch_size", "block_size", "gradient_accumulation_steps", "eval_interval", "log_interval",
                "n_layer", "n_head", "n_embd"):
        if c[key] < 1:
            raise ConfigError(f"{key}={c[key]}: must be >= 1")
    for key in ("max_iters", "epochs", "eval_max_tokens", "eval_batch_size", "vocab_size", "h", "warmup_iters",
                "lr_decay_iters", "grad_clip", "sample_tokens", "kl_weight", "ce_weight", "head_chunk"):
        if c[key] < 0:
            raise ConfigError(f"{key}={c[key]}: must be >= 0")
    if c["head_chunk"] and c["teacher"]:
        raise ConfigError(f"head_chunk={c['head_chunk']} with teacher={c['teacher']!r}: distillation needs the "
                          "student's full logits; use head_chunk=0")
    if c["learning_rate"] <= 0 or c["min_lr"] < 0:
        raise ConfigError(f"learning_rate={c['learning_rate']}, min_lr={c['min_lr']}: need learning_rate > 0, min_lr >= 0")


def model_config(c, vocab):
    """The GPTConfig a new model gets from the train config (vocab = the dataset's vocab_size)."""
    if c["vocab_size"] and c["vocab_size"] < vocab:
        raise ConfigError(f"vocab_size={c['vocab_size']} is smaller than the dataset's vocab_size={vocab}")
    args = {k: c[k] for k in MODEL_KEYS}
    args.update(vocab_size=c["vocab_size"] or vocab, h=c["h"] or None,
                backward=None if c["backward"] == "auto" else c["backward"])
    try:
        return GPTConfig(**args)
    except ValueError as e:  # GPTConfig's checks name the field
        raise ConfigError(f"model config: {e}") from None


# -----------------------------------------------------------------------------
# Data


def prepare_data(c):
    """The dataset folder; a missing default-location dataset is prepared through data/ (or the error
    says exactly what to run)."""
    folder = Path(c["data_dir"]) if c["data_dir"] else REPO / "data" / c["dataset"]
    if all((folder / f).exists() for f in ("train.bin", "val.bin", "meta.json")):
        return folder
    try:
        from data.common import ensure_prepared
    except ImportError as e:
        raise TrainError(f"{folder} has no train.bin/val.bin/meta.json and the data package cannot be "
                         f"imported ({e}); run: python data/{c['dataset']}/prepare.py") from None
    try:
        return Path(ensure_prepared(folder.name, folder.parent))
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        raise TrainError(f"dataset '{c['dataset']}' ({folder}): {e}") from None


def load_meta(folder):
    path = Path(folder) / "meta.json"
    try:
        meta = json.loads(path.read_text())
        meta["tokenizer"], meta["vocab_size"] = str(meta["tokenizer"]), int(meta["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TrainError(f"{path}: not a valid meta.json ({type(e).__name__}: {e}); "
                         "it needs at least 'tokenizer' and 'vocab_size'") from None
    return meta


def open_split(folder, split):
    path = Path(folder) / f"{split}.bin"
    if path.stat().st_size % 2:
        raise TrainError(f"{path}: size {path.stat().st_size} is odd, not a file of uint16 tokens (truncated?)")
    return np.memmap(path, dtype=np.uint16, mode="r")


class WindowSampler:
    """Deterministic, resumable order of training windows (see the module docstring)."""

    def __init__(self, n_tokens, block_size, seed):
        if n_tokens < 2 * block_size + 1:
            raise TrainError(f"train split has {n_tokens} tokens, too few for block_size={block_size}")
        self.n_tokens, self.T, self.seed = n_tokens, block_size, seed
        self.epoch, self.pos = 0, 0  # the whole state
        self._cached = (None, None)  # (epoch, its window starts)

    def starts(self):
        """Start offsets of this epoch's windows, in the order they are visited."""
        if self._cached[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            shift = int(rng.integers(self.T))
            n = (self.n_tokens - 1 - shift) // self.T  # window = T inputs + 1 more token for the targets
            self._cached = (self.epoch, shift + self.T * rng.permutation(n))
        return self._cached[1]

    def take(self, n):
        """The next n window starts, continuing into the next epoch when this one runs out."""
        out = []
        while n > 0:
            starts = self.starts()
            chunk = starts[self.pos:self.pos + n]
            out.append(chunk)
            n -= len(chunk)
            self.pos += len(chunk)
            if self.pos == len(starts):
                self.epoch, self.pos = self.epoch + 1, 0
        return np.concatenate(out)

    def progress(self):
        return self.epoch + self.pos / len(self.starts())  # epochs done, fractional

    def state_dict(self):
        return dict(epoch=self.epoch, pos=self.pos, seed=self.seed, block_size=self.T, n_tokens=self.n_tokens)

    def load_state_dict(self, s):
        if (s["seed"], s["block_size"], s["n_tokens"]) != (self.seed, self.T, self.n_tokens):
            raise CheckpointError(f"the checkpoint's data order (seed {s['seed']}, block_size {s['block_size']}, "
                                  f"{s['n_tokens']} train tokens) does not match this run's (seed {self.seed}, "
                                  f"block_size {self.T}, {self.n_tokens} train tokens): did train.bin change?")
        self.epoch, self.pos = s["epoch"], s["pos"]


def get_batch(data, starts, T, device):
    """Inputs data[s:s+T] and targets data[s+1:s+T+1] for each start s: two (len(starts), T) int64 tensors."""
    x = torch.from_numpy(np.stack([data[s:s + T] for s in starts]).astype(np.int64))
    y = torch.from_numpy(np.stack([data[s + 1:s + 1 + T] for s in starts]).astype(np.int64))
    if device.type == "cuda":  # pinned memory lets the copy overlap with compute
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


@torch.no_grad()
def evaluate(model, data, T, batch_size, device, autocast, max_tokens=0, rank=0, world_size=1):
    """Token-weighted mean cross-entropy over the val split (protocol in the module docstring).
    Returns (loss, number of scored tokens). Under DDP the windows are shared out and the sums added."""
    N = min(len(data), max_tokens) if max_tokens else len(data)
    full = list(range(0, N - T, T))  # windows with T inputs and T targets inside the first N tokens
    rest = (N - 1) - len(full) * T  # targets left for one shorter last window (0 <= rest < T)
    batches = [full[i:i + batch_size] for i in range(0, len(full), batch_size)]
    total = torch.zeros(2, dtype=torch.float64, device=device)  # [sum of losses, tokens]
    was_training = model.training
    model.eval()
    for b in batches[rank::world_size]:
        x, y = get_batch(data, b, T, device)
        with autocast:
            logits, _ = model(x)
        total[0] += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").double()
        total[1] += y.numel()
    if rest > 0 and rank == len(batches) % world_size:  # the shorter last window
        s = len(full) * T
        x = torch.from_numpy(data[s:s + rest].astype(np.int64))[None].to(device)
        y = torch.from_numpy(data[s + 1:s + 1 + rest].astype(np.int64))[None].to(device)
        with autocast:
            logits, _ = model(x)
        total[0] += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").double()
        total[1] += y.numel()
    if world_size > 1:
        torch.distributed.all_reduce(total)
    model.train(was_training)
    assert int(total[1].item()) == N - 1, "every val token after the first is scored exactly once"
    return (total[0] / total[1]).item(), N - 1


# -----------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(obj, path):
    """Atomic torch.save: temp file in the same folder, flush, fsync, rename. Whatever goes wrong,
    `path` holds either its previous content or the complete new one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)  # atomic on POSIX and Windows
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_dir(folder):
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def keep_as_best(ckpt_path, best_path):
    """best.pt := ckpt.pt, atomically. A hard link costs no copy; it stays valid because ckpt.pt is
    only ever replaced (renamed over), never rewritten in place. Copies where links are unsupported."""
    tmp = best_path.with_name(best_path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(ckpt_path, tmp)
    except OSError:
        shutil.copyfile(ckpt_path, tmp)
    os.replace(tmp, best_path)
    fsync_dir(best_path.parent)


def load_checkpoint(path, map_location="cpu"):
    """Read a revgpt checkpoint; a missing, truncated or foreign file is a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise CheckpointError(f"checkpoint {path} cannot be read, it is truncated or corrupt "
                              f"({type(e).__name__}: {msg})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"checkpoint {path} is not a revgpt checkpoint (format {got!r}, expected {CKPT_FORMAT!r})")
    missing = [k for k in ("model", "model_args", "tokenizer") if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return ckpt


def model_from_checkpoint(ckpt, path, **changes):
    """A GPT with the checkpoint's weights; `changes` replace model_args fields (e.g. dynamics)."""
    try:
        cfg = GPTConfig(**{**ckpt["model_args"], **changes})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: bad model_args ({e})") from None
    model = GPT(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path}: weights do not fit its model_args ({str(e)[:300]})") from None
    return model


def compare(a, b):
    """Fields on which two dicts differ, as 'key (checkpoint A, requested B)'."""
    return [f"{k} (checkpoint {a.get(k)!r}, requested {b.get(k)!r})" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


def resume_config(ckpt, path, config, explicit):
    """The config of a resumed run: the checkpoint's, with the keys the user set explicitly. Keys that
    change the run (model, data, batch, optimizer, objective) must agree with the checkpoint."""
    saved = ckpt.get("config") or {}
    merged = {k: (config[k] if k in explicit or k not in saved else saved[k]) for k in DEFAULTS}
    merged["out_dir"], merged["init_from"] = config["out_dir"], "resume"
    # the saved config holds resolved values (h, backward, vocab_size); resolve "default" markers alike
    if merged["h"] == 0:
        merged["h"] = DEFAULT_H[merged["dynamics"]]
    if merged["backward"] == "auto":
        merged["backward"] = "autograd" if merged["dynamics"] == "euler" else "reversible"
    if merged["vocab_size"] == 0:
        merged["vocab_size"] = ckpt["model_args"]["vocab_size"]
    keys = sorted(set(explicit) - RESUME_MUTABLE)
    differ = compare({k: saved.get(k) for k in keys}, {k: merged[k] for k in keys})
    if differ:
        raise ConfigError(f"cannot resume {path}: the requested config differs from the checkpoint's in "
                          f"{'; '.join(differ)}. Drop these overrides, or start a new run in another out_dir")
    return merged


def rng_state(device):
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device):
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# -----------------------------------------------------------------------------
# Training pieces


def get_lr(it, c):
    """Linear warmup for warmup_iters, then cosine decay to min_lr at lr_decay_iters, then min_lr."""
    if not c["decay_lr"]:
        return c["learning_rate"]
    if it < c["warmup_iters"]:
        return c["learning_rate"] * (it + 1) / (c["warmup_iters"] + 1)
    decay_iters = c["lr_decay_iters"] or c["max_iters"]
    if it >= decay_iters:
        return c["min_lr"]
    ratio = (it - c["warmup_iters"]) / max(1, decay_iters - c["warmup_iters"])
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return c["min_lr"] + coeff * (c["learning_rate"] - c["min_lr"])


def kl_teacher_student(student_logits, teacher_logits):
    """KL(teacher || student) of the next-token distributions: sum over the vocabulary of
    p_t (log p_t - log p_s), averaged over tokens (temperature 1), in float32."""
    log_s = F.log_softmax(student_logits.float(), dim=-1).flatten(0, -2)  # (B*T, V)
    log_t = F.log_softmax(teacher_logits.float(), dim=-1).flatten(0, -2)  # (B*T, V)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")  # batchmean: / (B*T)


def peak_memory_mb(device):
    """CUDA: peak allocated tensor memory. CPU: peak resident set size of the process."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource  # POSIX only
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


class CtrlC:
    """First Ctrl-C: set a flag (the loop finishes the iteration, saves and stops). Second: stop now."""

    def __enter__(self):
        self.requested = False
        self.installed = threading.current_thread() is threading.main_thread()
        if self.installed:
            self.previous = signal.signal(signal.SIGINT, self.handler)
        return self

    def handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: finishing this iteration, then saving a checkpoint (Ctrl-C again quits without saving)",
              flush=True)

    def __exit__(self, *exc):
        if self.installed:
            signal.signal(signal.SIGINT, self.previous)


class JsonlLog:
    """One JSON object per line in out_dir/log.jsonl, {"type": "config"|"train"|"eval"|"done", ...}.
    A "train" record's loss, ms_per_iter and tokens_per_s are means over the iterations since the
    previous record (log_interval of them); its "iter" is the last of those iterations."""

    def __init__(self, path, append, enabled):
        self.f = open(path, "a" if append else "w") if enabled else None

    def write(self, **record):
        if self.f:
            self.f.write(json.dumps(record) + "\n")
            self.f.flush()

    def close(self):
        if self.f:
            self.f.close()


# -----------------------------------------------------------------------------
# The training run


def main(argv=None):
    """Train as configured by argv (default sys.argv[1:]). Returns a summary dict. Bad input raises a
    TrainError with a one-line message (the command line prints it and exits with status 2)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        print("config keys and their defaults:\n" + "\n".join(f"  --{k}={v!r}" for k, v in DEFAULTS.items()))
        return None
    config, explicit = get_config(argv)

    # --- processes and devices -----------------------------------------------------------
    ddp = int(os.environ.get("RANK", -1)) != -1  # launched by torchrun?
    rank, local_rank, world_size = 0, 0, 1
    dev = config["device"]
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    if ddp:
        rank, local_rank, world_size = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
        if dev == "cuda":
            dev = f"cuda:{local_rank}"
            torch.cuda.set_device(dev)
        backend = config["backend"] if config["backend"] != "auto" else ("nccl" if dev.startswith("cuda") else "gloo")
        torch.distributed.init_process_group(backend=backend)
    try:
        summary = _train(config, explicit, torch.device(dev), rank, local_rank, world_size)
        if ddp:  # every process has finished (rank 0 saves last) before the group is torn down
            torch.distributed.barrier()
        return summary
    finally:
        if ddp:
            gc.collect()  # drop the DDP wrapper (it holds the group) before the group goes
            torch.distributed.destroy_process_group()


def _train(config, explicit, device, rank, local_rank, world_size):
    t_start = time.time()
    master = rank == 0  # logs, checkpoints and samples
    say = print if master else (lambda *a, **k: None)
    out = Path(config["out_dir"])

    # --- where the run starts from ----------------------------------------------------------
    ckpt, ckpt_path = None, None
    if config["init_from"] == "resume":
        ckpt_path = out / "ckpt.pt"
        if not ckpt_path.exists():
            raise CheckpointError(f"--init_from=resume: no checkpoint {ckpt_path} (start with --init_from=scratch)")
        ckpt = load_checkpoint(ckpt_path)
        config = resume_config(ckpt, ckpt_path, config, explicit)
    elif config["init_from"] != "scratch":
        ckpt_path = Path(config["init_from"])
        ckpt = load_checkpoint(ckpt_path)
        if "block_size" not in explicit:  # train on windows as long as the model's context
            config["block_size"] = ckpt["model_args"]["block_size"]
    c = config
    if c["gradient_accumulation_steps"] % world_size:
        raise ConfigError(f"gradient_accumulation_steps={c['gradient_accumulation_steps']} must be divisible by "
                          f"the number of processes ({world_size})")
    accum = c["gradient_accumulation_steps"] // world_size  # micro-steps per process

    # --- data -------------------------------------------------------------------------------
    folder = prepare_data(c)
    meta = load_meta(folder)
    train_data, val_data = open_split(folder, "train"), open_split(folder, "val")
    T, B = c["block_size"], c["batch_size"]
    sampler = WindowSampler(len(train_data), T, c["seed"])
    windows_per_iter = B * c["gradient_accumulation_steps"]
    tokens_per_iter = windows_per_iter * T
    if c["epochs"] > 0:
        c["max_iters"] = math.ceil(c["epochs"] * ((len(train_data) - 1) // T) / windows_per_iter)
    say(f"data: {folder} ({meta['tokenizer']} tokenizer, vocab {meta['vocab_size']}): {len(train_data):,} train "
        f"tokens, {len(val_data):,} val tokens; {tokens_per_iter:,} tokens per iteration "
        f"({B} x {T} x {c['gradient_accumulation_steps']} accumulation), "
        f"{c['max_iters'] * tokens_per_iter / len(train_data):.2f} epochs in {c['max_iters']} iterations")

    # --- model --------------------------------------------------------------------------------
    torch.manual_seed(c["seed"])  # the same initial weights in every process (DDP also broadcasts them)
    if ckpt is None:
        model = GPT(model_config(c, meta["vocab_size"]))
    elif c["init_from"] == "resume":
        model = model_from_checkpoint(ckpt, ckpt_path)
    else:  # fine-tune: the checkpoint's architecture; the dynamics keys you set explicitly override it
        args = ckpt["model_args"]
        arch = [k for k in ARCH_KEYS if k in explicit and k != "block_size" and c[k] != args[k]
                and not (k == "vocab_size" and c[k] == 0)]
        if arch:
            raise ConfigError(f"--init_from={ckpt_path}: the checkpoint's architecture differs from the requested "
                              f"one in {'; '.join(compare({k: args[k] for k in arch}, {k: c[k] for k in arch}))}")
        changes = {k: c[k] for k in MODEL_KEYS if k in explicit and k not in ARCH_KEYS}
        if "h" in explicit or ("dynamics" in explicit and c["dynamics"] != args["dynamics"]):
            changes["h"] = c["h"] or None  # a new dynamic gets its own default step unless h is given
        if "backward" in explicit or ("dynamics" in explicit and c["dynamics"] != args["dynamics"]):
            changes["backward"] = None if c["backward"] == "auto" else c["backward"]
        model = model_from_checkpoint(ckpt, ckpt_path, **changes)
        if ckpt["tokenizer"] != meta["tokenizer"]:
            raise ConfigError(f"--init_from={ckpt_path}: the model uses the {ckpt['tokenizer']} tokenizer, "
                              f"dataset {c['dataset']} the {meta['tokenizer']} tokenizer")
    mc = model.config
    for k in MODEL_KEYS:  # the saved config describes the model actually trained, with h etc. resolved
        if k != "block_size":  # block_size stays the training window (<= the model's context)
            c[k] = getattr(mc, k)
    if T > mc.block_size:
        raise ConfigError(f"block_size={T} is longer than the model's context ({mc.block_size})")
    if mc.vocab_size < meta["vocab_size"]:
        raise ConfigError(f"the model's vocab_size={mc.vocab_size} is smaller than the dataset's {meta['vocab_size']}")
    model.to(device)
    raw_model = model  # un-compiled, un-DDP-wrapped: this is what checkpoints save
    say(f"model: {mc.n_layer} layers x {mc.n_head} heads x {mc.n_embd}, context {mc.block_size}, "
        f"{raw_model.get_num_params() / 1e6:.2f}M parameters; dynamics={mc.dynamics} h={mc.h} "
        f"{'a=random(seed %d) ' % mc.a_seed if mc.a_random else ('a=%g ' % mc.a if mc.dynamics == 'midpoint' else '')}"
        f"backward={mc.backward}")

    # --- teacher (distillation) ---------------------------------------------------------------
    teacher = None
    if c["teacher"]:
        tckpt = load_checkpoint(c["teacher"])
        teacher = model_from_checkpoint(tckpt, c["teacher"]).to(device).eval().requires_grad_(False)
        if teacher.config.vocab_size != mc.vocab_size or T > teacher.config.block_size:
            raise ConfigError(f"teacher {c['teacher']}: vocab_size {teacher.config.vocab_size} / context "
                              f"{teacher.config.block_size} do not fit the student's {mc.vocab_size} / {T}")
        say(f"teacher: {c['teacher']} (frozen, {teacher.config.dynamics}); loss = {c['kl_weight']} * "
            f"KL(teacher || student) + {c['ce_weight']} * cross-entropy")
        del tckpt

    # --- precision, optimizer ------------------------------------------------------------------
    dtype = c["dtype"]
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    # autocast runs the blocks' matmuls in bf16/fp16; the residual stream stays fp32 (revgpt.py)
    autocast = nullcontext() if dtype == "float32" else torch.autocast(device.type, dtype=ptdtype)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    scaler = torch.amp.GradScaler(device.type, enabled=(dtype == "float16"))  # fp16 needs loss scaling
    optimizer = raw_model.configure_optimizers(c["weight_decay"], c["learning_rate"], (c["beta1"], c["beta2"]),
                                               device.type)
    iter_num, best_val_loss = 0, float("inf")
    if c["init_from"] == "resume":
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        iter_num, best_val_loss = ckpt["iter_num"], ckpt["best_val_loss"]
        sampler.load_state_dict(ckpt["data_state"])
        rng = ckpt["rng"]
        per_rank = rng.get("per_rank")
        if per_rank and len(per_rank) == world_size:
            set_rng_state({"python": rng["python"], **per_rank[rank]}, device)
        else:  # saved by one process only (e.g. at Ctrl-C): the others get fresh, distinct streams
            set_rng_state(rng, device)
            if rank > 0:
                torch.manual_seed(c["seed"] + 1000 * rank + iter_num)
        say(f"resumed {ckpt_path} at iteration {iter_num} (best val loss {best_val_loss:.4f}, "
            f"epoch {sampler.progress():.3f})")
    else:
        torch.manual_seed(c["seed"] + rank)  # distinct dropout masks per process
    ckpt = None  # free the memory

    # --- compile and DDP ------------------------------------------------------------------
    if c["compile"]:  # compile the blocks' pieces in place: the state_dict keys stay unprefixed
        say("compiling the attention and MLP of every block (takes a minute)...")
        for block in raw_model.transformer.h:
            block.attn.compile()
            block.mlp.compile()
    model = raw_model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(raw_model, device_ids=[local_rank] if device.type == "cuda" else None)

    # --- logging, checkpoints ----------------------------------------------------------------
    if master:
        out.mkdir(parents=True, exist_ok=True)
        if c["init_from"] != "resume" and (out / "ckpt.pt").exists() and not c["eval_only"]:
            say(f"note: {out / 'ckpt.pt'} from an earlier run will be replaced by this run's checkpoints")
    log = JsonlLog(out / "log.jsonl", append=c["init_from"] == "resume", enabled=master and not c["eval_only"])
    log.write(type="config", iter=iter_num, world_size=world_size, device=str(device), dtype=dtype,
              model_args=dataclasses.asdict(mc), config=c)
    eval_bs = c["eval_batch_size"] or B

    def checkpoint(with_rng_of_all_ranks=True):
        """ckpt.pt := the current state (collective under DDP unless with_rng_of_all_ranks=False)."""
        rng = rng_state(device)
        if world_size > 1 and with_rng_of_all_ranks:
            gathered = [None] * world_size
            torch.distributed.all_gather_object(gathered, {k: v for k, v in rng.items() if k != "python"})
            rng["per_rank"] = gathered
        if not master:
            return
        save_checkpoint({
            "format": CKPT_FORMAT, "model": raw_model.state_dict(), "model_args": dataclasses.asdict(mc),
            "tokenizer": meta["tokenizer"], "dataset": c["dataset"], "iter_num": iter_num,
            "best_val_loss": best_val_loss, "config": dict(c), "optimizer": optimizer.state_dict(),
            "rng": rng, "data_state": sampler.state_dict(), "scaler": scaler.state_dict(), "world_size": world_size,
            "tokens_seen": iter_num * tokens_per_iter,
        }, out / "ckpt.pt")

    def run_eval():
        t0 = time.time()
        loss, n = evaluate(raw_model, val_data, T, eval_bs, device, autocast, c["eval_max_tokens"], rank, world_size)
        what = (f"first {n + 1:,} of {len(val_data):,} val tokens (eval_max_tokens)" if n + 1 < len(val_data)
                else f"whole val split, {n:,} tokens")
        say(f"eval iter {iter_num}: val loss {loss:.4f} ({what}; non-overlapping {T}-token windows, "
            f"token-weighted mean; {time.time() - t0:.1f}s)")
        log.write(type="eval", iter=iter_num, val_loss=loss, val_tokens=n, whole_split=n + 1 == len(val_data),
                  tokens_seen=iter_num * tokens_per_iter, epoch=sampler.progress(), eval_s=time.time() - t0)
        return loss

    if c["eval_only"]:
        loss = run_eval()
        return {"iter_num": iter_num, "val_loss": loss, "best_val_loss": best_val_loss, "out_dir": str(out)}

    # --- the loop -------------------------------------------------------------------------------
    start_iter, last_saved, val_loss = iter_num, iter_num if c["init_from"] == "resume" else None, None
    resumed = c["init_from"] == "resume"
    loss_sum = torch.zeros((), device=device)  # sum of per-iteration losses since the last log line
    parts_sum = torch.zeros(2, device=device)  # [kl, ce] sums with a teacher
    n_logged, t_last = 0, time.time()
    with CtrlC() as ctrl_c:
        while True:
            if (iter_num % c["eval_interval"] == 0 or iter_num >= c["max_iters"]) and not (resumed and iter_num == start_iter):
                t_eval = time.time()
                val_loss = run_eval()
                improved = val_loss < best_val_loss
                best_val_loss = min(best_val_loss, val_loss)
                if iter_num > 0 and (improved or c["always_save_checkpoint"] or iter_num >= c["max_iters"]):
                    checkpoint()
                    last_saved = iter_num
                    if master and improved:
                        keep_as_best(out / "ckpt.pt", out / "best.pt")
                    say(f"saved {out / 'ckpt.pt'}{' and best.pt' if master and improved else ''}")
                t_last += time.time() - t_eval  # evaluating and saving do not count towards ms/iter
            if iter_num >= c["max_iters"]:
                break

            # one optimizer step = `accum` micro-steps on this process
            lr = get_lr(iter_num, c)
            for group in optimizer.param_groups:
                group["lr"] = lr
            starts = sampler.take(windows_per_iter)  # the global batch, the same in every process
            for micro in range(accum):
                k = rank * accum + micro  # this process's micro-batches
                x, y = get_batch(train_data, starts[k * B:(k + 1) * B], T, device)
                if world_size > 1:  # all-reduce the gradients only after the last micro-step
                    model.require_backward_grad_sync = micro == accum - 1
                with autocast:
                    logits, ce = model(x, y)
                    if teacher is not None:
                        with torch.no_grad():
                            teacher_logits, _ = teacher(x)
                        kl = kl_teacher_student(logits, teacher_logits)
                        loss = c["kl_weight"] * kl + c["ce_weight"] * ce
                        parts_sum += torch.stack([kl.detach(), ce.detach()]) / accum
                    else:
                        loss = ce
                scaler.scale(loss / accum).backward()
                loss_sum += loss.detach() / accum
            if c["grad_clip"] > 0:
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), c["grad_clip"])
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            iter_num += 1
            n_logged += 1

            if (iter_num - 1) % c["log_interval"] == 0 or iter_num == c["max_iters"]:
                stats = torch.cat([loss_sum[None], parts_sum]) / n_logged
                if world_size > 1:  # the mean over all processes = the loss of the global batch
                    torch.distributed.all_reduce(stats)
                    stats /= world_size
                loss_v, kl_v, ce_v = stats.tolist()
                dt = (time.time() - t_last) / n_logged
                mem = peak_memory_mb(device)
                extra = f", kl {kl_v:.4f}, ce {ce_v:.4f}" if teacher is not None else ""
                say(f"iter {iter_num - 1}: loss {loss_v:.4f}{extra}, lr {lr:.2e}, {dt * 1000:.0f} ms/iter, "
                    f"{tokens_per_iter / dt:,.0f} tok/s, {'peak mem' if device.type == 'cuda' else 'peak RSS'} "
                    f"{mem:,.0f} MiB")
                record = dict(type="train", iter=iter_num - 1, loss=loss_v, lr=lr, ms_per_iter=dt * 1000,
                              tokens_per_s=tokens_per_iter / dt, mem_mb=mem, tokens_seen=iter_num * tokens_per_iter,
                              epoch=sampler.progress())
                if c["grad_clip"] > 0:
                    record["grad_norm"] = grad_norm.item()
                if teacher is not None:
                    record.update(kl=kl_v, ce=ce_v)
                log.write(**record)
                loss_sum.zero_()
                parts_sum.zero_()
                n_logged, t_last = 0, time.time()

            stop = ctrl_c.requested
            if world_size > 1:  # every process must stop at the same iteration
                flag = torch.tensor(float(stop), device=device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                stop = flag.item() > 0
            if stop:
                checkpoint(with_rng_of_all_ranks=True)
                say(f"interrupted: saved {out / 'ckpt.pt'} at iteration {iter_num}; continue with "
                    f"--init_from=resume --out_dir={out}")
                log.close()
                raise KeyboardInterrupt

    if last_saved != iter_num:  # the run's final state, so it can be resumed or extended
        checkpoint()
        say(f"saved {out / 'ckpt.pt'}")
    summary = {"iter_num": iter_num, "val_loss": val_loss, "best_val_loss": best_val_loss, "out_dir": str(out),
               "tokens_seen": iter_num * tokens_per_iter, "epoch": sampler.progress(),
               "wall_s": time.time() - t_start}
    say(f"done: {iter_num} iterations, {summary['tokens_seen']:,} tokens ({summary['epoch']:.2f} epochs), "
        f"final val loss {'n/a' if val_loss is None else f'{val_loss:.4f}'}, best {best_val_loss:.4f}, "
        f"{summary['wall_s'] / 60:.1f} min")
    log.write(type="done", **summary)
    log.close()

    # --- a sample ---------------------------------------------------------------------------------
    if master and c["sample_tokens"] > 0:
        from data.tokenizer import get_tokenizer
        tok = get_tokenizer(meta["tokenizer"])
        prompt = tok.encode(c["sample_prompt"]) or [tok.eot_token]
        torch.manual_seed(c["seed"])
        raw_model.eval()
        with autocast:
            ids = raw_model.generate(torch.tensor([prompt], device=device), c["sample_tokens"],
                                     temperature=c["temperature"], top_k=c["top_k"] or None)
        say(f"sample ({c['sample_tokens']} tokens, temperature {c['temperature']}, top_k {c['top_k']}):")
        say("-" * 80 + "\n" + tok.decode(ids[0].tolist()) + "\n" + "-" * 80)
    return summary


if __name__ == "__main__":
    try:
        main()
    except TrainError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
