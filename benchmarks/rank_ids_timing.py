"""Time rank_ids (+ token_advantages) on a B x T batch of a 151k-token vocabulary. Prints figures.

    python benchmarks/rank_ids_timing.py [--batch 64] [--length 1024] [--threads 1]
"""
import argparse
import time

import torch

from rank_grpo_plugin import rank_ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--length", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=151_936)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=50)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    table = (torch.rand(a.vocab, generator=g) < 0.01).long()  # ~1% of tokens contain a newline
    ids = torch.randint(0, a.vocab, (a.batch, a.length), generator=g)
    mask = torch.ones(a.batch, a.length, dtype=torch.long)
    mask[:, a.length * 3 // 4 :] = 0
    rank_ids(ids, mask, table)  # warm-up
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        rank_ids(ids, mask, table)
        times.append(time.perf_counter() - t0)
    times.sort()
    print(f"rank_ids {a.batch}x{a.length}, {a.threads} thread(s), torch {torch.__version__}: "
          f"median {times[len(times) // 2] * 1e3:.3f} ms, min {times[0] * 1e3:.3f} ms over {a.repeats} runs")


if __name__ == "__main__":
    main()
