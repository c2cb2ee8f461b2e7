"""Tests of convert.py: GPT-2 loading (HF, nanoGPT, revgpt), HF export, conversion to the reversible
dynamics with a short distillation fine-tune, and bad input. transformers is a test-only dependency
(requirements-dev.txt); the tests that need it are skipped when it is missing."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import convert  # noqa: E402
import revgpt  # noqa: E402
from revgpt import GPT, GPTConfig  # noqa: E402

REVERSIBLE = ["midpoint", "leapfrog", "hamiltonian"]
V, T = 97, 32  # a vocabulary that is not GPT-2's, and a short context


def hf():
    return pytest.importorskip("transformers")


def random_hf_model(seed=0, n_layer=3):
    """A small random GPT2LMHeadModel, with biases and LayerNorms moved off their 0/1 init so every
    weight matters."""
    transformers = hf()
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=T, n_embd=48, n_layer=n_layer, n_head=4,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def tiny_euler(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(block_size=T, vocab_size=V, n_layer=3, n_head=4, n_embd=48, dynamics="euler")
    args.update(kw)
    model = GPT(GPTConfig(**args))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def tokens(B=2, n=20, seed=1):
    return torch.randint(0, V, (B, n), generator=torch.Generator().manual_seed(seed))


# 1. Hugging Face GPT-2 <-> revgpt ----------------------------------------------------------------


def test_hf_parity_logits_and_greedy_generation(tmp_path):
    ref = random_hf_model()
    ref.save_pretrained(tmp_path)
    model, tok = convert.load_model(tmp_path)
    assert model.config.dynamics == "euler" and model.config.vocab_size == V and model.config.block_size == T
    assert tok is None  # a foreign vocabulary: the tokenizer is unknown
    idx = tokens()
    with torch.no_grad():
        assert torch.allclose(model(idx)[0], ref(idx).logits, atol=1e-5, rtol=0)
        # greedy generation of 20 tokens: HF's generate against our argmax loop
        prompt = idx[:, :5]
        want = ref.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0,
                            attention_mask=torch.ones_like(prompt))
        got = prompt
        for _ in range(20):
            got = torch.cat([got, model(got)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(got, want)


def test_export_loads_in_transformers_with_the_same_logits(tmp_path):
    transformers = hf()
    model = tiny_euler()
    convert.export_hf(model, tmp_path, tokenizer="byte", dataset="shakespeare_char")
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["revgpt_tokenizer"] == "byte" and cfg["activation_function"] == "gelu_new"
    ref = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = tokens()
    with torch.no_grad():
        assert torch.allclose(ref(idx).logits, model(idx)[0], atol=1e-5, rtol=0)
    # and back into revgpt: the same weights, bit for bit, and our tokenizer name
    back, tok = convert.load_model(tmp_path)
    assert tok == "byte"
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_export_without_biases_writes_zero_biases(tmp_path):
    model = tiny_euler(bias=False)
    convert.export_hf(model, tmp_path)
    back, _ = convert.load_model(tmp_path)
    idx = tokens()
    with torch.no_grad():
        assert torch.allclose(back(idx)[0], model(idx)[0], atol=1e-6, rtol=0)


def test_cli_export_keeps_tokenizer_and_dataset(tmp_path):
    model = tiny_euler()
    torch.save(convert.revgpt_checkpoint(model, "byte", "shakespeare_char"), tmp_path / "c.pt")
    convert.main([f"--export={tmp_path / 'c.pt'}", f"--export_dir={tmp_path / 'hf'}"])
    back, tok = convert.load_model(tmp_path / "hf")
    assert tok == "byte" and convert.source_dataset(tmp_path / "hf") == "shakespeare_char"
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
    with pytest.raises(convert.ConvertError, match="export_dir"):
        convert.main([f"--export={tmp_path / 'c.pt'}"])


def test_hf_files_without_prefix_with_buffers_as_pytorch_model_bin(tmp_path):
    """Older HF files (as the original gpt2 repo): no 'transformer.' prefix, attn.bias / masked_bias
    buffers present, pytorch_model.bin; lm_head.weight present and equal to wte."""
    model = tiny_euler()
    convert.export_hf(model, tmp_path)
    from safetensors.torch import load_file
    sd = {k.removeprefix("transformer."): v for k, v in load_file(tmp_path / "model.safetensors").items()}
    for i in range(model.config.n_layer):
        sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, T, T))
        sd[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    sd["lm_head.weight"] = sd["wte.weight"]
    (tmp_path / "model.safetensors").unlink()
    torch.save(sd, tmp_path / "pytorch_model.bin")
    back, _ = convert.load_model(tmp_path)
    idx = tokens()
    with torch.no_grad():
        assert torch.equal(back(idx)[0], model(idx)[0])


# 2. nanoGPT and revgpt checkpoints -------------------------------------------------------------


def test_nanogpt_checkpoint_round_trip(tmp_path):
    model = tiny_euler()
    sd = {"_orig_mod." + k: v for k, v in model.state_dict().items()}  # as saved after torch.compile
    for i in range(model.config.n_layer):
        sd[f"_orig_mod.transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, T, T))  # nanoGPT's mask buffer
    c = model.config
    ckpt = {"model": sd, "model_args": dict(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, block_size=T,
                                            bias=True, vocab_size=V, dropout=0.0),
            "iter_num": 5, "best_val_loss": 1.0, "config": {"dataset": "x"}}
    torch.save(ckpt, tmp_path / "ckpt.pt")
    with pytest.warns(UserWarning, match="GELU"):  # the exact-vs-tanh GELU difference is stated
        back, tok = convert.load_model(tmp_path / "ckpt.pt")
    assert tok is None and back.config.dynamics == "euler"
    idx = tokens()
    with torch.no_grad():
        assert torch.equal(back(idx)[0], model(idx)[0])


def test_revgpt_checkpoint_overrides_convert_and_crop(tmp_path):
    model = tiny_euler()
    torch.save(convert.revgpt_checkpoint(model, "byte", "shakespeare_char"), tmp_path / "c.pt")
    same, tok = convert.load_model(tmp_path / "c.pt")
    assert tok == "byte"
    idx = tokens()
    with torch.no_grad():
        assert torch.equal(same(idx)[0], model(idx)[0])
    for dyn in REVERSIBLE:  # dynamics=... converts with the default mapping
        conv, _ = convert.load_model(tmp_path / "c.pt", dynamics=dyn)
        ref = convert.convert(model, dyn)
        assert conv.config == ref.config and conv.config.backward == "reversible"
    cropped, _ = convert.load_model(tmp_path / "c.pt", block_size=16)
    with torch.no_grad():
        assert torch.equal(cropped(idx[:, :16])[0], model(idx[:, :16])[0])


# 3. Conversion ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dyn", REVERSIBLE)
def test_convert_keeps_weights_and_follows_the_mapping(dyn):
    model = tiny_euler()
    conv = convert.convert(model, dyn)
    for k, v in model.state_dict().items():
        assert torch.equal(conv.state_dict()[k], v), k
    want = convert.CONVERT_DEFAULTS[dyn]
    assert conv.config.dynamics == dyn and conv.config.h == want["h"] and conv.config.backward == "reversible"
    if dyn == "midpoint":  # a = -2^(-6/L): -1/2 at L = 6, and the rounding amplification (1/|a|)^L = 64
        assert conv.config.a == convert.default_midpoint_a(3) and (1 / abs(conv.config.a)) ** 3 == pytest.approx(64)
        assert convert.default_midpoint_a(6) == -0.5
    # a converted model is reversible: the embedding comes back from the final pair
    assert revgpt.reconstruction_error(conv.double(), tokens()) < 1e-10


def test_midpoint_mapping_equations_on_a_one_layer_model():
    """One layer, p_{-1} = p_0 = e: midpoint gives p_1 = e + 2h f(e) (= Euler's e + f(e) at 2h = 1),
    leapfrog p_1 = e + h^2 f(e), hamiltonian the split attention-then-MLP update."""
    model = tiny_euler(n_layer=1).double()
    idx = tokens()
    with torch.no_grad():
        e = model.embed(idx)
        blk = model.transformer.h[0]
        head = lambda p: model.lm_head(model.transformer.ln_f(p))  # noqa: E731
        for dyn, h, p1 in [("midpoint", 0.5, e + blk(e)), ("midpoint", 0.8, e + 1.6 * blk(e)),
                           ("leapfrog", 0.7, e + 0.49 * blk(e)),
                           ("hamiltonian", 1.0, e + blk.mlp_forcing(e + blk.attn_forcing(e)))]:
            conv = convert.convert(model, dyn, h=h)
            assert torch.allclose(conv(idx)[0], head(p1), atol=1e-12), (dyn, h)


def make_dataset(folder, n_train=3000, n_val=1000, seed=0):
    """A tiny byte-level dataset in train.py's format (uint16 bins + meta.json)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    text = rng.integers(97, 123, size=n_train + n_val).astype(np.uint16)  # lowercase letters
    text[::7] = 32  # spaces: some structure to learn
    text[: n_train].tofile(folder / "train.bin")
    text[n_train:].tofile(folder / "val.bin")
    (folder / "meta.json").write_text(json.dumps({"tokenizer": "byte", "vocab_size": 257}))
    return folder


@pytest.mark.parametrize("dyn", REVERSIBLE)
def test_convert_then_finetune_end_to_end_with_the_reversible_backward(tmp_path, monkeypatch, dyn):
    torch.manual_seed(0)
    orig = GPT(GPTConfig(block_size=16, vocab_size=257, n_layer=2, n_head=2, n_embd=16, dynamics="euler"))
    with torch.no_grad():  # weights far from the tiny init, so that the blocks matter and the KL is not ~0
        for p in orig.parameters():
            p.add_(0.3 * torch.randn_like(p))
    torch.save(convert.revgpt_checkpoint(orig, "byte", "synthetic"), tmp_path / "orig.pt")
    aux = make_dataset(tmp_path / "aux")
    calls = []  # every call of the hand-written reversible backward
    real_backward = revgpt.ReversibleStack.backward
    monkeypatch.setattr(revgpt.ReversibleStack, "backward",
                        staticmethod(lambda ctx, g: calls.append(1) or real_backward(ctx, g)))
    out = tmp_path / "out"
    report = convert.main([f"--init_from={tmp_path / 'orig.pt'}", f"--dynamics={dyn}", f"--out_dir={out}",
                           f"--dataset={aux}", f"--eval_dataset={aux}", "--epochs=0.25", "--batch_size=4",
                           "--eval_interval=1000", "--log_interval=5", "--sample_tokens=0", "--warmup_iters=2"])
    iters = report["converted_after"]["iters"]
    assert iters == math.ceil(0.25 * ((3000 - 1) // 16) / 4) and len(calls) == iters  # one reversible backward per step
    for name in ("original", "converted_before", "converted_after"):
        assert math.isfinite(report[name]["ppl"]) and report[name]["tokens"] == 999
    assert report["converted_before"]["ppl"] != report["original"]["ppl"]  # the conversion changed the function
    train_log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    kls = [r["kl"] for r in train_log if r["type"] == "train"]
    assert kls and all(math.isfinite(k) and k > 0 for k in kls)  # the distillation loss is live
    tuned, _ = convert.load_model(out / "ckpt.pt")
    assert tuned.config.dynamics == dyn and tuned.config.backward == "reversible"
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert ckpt["config"]["teacher"].endswith("teacher.pt") and ckpt["config"]["kl_weight"] == 1.0
    # the fine-tune changed the converted weights
    before = torch.load(out / "converted.pt", weights_only=True)["model"]
    assert any(not torch.equal(before[k], v) for k, v in tuned.state_dict().items())
    assert json.loads((out / "convert.json").read_text())["converted_after"]["iters"] == iters
    if dyn == "midpoint":  # --resume continues train.py's checkpoint in out_dir (here: already finished)
        again = convert.main([f"--out_dir={out}", "--resume=True", "--sample_tokens=0"])
        assert again["converted_after"]["ppl"] == report["converted_after"]["ppl"]
        with pytest.raises(convert.ConvertError, match="convert.json"):
            convert.main([f"--out_dir={tmp_path / 'nothing'}", "--resume=True"])


def test_finetune_under_torchrun_equals_single_process(tmp_path):
    """convert.py under torchrun (2 CPU processes, gloo): one distillation step over a global batch of
    4 micro-batches gives the same fine-tuned weights as one process doing all 4."""
    torch.manual_seed(0)
    orig = GPT(GPTConfig(block_size=16, vocab_size=257, n_layer=2, n_head=2, n_embd=16, dynamics="euler"))
    with torch.no_grad():
        for p in orig.parameters():
            p.add_(0.3 * torch.randn_like(p))
    torch.save(convert.revgpt_checkpoint(orig, "byte", "synthetic"), tmp_path / "orig.pt")
    aux = make_dataset(tmp_path / "aux")
    args = [f"--init_from={tmp_path / 'orig.pt'}", "--dynamics=midpoint", f"--dataset={aux}", f"--eval_dataset={aux}",
            "--epochs=0.01", "--batch_size=2", "--gradient_accumulation_steps=4", "--learning_rate=1e-3",
            "--warmup_iters=0", "--eval_interval=1000", "--log_interval=1", "--sample_tokens=0"]
    single = convert.main(args + [f"--out_dir={tmp_path / 'single'}"])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(ROOT / "convert.py"),
           *args, f"--out_dir={tmp_path / 'ddp'}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "convert.json").read_text())
    assert single["converted_after"]["iters"] == ddp["converted_after"]["iters"] == 1
    w1, w2 = (torch.load(tmp_path / d / "ckpt.pt", weights_only=True)["model"] for d in ("single", "ddp"))
    w0 = torch.load(tmp_path / "single" / "converted.pt", weights_only=True)["model"]
    assert max((w1[k] - w0[k]).abs().max().item() for k in w1) > 1e-5  # the step moved the weights
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) <= 1e-6


# 4. Bad input -----------------------------------------------------------------------------------


def exported(tmp_path):
    convert.export_hf(tiny_euler(), tmp_path)
    return tmp_path


def edit_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        convert.load_model(tmp_path / "nope.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        convert.load_model(tmp_path / "empty")
    d = exported(tmp_path / "hf")
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        convert.load_model(d)


@pytest.mark.parametrize("field,value", [("model_type", "llama"), ("activation_function", "relu"),
                                         ("layer_norm_epsilon", 1e-6), ("n_inner", 100),
                                         ("architectures", ["LlamaForCausalLM"])])
def test_foreign_architecture_names_the_field(tmp_path, field, value):
    d = exported(tmp_path)
    edit_config(d, **{field: value})
    with pytest.raises(convert.ConvertError, match=field):
        convert.load_model(d)


def test_wrong_shape_and_missing_key_name_the_key(tmp_path):
    from safetensors.torch import load_file, save_file
    d = exported(tmp_path)
    sd = load_file(d / "model.safetensors")
    bad = dict(sd, **{"transformer.h.1.mlp.c_fc.weight": torch.zeros(48, 100)})
    save_file(bad, str(d / "model.safetensors"))
    with pytest.raises(convert.ConvertError, match=r"transformer\.h\.1\.mlp\.c_fc\.weight.*\(48, 100\)"):
        convert.load_model(d)
    save_file({k: v for k, v in sd.items() if k != "transformer.ln_f.bias"}, str(d / "model.safetensors"))
    with pytest.raises(convert.ConvertError, match=r"missing key 'transformer\.ln_f\.bias'"):
        convert.load_model(d)
    save_file(dict(sd, **{"transformer.h.0.extra.weight": torch.zeros(2)}), str(d / "model.safetensors"))
    with pytest.raises(convert.ConvertError, match=r"unexpected key 'transformer\.h\.0\.extra\.weight'"):
        convert.load_model(d)
    edit_config(d, n_layer=4)  # the config asks for a layer the file does not have
    save_file(sd, str(d / "model.safetensors"))
    with pytest.raises(convert.ConvertError, match=r"missing key 'transformer\.h\.3\."):
        convert.load_model(d)


def test_truncated_safetensors_and_checkpoint_name_the_file(tmp_path):
    d = exported(tmp_path / "hf")
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(convert.ConvertError, match=r"model\.safetensors.*truncated"):
        convert.load_model(d)
    torch.save(convert.revgpt_checkpoint(tiny_euler(), "byte"), tmp_path / "c.pt")
    raw = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(convert.ConvertError, match=r"c\.pt.*truncated"):
        convert.load_model(tmp_path / "c.pt")


def test_refusals_name_the_problem(tmp_path, monkeypatch):
    rev = convert.convert(tiny_euler(), "midpoint")
    with pytest.raises(convert.ConvertError, match="dynamics='midpoint'"):
        convert.export_hf(rev, tmp_path)
    with pytest.raises(convert.ConvertError, match="only a Euler"):
        convert.convert(rev, "leapfrog")
    with pytest.raises(convert.ConvertError, match="dynamics='rk4'"):
        convert.convert(tiny_euler(), "rk4")
    with pytest.raises(convert.ConvertError, match="n_layer"):
        convert.apply_overrides(tiny_euler(), {"n_layer": 5})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline: fails at once and says to pass a local directory
    with pytest.raises(convert.ConvertError, match="local-dir|directory"):
        convert.load_model("gpt2-xl")


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "convert.py"), f"--init_from={tmp_path / 'missing.pt'}"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "missing.pt" in r.stderr and "Traceback" not in r.stderr
