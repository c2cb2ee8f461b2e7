"""
Make a dataset data/NAME/ from your own text: a local .txt file, a folder of .txt files, or a URL.

Usage:
  python data/text/prepare.py --input=PATH_OR_URL --name=NAME [--tokenizer=byte|gpt2] [--sha256=HEX]
Example (tiny-shakespeare, needs internet):
  python data/text/prepare.py --name=tinyshakespeare_char \\
    --input=https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt

Split, deterministic:
  folder of files: by file; the *.txt files sorted by name, every 10th file goes to val (the last
                   file when there are fewer than 10)
  single file/URL: val is the text after the first blank line at or after 90% of the characters
A URL is downloaded once into data/NAME/_src/; --sha256 checks it (or a local file).
"""
import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, so that `import data` works
from data import common


def download(url, dest):
    if dest.exists():
        print(f"using the downloaded copy {dest}")
        return
    print(f"downloading {url} ...", flush=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            data = r.read()
    except OSError as e:  # URLError, HTTPError and timeouts are all OSErrors
        raise RuntimeError(f"could not download {url} ({e}); are you online? "
                           f"You can also download it yourself and pass --input=FILE") from None
    common.atomic_write(dest, data)
    print(f"saved {dest} ({len(data):,} bytes)")


def main():
    p = common.arg_parser(__doc__)
    p.add_argument("--input", required=True, help="a .txt file, a folder of .txt files, or an http(s) URL")
    p.add_argument("--name", required=True, help="dataset name: the output goes to data/NAME/")
    p.add_argument("--tokenizer", default="byte", choices=["byte", "gpt2"])
    p.add_argument("--sha256", default=None, help="expected sha256 of the input file (optional)")
    args = p.parse_args()

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.name) or args.name.startswith((".", "_")):
        raise ValueError(f"--name={args.name!r}: use letters, digits, '_', '-', '.' (it names a folder)")
    if (common.DATA_ROOT / args.name / "prepare.py").exists():
        raise ValueError(f"--name={args.name} is a built-in dataset (data/{args.name}/prepare.py); choose another name")
    out_dir = Path(args.out_dir) if args.out_dir else common.DATA_ROOT / args.name

    src = args.input
    if src.startswith(("http://", "https://")):
        filename = Path(urllib.parse.urlparse(src).path).name or "input.txt"
        path = common.DATA_ROOT / args.name / "_src" / filename
        download(src, path)
    else:
        path = Path(src)
        if not path.exists():
            raise FileNotFoundError(f"--input={src}: no such file or folder")
    print(f"preparing dataset '{args.name}' from {src} with the {args.tokenizer} tokenizer")

    meta = {"name": args.name, "source": src}
    if path.is_dir():
        if args.sha256:
            raise ValueError("--sha256 checks a single file, but --input is a folder")
        meta["source_sha256"] = common.folder_sha256(path)
        meta["source_sha256_of"] = "the sha256sum listing of the folder's *.txt files, sorted by name"
        meta["split"] = ("by file: *.txt sorted by name, every 10th file (1-based positions 10, 20, ...) "
                         "goes to val, or the last file if there are fewer than 10; each file is followed "
                         "by the end-of-text token")
        works = common.read_text_folder(path)
        common.prepare_works(out_dir, args.tokenizer, works, meta)
    else:
        sha = common.sha256_file(path)
        if args.sha256 and sha != args.sha256.lower():
            raise ValueError(f"{path}: sha256 {sha} does not match --sha256={args.sha256}")
        meta["source_sha256"] = sha
        meta["split"] = (f"single file: val = the text after the first blank line at or after "
                         f"{1 - common.VAL_FRACTION:.0%} of the characters, train = the text before it; "
                         f"each part is followed by the end-of-text token")
        train, val = common.split_single_text(common.read_text_file(path))
        print(f"{len(train) + len(val):,} characters; val = the last {len(val) / (len(train) + len(val)):.1%}")
        common.write_dataset(out_dir, args.tokenizer, [train], [val], meta)


if __name__ == "__main__":
    common.run_main(main)
