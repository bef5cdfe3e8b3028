#!/usr/bin/env bash
# Rank-GRPO with the paper's settings (arXiv 2510.20150) through OpenRLHF 0.11.2's launcher on a GPU node.
# Usually called by the per-model scripts (qwen2.5_0.5b.sh, llama3.2_1b.sh, llama3.2_3b.sh, ..._mu2.sh).
#
#   MODEL=Qwen/Qwen2.5-0.5B-Instruct OUT=runs/qwen2.5-0.5b DATA=reddit_v2/train.jsonl \
#   CATALOG=reddit_v2/catalog.jsonl bash examples/gpu/rank_grpo_paper.sh
#
# Paper settings (all fixed here):
#   G = 8 samples per prompt, 48 prompts x 8 = 384 completions per optimizer step
#   Adam betas (0.9, 0.99); PPO clip eps low/high 0.06/0.08 (rank-level ratio, --actor.policy_loss_type rank_grpo)
#   KL k3 as a loss, beta 1e-3, to the SFT reference; 2 epochs over the prompts; temperature 1.0
#   max prompt 2048 + completion 1024 tokens (OpenRLHF 0.11.2 has one total limit: --data.max_len 3072 and
#   --rollout.max_new_tokens 1024); bf16; DeepSpeed ZeRO-3; vLLM rollouts
# Learning rate: LR (default 1e-6), constant. LR_DROP_STEP=8000 LR2=1e-7 (the 1B/3B runs) switches to LR2 after
# step LR_DROP_STEP. OpenRLHF 0.11.2 has no step-drop schedule, and resuming a DeepSpeed checkpoint
# (--ckpt.load_enable) restores the saved optimizer/scheduler learning rate, so a new --actor.adam.lr would be
# ignored. The drop is therefore done as two launcher runs over one fixed 2-epoch prompt stream:
#   phase 1: the first LR_DROP_STEP x 48 prompts of the stream, lr LR, from the SFT model;
#   phase 2: the rest of the stream, lr LR2, starting from phase 1's weights ($OUT/rank_grpo_phase1).
# Phase 2 starts a fresh Adam state and, because OpenRLHF loads the KL reference from --actor.model_name_or_path,
# its KL anchor is the step-LR_DROP_STEP policy instead of the SFT model (beta 1e-3 at lr 1e-7: a small effect).
# MU=2: the off-policy variant; every rollout batch of 384 is used for MU optimizer steps (--train.max_epochs MU).
#
# Inputs: DATA (rows: prompt, groundtruth_with_release_year, seen_titles; converted with `rank-grpo prepare --rl`)
# or RL_DATA (an already prepared prompt file), CATALOG (item catalog for the reward), SFT_MODEL (default
# $OUT/sft, written by sft_paper.sh). Hardware knobs (not paper settings): NGPU (default: visible GPUs),
# COLOCATE=1 (default: actor, reference and vLLM share the GPUs with sleep mode; COLOCATE=0 gives vLLM and the
# trainer separate GPUs: VLLM_ENGINES engines + NGPU-VLLM_ENGINES trainer GPUs), MICRO (train micro batch per
# GPU, default 4), ATTN (default flash_attention_2), SAVE_STEPS (default 500), EXTRA_ARGS (more launcher flags).
# DRY_RUN=1 prints the commands (shell-quoted, prefixed "+ ") instead of running them.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT=${OUT:?set OUT to the run folder}
SFT_MODEL=${SFT_MODEL:-$OUT/sft}
CATALOG=${CATALOG:?set CATALOG to the item catalog (.jsonl/.json/.csv/.tsv) used by the reward}
LR=${LR:-1e-6}
LR2=${LR2:-}
LR_DROP_STEP=${LR_DROP_STEP:-}
MU=${MU:-1}
NGPU=${NGPU:-$(nvidia-smi -L 2>/dev/null | wc -l)}
[ "${NGPU:-0}" -gt 0 ] || NGPU=8
COLOCATE=${COLOCATE:-1}
MICRO=${MICRO:-4}
ATTN=${ATTN:-flash_attention_2}
SAVE_STEPS=${SAVE_STEPS:-500}
PROMPTS_PER_STEP=48
G=8
EPOCHS=2
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"

run() { echo "+ $(printf '%q ' "$@")" >&2; if [ "${DRY_RUN:-0}" != 1 ]; then "$@"; fi; }

if [ -z "${RL_DATA:-}" ]; then
    DATA=${DATA:?set DATA=rows.jsonl (converted with rank-grpo prepare --rl) or RL_DATA=prepared prompts.jsonl}
    RL_DATA="$OUT/data/rl.jsonl"
    run rank-grpo prepare "$DATA" --rl "$RL_DATA"
fi

if [ "$COLOCATE" = 1 ]; then
    PLACEMENT=(--actor.num_nodes 1 --actor.num_gpus_per_node "$NGPU" --ref.num_nodes 1 --ref.num_gpus_per_node "$NGPU"
               --vllm.num_engines "$NGPU" --vllm.tensor_parallel_size 1 --vllm.gpu_memory_utilization 0.5
               --train.colocate_all --vllm.enable_sleep --ds.enable_sleep)
else
    VLLM_ENGINES=${VLLM_ENGINES:-$((NGPU / 2))}
    TRAIN_GPUS=$((NGPU - VLLM_ENGINES))
    PLACEMENT=(--actor.num_nodes 1 --actor.num_gpus_per_node "$TRAIN_GPUS" --ref.num_nodes 1
               --ref.num_gpus_per_node "$TRAIN_GPUS" --train.colocate_actor_ref
               --vllm.num_engines "$VLLM_ENGINES" --vllm.tensor_parallel_size 1 --vllm.gpu_memory_utilization 0.9)
fi

COMMON=(
    "${PLACEMENT[@]}"
    --algo.advantage.estimator rank_grpo --actor.policy_loss_type rank_grpo --rank_grpo.catalog "$CATALOG"
    --rollout.n_samples_per_prompt "$G" --rollout.batch_size "$PROMPTS_PER_STEP"
    --train.batch_size "$((PROMPTS_PER_STEP * G))" --train.max_epochs "$MU"
    --train.micro_batch_size "$MICRO" --rollout.micro_batch_size "$((2 * MICRO))"
    --rollout.temperature 1.0 --rollout.top_p 1.0
    --data.max_len 3072 --rollout.max_new_tokens 1024
    --data.input_key input --data.label_key label --data.apply_chat_template
    --actor.adam.betas 0.9 0.99 --actor.lr_scheduler constant --actor.lr_warmup_ratio 0
    --actor.eps_clip_low_high 0.06 0.08
    --algo.kl.use_loss --algo.kl.estimator k3 --algo.kl.init_coef 1e-3
    --ds.zero_stage 3 --ds.param_dtype bf16 --ds.attn_implementation "$ATTN" --actor.gradient_checkpointing_enable
    --ckpt.save_steps "$SAVE_STEPS" --ckpt.save_hf --logger.logging_steps 1
)

if [ -z "$LR_DROP_STEP" ]; then
    run python3 -m openrlhf.cli.train_ppo_ray "${COMMON[@]}" \
        --actor.model_name_or_path "$SFT_MODEL" --data.prompt_dataset "$RL_DATA" --train.num_episodes "$EPOCHS" \
        --actor.adam.lr "$LR" \
        --ckpt.output_dir "$OUT/rank_grpo" --ckpt.path "$OUT/rank_grpo_checkpoints" \
        ${EXTRA[@]+"${EXTRA[@]}"}
    exit 0
fi

LR2=${LR2:?LR_DROP_STEP needs LR2 (the learning rate after the drop)}
# One 2-epoch prompt stream (each epoch shuffled with its own seed), split at the drop step.
run python3 "$HERE/split_prompt_stream.py" "$RL_DATA" --epochs "$EPOCHS" \
    --split-at "$((LR_DROP_STEP * PROMPTS_PER_STEP))" --out1 "$OUT/data/rl_phase1.jsonl" \
    --out2 "$OUT/data/rl_phase2.jsonl"
run python3 -m openrlhf.cli.train_ppo_ray "${COMMON[@]}" \
    --actor.model_name_or_path "$SFT_MODEL" --data.prompt_dataset "$OUT/data/rl_phase1.jsonl" \
    --train.num_episodes 1 --actor.adam.lr "$LR" \
    --ckpt.output_dir "$OUT/rank_grpo_phase1" --ckpt.path "$OUT/rank_grpo_phase1_checkpoints" \
    ${EXTRA[@]+"${EXTRA[@]}"}
run python3 -m openrlhf.cli.train_ppo_ray "${COMMON[@]}" \
    --actor.model_name_or_path "$OUT/rank_grpo_phase1" --data.prompt_dataset "$OUT/data/rl_phase2.jsonl" \
    --train.num_episodes 1 --actor.adam.lr "$LR2" \
    --ckpt.output_dir "$OUT/rank_grpo" --ckpt.path "$OUT/rank_grpo_phase2_checkpoints" \
    ${EXTRA[@]+"${EXTRA[@]}"}
