"""revgpt's data layer: tokenizers (data/tokenizer.py) and datasets (data/<name>/prepare.py, data/common.py)."""
