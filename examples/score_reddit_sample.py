"""Score the 100 Reddit-v2 SFT lists shipped in the package with the Rank-GRPO reward pipeline (no model, no
OpenRLHF).

    python examples/score_reddit_sample.py [--data rows.jsonl] [--catalog catalog.jsonl] [--k 20]

(defaults: rank_grpo_plugin/resources/reddit_v2/sample.jsonl and its catalog.jsonl)

Prints: mean hits@K per list, Recall/NDCG@K (rank-aligned), the per-rank hit rate, and the per-rank rewards
and advantages Rank-GRPO would give the first group of lists treated as G samples of one prompt.
"""
import argparse
import json

import torch

from rank_grpo_plugin import Catalog, catalog_hits, ndcg_at_k, rank_advantages, rank_rewards, recall_at_k
from rank_grpo_plugin.resources import REDDIT_V2 as SHARED


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(SHARED / "sample.jsonl"))
    p.add_argument("--catalog", default=str(SHARED / "catalog.jsonl"))
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--group-size", type=int, default=4)
    a = p.parse_args()

    catalog = Catalog.from_file(a.catalog)
    rows = []
    with open(a.data, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            row = json.loads(line)
            try:
                completion = row["completion"][-1]["content"]
                gt, seen = row["groundtruth_with_release_year"], row["seen_titles"]
            except (KeyError, IndexError, TypeError) as e:
                raise SystemExit(f"{a.data}: line {n}: missing field ({e!r})")
            rows.append((completion, gt, seen))

    hits = torch.tensor([catalog_hits(c, gt, seen, catalog, k=a.k) for c, gt, seen in rows], dtype=torch.float32)
    n_gt = [len(gt) for _, gt, _ in rows]
    recall = sum(recall_at_k(h.tolist(), n, a.k) for h, n in zip(hits, n_gt)) / len(rows)
    ndcg = sum(ndcg_at_k(h.tolist(), n, a.k) for h, n in zip(hits, n_gt)) / len(rows)
    print(f"{len(rows)} lists scored against {catalog}")
    print(f"mean hits@{a.k} per list: {hits.sum(1).mean().item():.3f}   "
          f"Recall@{a.k}: {recall:.4f}   NDCG@{a.k}: {ndcg:.4f}  (rank-aligned protocol)")
    print("per-rank hit rate: " + " ".join(f"{v:.2f}" for v in hits.mean(0).tolist()))

    g = a.group_size
    group = hits[:g]
    for scheme, gamma in (("exp_inf", None), ("log", None), ("exp", 2.0)):
        rewards = rank_rewards(group, scheme, gamma=gamma)
        adv = rank_advantages(rewards, group_size=g)
        print(f"\n{scheme}{'' if gamma is None else f' (gamma={gamma})'}: first {g} lists as one group")
        for i in range(g):
            print(f"  list {i}: reward[0:5] " + " ".join(f"{v:5.2f}" for v in rewards[i, :5].tolist())
                  + "   advantage[0:5] " + " ".join(f"{v:5.2f}" for v in adv[i, :5].tolist()))


if __name__ == "__main__":
    main()
