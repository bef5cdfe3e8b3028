#!/usr/bin/env bash
# Qwen2.5-0.5B-Instruct, off-policy Rank-GRPO with mu = 2: every rollout batch (48 prompts x 8 = 384 lists) is used
# for 2 optimizer steps (--train.max_epochs 2; the second step's ratio is taken against the now-stale rollout
# policy, which the rank-level clip 0.06/0.08 bounds). Everything else as qwen2.5_0.5b.sh (lr 1e-6 constant).
#
#   DATA=reddit_v2/train.jsonl CATALOG=reddit_v2/catalog.jsonl bash examples/gpu/qwen2.5_0.5b_offpolicy_mu2.sh
#
# Starts from the SFT model of the on-policy run (SFT_MODEL, default runs/gpu/qwen2.5-0.5b-instruct/sft; run
# qwen2.5_0.5b.sh or sft_paper.sh first). OUT (default runs/gpu/qwen2.5-0.5b-instruct-mu2), DRY_RUN=1.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export OUT="${OUT:-runs/gpu/qwen2.5-0.5b-instruct-mu2}"
export SFT_MODEL="${SFT_MODEL:-runs/gpu/qwen2.5-0.5b-instruct/sft}"
LR=1e-6 MU=2 bash "$HERE/rank_grpo_paper.sh"
