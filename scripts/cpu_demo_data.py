"""Write a small OpenRLHF prompt dataset (jsonl: ``input`` = chat messages, ``label`` = JSON string with the
ground truth and seen titles) from the Reddit-v2 sample, for the CPU smoke runs.

    python scripts/cpu_demo_data.py OUT.jsonl [--n 6] [--data ../shared/data/reddit_v2/sample.jsonl]

Stop-gap until ``rank-grpo prepare`` exists; the label format follows the plugin's README once it is documented.
"""
import argparse
import json
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "reddit_v2" / "sample.jsonl"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--data", default=str(DEFAULT))
    ap.add_argument("--max_prompt_chars", type=int, default=1200, help="cut long conversations (CPU speed)")
    a = ap.parse_args(argv)
    rows = []
    with open(a.data, encoding="utf-8") as f:
        for line in f:
            if len(rows) >= a.n:
                break
            r = json.loads(line)
            msgs = [{"role": m["role"], "content": m["content"][: a.max_prompt_chars]} for m in r["prompt"]]
            label = {"groundtruth": r.get("groundtruth_with_release_year", []), "seen": r.get("seen_titles", [])}
            rows.append({"input": msgs, "label": json.dumps(label)})
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(f"wrote {len(rows)} prompts to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
