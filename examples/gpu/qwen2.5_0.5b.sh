#!/usr/bin/env bash
# Qwen/Qwen2.5-0.5B-Instruct: SFT warm start (sft_paper.sh: lr 5e-5, cosine, 5% warm-up, 10 epochs, max len 1024), then Rank-GRPO with
# the paper's settings (rank_grpo_paper.sh); lr 1e-6 constant.
#
#   DATA=reddit_v2/train.jsonl CATALOG=reddit_v2/catalog.jsonl bash examples/gpu/qwen2.5_0.5b.sh
#
# MODEL (default Qwen/Qwen2.5-0.5B-Instruct from the Hugging Face hub; a local directory works too), OUT (default runs/gpu/qwen2.5-0.5b-instruct),
# SFT_DATA (Stage-1 behaviour-cloning set instead of DATA's completions), SKIP_SFT=1 (reuse $OUT/sft),
# DRY_RUN=1 (print the commands). More knobs: see sft_paper.sh and rank_grpo_paper.sh.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export MODEL="${MODEL:-Qwen/Qwen2.5-0.5B-Instruct}"
export OUT="${OUT:-runs/gpu/qwen2.5-0.5b-instruct}"
[ "${SKIP_SFT:-0}" = 1 ] || bash "$HERE/sft_paper.sh"
LR=1e-6 bash "$HERE/rank_grpo_paper.sh"
