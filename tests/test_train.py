"""Tests of train.py: exact resume, DDP equivalence, config parsing, checkpoints, evaluation, distillation.
Everything runs on the CPU with tiny models on tiny synthetic datasets written to tmp_path."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train  # noqa: E402
from revgpt import DEFAULT_H, GPT, GPTConfig  # noqa: E402

WORDS = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis", "nobler", "in", "mind"]


def make_dataset(folder, n_train=8000, n_val=700, seed=0):
    """A learnable byte-level corpus: random words from a small list. Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        text = " ".join(rng.choice(WORDS, size=n // 3)).encode()[:n]
        np.frombuffer(text, dtype=np.uint8).astype(np.uint16).tofile(folder / f"{split}.bin")
    (folder / "meta.json").write_text(json.dumps({"tokenizer": "byte", "vocab_size": 257}))
    return folder


TINY = ["--n_layer=2", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=4", "--sample_tokens=0",
        "--log_interval=1", "--eval_interval=1000", "--warmup_iters=2", "--learning_rate=3e-3", "--min_lr=3e-4"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and several threads crawl on a busy CI machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def data(tmp_path):
    return make_dataset(tmp_path / "data")


def run(data, out, *args):
    return train.main([f"--data_dir={data}", f"--out_dir={out}", *TINY, *args])


def records(out, kind):
    lines = (Path(out) / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def losses(out):
    return {r["iter"]: r["loss"] for r in records(out, "train")}


def weights(path):
    return train.load_checkpoint(path)["model"]


def max_diff(sd1, sd2):
    assert sd1.keys() == sd2.keys()
    return max((sd1[k].double() - sd2[k].double()).abs().max().item() for k in sd1)


# 1. Exact resume ---------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["--dynamics=midpoint", "--dynamics=euler", "--dynamics=leapfrog --exact=True"])
def test_resume_is_exact(tmp_path, data, model):
    N = 4
    common = [*model.split(), f"--lr_decay_iters={2 * N}", "--gradient_accumulation_steps=2"]
    run(data, tmp_path / "a", *common, f"--max_iters={2 * N}")
    run(data, tmp_path / "b", *common, f"--max_iters={N}")
    assert train.load_checkpoint(tmp_path / "b" / "ckpt.pt")["iter_num"] == N
    run(data, tmp_path / "b", *common, f"--max_iters={2 * N}", "--init_from=resume")
    la, lb = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(la) == sorted(lb) == list(range(2 * N))
    for i in la:
        assert abs(la[i] - lb[i]) <= 1e-6, (i, la[i], lb[i])
    assert la[2 * N - 1] < la[0]  # it trains
    assert max_diff(weights(tmp_path / "a" / "ckpt.pt"), weights(tmp_path / "b" / "ckpt.pt")) <= 1e-6
    ca, cb = (train.load_checkpoint(tmp_path / d / "ckpt.pt") for d in "ab")
    assert ca["data_state"] == cb["data_state"] and ca["iter_num"] == cb["iter_num"] == 2 * N
    summary = run(data, tmp_path / "b", "--init_from=resume")  # nothing left to do: a no-op
    assert summary["iter_num"] == 2 * N and summary["val_loss"] is None


def test_ctrl_c_saves_and_resume_continues_exactly(tmp_path, data, monkeypatch):
    """Ctrl-C during iteration 2: the iteration finishes, ckpt.pt is saved at iteration 3, and
    resuming from it reproduces the uninterrupted run."""
    args = ["--max_iters=6", "--lr_decay_iters=6"]
    run(data, tmp_path / "a", *args)
    get_lr = train.get_lr

    def get_lr_then_ctrl_c(it, c):
        if it == 2:
            os.kill(os.getpid(), signal.SIGINT)  # delivered to the handler train.py installed
        return get_lr(it, c)

    monkeypatch.setattr(train, "get_lr", get_lr_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run(data, tmp_path / "b", *args)
    monkeypatch.setattr(train, "get_lr", get_lr)
    assert train.load_checkpoint(tmp_path / "b" / "ckpt.pt")["iter_num"] == 3
    run(data, tmp_path / "b", "--init_from=resume")  # max_iters etc. come from the checkpoint
    la, lb = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(lb) == list(range(6)) and all(abs(la[i] - lb[i]) <= 1e-6 for i in la)


# 2. DDP ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dynamics", ["midpoint", "hamiltonian"])
def test_ddp_update_equals_single_process(tmp_path, data, dynamics):
    """torchrun, 2 CPU processes (gloo): one optimizer step over a global batch of 4 micro-batches
    (2 per process, so the first micro-step runs without gradient sync) gives the same parameters as
    one process doing all 4; the hand-written reversible backward works under DDP."""
    args = [f"--dynamics={dynamics}", "--gradient_accumulation_steps=4", "--learning_rate=1e-3", "--warmup_iters=0"]
    run(data, tmp_path / "init", *args, "--max_iters=0")
    run(data, tmp_path / "single", *args, "--max_iters=1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(REPO / "train.py"),
           f"--data_dir={data}", f"--out_dir={tmp_path / 'ddp'}", *TINY, *args, "--max_iters=1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "mark a variable ready only once" not in output
    w0, w1, w2 = (weights(tmp_path / d / "ckpt.pt") for d in ("init", "single", "ddp"))
    assert max_diff(w1, w0) > 1e-4  # the step did move the weights (by ~lr)
    assert max_diff(w2, w1) <= 1e-6, max_diff(w2, w1)
    cfg = train.load_checkpoint(tmp_path / "ddp" / "ckpt.pt")
    assert cfg["world_size"] == 2 and len(cfg["rng"]["per_rank"]) == 2
    # the logged loss is the mean over both processes: the global batch's loss
    assert abs(losses(tmp_path / "ddp")[0] - losses(tmp_path / "single")[0]) <= 1e-5


# 3. Configuration --------------------------------------------------------------------------------

def test_overrides_are_type_checked():
    c, explicit = train.get_config(["--max_iters=10", "--learning_rate=6e-4", "--bias=false", "--compile=1",
                                    "--a_random=True", "--dataset=milton_char", "--h=1", "--sample_prompt='ROMEO:'"])
    assert (c["max_iters"], c["learning_rate"], c["bias"], c["compile"], c["a_random"]) == (10, 6e-4, False, True, True)
    assert type(c["h"]) is float and c["h"] == 1.0 and c["dataset"] == "milton_char" and c["sample_prompt"] == "ROMEO:"
    assert explicit == {"max_iters", "learning_rate", "bias", "compile", "a_random", "dataset", "h", "sample_prompt"}
    assert c["n_layer"] == train.DEFAULTS["n_layer"]


@pytest.mark.parametrize("arg,needle", [
    ("--max_iters=1.5", "max_iters"), ("--max_iters=ten", "expected an int"), ("--bias=yes", "expected a bool"),
    ("--learning_rate=fast", "learning_rate"), ("--n_layers=3", "'n_layers'"), ("--n_layers=3", "n_layer?"),
    ("--max_iters", "malformed"), ("--=3", "malformed"), ("max_iters=3", "unexpected argument"),
    ("--dynamics=rk4", "dynamics='rk4'"), ("--batch_size=0", "batch_size=0"), ("nonexistent.py", "not found"),
    ("--head_chunk=-8", "head_chunk=-8"),
])
def test_bad_overrides_are_clear_errors(arg, needle):
    with pytest.raises(train.ConfigError, match=None) as e:
        train.get_config([arg])
    assert needle in str(e.value)


def test_head_chunk_with_teacher_is_refused():
    with pytest.raises(train.ConfigError, match="head_chunk=8 with teacher"):
        train.get_config(["--head_chunk=8", "--teacher=teacher.pt"])


def test_config_files(tmp_path):
    good = tmp_path / "good.py"
    good.write_text("# a config\nimport math\nmax_iters = 7\nlearning_rate = 1  # an int is fine for a float\n"
                    "_private = 3\n")
    c, explicit = train.get_config([str(good), "--max_iters=9"])  # later arguments win
    assert c["max_iters"] == 9 and c["learning_rate"] == 1.0 and type(c["learning_rate"]) is float
    for text, needle in (("n_layers = 3\n", "'n_layers'"), ("max_iters = 1.5\n", "max_iters = 1.5 is a float"),
                         ("bias = 1\n", "bias = 1 is a int"), ("max_iters = (\n", "failed to run")):
        bad = tmp_path / "bad.py"
        bad.write_text(text)
        with pytest.raises(train.ConfigError) as e:
            train.get_config([str(bad)])
        assert needle in str(e.value) and str(bad) in str(e.value)


def test_shipped_config_files_parse():
    for path in sorted((REPO / "config").glob("*.py")):
        train.get_config([str(path), "--dynamics=leapfrog"])
    c, _ = train.get_config([str(REPO / "config" / "train_gpt2_owt.py")])
    assert (c["n_layer"], c["n_head"], c["n_embd"], c["block_size"]) == (12, 12, 768, 1024)
    assert (c["batch_size"], c["gradient_accumulation_steps"], c["max_iters"]) == (12, 40, 600000)


def test_command_line_error_exit_status(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "--max_iters=abc"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "error: --max_iters=abc: expected an int" in proc.stderr and "Traceback" not in proc.stderr


# 4. Checkpoints ----------------------------------------------------------------------------------

def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    good = {"format": train.CKPT_FORMAT, "model": {"w": torch.ones(3)}, "model_args": {}, "tokenizer": "byte"}
    train.save_checkpoint(good, path)
    real_save = torch.save

    def crash_midway(obj, f):  # write part of a checkpoint, then die (disk full, kill, ...)
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError):
        train.save_checkpoint({**good, "model": {"w": torch.zeros(3)}}, path)
    monkeypatch.setattr(torch, "save", real_save)

    def replace_fails(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", replace_fails)
    with pytest.raises(OSError):
        train.save_checkpoint({**good, "model": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(train.load_checkpoint(path)["model"]["w"], torch.ones(3))  # the good one survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # and no temp file is left behind


def test_best_checkpoint_survives_a_later_save(tmp_path):
    mk = lambda v: {"format": train.CKPT_FORMAT, "model": {"w": torch.full((2,), v)}, "model_args": {},
                    "tokenizer": "byte"}
    train.save_checkpoint(mk(1.0), tmp_path / "ckpt.pt")
    train.keep_as_best(tmp_path / "ckpt.pt", tmp_path / "best.pt")
    train.save_checkpoint(mk(2.0), tmp_path / "ckpt.pt")  # a later, worse state
    assert train.load_checkpoint(tmp_path / "best.pt")["model"]["w"][0] == 1.0
    assert train.load_checkpoint(tmp_path / "ckpt.pt")["model"]["w"][0] == 2.0


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, data):
    out = tmp_path / "out"
    run(data, out, "--max_iters=2")
    ckpt = out / "ckpt.pt"
    raw = ckpt.read_bytes()
    for bad in (raw[: len(raw) // 2], b"\x00" * 1000, b""):
        ckpt.write_bytes(bad)
        with pytest.raises(train.CheckpointError) as e:
            run(data, out, "--init_from=resume", "--max_iters=4")
        assert str(ckpt) in str(e.value) and "corrupt" in str(e.value)
    torch.save({"some": "dict"}, ckpt)
    with pytest.raises(train.CheckpointError, match="not a revgpt checkpoint"):
        train.load_checkpoint(ckpt)
    with pytest.raises(train.CheckpointError, match="no checkpoint"):
        run(data, tmp_path / "empty", "--init_from=resume")


def test_checkpoint_contents(tmp_path, data):
    out = tmp_path / "out"
    run(data, out, "--max_iters=3", "--dynamics=leapfrog")
    ck = train.load_checkpoint(out / "ckpt.pt")
    assert ck["format"] == "revgpt-ckpt-v1" and ck["tokenizer"] == "byte" and ck["iter_num"] == 3
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ck["model"])
    assert ck["model_args"]["dynamics"] == "leapfrog" and ck["model_args"]["h"] == DEFAULT_H["leapfrog"]
    assert ck["config"]["max_iters"] == 3 and {"python", "torch"} <= set(ck["rng"])
    assert set(ck["data_state"]) >= {"epoch", "pos"} and ck["optimizer"]["state"]
    model = GPT(GPTConfig(**ck["model_args"]))  # what inference-only consumers do
    model.load_state_dict(ck["model"])
    assert (out / "best.pt").exists()
    # the evaluation is deterministic: re-evaluating the saved model gives the logged number exactly
    final = records(out, "eval")[-1]
    again = train.main([f"--data_dir={data}", f"--out_dir={out}", "--init_from=resume", "--eval_only=True"])
    assert final["iter"] == 3 and final["whole_split"] and again["val_loss"] == final["val_loss"]


@pytest.mark.parametrize("override,field", [("--n_layer=3", "n_layer"), ("--dynamics=euler", "dynamics"),
                                            ("--h=0.25", "h"), ("--batch_size=8", "batch_size"),
                                            ("--dataset=other", "dataset"), ("--a=0.5", "a ")])
def test_incompatible_resume_is_refused(tmp_path, data, override, field):
    out = tmp_path / "out"
    run(data, out, "--max_iters=2")
    with pytest.raises(train.ConfigError) as e:
        run(data, out, "--init_from=resume", "--max_iters=4", override)
    assert "cannot resume" in str(e.value) and field in str(e.value)
    run(data, out, "--init_from=resume", "--max_iters=3", "--h=0.5", "--dynamics=midpoint")  # same values: fine


# 5. Data and evaluation -------------------------------------------------------------------------

def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(train.TrainError) as e:
        train.main([f"--data_dir={tmp_path / 'no_such_corpus'}", "--dataset=no_such_corpus", "--max_iters=1"])
    assert "no_such_corpus" in str(e.value) and "prepare.py" in str(e.value)


def test_missing_dataset_is_prepared(tmp_path, monkeypatch):
    """train.py hands a missing dataset to the data layer's ensure_prepared (stubbed here: the real one
    downloads a corpus)."""
    common = pytest.importorskip("data.common")
    calls = []

    def fake_ensure_prepared(name, data_root):
        calls.append((name, Path(data_root)))
        return make_dataset(Path(data_root) / name)

    monkeypatch.setattr(common, "ensure_prepared", fake_ensure_prepared)
    out = tmp_path / "out"
    train.main([f"--data_dir={tmp_path / 'shakespeare_char'}", f"--out_dir={out}", *TINY, "--max_iters=1"])
    assert calls == [("shakespeare_char", tmp_path)] and (out / "ckpt.pt").exists()


def test_evaluation_scores_every_val_token_once(tmp_path):
    torch.manual_seed(0)
    T = 8
    model = GPT(GPTConfig(block_size=T, vocab_size=257, n_layer=2, n_head=2, n_embd=16))
    for N in (2, 8, 9, 10, 17, 40, 43):
        data = np.random.default_rng(N).integers(0, 257, size=N).astype(np.uint16)
        loss, n = train.evaluate(model, data, T, 3, torch.device("cpu"), train.nullcontext())
        # reference: each window [s, s+T) scored separately, then the token-weighted mean
        tot, cnt = 0.0, 0
        for s in range(0, N - 1, T):
            x = torch.tensor(data[s:min(s + T, N - 1)].astype(np.int64))[None]
            y = torch.tensor(data[s + 1:min(s + T, N - 1) + 1].astype(np.int64))[None]
            logits, _ = model(x)
            tot += torch.nn.functional.cross_entropy(logits[0], y[0], reduction="sum").item()
            cnt += y.numel()
        assert n == cnt == N - 1 and abs(loss - tot / cnt) <= 1e-5
    loss_prefix, n = train.evaluate(model, data, T, 3, torch.device("cpu"), train.nullcontext(), max_tokens=20)
    assert n == 19


def test_sampler_is_deterministic_resumable_and_covers_each_epoch():
    n_tokens, T = 1000, 16
    s = train.WindowSampler(n_tokens, T, seed=5)
    epoch0 = s.starts().copy()
    assert len(set(epoch0.tolist())) == len(epoch0) and len(epoch0) >= (n_tokens - 1) // T - 1
    assert np.all(np.diff(np.sort(epoch0)) == T) and epoch0.max() + T + 1 <= n_tokens  # non-overlapping, in range
    first = s.take(len(epoch0) - 3)
    state = s.state_dict()
    rest = s.take(10)  # crosses into epoch 1
    assert s.epoch == 1 and np.array_equal(np.sort(np.concatenate([first, rest[:3]])), np.sort(epoch0))
    s2 = train.WindowSampler(n_tokens, T, seed=5)
    s2.load_state_dict(state)
    assert np.array_equal(s2.take(10), rest)
    with pytest.raises(train.CheckpointError, match="train.bin change"):
        train.WindowSampler(n_tokens + 1, T, seed=5).load_state_dict(state)


def test_lr_schedule():
    c = dict(train.DEFAULTS, learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110, max_iters=200)
    assert train.get_lr(0, c) == pytest.approx(1 / 11) and train.get_lr(9, c) == pytest.approx(10 / 11)
    assert train.get_lr(10, c) == pytest.approx(1.0) and train.get_lr(60, c) == pytest.approx(0.55)
    assert train.get_lr(110, c) == pytest.approx(0.1) and train.get_lr(150, c) == 0.1


# 6. Fine-tuning and distillation ----------------------------------------------------------------

def test_distillation_from_itself_has_zero_kl(tmp_path, data):
    run(data, tmp_path / "teacher", "--max_iters=3")
    teacher = tmp_path / "teacher" / "ckpt.pt"
    run(data, tmp_path / "student", f"--init_from={teacher}", f"--teacher={teacher}", "--max_iters=2")
    r0, r1 = records(tmp_path / "student", "train")
    assert abs(r0["kl"]) <= 1e-6 and r0["ce"] > 1.0 and r0["loss"] == pytest.approx(r0["kl"], abs=1e-7)
    assert r1["kl"] > 0  # with kl_weight=1, ce_weight=0 the first step moves off the teacher slightly...
    assert r1["kl"] < 1e-2  # ...but not far


def test_fine_tune_from_checkpoint_can_change_dynamics(tmp_path, data):
    run(data, tmp_path / "base", "--max_iters=2", "--dynamics=euler")
    base = tmp_path / "base" / "ckpt.pt"
    run(data, tmp_path / "ft", f"--init_from={base}", "--dynamics=leapfrog", "--max_iters=2")
    ck = train.load_checkpoint(tmp_path / "ft" / "ckpt.pt")
    assert ck["model_args"]["dynamics"] == "leapfrog" and ck["model_args"]["h"] == DEFAULT_H["leapfrog"]
    assert ck["model_args"]["backward"] == "reversible" and ck["iter_num"] == 2
    with pytest.raises(train.ConfigError, match="n_embd"):
        run(data, tmp_path / "ft2", f"--init_from={base}", "--n_embd=32", "--max_iters=1")
