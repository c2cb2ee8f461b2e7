"""Shared test setup: the models in these tests are tiny, where torch's thread pool costs more than it
saves (and CI has 2 cores), so each test process computes on one thread."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # import revgpt, train, data, ... from the repo root
torch.set_num_threads(1)
