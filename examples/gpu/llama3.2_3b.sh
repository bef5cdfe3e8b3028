#!/usr/bin/env bash
# meta-llama/Llama-3.2-3B-Instruct: the 1B recipe (llama3.2_1b.sh) with this model: SFT warm start (sft_paper.sh: lr 5e-5,
# cosine, 5% warm-up, 10 epochs, max len 1024), then Rank-GRPO with the paper's settings (rank_grpo_paper.sh); lr 1e-6,
# then 1e-7 after step 8000 (two launcher runs, see rank_grpo_paper.sh).
#
#   DATA=reddit_v2/train.jsonl CATALOG=reddit_v2/catalog.jsonl bash examples/gpu/llama3.2_3b.sh
#
# MODEL (default meta-llama/Llama-3.2-3B-Instruct from the Hugging Face hub; a local directory works too), OUT (default runs/gpu/llama3.2-3b-instruct),
# SFT_DATA (Stage-1 behaviour-cloning set instead of DATA's completions), SKIP_SFT=1 (reuse $OUT/sft),
# DRY_RUN=1 (print the commands). More knobs: see sft_paper.sh and rank_grpo_paper.sh.
set -euo pipefail
export MODEL="${MODEL:-meta-llama/Llama-3.2-3B-Instruct}"
export OUT="${OUT:-runs/gpu/llama3.2-3b-instruct}"
exec bash "$(dirname "${BASH_SOURCE[0]}")/llama3.2_1b.sh"
