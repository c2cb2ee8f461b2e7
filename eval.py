"""
Evaluate a revgpt model: perplexity and zero-shot accuracy, scored as EleutherAI's lm-evaluation-harness
(v0.4) scores them, so that the numbers sit next to the ones people already quote.

    python eval.py --ckpt=out/ckpt.pt --tasks=lambada_openai,piqa,hellaswag
    python eval.py --ckpt=out/ckpt.pt --dataset=shakespeare_char --stride=128
    python eval.py --ckpt=gpt2_dir --text=wikitext-2-raw/wiki.test.raw
    python eval.py --ckpt=out/ckpt.pt --tasks=mine=my_questions.jsonl     # your own multiple-choice set

Protocols (all of them follow the harness; the last one is ours):

log-likelihood of a continuation given a context (the harness's `loglikelihood`)
  - whitespace at the end of the context moves to the front of the continuation;
  - tokens: whole = encode(context + continuation), ctx = encode(context), cont = whole[len(ctx):]
    (an empty context is the single token <|endoftext|>);
  - the model reads (ctx + cont)[-(block_size + 1):][:-1]: a long context is cut on the left;
  - ll = sum of log p(token) over cont; greedy = every cont token is the model's argmax.
multiple choice (hellaswag, piqa, arc_easy, arc_challenge, openbookqa, your own JSONL)
  - continuation = " " + choice;  acc = [argmax_i ll_i == gold];
  - acc_norm = [argmax_i ll_i / len(choice_i) == gold], the length counted in CHARACTERS (not tokens);
  - ties go to the first choice (np.argmax). The prompts are listed in TASKS below.
partial scoring (winogrande): context_i = the sentence up to "_" with option i filled in; continuation =
  " " + the rest of the sentence, the same for both options; acc only.
lambada_openai: context = the text without its last " "-separated word, continuation = " " + that word;
  acc = greedy (every token of the word is the argmax); perplexity = exp(-mean over items of ll).
rolling log-likelihood of a document (the harness's `loglikelihood_rolling`; wikitext, --text)
  - tokens = encode(document) are scored one window at a time, every token exactly once: the first
    window is <|endoftext|> + the first block_size - 1 tokens and scores block_size tokens; each later
    window reads the block_size tokens before the last token it scores and scores up to block_size new
    ones (so a window's first new token sees only the token before it);
  - word_perplexity = exp(-sum ll / words), words = len(re.split(r"\\s+", page)) on the ORIGINAL page
    (before detokenisation; an empty string counts at either end when the page starts or ends with
    whitespace, as in the harness); byte_perplexity = exp(-sum ll / bytes) and bits_per_byte =
    -sum ll / bytes / ln 2, bytes = UTF-8 bytes of the original page;
  - WikiText raw files are split into articles at " = Title = " lines and detokenised with the
    harness's wikitext rules (WIKITEXT_RULES below) before tokenizing.
standard errors, as the harness reports them
  - acc, acc_norm: sample standard error of the mean, sqrt(sum (x - mean)^2 / (n - 1)) / sqrt(n);
  - lambada perplexity: bootstrap, --bootstrap_iters resamples (the harness's default 100,000), drawn
    exactly as the harness draws them (Python's random.Random(i) for the i-th chunk of 1,000);
  - word_perplexity, byte_perplexity, bits_per_byte, token perplexity: none (the harness: "N/A").
token perplexity of a tokenized split (--dataset=NAME reads data/NAME/val.bin) [this project's protocol]
  - val.bin[0] is the first context; every later token is scored exactly once, in windows of
    block_size inputs. --stride=S (default block_size) = how many new tokens each window scores, so
    every token after the first window sees at least block_size - S tokens of context; S = block_size
    is non-overlapping windows. Reports mean loss (nats/token), perplexity = exp(loss), token count.

Data: each benchmark is read in its original release format from --data_dir/<task>/ (file names in
TASKS), or from --tasks=<task>=<file>; missing files are downloaded from the original URL when online.
A generic JSONL format works for any task and for your own sets, one item per line:
  {"query": ..., "choices": [...], "gold": i}                      multiple choice
  {"context_options": [...], "continuation": ..., "gold": i}       partial scoring
  {"context": ..., "continuation": ...}                            lambada-style (greedy acc, perplexity)
The continuation is always preceded by " ". HellaSwag's derived copy {"query", "endings", "label"} is read
too (run through HellaSwag's preprocess, but it has lost the original ctx_b capitalisation).

Efficiency: requests are sorted by length and batched with right padding; a request whose input is a prefix
of another request's input (e.g. one-token choices after a shared context) is read off that request's
forward. The model call has no key/value cache, so choices with different texts each need their own forward.
"""

import argparse
import hashlib
import importlib.util
import json
import math
import pickle
import random
import re
import sys
import time
import urllib.request
import zipfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data" / "eval"

# -----------------------------------------------------------------------------
# tasks: where each benchmark's original release lives and how its items become requests

LAMBADA_URL = "https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl"
ARC_ZIP = "https://ai2-public-datasets.s3.amazonaws.com/arc/ARC-V1-Feb2018.zip"
TASKS = {
    # name: file (in data_dir/<name>/), url, member of the zip at url (or None), sha256 of the file (or None
    #       where no published pin is known: then the first download's sha256 is recorded and checked later),
    #       labels file beside it (or None), prompt
    "hellaswag": dict(file="hellaswag_val.jsonl", member=None, sha256=None, labels=None,
                      url="https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",
                      prompt='preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()); choices '
                             'preprocess(ending)'),
    "piqa": dict(file="valid.jsonl", member=None, labels="valid-labels.lst",
                 url="https://yonatanbisk.com/piqa/data/valid.jsonl",
                 sha256="93503cc97c679e459b065c3d13e848282e44b2a25213985bed3e5d458abef72d",
                 labels_sha256="b4192dc3a2a0363d9d60ccf79800cbbe2f32ebb17726efdde6970e0b8131bceb",
                 prompt='"Question: {goal}\\nAnswer:"; choices sol1, sol2'),
    "arc_easy": dict(file="ARC-Easy-Test.jsonl", url=ARC_ZIP, labels=None,
                     member="ARC-V1-Feb2018-2/ARC-Easy/ARC-Easy-Test.jsonl",
                     sha256="ce32a0774b4beb1977d2c6b16dda5dd2b24fdc9c7f506882c452678676bd09be",
                     prompt='"Question: {question}\\nAnswer:"; choices their texts'),
    "arc_challenge": dict(file="ARC-Challenge-Test.jsonl", url=ARC_ZIP, labels=None,
                          member="ARC-V1-Feb2018-2/ARC-Challenge/ARC-Challenge-Test.jsonl",
                          sha256="9fa8ffb3e3a1f88cb302d53dd95aae81e39209ad9bcf974376b319d8fd35717c",
                          prompt='"Question: {question}\\nAnswer:"; choices their texts'),
    "openbookqa": dict(file="test.jsonl", sha256=None, labels=None,
                       url="https://ai2-public-datasets.s3.amazonaws.com/open_book_qa/OpenBookQA-V1-Sep2018.zip",
                       member="OpenBookQA-V1-Sep2018/Data/Main/test.jsonl",
                       prompt="question_stem; choices their texts"),
    "winogrande": dict(file="dev.jsonl", sha256=None, labels="dev-labels.lst",
                       url="https://storage.googleapis.com/ai2-mosaic/public/winogrande/winogrande_1.1.zip",
                       member="winogrande_1.1/dev.jsonl",
                       prompt="partial: sentence[:'_'] + option; continuation: the rest of the sentence"),
    "lambada_openai": dict(file="lambada_test.jsonl", url=LAMBADA_URL, member=None, labels=None,
                           sha256="4aa8d02cd17c719165fc8a7887fddd641f43fcafa4b1c806ca8abc31fabdb226",
                           prompt='text without its last word; continuation " " + last word'),
    "wikitext": dict(file="wiki.test.raw", sha256=None, labels=None,
                     url="https://wikitext.smerity.com/wikitext-2-raw-v1.zip",
                     member="wikitext-2-raw/wiki.test.raw",
                     prompt="wikitext-2-raw-v1 test, one document per article, rolling log-likelihood"),
}


def hellaswag_preprocess(text):
    """HellaSwag's clean-up (harness): strip, " [title]" -> ". ", drop [tags], collapse double spaces."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def parse_item(task, obj, label=None):
    """One JSON object (original release or generic form) -> one item in generic form."""
    if "context_options" in obj:  # generic partial scoring
        return dict(context_options=list(obj["context_options"]), continuation=obj["continuation"],
                    gold=int(obj["gold"]))
    if "choices" in obj and "query" in obj:  # generic multiple choice
        return dict(query=obj["query"], choices=list(obj["choices"]), gold=int(obj["gold"]))
    if "context" in obj and "continuation" in obj:  # generic lambada-style
        return dict(context=obj["context"], continuation=obj["continuation"])
    if task == "hellaswag" and "ctx_a" in obj:  # rowanz/hellaswag original
        ctx = obj["ctx_a"] + " " + obj["ctx_b"].capitalize()
        return dict(query=hellaswag_preprocess(obj["activity_label"] + ": " + ctx),
                    choices=[hellaswag_preprocess(e) for e in obj["endings"]], gold=int(obj["label"]))
    if task == "hellaswag" and "endings" in obj:  # the derived copy: query = "<activity>: <ctx>"
        return dict(query=hellaswag_preprocess(obj["query"]),
                    choices=[hellaswag_preprocess(e) for e in obj["endings"]], gold=int(obj["label"]))
    if task == "piqa" and "goal" in obj:
        return dict(query=f"Question: {obj['goal']}\nAnswer:", choices=[obj["sol1"], obj["sol2"]], gold=int(label))
    if task in ("arc_easy", "arc_challenge", "openbookqa") and "question" in obj:
        q = obj["question"]
        labels = [c["label"] for c in q["choices"]]
        query = q["stem"] if task == "openbookqa" else f"Question: {q['stem']}\nAnswer:"
        return dict(query=query, choices=[c["text"] for c in q["choices"]],
                    gold=labels.index(obj["answerKey"].lstrip()))
    if task == "winogrande" and "sentence" in obj:
        s, i = obj["sentence"], obj["sentence"].index("_")
        answer = obj.get("answer") or label  # dev.jsonl carries the answer; dev-labels.lst too
        return dict(context_options=[s[:i] + obj["option1"], s[:i] + obj["option2"]],
                    continuation=s[i + 1:].strip(), gold=int(answer) - 1)
    if task == "lambada_openai" and "text" in obj:
        context, _, word = obj["text"].rpartition(" ")
        return dict(context=context, continuation=word)
    raise ValueError(f"keys {sorted(obj)} are neither a {task} original item nor a generic one "
                     f"(query/choices/gold, context_options/continuation/gold, context/continuation)")


def read_items(task, path, limit=None):
    """Parse a JSONL benchmark file into generic items. Labels, where the release keeps them apart (PIQA,
    WinoGrande), come from <stem>-labels.lst beside the file, one a line."""
    path = Path(path)
    labels_path = path.with_name(path.stem + "-labels.lst")
    labels = labels_path.read_text().split() if labels_path.exists() else None
    items = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}: malformed {task} item"
            try:
                obj = json.loads(line)
                label = labels[len(items)] if labels and len(items) < len(labels) else None
                if task == "piqa" and "goal" in obj and label is None:
                    raise ValueError(f"no label: put {labels_path.name} beside {path.name}")
                items.append(parse_item(task, obj, label))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
            except KeyError as e:
                raise ValueError(f"{where}: missing key {e}") from None
            except (ValueError, TypeError, IndexError, AttributeError) as e:
                raise ValueError(f"{where}: {e}") from None
            if limit and len(items) == limit:
                break
    if not items:
        raise ValueError(f"{path}: no items in the file")
    if labels and not limit and len(labels) != len(items):
        raise ValueError(f"{path}: {len(items)} items but {len(labels)} labels in {labels_path.name}")
    kinds = {item_kind(it) for it in items}
    if len(kinds) > 1:
        raise ValueError(f"{path}: mixes item kinds {sorted(kinds)}; one file holds one kind")
    return items


def item_kind(item):
    return "choice" if "choices" in item else "partial" if "context_options" in item else "lambada"


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_pin(task, path):
    """Warn when a task's original file is not the published release (its scores would not compare)."""
    t, recorded = TASKS.get(task), Path(path).with_name(Path(path).name + ".sha256")
    if t is None or Path(path).name != t["file"]:
        return  # a generic or derived file: nothing to compare with
    pin = t["sha256"] or (recorded.read_text().strip() if recorded.exists() else None)
    if pin and sha256_of(path) != pin:
        print(f"warning: {path} is not the release file (sha256 {pin}); its scores are not comparable "
              f"with published ones", file=sys.stderr)


def fetch(task, folder):
    """Download a task's file (and labels file) from the original URL into folder, checking sha256 pins.
    Where no pin is published, the sha256 of this first download is recorded beside the file instead."""
    t = TASKS[task]
    files = [(t["file"], t["sha256"])] + ([(t["labels"], t.get("labels_sha256"))] if t["labels"] else [])
    folder.mkdir(parents=True, exist_ok=True)
    blobs = {}
    if t["member"]:  # one zip holds them all
        zpath = folder / (Path(t["url"]).name + ".download")
        print(f"downloading {t['url']} to {zpath}", file=sys.stderr)
        urllib.request.urlretrieve(t["url"], zpath)
        with zipfile.ZipFile(zpath) as z:
            blobs = {name: z.read(t["member"].rsplit("/", 1)[0] + "/" + name) for name, _ in files}
        zpath.unlink()
    else:
        for name, _ in files:
            url = t["url"].rsplit("/", 1)[0] + "/" + name
            print(f"downloading {url}", file=sys.stderr)
            with urllib.request.urlopen(url, timeout=60) as r:
                blobs[name] = r.read()
    for name, pin in files:
        got = hashlib.sha256(blobs[name]).hexdigest()
        if pin and got != pin:
            raise ValueError(f"{task}: downloaded {name} has sha256 {got}, not the pinned {pin}")
        if not pin:
            (folder / (name + ".sha256")).write_text(got + "\n")
            print(f"  {name}: no published sha256 pin; recorded {got}", file=sys.stderr)
        (folder / name).write_bytes(blobs[name])


def task_file(task, data_dir=DEFAULT_DATA_DIR, download=True):
    """The path of a task's original file, data_dir/<task>/<file>, downloaded if missing and allowed."""
    t = TASKS[task]
    path = Path(data_dir) / task / t["file"]
    if path.exists():
        return path
    where = t["url"] + (f" (member {t['member']})" if t["member"] else "")
    hint = f"Put the original release file there (from {where}) or pass --tasks={task}=FILE"
    if not download:
        raise FileNotFoundError(f"{task}: {path} not found. {hint}, or allow --download=True when online.")
    try:
        fetch(task, path.parent)
    except (OSError, zipfile.BadZipFile, KeyError) as e:
        raise FileNotFoundError(f"{task}: {path} not found and the download failed ({e}). {hint}.") from None
    return path


def load_task(task, path=None, data_dir=DEFAULT_DATA_DIR, limit=None, download=True):
    """Items of a task in generic form: a known task from data_dir (or `path`), or any generic JSONL `path`."""
    if task not in TASKS and path is None:
        raise ValueError(f"unknown task '{task}': choose from {', '.join(TASKS)}, or give a generic JSONL "
                         f"file as --tasks={task}=FILE")
    if task == "wikitext":
        raise ValueError("wikitext is a perplexity task: use load_pages() / perplexity_text()")
    path = Path(path) if path else task_file(task, data_dir, download)
    if not path.exists():
        raise FileNotFoundError(f"{task}: {path} not found")
    check_pin(task, path)
    return read_items(task, path, limit)


# -----------------------------------------------------------------------------
# documents for rolling perplexity: WikiText's article split and detokeniser (the harness's rules)

WIKITEXT_RULES = [  # (literal or regex, replacement), applied in this order
    ("s '", "s'"),  # contractions
    (re.compile(r"/' [0-9]/"), r"/'[0-9]/"),  # sic: the harness's pattern has literal slashes
    (" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."),  # number separators
    (" : ", ": "), (" ; ", "; "), (" . ", ". "), (" ! ", "! "), (" ? ", "? "), (" , ", ", "),  # punctuation
    (re.compile(r"\(\s*([^\)]*?)\s*\)"), r"(\1)"),  # spaces just inside brackets and quotes
    (re.compile(r"\[\s*([^\]]*?)\s*\]"), r"[\1]"),
    (re.compile(r"{\s*([^}]*?)\s*}"), r"{\1}"),
    (re.compile(r"\"\s*([^\"]*?)\s*\""), r'"\1"'),
    (re.compile(r"'\s*([^']*?)\s*'"), r"'\1'"),
    ("= = = =", "===="), ("= = =", "==="), ("= =", "=="),  # headings
    (" \u00b0 ", "\u00b0"), (" \n", "\n"), ("\n ", "\n"), (" N ", " 1 "), (" 's", "'s"),
]


def wikitext_detokenize(page):
    for pattern, replacement in WIKITEXT_RULES:
        if isinstance(pattern, str):
            page = page.replace(pattern, replacement)
        else:
            page = pattern.sub(replacement, page)
    return page


def split_wikitext(text):
    """A WikiText raw file -> its articles: a line " = Title = " (one level of '=') starts a new one.
    As in the harness, blank pieces between articles are dropped but the last article is always kept."""
    pages, lines = [], []
    for line in text.split("\n"):
        heading = line.replace("= = =", "===").replace("= =", "==").strip()
        if heading.startswith("= ") and heading.endswith(" ="):
            if "\n".join(lines).strip():
                pages.append("\n".join(lines))
            lines = []
        lines.append(line)
    pages.append("\n".join(lines))
    return pages


def load_pages(path, fmt="auto"):
    """Documents of a text file: WikiText raw -> articles (detokenised when scored); plain -> one document."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"text file {path} not found")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"{path}: the file is empty")
    if fmt == "auto":
        fmt = "wikitext" if re.fullmatch(r"wiki\..*\.raw", path.name) else "plain"
    if fmt not in ("wikitext", "plain"):
        raise ValueError(f"--text_format={fmt}: choose auto, wikitext or plain")
    return (split_wikitext(text), True) if fmt == "wikitext" else ([text], False)


# -----------------------------------------------------------------------------
# scoring core: anything callable as model(idx) -> (logits (B, T, V), loss) with model.config.block_size


def encode_pair(tokenizer, context, continuation):
    """Token ids of (context, continuation) as the harness makes them (see the module docstring)."""
    if context == "":  # nothing to condition on: <|endoftext|>
        return [tokenizer.eot_token], tokenizer.encode(continuation)
    n = len(context) - len(context.rstrip())
    if n:  # "Answer: " + "x" is scored as "Answer:" + " x"
        context, continuation = context[:-n], context[-n:] + continuation
    whole = tokenizer.encode(context + continuation)
    ctx = tokenizer.encode(context)
    if not ctx:  # a context of only whitespace
        return [tokenizer.eot_token], whole
    return ctx, whole[len(ctx):]  # split by count: BPE may merge across the boundary, as in the harness


class Progress:
    """A one-line progress report on stderr, shown only for work that takes more than a few seconds."""

    def __init__(self, total, desc, enabled=True):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.t0 = self.last = time.time()
        self.shown = False

    def update(self, done):
        now = time.time()
        if self.enabled and now - self.t0 > 2 and (now - self.last > 0.5 or done == self.total):
            rate = done / (now - self.t0)
            eta = (self.total - done) / max(rate, 1e-9)
            print(f"\r{self.desc}: {done}/{self.total} sequences, {rate:.1f}/s, eta {eta:.0f}s   ",
                  end="", file=sys.stderr, flush=True)
            self.last, self.shown = now, True

    def close(self):
        if self.shown:
            print(file=sys.stderr)


@torch.no_grad()
def score_tokens(model, requests, batch_size=8, share=True, progress=None, desc="scoring"):
    """requests: list of (tokens, n). Scores the last n tokens of each given the ones before them.
    Returns [(sum of log p, every scored token is the argmax)] in request order."""
    T = model.config.block_size
    device = next(model.parameters()).device
    seqs, inputs = [], []
    for tokens, n in requests:
        if n > T:
            raise ValueError(f"a continuation of {n} tokens does not fit in block_size {T}: the harness's "
                             f"definition scores it in one window, so this model cannot score this task")
        s = tuple(np.asarray(tokens[-(T + 1):], dtype=np.int64).tolist())  # cut on the left, as the harness
        seqs.append(s)
        inputs.append(s[:-1])
    todo = [i for i, (_, n) in enumerate(requests) if n > 0]
    results = [(0.0, True)] * len(requests)  # nothing to score: log 1, and trivially greedy
    # one forward per distinct input; an input that is a prefix of another is read off the longer one.
    # In sorted order every input comes right before the inputs it is a prefix of.
    owner = {i: i for i in todo}
    if share:
        order = sorted(todo, key=lambda i: inputs[i])
        for a, b in zip(reversed(order[:-1]), reversed(order[1:])):
            if inputs[b][:len(inputs[a])] == inputs[a]:
                owner[a] = owner[b]
    served = {}
    for i in todo:
        served.setdefault(owner[i], []).append(i)
    rows = sorted(served, key=lambda i: -len(inputs[i]))  # longest first: batches of similar length
    bar = Progress(len(rows), desc, enabled=progress if progress is not None else True)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            x = torch.zeros((len(batch), len(inputs[batch[0]])), dtype=torch.long)  # right padding
            for r, i in enumerate(batch):
                x[r, :len(inputs[i])] = torch.tensor(inputs[i])
            logits, _ = model(x.to(device))  # (B, L, V); causal, so padding never reaches a real position
            for r, row in enumerate(batch):
                for i in served[row]:
                    n, m = requests[i][1], len(inputs[i])
                    logp = logits[r, m - n:m].float().log_softmax(dim=-1)  # (n, V): predictions for the n tokens
                    target = torch.tensor(seqs[i][-n:], device=logp.device)
                    ll = logp.gather(1, target[:, None]).sum().item()
                    results[i] = (ll, bool((logp.argmax(dim=-1) == target).all()))
            bar.update(min(start + batch_size, len(rows)))
    finally:
        model.train(was_training)
        bar.close()
    return results


def loglikelihood(model, tokenizer, pairs, **kw):
    """[(context, continuation)] -> [(ll, greedy)], the harness's loglikelihood requests."""
    requests = []
    for context, continuation in pairs:
        ctx, cont = encode_pair(tokenizer, context, continuation)
        requests.append((ctx + cont, len(cont)))
    return score_tokens(model, requests, **kw)


def rolling_windows(seq, block_size, stride=None):
    """Windows that score seq[1:] exactly once, seq[0] being the first context. Yields (tokens, n): score
    the last n of tokens. The first window scores up to block_size tokens; each later one scores the next
    `stride` (default block_size) tokens, reading the block_size tokens before the last one it scores."""
    stride = stride or block_size
    if not 1 <= stride <= block_size:
        raise ValueError(f"stride {stride} must be in 1..block_size ({block_size})")
    total, done = len(seq) - 1, 0
    while done < total:
        n = min(block_size if done == 0 else stride, total - done)
        end = done + n + 1  # tokens seq[done+1:end] are scored
        yield seq[max(0, end - block_size - 1):end], n
        done += n


# -----------------------------------------------------------------------------
# metrics and their standard errors, as the harness computes them


def mean(xs):
    return sum(xs) / len(xs)


def sample_stddev(xs):
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def mean_stderr(xs):
    """Standard error of a mean (acc, acc_norm): sample std (ddof=1) / sqrt(n); None for n < 2."""
    return sample_stddev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else None


def bootstrap_perplexity_stderr(lls, iters=100_000):
    """Bootstrap standard error of exp(-mean(lls)), exactly as the harness draws it: chunks of 1,000
    resamples, chunk i drawn by random.Random(i).choices(lls, k=n). Python's generator is replayed through
    numpy's identical Mersenne Twister (same state, same 53-bit floats) to run ~100x faster."""
    n = len(lls)
    if iters <= 0 or n < 2:
        return None
    xs = np.asarray(lls, dtype=np.float64)
    chunk, res = min(1000, iters), []
    for i in range(iters // chunk):
        state = random.Random(i).getstate()[1]  # 624 words + position
        rng = np.random.RandomState()
        rng.set_state(("MT19937", np.array(state[:624], dtype=np.uint32), state[624]))
        idx = np.floor(rng.random_sample((chunk, n)) * n).astype(np.int64)  # = choices(): floor(random() * n)
        means = np.cumsum(xs[idx], axis=1)[:, -1] / n  # cumsum adds left to right, like Python's sum()
        res.extend(math.exp(-m) for m in means.tolist())
    return sample_stddev(res)


def score_multiple_choice(model, tokenizer, items, batch_size=8, progress=None, desc="multiple choice"):
    """acc (and acc_norm for choice items) of generic items, with standard errors. Usable from train.py:
    items = load_task("hellaswag", limit=500); score_multiple_choice(model, tok, items)["acc_norm"]."""
    pairs, owner = [], []
    for k, it in enumerate(items):
        if "choices" in it:
            pairs += [(it["query"], " " + c) for c in it["choices"]]
            owner += [k] * len(it["choices"])
        else:
            pairs += [(ctx, " " + it["continuation"]) for ctx in it["context_options"]]
            owner += [k] * len(it["context_options"])
    scores = loglikelihood(model, tokenizer, pairs, batch_size=batch_size, progress=progress, desc=desc)
    lls = [[] for _ in items]
    for k, (ll, _) in zip(owner, scores):
        lls[k].append(ll)
    acc = [float(np.argmax(ll) == it["gold"]) for ll, it in zip(lls, items)]
    out = dict(acc=mean(acc), acc_stderr=mean_stderr(acc))
    if all("choices" in it for it in items):
        lengths = [np.array([float(len(c)) for c in it["choices"]]) for it in items]
        acc_norm = [float(np.argmax(np.array(ll) / L) == it["gold"]) for ll, L, it in zip(lls, lengths, items)]
        out.update(acc_norm=mean(acc_norm), acc_norm_stderr=mean_stderr(acc_norm))
    out.update(n=len(items), lls=lls)
    return out


def score_lambada(model, tokenizer, items, batch_size=8, bootstrap_iters=100_000, progress=None):
    """acc (greedy) and perplexity of lambada-style items."""
    pairs = [(it["context"], " " + it["continuation"]) for it in items]
    scores = loglikelihood(model, tokenizer, pairs, batch_size=batch_size, progress=progress, desc="lambada")
    lls = [ll for ll, _ in scores]
    acc = [float(greedy) for _, greedy in scores]
    return dict(acc=mean(acc), acc_stderr=mean_stderr(acc), perplexity=math.exp(-mean(lls)),
                perplexity_stderr=bootstrap_perplexity_stderr(lls, bootstrap_iters), n=len(items), lls=lls)


def evaluate_items(model, tokenizer, items, **kw):
    if item_kind(items[0]) == "lambada":
        return score_lambada(model, tokenizer, items, **kw)
    kw.pop("bootstrap_iters", None)
    return score_multiple_choice(model, tokenizer, items, **kw)


def perplexity_text(model, tokenizer, pages, detokenize=False, batch_size=8, progress=None):
    """Rolling log-likelihood of documents: word/byte perplexity and bits per byte (harness wikitext)."""
    T = model.config.block_size
    requests, owner, n_tokens = [], [], 0
    for d, page in enumerate(pages):
        tokens = tokenizer.encode(wikitext_detokenize(page) if detokenize else page)
        n_tokens += len(tokens)
        for window in rolling_windows([tokenizer.eot_token] + tokens, T):
            requests.append(window)
            owner.append(d)
    scores = score_tokens(model, requests, batch_size=batch_size, share=False, progress=progress, desc="rolling")
    lls = [0.0] * len(pages)
    for d, (ll, _) in zip(owner, scores):
        lls[d] += ll
    ll, words = sum(lls), sum(len(re.split(r"\s+", p)) for p in pages)
    n_bytes = sum(len(p.encode("utf-8")) for p in pages)
    return dict(word_perplexity=math.exp(-ll / words), byte_perplexity=math.exp(-ll / n_bytes),
                bits_per_byte=-ll / n_bytes / math.log(2), word_perplexity_stderr=None,
                byte_perplexity_stderr=None, bits_per_byte_stderr=None,
                n=len(pages), words=words, bytes=n_bytes, tokens=n_tokens, detokenized=detokenize, lls=lls)


def perplexity_tokens(model, data, stride=None, batch_size=8, progress=None):
    """Mean loss and perplexity of a token array (e.g. val.bin), every token after data[0] scored once."""
    if len(data) < 2:
        raise ValueError(f"need at least 2 tokens to score, got {len(data)}")
    windows = list(rolling_windows(data, model.config.block_size, stride))
    scores = score_tokens(model, windows, batch_size=batch_size, share=False, progress=progress, desc="perplexity")
    n = len(data) - 1
    loss = -sum(ll for ll, _ in scores) / n
    return dict(loss=loss, perplexity=math.exp(loss), perplexity_stderr=None, tokens=n,
                stride=stride or model.config.block_size, block_size=model.config.block_size)


# -----------------------------------------------------------------------------
# loading a model


def load_model(path, device):
    """(model in eval mode, tokenizer name or None). convert.load_model reads every format (revgpt and
    nanoGPT checkpoints, Hugging Face GPT-2 directories); without convert.py, revgpt checkpoints only."""
    if importlib.util.find_spec("convert") is not None:
        import convert
        return convert.load_model(path, device)
    return load_revgpt_checkpoint(path, device)


def load_revgpt_checkpoint(path, device):
    from revgpt import GPT, GPTConfig
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: loading a Hugging Face GPT-2 directory needs convert.py")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # train.py also stores numpy RNG state, which the safe loader refuses
        ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own (trusted) checkpoint
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt != "revgpt-ckpt-v1":
        raise ValueError(f"{path}: not a revgpt checkpoint (format={fmt!r}, expected 'revgpt-ckpt-v1')")
    for key in ("model", "model_args", "tokenizer"):
        if key not in ckpt:
            raise ValueError(f"{path}: checkpoint has no '{key}'")
    model = GPT(GPTConfig(**ckpt["model_args"]))
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    return model.to(device).eval(), ckpt["tokenizer"]


# -----------------------------------------------------------------------------
# throughput: HellaSwag-format items per second, batched vs one at a time


def bench(model, tokenizer, items, batch_size):
    """Times three ways of scoring the same items; returns items/s for each and checks they agree."""
    out = {}
    t0 = time.time()
    r1 = score_multiple_choice(model, tokenizer, items, batch_size=1, progress=False)
    out["one sequence per forward"] = len(items) / (time.time() - t0)
    t0 = time.time()
    r2 = [score_multiple_choice(model, tokenizer, [it], batch_size=64, progress=False) for it in items]
    out["one item per forward (its choices batched)"] = len(items) / (time.time() - t0)
    t0 = time.time()
    r3 = score_multiple_choice(model, tokenizer, items, batch_size=batch_size, progress=False)
    out[f"batched across items, batch_size={batch_size}"] = len(items) / (time.time() - t0)
    assert r1["acc"] == r3["acc"] == mean([r["acc"] for r in r2]), "batched and unbatched scores disagree"
    return out


# -----------------------------------------------------------------------------
# command line


def parse_bool(s):
    if s.lower() in ("1", "true", "yes", "y"):
        return True
    if s.lower() in ("0", "false", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {s!r}")


def get_args(argv=None):
    p = argparse.ArgumentParser(description="Perplexity and zero-shot accuracy, lm-evaluation-harness style.")
    p.add_argument("--ckpt", default="", help="revgpt checkpoint, or a Hugging Face GPT-2 directory")
    p.add_argument("--tasks", default="", help=f"comma list of {', '.join(TASKS)}; NAME=FILE reads FILE")
    p.add_argument("--data_dir", default=str(DEFAULT_DATA_DIR), help="benchmarks live in DATA_DIR/<task>/")
    p.add_argument("--download", type=parse_bool, default=True, help="fetch missing benchmark files when online")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N items of each task (0: all)")
    p.add_argument("--dataset", default="", help="token perplexity of data/NAME/val.bin (or a .bin path)")
    p.add_argument("--split", default="val", help="which split of --dataset")
    p.add_argument("--stride", type=int, default=0, help="new tokens scored per window (0: block_size)")
    p.add_argument("--text", default="", help="rolling perplexity of a raw text file (WikiText raw supported)")
    p.add_argument("--text_format", default="auto", help="auto (wiki.*.raw -> wikitext), wikitext or plain")
    p.add_argument("--tokenizer", default="", help="byte or gpt2, when the checkpoint does not say")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="", help="float32, bfloat16 or float16 (default: bf16 autocast on CUDA)")
    p.add_argument("--bootstrap_iters", type=int, default=100_000, help="for lambada's perplexity stderr")
    p.add_argument("--out", default="eval_results.json", help="JSON results ('' to skip)")
    p.add_argument("--progress", type=parse_bool, default=True)
    p.add_argument("--bench", type=int, default=0, help="time N HellaSwag items (random 6-layer model without --ckpt)")
    return p.parse_args(argv)


def print_table(results):
    num = lambda v: f"{v:.4f}" if abs(v) < 1e5 else f"{v:.4e}"
    print(f"{'task':<20} {'metric':<16} {'value':>12} {'stderr':>12} {'n':>8}")
    for task, r in results.items():
        for k, v in r.items():
            if isinstance(v, float) and not k.endswith("_stderr"):
                se = r.get(k + "_stderr")
                print(f"{task:<20} {k:<16} {num(v):>12} {num(se) if se is not None else 'N/A':>12} "
                      f"{r.get('n', r.get('tokens', '')):>8}")


def main(argv=None):
    args = get_args(argv)
    specs = [s.partition("=") for s in args.tasks.split(",") if s]
    for name, _, path in specs:  # fail before loading the model
        if name not in TASKS and not path:
            raise ValueError(f"unknown task '{name}': choose from {', '.join(TASKS)}, or NAME=FILE for your own")
    if not (specs or args.dataset or args.text or args.bench):
        raise ValueError("nothing to evaluate: give --tasks, --dataset, --text or --bench")
    from data.tokenizer import get_tokenizer
    if args.ckpt:
        model, tok_name = load_model(args.ckpt, args.device)
    elif args.bench:
        from revgpt import GPT, GPTConfig
        torch.manual_seed(0)
        model, tok_name = GPT(GPTConfig(n_layer=6, n_head=6, n_embd=384, vocab_size=50257)).to(args.device), "gpt2"
    else:
        raise ValueError("--ckpt is required")
    tok_name = args.tokenizer or tok_name
    if not tok_name:
        raise ValueError(f"{args.ckpt} does not name its tokenizer: pass --tokenizer=byte or --tokenizer=gpt2")
    tokenizer = get_tokenizer(tok_name)
    dtype = args.dtype or ("bfloat16" if "cuda" in args.device and torch.cuda.is_bf16_supported() else "float32")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"--dtype={dtype}: choose float32, bfloat16 or float16")
    ctx = nullcontext() if dtype == "float32" else torch.autocast("cuda" if "cuda" in args.device else "cpu",
                                                                   dtype=getattr(torch, dtype))
    kw = dict(batch_size=args.batch_size, progress=args.progress)
    results = {}
    with ctx:
        if args.bench:
            name, _, path = specs[0] if specs else ("hellaswag", "", "")
            items = load_task(name, path or None, args.data_dir, args.bench, args.download)
            for how, rate in bench(model, tokenizer, items, args.batch_size).items():
                print(f"{len(items)} {name} items, {how}: {rate:.2f} items/s")
            return
        for name, _, path in specs:
            if name == "wikitext":
                path = path or task_file(name, args.data_dir, args.download)
                check_pin(name, path)
                pages, detok = load_pages(path, "wikitext")
                results[name] = perplexity_text(model, tokenizer, pages[:args.limit or None], detok, **kw)
            else:
                items = load_task(name, path or None, args.data_dir, args.limit or None, args.download)
                results[name] = evaluate_items(model, tokenizer, items, bootstrap_iters=args.bootstrap_iters, **kw)
            if name in TASKS:  # state the protocol next to the numbers
                results[name]["prompt"] = TASKS[name]["prompt"]
        if args.dataset:
            f = Path(args.dataset)
            f = f if f.suffix == ".bin" else Path(__file__).resolve().parent / "data" / args.dataset / f"{args.split}.bin"
            if not f.exists():
                raise FileNotFoundError(f"{f} not found: run data/{args.dataset}/prepare.py first")
            data = np.memmap(f, dtype=np.uint16, mode="r")
            results[f"{f.parent.name}/{f.name}"] = perplexity_tokens(model, data, args.stride or None, **kw)
        if args.text:
            pages, detok = load_pages(args.text, args.text_format)
            results[Path(args.text).name] = perplexity_text(model, tokenizer, pages, detok, **kw)
    print_table(results)
    if args.out:
        report = dict(ckpt=args.ckpt, tokenizer=tok_name, dtype=dtype, block_size=model.config.block_size,
                      protocol="EleutherAI lm-evaluation-harness definitions (see eval.py's docstring)",
                      results={t: {k: v for k, v in r.items() if k != "lls"} for t, r in results.items()},
                      config=vars(args))
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"eval.py: {e}")
