"""
The two tokenizers of revgpt: get_tokenizer("byte") and get_tokenizer("gpt2").

Both return an object with .name, .n_vocab, .eot_token, .encode(text) -> list[int] (the string
"<|endoftext|>" is allowed and becomes the end-of-text token), .encode_ordinary(text) (plain text
only, used to build corpora) and .decode(ids) -> str.

byte: the UTF-8 bytes of the text (ids 0..255) plus end-of-text = 256; n_vocab = 257. Our
      character-level tokenizer, the same for every corpus.
gpt2: GPT-2's BPE (50,257 tokens, end-of-text = 50256) through tiktoken. tiktoken normally downloads
      its files from the internet. So that it also works where only package registries are reachable,
      the ranks (the file tiktoken calls r50k_base, the same vocabulary as its "gpt2") are taken from
      the PyPI source distribution of openai-whisper, verified by sha256 and cached in
      data/gpt2_bpe/gpt2.tiktoken. Where the file comes from, in order:
        1. $REVGPT_GPT2_BPE, a path to your own copy of gpt2.tiktoken (sha256-verified),
        2. the cache data/gpt2_bpe/gpt2.tiktoken (sha256-verified; a bad cache is fetched again),
        3. tiktoken.get_encoding("gpt2"), which works online or from tiktoken's own cache,
        4. pip download of the openai-whisper sdist (803 KB, not installed) -> the cache.
"""

import base64
import functools
import os
import tarfile
import tempfile
from pathlib import Path

EOT = "<|endoftext|>"

GPT2_CACHE = Path(__file__).resolve().parent / "gpt2_bpe" / "gpt2.tiktoken"
GPT2_ENV = "REVGPT_GPT2_BPE"
GPT2_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"  # = tiktoken's pin for r50k_base
WHISPER_SDIST = "openai-whisper==20250625"  # MIT licence; its sdist ships whisper/assets/gpt2.tiktoken
WHISPER_FILE = "openai_whisper-20250625.tar.gz"
WHISPER_SHA256 = "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96"
# GPT-2's pre-tokenization regex (from GPT-2's encoder): contractions, letters, digits, other symbols, spaces
GPT2_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class ByteTokenizer:
    """UTF-8 bytes are the tokens (0..255); 256 is end-of-text."""
    name = "byte"
    n_vocab = 257
    eot_token = 256

    def encode_ordinary(self, text):
        return list(text.encode("utf-8"))

    def encode(self, text):
        ids = []
        for i, part in enumerate(text.split(EOT)):
            if i > 0:
                ids.append(self.eot_token)
            ids.extend(part.encode("utf-8"))
        return ids

    def decode(self, ids):
        # a model can sample byte sequences that are not valid UTF-8: those become U+FFFD
        out, run = [], bytearray()
        for i in ids:
            if i == self.eot_token:
                out += [run.decode("utf-8", errors="replace"), EOT]
                run = bytearray()
            elif 0 <= i < 256:
                run.append(i)
            else:
                raise ValueError(f"byte tokenizer: token id {i} is out of range 0..256")
        out.append(run.decode("utf-8", errors="replace"))
        return "".join(out)


class GPT2Tokenizer:
    """GPT-2 BPE: a thin wrapper over a tiktoken.Encoding."""
    name = "gpt2"

    def __init__(self, enc):
        self.enc = enc
        self.n_vocab = enc.n_vocab      # 50257
        self.eot_token = enc.eot_token  # 50256

    def encode_ordinary(self, text):
        return self.enc.encode_ordinary(text)

    def encode(self, text):
        return self.enc.encode(text, allowed_special={EOT})

    def decode(self, ids):
        return self.enc.decode(list(ids))


@functools.lru_cache(maxsize=None)
def get_tokenizer(name):
    if name == "byte":
        return ByteTokenizer()
    if name == "gpt2":
        return GPT2Tokenizer(gpt2_encoding())
    raise ValueError(f"unknown tokenizer '{name}' (choose 'byte' or 'gpt2')")


# -----------------------------------------------------------------------------
# GPT-2 BPE ranks

def gpt2_encoding():
    """A tiktoken.Encoding for GPT-2, by the route described at the top of this file."""
    import tiktoken
    if not os.environ.get(GPT2_ENV) and not GPT2_CACHE.exists():
        try:
            return tiktoken.get_encoding("gpt2")
        except Exception as e:  # typically no internet: requests' ConnectionError
            print(f"tiktoken.get_encoding('gpt2') failed ({type(e).__name__}); "
                  f"getting the GPT-2 BPE ranks from PyPI instead")
    return encoding_from_ranks(gpt2_ranks_file())


def encoding_from_ranks(path):
    """Build GPT-2's tiktoken.Encoding from a gpt2.tiktoken ranks file."""
    import tiktoken
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PAT, mergeable_ranks=load_ranks(path),
                             special_tokens={EOT: 50256}, explicit_n_vocab=50257)


def load_ranks(path):
    """
    Read and sha256-check a .tiktoken ranks file: one line per token, "base64(token bytes) rank".
    (This is the format tiktoken.load.load_tiktoken_bpe reads; we parse it here because older
    tiktoken versions need the extra package `blobfile` to open a local file.)
    """
    from data.common import sha256_bytes
    data = Path(path).read_bytes()
    actual = sha256_bytes(data)
    if actual != GPT2_SHA256:
        raise ValueError(f"{path}: sha256 {actual} does not match GPT-2's ranks file ({GPT2_SHA256})")
    return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}


def gpt2_ranks_file(cache=GPT2_CACHE):
    """Path to a sha256-verified gpt2.tiktoken: $REVGPT_GPT2_BPE, else the cache (fetched if needed)."""
    from data.common import sha256_file
    if os.environ.get(GPT2_ENV):
        path = Path(os.environ[GPT2_ENV])
        if not path.is_file():
            raise FileNotFoundError(f"${GPT2_ENV} points to {path}, which is not a file")
        if sha256_file(path) != GPT2_SHA256:
            raise ValueError(f"${GPT2_ENV}={path}: sha256 {sha256_file(path)} is not GPT-2's ranks file ({GPT2_SHA256})")
        return path
    cache = Path(cache)
    if cache.exists():
        if sha256_file(cache) == GPT2_SHA256:
            return cache
        print(f"{cache} is corrupt (wrong sha256); fetching it again")
        cache.unlink()
    fetch_gpt2_ranks(cache)
    return cache


def fetch_gpt2_ranks(dest):
    """Download the openai-whisper sdist from PyPI, take whisper/assets/gpt2.tiktoken out of it,
    check its sha256 and save it atomically at dest."""
    from data.common import atomic_write, pip_download, sha256_bytes
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"GPT-2 BPE ranks: fetching gpt2.tiktoken from the PyPI sdist {WHISPER_SDIST} into {dest}")
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        sdist = pip_download(WHISPER_SDIST, WHISPER_FILE, WHISPER_SHA256, dest_dir=tmp)
        with tarfile.open(sdist, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.name.endswith("/whisper/assets/gpt2.tiktoken")]
            if len(members) != 1:
                raise RuntimeError(f"{WHISPER_FILE} has no whisper/assets/gpt2.tiktoken")
            data = tar.extractfile(members[0]).read()
    if sha256_bytes(data) != GPT2_SHA256:
        raise RuntimeError(f"gpt2.tiktoken from {WHISPER_FILE} has sha256 {sha256_bytes(data)}, expected {GPT2_SHA256}")
    atomic_write(dest, data)
    print(f"saved {dest} ({len(data):,} bytes, sha256 ok)")
