#!/usr/bin/env bash
# SFT warm start before Rank-GRPO (paper settings): lr 5e-5, cosine schedule, 5% warm-up, 10 epochs, max length 1024,
# bf16, through OpenRLHF 0.11.2's `deepspeed --module openrlhf.cli.train_sft`.
#
#   MODEL=Qwen/Qwen2.5-0.5B-Instruct DATA=reddit_v2/train.jsonl OUT=runs/qwen2.5-0.5b bash examples/gpu/sft_paper.sh
#
# Data: SFT_DATA=FILE.jsonl (e.g. the Stage-1 behaviour-cloning set written by examples/stage1_then_sft.sh's
# `rank-grpo bc-data`, fields input/output), or else DATA=rows.jsonl (prompt, completion, seen_titles,
# groundtruth_with_release_year) converted here with `rank-grpo prepare --sft`.
# Writes the SFT model to $OUT/sft (a Hugging Face checkpoint; Rank-GRPO starts from it and uses it as the KL
# reference). DRY_RUN=1 prints the commands (shell-quoted, prefixed "+ ") instead of running them.
#
# Not fixed by the paper's text (set for your hardware): NGPU (default: all visible GPUs), BATCH (global batch,
# default 64), MICRO (per-GPU micro batch, default 4), ZERO (DeepSpeed ZeRO stage, default 2), ATTN (attention
# implementation, default flash_attention_2; use sdpa without flash-attn).
set -euo pipefail

MODEL=${MODEL:?set MODEL to a Hugging Face model id or a local checkpoint (e.g. Qwen/Qwen2.5-0.5B-Instruct)}
OUT=${OUT:?set OUT to the run folder (the SFT model goes to \$OUT/sft)}
NGPU=${NGPU:-$(nvidia-smi -L 2>/dev/null | wc -l)}
[ "${NGPU:-0}" -gt 0 ] || NGPU=8
BATCH=${BATCH:-64}
MICRO=${MICRO:-4}
ZERO=${ZERO:-2}
ATTN=${ATTN:-flash_attention_2}
EPOCHS=${EPOCHS:-10}

run() { echo "+ $(printf '%q ' "$@")" >&2; if [ "${DRY_RUN:-0}" != 1 ]; then "$@"; fi; }

if [ -z "${SFT_DATA:-}" ]; then
    DATA=${DATA:?set SFT_DATA=sft.jsonl (input/output fields) or DATA=rows.jsonl (converted with rank-grpo prepare)}
    SFT_DATA="$OUT/data/sft.jsonl"
    run rank-grpo prepare "$DATA" --sft "$SFT_DATA"
fi

run deepspeed --num_gpus "$NGPU" --module openrlhf.cli.train_sft \
    --model.model_name_or_path "$MODEL" \
    --data.dataset "$SFT_DATA" --data.input_key input --data.output_key output --data.apply_chat_template \
    --data.max_len 1024 \
    --train.max_epochs "$EPOCHS" --train.batch_size "$BATCH" --train.micro_batch_size "$MICRO" \
    --adam.lr 5e-5 --lr_scheduler cosine --lr_warmup_ratio 0.05 \
    --ds.zero_stage "$ZERO" --ds.param_dtype bf16 --ds.attn_implementation "$ATTN" \
    --model.gradient_checkpointing_enable \
    --logger.logging_steps 10 \
    --ckpt.output_dir "$OUT/sft" --ckpt.path "$OUT/sft_checkpoints" --ckpt.save_steps -1
