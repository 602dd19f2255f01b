#!/usr/bin/python3
"""The PyTorch peer of stages/lm_trainer/lm_bench (bench/lm_train_bench.sh): forward + backward of
the mean next-token cross-entropy on tools/llama_suite.py's LlamaForCausalLM (the model the suite
was trained with), float32, randomly initialised from a config.json.

  lm_train_bench_torch.py CONFIG_DIR BATCH SEQ ITERS THREADS  -> tokens/s (best step after a warm-up)
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import llama_suite  # noqa: E402


def main():
    cfg_dir, B, T, iters, threads = sys.argv[1], *map(int, sys.argv[2:6])
    torch.set_num_threads(threads)
    with open(os.path.join(cfg_dir, "config.json")) as f:
        c = json.load(f)
    model = llama_suite.LlamaForCausalLM(c)
    model.init_weights(1)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, c["vocab_size"], (B, T + 1), generator=g)
    best = float("inf")
    for it in range(iters + 1):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        loss.backward()
        dt = time.perf_counter() - t0
        if it:
            best = min(best, dt)
    print(f"{B * T / best:.1f}")


main()
