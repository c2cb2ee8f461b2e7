# GPT-2 small (124M) on OpenWebText with nanoGPT's hyperparameters: the paper's from-scratch setting.
# Needs GPUs (about 4 days on 8 x A100 for the full 600k iterations, as nanoGPT), and the data first:
#   python data/openwebtext/prepare.py
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_owt.py --dynamics=midpoint --out_dir=out-owt-midpoint
# Pick the dynamic by override (euler = the GPT-2 baseline, midpoint, leapfrog, hamiltonian), each in its own out_dir.

out_dir = "out-gpt2-owt"
dataset = "openwebtext"

# model: GPT-2 small
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
bias = True  # as GPT-2
dropout = 0.0
vocab_size = 50304  # GPT-2's 50257 padded up to a multiple of 64 (faster matmuls)

# batch: 12 sequences x 1024 tokens x 40 micro-steps = 491,520 tokens per optimizer step
# (gradient_accumulation_steps counts all processes: 5 per GPU on 8 GPUs)
batch_size = 12
gradient_accumulation_steps = 5 * 8

# optimizer: AdamW, cosine schedule, 300B tokens in total
learning_rate = 6e-4
max_iters = 600000
lr_decay_iters = 600000
warmup_iters = 2000
min_lr = 6e-5
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0

# evaluation on the whole val split every 1000 iterations; logging
eval_interval = 1000
eval_batch_size = 12
log_interval = 10

# system: bf16 autocast (dtype="auto" on a bf16 GPU), compiled blocks
compile = True
sample_prompt = "<|endoftext|>"
