"""What glibc's fixed mmap threshold costs a CPU training step: SmolLM2-135M-Instruct forward + backward + AdamW in
bf16 on 10 batches of 2 rows of 300-880 random tokens (the spread of ReDial SFT rows in its tokenizer), one thread,
each sample a fresh process, with the default allocator settings and with ``MALLOC_MMAP_THRESHOLD_=65536`` (the
setting ``benchmarks/learning.py --base smollm2`` gives its SFT so that its memory stays bounded), interleaved (the
order rotates every repeat).

    python3 benchmarks/sft_allocator.py                  # 2 repeats of each setting (~5 min on 2 cores)
    python3 benchmarks/sft_allocator.py --repeats 3 --model DIR
    python3 benchmarks/sft_allocator.py --quick --model DIR   # 2 short steps, 1 repeat (smoke run)

Prints and writes (``benchmarks/results/sft_allocator.json``) each process's time for its steps and its peak
resident memory, and the ratio of the two settings' times within each repeat. What it does not show: the growth of
resident memory over hundreds of steps that the threshold prevents (10 steps are too few); docs/BENCHMARKS.md
(ReDial, the SmolLM2 row) has the SFT runs that show it.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

LENGTHS = (300, 620, 410, 880, 350, 700, 480, 560, 390, 820)  # tokens per row of each batch
QUICK_LENGTHS = (40, 60)
SETTINGS = {"default": {}, "mmap_threshold_64k": {"MALLOC_MMAP_THRESHOLD_": "65536"}}
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
print(f"{time.time() - t0:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
"""


def main(argv=None) -> dict:
    p = C.parser(__doc__, quick="2 short steps, 1 repeat (smoke run)")
    p.add_argument("--model", type=Path, default=None,
                   help="a HF checkpoint (default: the SmolLM2-135M-Instruct cache, converted once if missing)")
    p.add_argument("--repeats", type=int, default=None, help="fresh processes per setting (default 2; --quick 1)")
    a = p.parse_args(argv)
    model = a.model
    if model is None:
        from rank_grpo_plugin.cli.generate import prepare_smollm2
        model = prepare_smollm2()
    lengths = QUICK_LENGTHS if a.quick else LENGTHS
    repeats = a.repeats or (1 if a.quick else 2)
    info, load_start = C.machine(), C.load()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    print(f"model {model}; {len(lengths)} steps of 2 rows x {min(lengths)}-{max(lengths)} tokens, one thread")
    names, samples = list(SETTINGS), []
    for r in range(repeats):
        row = {"repeat": r + 1, "order": C.rotated(names, r)}
        for name in row["order"]:
            out = subprocess.run([sys.executable, "-c", CHILD, str(model), ",".join(map(str, lengths))],
                                 env={**env, **SETTINGS[name]}, capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"the {name} process failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
            seconds, peak = out.stdout.split()[-2:]
            row[name] = {"seconds": float(seconds), "peak_rss_mib": int(peak)}
            print(f"repeat {r + 1}  {name:20s} {float(seconds):7.1f} s  peak RSS {peak} MiB", flush=True)
        row["ratio"] = row["mmap_threshold_64k"]["seconds"] / row["default"]["seconds"]
        print(f"repeat {r + 1}  ratio (threshold / default) {row['ratio']:.2f}", flush=True)
        samples.append(row)
    payload = {"benchmark": "sft_allocator", "quick": a.quick, "machine": info, "load_start": load_start,
               "load_end": C.load(), "model": str(model), "threads": 1, "lengths": list(lengths), "rows": 2,
               "settings": SETTINGS, "repeats": samples,
               "median_ratio": statistics.median(s["ratio"] for s in samples)}
    path = C.write_json("sft_allocator", payload, a.out, a.quick)
    print(f"median ratio {payload['median_ratio']:.2f}; load {load_start} -> {payload['load_end']}; wrote {path}")
    return payload


if __name__ == "__main__":
    main()
