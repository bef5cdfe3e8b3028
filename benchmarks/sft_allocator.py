"""What glibc's fixed mmap threshold costs a CPU training step: SmolLM2-135M-Instruct forward + backward + AdamW in
bf16 on 10 batches of 2 rows of 300-880 random tokens (the spread of ReDial SFT rows in its tokenizer), one thread,
each repeat in a fresh process with the default allocator settings and then with ``MALLOC_MMAP_THRESHOLD_=65536``
(the setting ``benchmarks/learning.py --base smollm2`` gives its SFT so that its memory stays bounded), interleaved.

    python3 benchmarks/sft_allocator.py                 # 2 repeats of each setting (~5 min on 2 cores)
    python3 benchmarks/sft_allocator.py --repeats 3 --model DIR

Prints each process's time for the 10 steps and its peak resident memory, and the ratio of the times of each pair.
What it does not show: the growth of resident memory over hundreds of steps that the threshold prevents (10 steps
are too few); docs/BENCHMARKS.md (ReDial, the SmolLM2 row) has the SFT runs that show it.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

LENGTHS = (300, 620, 410, 880, 350, 700, 480, 560, 390, 820)  # tokens per row of each batch
CHILD = """
import resource, sys, time, torch
from transformers import AutoModelForCausalLM
torch.set_num_threads(1); torch.manual_seed(0)
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.bfloat16)
opt = torch.optim.AdamW(m.parameters(), lr=1e-6)
vocab = m.config.vocab_size
t0 = time.time()
for n in map(int, sys.argv[2].split(",")):
    x = torch.randint(0, vocab, (2, n))
    m(input_ids=x, labels=x).loss.backward(); opt.step(); opt.zero_grad()
print(f"{time.time() - t0:.1f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None,
                    help="a HF checkpoint (default: the SmolLM2-135M-Instruct cache, converted once if missing)")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args(argv)
    model = a.model
    if model is None:
        from rank_grpo_plugin.cli.generate import prepare_smollm2
        model = prepare_smollm2()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    settings = (("default", {}), ("mmap threshold 64 KiB", {"MALLOC_MMAP_THRESHOLD_": "65536"}))
    print(f"model {model}; 10 steps of 2 rows x {min(LENGTHS)}-{max(LENGTHS)} tokens, one thread")
    for r in range(1, a.repeats + 1):
        times = []
        for name, extra in settings:
            out = subprocess.run([sys.executable, "-c", CHILD, str(model), ",".join(map(str, LENGTHS))],
                                 env={**env, **extra}, capture_output=True, text=True, check=True).stdout.split()
            times.append(float(out[0]))
            print(f"repeat {r}  {name:22s} {out[0]:>6s} s  peak RSS {out[1]} MB", flush=True)
        print(f"repeat {r}  ratio (64 KiB / default) {times[1] / times[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
