"""Tests for eval.py: lm-evaluation-harness definitions on hand-written fixtures with hand-computed
expectations, and the real benchmark files in ../shared/data when they are there."""

import dataclasses
import json
import math
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import eval as ev  # noqa: E402

FIX = ROOT / "tests" / "fixtures" / "eval"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
V = 257
LN_V = math.log(V)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny models: one thread is as fast, and far faster on a loaded machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class ByteTok:
    """Stand-in for data.tokenizer's byte tokenizer: UTF-8 bytes, end-of-text = 256."""
    name, n_vocab, eot_token = "byte", V, 256

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


class TableModel(nn.Module):
    """logits[b, t] = A[idx[b, t]] + P[t]: a bigram model plus a bias per position in the window,
    so every log-likelihood can be computed by hand from (previous token, position, token)."""

    def __init__(self, A, P=None, block_size=64):
        super().__init__()
        self.A = nn.Parameter(A)
        self.P = nn.Parameter(torch.zeros(block_size, A.shape[1]) if P is None else P)
        self.config = SimpleNamespace(block_size=block_size)
        self.rows = 0  # sequences forwarded, to count shared forwards

    def forward(self, idx, targets=None):
        assert idx.shape[1] <= self.config.block_size
        self.rows += idx.shape[0]
        return self.A[idx] + self.P[:idx.shape[1]], None


def logp(model, prev, pos, tok):
    return torch.log_softmax(model.A[prev] + model.P[pos], -1)[tok].item()


def uniform_model(block_size=64):
    return TableModel(torch.zeros(V, V), block_size=block_size)  # every token: log p = -ln 257


def peaked_model():
    """Bigram model whose argmax continues 'e' -> ' ' -> 'm' -> 'a' -> 't', and 'f' -> ' '."""
    A = torch.zeros(V, V)
    for a, b in ["e ", " m", "ma", "at", "f "]:
        A[ord(a), ord(b)] = 5.0
    return TableModel(A)


PEAK = 5.0 - math.log(math.exp(5.0) + 256)  # log p of a peaked next byte
OFF = -math.log(math.exp(5.0) + 256)  # log p of any other byte in a peaked row
FLAT = -LN_V  # log p of any byte in a row without a peak


def bigram_ll(model, prev_char, text):
    """Independent reference: sum of log p(byte | previous byte) over text, after prev_char."""
    prev, total = ord(prev_char), 0.0
    for b in text.encode("utf-8"):
        total += torch.log_softmax(model.A[prev], -1)[b].item()
        prev = b
    return total


# ----------------------------------------------------------------------------- parsing the formats


def test_hellaswag_original_preprocess():
    items = ev.load_task("hellaswag", data_dir=FIX, download=False)
    assert items[0] == dict(query="Making tea: A woman fills a kettle with water. She",  # ctx_b capitalised
                            choices=["puts it on the stove. waits for it to boil.", "drinks the kettle.", "sings.",
                                     "hands the kettle to a dog."], gold=0)
    assert items[1]["query"] == "Home and Garden: How to water a plant. Check the soil."
    assert items[1]["gold"] == 2
    derived = ev.load_task("hellaswag", FIX / "hellaswag" / "derived.jsonl")
    assert derived[0]["query"] == "Making tea: A woman fills a kettle with water. she"  # capital lost in the copy
    assert derived[0]["choices"] == items[0]["choices"]


def test_piqa_arc_obqa_winogrande_lambada_parse():
    piqa = ev.load_task("piqa", data_dir=FIX, download=False)
    assert [it["gold"] for it in piqa] == [0, 1, 1]
    assert piqa[0]["query"] == "Question: How do I boil water?\nAnswer:"
    assert piqa == ev.load_task("mine", FIX / "generic" / "mc.jsonl")  # the same set in generic form
    arc = ev.load_task("arc_easy", data_dir=FIX, download=False)
    assert arc[0]["query"] == "Question: Which is a liquid at room temperature?\nAnswer:"
    assert [it["gold"] for it in arc] == [1, 0]  # answerKey "B" among A-D, "1" among 1-3
    obqa = ev.load_task("openbookqa", data_dir=FIX, download=False)
    assert obqa[0]["query"] == "A magnet will stick to" and obqa[0]["gold"] == 1
    wino = ev.load_task("winogrande", data_dir=FIX, download=False)
    assert wino[0] == dict(context_options=["The cup fell off the shelf because the cup",
                                            "The cup fell off the shelf because the shelf"],
                           continuation="was wobbly.", gold=1)
    assert wino == ev.load_task("mine", FIX / "generic" / "partial.jsonl")
    lam = ev.load_task("lambada_openai", data_dir=FIX, download=False)
    assert lam[1] == dict(context="my dog ate the", continuation="map")
    assert lam == ev.load_task("mine", FIX / "generic" / "lambada.jsonl")
    assert len(ev.load_task("piqa", data_dir=FIX, limit=2, download=False)) == 2


def test_bad_input_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        ev.load_task("nope", data_dir=FIX)
    with pytest.raises(FileNotFoundError, match=r"piqa.*not found.*yonatanbisk"):
        ev.load_task("piqa", data_dir=tmp_path, download=False)
    with pytest.raises(ValueError, match=r"malformed\.jsonl:2: malformed JSON"):
        ev.load_task("mine", FIX / "bad" / "malformed.jsonl")
    with pytest.raises(ValueError, match=r"missing_key\.jsonl:2: malformed mine item: missing key 'gold'"):
        ev.load_task("mine", FIX / "bad" / "missing_key.jsonl")
    with pytest.raises(ValueError, match="empty.jsonl: no items"):
        ev.load_task("mine", FIX / "bad" / "empty.jsonl")
    (tmp_path / "valid.jsonl").write_bytes((FIX / "piqa" / "valid.jsonl").read_bytes())  # labels file missing
    with pytest.raises(ValueError, match=r"valid\.jsonl:1: malformed piqa item: no label: put valid-labels\.lst"):
        ev.load_task("piqa", tmp_path / "valid.jsonl")
    (tmp_path / "valid-labels.lst").write_text("0\n1\n1\n0\n")
    with pytest.raises(ValueError, match="3 items but 4 labels"):
        ev.load_task("piqa", tmp_path / "valid.jsonl")
    (tmp_path / "empty.raw").write_text("")
    with pytest.raises(ValueError, match="empty"):
        ev.load_pages(tmp_path / "empty.raw")


def test_download_checks_sha256(tmp_path, monkeypatch):
    # the download path, offline: file:// URLs stand in for the original release URLs
    piqa = dict(ev.TASKS["piqa"], url=(FIX / "piqa" / "valid.jsonl").as_uri(),
                sha256=ev.sha256_of(FIX / "piqa" / "valid.jsonl"),
                labels_sha256=ev.sha256_of(FIX / "piqa" / "valid-labels.lst"))
    monkeypatch.setitem(ev.TASKS, "piqa", piqa)
    assert ev.load_task("piqa", data_dir=tmp_path) == ev.load_task("piqa", data_dir=FIX, download=False)
    assert (tmp_path / "piqa" / "valid-labels.lst").exists()
    monkeypatch.setitem(ev.TASKS, "piqa", dict(piqa, sha256="0" * 64))
    with pytest.raises(ValueError, match="not the pinned"):
        ev.load_task("piqa", data_dir=tmp_path / "again")
    # a zip release without a published pin: the file and its labels come out of one download, and the
    # sha256 is recorded beside the file
    import zipfile
    with zipfile.ZipFile(tmp_path / "wino.zip", "w") as z:
        for name in ("dev.jsonl", "dev-labels.lst"):
            z.write(FIX / "winogrande" / name, "winogrande_1.1/" + name)
    monkeypatch.setitem(ev.TASKS, "winogrande", dict(ev.TASKS["winogrande"], url=(tmp_path / "wino.zip").as_uri()))
    assert len(ev.load_task("winogrande", data_dir=tmp_path)) == 2
    recorded = (tmp_path / "winogrande" / "dev.jsonl.sha256").read_text().strip()
    assert recorded == ev.sha256_of(FIX / "winogrande" / "dev.jsonl")
    monkeypatch.setitem(ev.TASKS, "winogrande", dict(ev.TASKS["winogrande"], url=(tmp_path / "none.zip").as_uri()))
    with pytest.raises(FileNotFoundError, match="download failed"):
        ev.load_task("winogrande", data_dir=tmp_path / "offline")


def test_cli_errors_exit_nonzero():
    r = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--tasks=nope"], capture_output=True, text=True)
    assert r.returncode != 0 and "unknown task 'nope'" in r.stderr
    r = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--tasks=piqa", "--download=maybe"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "expected True or False" in r.stderr
    assert ev.get_args(["--download=False"]).download is False


# ----------------------------------------------------------------------------- scoring, by hand


def test_encode_pair_moves_trailing_space():
    tok = ByteTok()
    assert ev.encode_pair(tok, "Answer: ", "yes") == (list(b"Answer:"), list(b" yes"))
    assert ev.encode_pair(tok, "", "hi") == ([256], list(b"hi"))  # empty context -> <|endoftext|>


def test_acc_norm_divides_by_characters():
    # uniform model: ll = -(bytes of " " + choice) ln 257, so acc picks the shortest choice and acc_norm,
    # -(n+1)/len(choice), the longest. Item 2 ("Say café." 9 chars/10 bytes vs "Say cafes." 10/10) ties on
    # ll and on ll per token; only the character count makes acc_norm pick choice 1.
    r = ev.score_multiple_choice(uniform_model(), ByteTok(), ev.load_task("piqa", data_dir=FIX, download=False))
    assert r["lls"][1] == pytest.approx([-11 * LN_V, -11 * LN_V], rel=1e-6)
    assert r["lls"][0] == pytest.approx([-9 * LN_V, -31 * LN_V], rel=1e-6)
    assert r["acc"] == pytest.approx(2 / 3) and r["acc_norm"] == pytest.approx(1 / 3)
    assert r["acc_stderr"] == pytest.approx(1 / 3) and r["acc_norm_stderr"] == pytest.approx(1 / 3)
    hs = ev.score_multiple_choice(uniform_model(), ByteTok(), ev.load_task("hellaswag", data_dir=FIX, download=False))
    assert (hs["acc"], hs["acc_norm"], hs["acc_stderr"]) == (0.0, 1.0, 0.0)
    arc = ev.score_multiple_choice(uniform_model(), ByteTok(), ev.load_task("arc_easy", data_dir=FIX, download=False))
    assert (arc["acc"], arc["acc_norm"]) == (0.0, 1.0)


def test_winogrande_partial_scoring():
    # only " " + the rest of the sentence is scored, after each filled-in option: its first byte follows
    # the option's last letter ('p', 'f'; 'l', 'm'), the rest is common. Scoring the options too would
    # pick "the cup" (two bytes shorter) in item 1.
    m = peaked_model()
    r = ev.score_multiple_choice(m, ByteTok(), ev.load_task("winogrande", data_dir=FIX, download=False))
    rest1 = bigram_ll(m, " ", "was wobbly.")
    assert r["lls"][0] == pytest.approx([FLAT + rest1, PEAK + rest1], rel=1e-5)
    rest2 = bigram_ll(m, " ", "was cold.")
    assert r["lls"][1] == pytest.approx([FLAT + rest2, OFF + rest2], rel=1e-5)
    assert r["acc"] == 1.0 and "acc_norm" not in r
    full = [bigram_ll(m, "e", " the cup was wobbly."), bigram_ll(m, "e", " the shelf was wobbly.")]
    assert full[0] > full[1]  # whole-sentence scoring would have chosen the wrong option


def test_lambada_multi_token_greedy_and_perplexity():
    # " mat" after "the": every byte is the argmax; " map": the last byte is not ('a' -> 't'); " bat":
    # the first is not ('a' -> 't'). acc counts only the first.
    m = peaked_model()
    items = ev.load_task("lambada_openai", data_dir=FIX, download=False)
    r = ev.score_lambada(m, ByteTok(), items, bootstrap_iters=0)
    lls = [4 * PEAK, 3 * PEAK + OFF, OFF + OFF + FLAT + PEAK]
    assert r["lls"] == pytest.approx(lls, rel=1e-5)
    assert r["acc"] == pytest.approx(1 / 3)
    assert r["perplexity"] == pytest.approx(math.exp(-sum(lls) / 3), rel=1e-5)
    assert r["perplexity_stderr"] is None  # bootstrap disabled


def test_rolling_windows_score_every_token_once():
    # block_size 4, a 10-byte document, the harness's windows written out by hand:
    # (previous token, position in window, token) for every scored token
    torch.manual_seed(0)
    m = TableModel(torch.randn(V, V), torch.randn(4, V), block_size=4)
    a, b, c, d, e, f, g, h, i, j = b"abcdefghij"
    eot = 256
    expected = [(eot, 0, a), (a, 1, b), (b, 2, c), (c, 3, d),  # <eot> a b c -> a b c d
                (d, 0, e), (e, 1, f), (f, 2, g), (g, 3, h),  # d e f g -> e f g h (1 token of context)
                (h, 2, i), (i, 3, j)]  # f g h i -> i j (the last two positions only)
    r = ev.perplexity_text(m, ByteTok(), ["abcdefghij"])
    assert r["lls"][0] == pytest.approx(sum(logp(m, *t) for t in expected), rel=1e-5)
    assert r["tokens"] == 10
    windows = list(ev.rolling_windows([eot] + list(b"abcdefghij"), 4))
    assert [n for _, n in windows] == [4, 4, 2] and sum(n for _, n in windows) == 10


@pytest.mark.parametrize("stride", [4, 2])
def test_token_perplexity_strided(stride):
    torch.manual_seed(1)
    m = TableModel(torch.randn(V, V), torch.randn(4, V), block_size=4)
    x = np.array([7, 3, 9, 1, 4, 4, 0, 8, 2, 5], dtype=np.uint16)
    if stride == 4:  # non-overlapping windows x0..x3 | x4..x7 | x5..x8 (scores only x9)
        pos = [0, 1, 2, 3, 0, 1, 2, 3, 3]
    else:  # after the first window, each window scores 2 new tokens with at least 2 of context
        pos = [0, 1, 2, 3, 2, 3, 2, 3, 3]
    ll = sum(logp(m, int(x[k]), pos[k], int(x[k + 1])) for k in range(9))
    r = ev.perplexity_tokens(m, x, stride=stride)
    assert r["tokens"] == 9
    assert r["loss"] == pytest.approx(-ll / 9, rel=1e-5)
    assert r["perplexity"] == pytest.approx(math.exp(-ll / 9), rel=1e-5)
    with pytest.raises(ValueError, match="stride"):
        ev.perplexity_tokens(m, x, stride=5)


def test_wikitext_articles_detokenizer_and_counts():
    pages, detok = ev.load_pages(FIX / "wikitext" / "wiki.test.raw")
    assert detok and len(pages) == 2  # the blank line before the first title is dropped
    assert pages[1] == ' = Delta = \n \n Delta is a " small " river . \n \n'
    assert ev.wikitext_detokenize(pages[0]) == (
        " = Alpha Beta =\n\nAlpha Beta is a 12,000-seat stadium in Gamma. It opened in 1990 (with a concert)."
        "\n\n== History ==\n\nThe stadium's roof took 1.5 years, at 20\u00b0C.\n")
    assert ev.wikitext_detokenize(pages[1]) == ' = Delta =\n\nDelta is a "small" river.\n\n'
    # words: 47 + 11 whitespace-separated pieces, plus an empty string at each end of each page (both start
    # with a space and end in whitespace) = 49 + 13; bytes of the original pages: 194 (the degree sign is
    # 2 bytes) + 47; tokens (bytes of the detokenised pages): 160 + 39
    r = ev.perplexity_text(uniform_model(), ByteTok(), pages, detokenize=True)
    assert (r["words"], r["bytes"], r["tokens"], r["n"]) == (62, 241, 199, 2)
    assert r["word_perplexity"] == pytest.approx(V ** (199 / 62), rel=1e-5)
    assert r["byte_perplexity"] == pytest.approx(V ** (199 / 241), rel=1e-5)
    assert r["bits_per_byte"] == pytest.approx(199 * math.log2(V) / 241, rel=1e-5)
    assert r["word_perplexity_stderr"] is None  # the harness reports N/A


# ----------------------------------------------------------------------------- statistics


def harness_bootstrap(xs, iters):
    """The harness's procedure, transcribed literally: slow Python, for comparison."""
    res = []
    for i in range(iters // 1000):
        rnd = random.Random(i)
        for _ in range(1000):
            sample = rnd.choices(xs, k=len(xs))
            res.append(math.exp(-(sum(sample) / len(sample))))
    mu = sum(res) / len(res)
    return math.sqrt(sum((x - mu) ** 2 for x in res) / (len(res) - 1))


def test_bootstrap_matches_harness_and_mean_stderr():
    rng = random.Random(5)
    xs = [-rng.uniform(0.5, 4.0) for _ in range(37)]
    assert ev.bootstrap_perplexity_stderr(xs, 2000) == pytest.approx(harness_bootstrap(xs, 2000), rel=1e-12)
    assert ev.mean_stderr([1.0, 0.0, 1.0, 1.0]) == pytest.approx(0.25)  # var (ddof 1) = 0.25, / n = 4
    assert ev.mean_stderr([1.0]) is None


# ----------------------------------------------------------------------------- batching and sharing


def naive_ll(model, tokenizer, context, continuation):
    """One request alone, straight from the harness's definition: no batching, no padding, no sharing."""
    if context == "":
        ctx, cont = [tokenizer.eot_token], tokenizer.encode(continuation)
    else:
        n = len(context) - len(context.rstrip())
        if n:
            context, continuation = context[:-n], context[-n:] + continuation
        whole, ctx = tokenizer.encode(context + continuation), tokenizer.encode(context)
        cont = whole[len(ctx):]
    T = model.config.block_size
    inp = (ctx + cont)[-(T + 1):][:-1]
    with torch.no_grad():
        logits, _ = model(torch.tensor([inp]))
    logp = torch.log_softmax(logits[0, len(inp) - len(cont):].float(), -1)
    target = torch.tensor(cont)
    return logp[range(len(cont)), target].sum().item(), bool((logp.argmax(-1) == target).all())


def naive_mc(model, tokenizer, items):
    acc, acc_norm = [], []
    for it in items:
        lls = [naive_ll(model, tokenizer, it["query"], " " + c)[0] for c in it["choices"]]
        acc.append(float(np.argmax(lls) == it["gold"]))
        acc_norm.append(float(np.argmax(np.array(lls) / [len(c) for c in it["choices"]]) == it["gold"]))
    return np.mean(acc), np.mean(acc_norm)


def test_shared_forwards_for_one_token_choices():
    items = [dict(query=q, choices=list("ABCD"), gold=1) for q in ("Pick one:", "Again:", "Last one:")]
    torch.manual_seed(2)
    m = TableModel(torch.randn(V, V), torch.randn(64, V))
    shared = ev.score_multiple_choice(m, ByteTok(), items)
    assert m.rows == 3  # " A".." D" share the input "<query> ": one forward per question, not four
    pairs = [(it["query"], " " + c) for it in items for c in it["choices"]]
    unshared = ev.score_tokens(m, [(c + d, len(d)) for c, d in (ev.encode_pair(ByteTok(), *p) for p in pairs)],
                               share=False)
    assert [ll for lls in shared["lls"] for ll in lls] == pytest.approx([ll for ll, _ in unshared], rel=1e-6)
    assert shared["lls"][0][0] == pytest.approx(naive_ll(m, ByteTok(), "Pick one:", " A")[0], rel=1e-6)


def revgpt_model(dynamics="midpoint", block_size=256, vocab_size=V):
    revgpt = pytest.importorskip("revgpt")
    torch.manual_seed(0)
    return revgpt.GPT(revgpt.GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=2, n_head=2,
                                       n_embd=32, dynamics=dynamics)).eval()


@pytest.mark.parametrize("dynamics", ["euler", "midpoint", "leapfrog", "hamiltonian"])
def test_batched_equals_naive_for_every_dynamic(dynamics):
    m = revgpt_model(dynamics, block_size=32)  # short block: the long items are cut on the left
    items = [dict(query="Question: how to cool soup?\nAnswer:", choices=["blow on it", "stir it with ice", "x"], gold=0),
             dict(query="The sky is", choices=["blue", "very green today and all day"], gold=0),
             dict(query="Hi", choices=["there", "yo"], gold=1)]
    r = ev.score_multiple_choice(m, ByteTok(), items, batch_size=4)
    for it, lls in zip(items, r["lls"]):
        assert lls == pytest.approx([naive_ll(m, ByteTok(), it["query"], " " + c)[0] for c in it["choices"]],
                                    rel=1e-4, abs=1e-4)
    assert (r["acc"], r["acc_norm"]) == tuple(naive_mc(m, ByteTok(), items))
    with pytest.raises(ValueError, match="does not fit in block_size 32"):
        ev.score_multiple_choice(m, ByteTok(), [dict(query="Q", choices=["x" * 32], gold=0)])


def test_main_end_to_end(tmp_path):
    m = revgpt_model(block_size=64)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"format": "revgpt-ckpt-v1", "model": m.state_dict(), "model_args": dataclasses.asdict(m.config),
                "tokenizer": "byte"}, ckpt)
    (np.arange(300) % 256).astype(np.uint16).tofile(tmp_path / "val.bin")
    out = tmp_path / "results.json"
    ev.main([f"--ckpt={ckpt}", "--tasks=piqa,winogrande,lambada_openai,wikitext", f"--data_dir={FIX}",
             "--download=False", f"--dataset={tmp_path / 'val.bin'}", "--stride=32", "--device=cpu",
             "--bootstrap_iters=1000", f"--out={out}", "--progress=False"])
    res = json.loads(out.read_text())["results"]
    assert set(res) == {"piqa", "winogrande", "lambada_openai", "wikitext", f"{tmp_path.name}/val.bin"}
    assert res["piqa"]["n"] == 3 and 0 <= res["piqa"]["acc_norm"] <= 1
    assert res["lambada_openai"]["perplexity_stderr"] > 0
    assert res[f"{tmp_path.name}/val.bin"]["tokens"] == 299
    assert res["wikitext"]["words"] == 62
    direct = ev.score_multiple_choice(m, ByteTok(), ev.load_task("piqa", data_dir=FIX, download=False))
    assert res["piqa"]["acc"] == direct["acc"]


def test_revgpt_checkpoint_fallback_loader(tmp_path):
    m = revgpt_model(dynamics="leapfrog", block_size=64)
    ckpt = {"format": "revgpt-ckpt-v1", "model": {"_orig_mod." + k: v for k, v in m.state_dict().items()},
            "model_args": dataclasses.asdict(m.config), "tokenizer": "byte",
            "rng": {"numpy": np.random.get_state()}}  # numpy state: the safe loader refuses it
    torch.save(ckpt, tmp_path / "ckpt.pt")
    loaded, tok = ev.load_revgpt_checkpoint(tmp_path / "ckpt.pt", "cpu")
    assert tok == "byte" and loaded.config.dynamics == "leapfrog" and not loaded.training
    x = torch.randint(0, V, (2, 16))
    assert torch.equal(loaded(x)[0], m(x)[0])
    torch.save(dict(ckpt, format="nanogpt"), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a revgpt checkpoint"):
        ev.load_revgpt_checkpoint(tmp_path / "other.pt", "cpu")
    with pytest.raises(FileNotFoundError):
        ev.load_revgpt_checkpoint(tmp_path / "missing.pt", "cpu")


# ----------------------------------------------------------------------------- real data (../shared/data)

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not present")


@needs_shared
def test_real_files_parse():
    lam = ev.load_task("lambada_openai", SHARED / "lambada" / "lambada_test.jsonl")
    assert len(lam) == 5153
    foundry = ev.load_task("lambada_openai", SHARED / "lambada" / "lambada_openai_llmfoundry.jsonl")
    assert foundry == lam  # the generic copy splits off the same last word
    piqa = ev.load_task("piqa", SHARED / "piqa" / "valid.jsonl")
    assert len(piqa) == 1838 and {it["gold"] for it in piqa} == {0, 1}
    foundry = ev.load_task("piqa", SHARED / "piqa" / "piqa_llmfoundry.jsonl")
    assert len(foundry) == 1838 and [it["gold"] for it in foundry] == [it["gold"] for it in piqa]
    hs = ev.load_task("hellaswag", SHARED / "hellaswag" / "hellaswag_val_full.derived.jsonl")
    assert len(hs) == 10042
    assert all(len(it["choices"]) == 4 and 0 <= it["gold"] < 4 for it in hs)


@needs_shared
def test_real_hellaswag_200_batched_equals_naive():
    items = ev.load_task("hellaswag", SHARED / "hellaswag" / "hellaswag_val_full.derived.jsonl", limit=200)
    m = revgpt_model(block_size=256)
    r = ev.score_multiple_choice(m, ByteTok(), items, batch_size=32, progress=False)
    assert (r["acc"], r["acc_norm"]) == tuple(naive_mc(m, ByteTok(), items))


@needs_shared
def test_real_lambada_200_gpt2_batched_equals_naive(monkeypatch):
    tokenizer_mod = pytest.importorskip("data.tokenizer")
    monkeypatch.setenv("REVGPT_GPT2_BPE", str(SHARED / "gpt2_bpe" / "gpt2.tiktoken"))
    try:
        tok = tokenizer_mod.get_tokenizer("gpt2")
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"gpt2 tokenizer unavailable: {e}")
    items = ev.load_task("lambada_openai", SHARED / "lambada" / "lambada_test.jsonl", limit=200)
    m = revgpt_model(block_size=64, vocab_size=50257)  # most contexts are cut on the left
    r = ev.score_lambada(m, tok, items, batch_size=8, bootstrap_iters=0, progress=False)
    naive = [naive_ll(m, tok, it["context"], " " + it["continuation"]) for it in items]
    assert r["lls"] == pytest.approx([ll for ll, _ in naive], rel=1e-4)
    assert r["acc"] == np.mean([g for _, g in naive])
