"""
OpenWebText in GPT-2 BPE tokens: the paper's (and GPT-2's) pre-training setting, for GPU users.

Usage: pip install datasets && python data/openwebtext/prepare.py [--num_proc=8] [--out_dir=DIR]
Needs the internet (Hugging Face hub) and disk: ~55 GB of HF cache, then train.bin ~17 GB
(~9B tokens) and val.bin ~8 MB (~4M tokens).

Split: the hub's single "train" split, with 0.05% of the documents (~4k) held out as val by
`datasets`' train_test_split(test_size=0.0005, seed=2357): random whole documents, as nanoGPT.
Every document is followed by the end-of-text token 50256.
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, so that `import data` works
from data import common
from data.tokenizer import get_tokenizer


def main():
    p = common.arg_parser(__doc__)
    p.add_argument("--dataset", default="Skylion007/openwebtext", help="Hugging Face dataset id")
    p.add_argument("--num_proc", type=int, default=8, help="worker processes for download and tokenizing")
    args = p.parse_args()
    out_dir = Path(args.out_dir) if args.out_dir else common.DATA_ROOT / "openwebtext"
    try:
        from datasets import load_dataset
    except ImportError:
        raise RuntimeError("this script needs Hugging Face datasets: pip install datasets") from None

    print(f"loading {args.dataset} from the Hugging Face hub (about 55 GB the first time) ...", flush=True)
    try:
        ds = load_dataset(args.dataset, split="train", num_proc=args.num_proc)
    except Exception as e:
        hint = ""
        if "scripts are no longer supported" in str(e):
            hint = ' (this dataset still uses a loading script: try pip install "datasets<4")'
        raise RuntimeError(f"could not load {args.dataset}{hint}: {type(e).__name__}: {e}\n"
                           "Are you online? The hub is needed for this dataset.") from None
    split = ds.train_test_split(test_size=0.0005, seed=2357, shuffle=True)
    splits = {"train": split["train"], "val": split["test"]}

    tok = get_tokenizer("gpt2")
    eot = tok.eot_token

    def encode(example):
        ids = tok.encode_ordinary(example["text"]) + [eot]  # end-of-text after every document
        return {"ids": ids, "len": len(ids)}

    meta = {"tokenizer": "gpt2", "vocab_size": tok.n_vocab, "eot_token": eot, "dtype": "uint16",
            "name": "openwebtext", "source": f"Hugging Face dataset {args.dataset} (train split)",
            "source_sha256": None,  # the hub serves no single file to pin; `datasets` checks its own files
            "split": "random documents: datasets train_test_split(test_size=0.0005, seed=2357, shuffle=True) "
                     "of the train split; each document is followed by the end-of-text token"}
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, dset in splits.items():
        print(f"tokenizing {name}: {len(dset):,} documents ...", flush=True)
        dset = dset.map(encode, remove_columns=["text"], num_proc=args.num_proc, desc=f"tokenizing {name}")
        n = int(np.sum(dset["len"], dtype=np.uint64))
        # fill a memory-mapped temp file shard by shard, then rename it into place
        tmp = out_dir / f"{name}.bin.tmp"
        arr = np.memmap(tmp, dtype=np.uint16, mode="w+", shape=(n,))
        pos, n_shards = 0, min(1024, len(dset))
        for i in range(n_shards):
            shard = dset.shard(num_shards=n_shards, index=i, contiguous=True).with_format("numpy")
            ids = np.concatenate(shard["ids"])
            arr[pos:pos + len(ids)] = ids
            pos += len(ids)
        assert pos == n
        arr.flush()
        del arr
        tmp.replace(out_dir / f"{name}.bin")
        meta[f"{name}_tokens"] = n
        print(f"wrote {out_dir / name}.bin: {n:,} tokens")
    common.atomic_write(out_dir / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())


if __name__ == "__main__":
    common.run_main(main)
