#!/usr/bin/env bash
# Stage 1 of ConvRec-R1 (Remap-Reflect-Adjust behaviour-cloning data) and then SFT of Qwen2.5-0.5B-Instruct
# through OpenRLHF's train_sft with the paper's SFT settings: lr 5e-5, cosine schedule, 5% warm-up, 10 epochs,
# max length 1024.
#
#   OPENAI_BASE_URL=https://api.openai.com/v1 OPENAI_API_KEY=sk-... RANK_GRPO_TEACHER_MODEL=gpt-4o \
#   DATA=train.jsonl CATALOG=catalog.jsonl bash examples/stage1_then_sft.sh
#
# Any OpenAI-compatible endpoint works as the teacher (e.g. a local `python -m vllm.entrypoints.openai.api_server`).
# The teacher answers are cached in $OUT/teacher_cache.sqlite: rerunning resumes and never pays twice.
# DRY_RUN=1 prints the commands instead of running them. Extra bc-data flags: BC_FLAGS="--concurrency 16 ...".
set -euo pipefail

RES=$(python -c 'from rank_grpo_plugin.resources import REDDIT_V2; print(REDDIT_V2)')  # shipped in the package
DATA=${DATA:-$RES/sample.jsonl}
CATALOG=${CATALOG:-$RES/catalog.jsonl}
OUT=${OUT:-runs/stage1}
POLICY=${POLICY:-Qwen/Qwen2.5-0.5B-Instruct}   # a HF id (needs the hub) or a local checkpoint directory
SFT_OUT=${SFT_OUT:-runs/sft_qwen2.5-0.5b}
BATCH=${BATCH:-64}          # global batch size (not fixed by the paper's text; adjust to your hardware)
MICRO=${MICRO:-4}           # per-device micro batch
ATTN=${ATTN:-sdpa}          # flash_attention_2 when flash-attn is installed on GPUs
: "${OPENAI_BASE_URL:?set OPENAI_BASE_URL to the OpenAI-compatible endpoint of the teacher}"
: "${RANK_GRPO_TEACHER_MODEL:?set RANK_GRPO_TEACHER_MODEL to the teacher model name}"

run() { echo "+ $*" >&2; if [ "${DRY_RUN:-0}" != 1 ]; then "$@"; fi; }

# ---- Stage 1: teacher lists -> Remap -> Reflect -> Adjust -> $OUT/sft.jsonl + $OUT/report.md
if rank-grpo bc-data --help >/dev/null 2>&1; then BC=(rank-grpo bc-data); else BC=(python -m rank_grpo_plugin.stage1); fi
# shellcheck disable=SC2086
run "${BC[@]}" --data "$DATA" --catalog "$CATALOG" --out "$OUT" \
    --base-url "$OPENAI_BASE_URL" --model "$RANK_GRPO_TEACHER_MODEL" \
    --k 20 --n-candidates 100 --lambda-conv 1.0 --n-reflect 40 --reflect-weight 0.5 \
    --lambda-w 0.01 --lambda-b 0.01 ${BC_FLAGS:-}

# ---- SFT through OpenRLHF (paper settings)
SFT_ARGS=(
    --model.model_name_or_path "$POLICY"
    --data.dataset "$OUT/sft.jsonl"
    --data.input_key input --data.output_key output --data.apply_chat_template
    --data.max_len 1024
    --train.max_epochs 10
    --train.batch_size "$BATCH" --train.micro_batch_size "$MICRO"
    --adam.lr 5e-5 --lr_scheduler cosine --lr_warmup_ratio 0.05
    --ds.param_dtype bf16 --ds.attn_implementation "$ATTN"
    --logger.logging_steps 10
    --ckpt.output_dir "$SFT_OUT" --ckpt.path "$SFT_OUT/checkpoints" --ckpt.save_steps -1
)
NGPU=$(python -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
if [ "$NGPU" -gt 0 ]; then
    run deepspeed --num_gpus "$NGPU" --module openrlhf.cli.train_sft "${SFT_ARGS[@]}" \
        --ds.zero_stage 2 --model.gradient_checkpointing_enable
else
    # CPU: one process (DeepSpeed on gloo through the CPU backend of rank_grpo_plugin), ZeRO-0.
    run env RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT="${MASTER_PORT:-29517}" \
        python -m openrlhf.cli.train_sft "${SFT_ARGS[@]}" --ds.zero_stage 0
fi
echo "Stage-1 report: $OUT/report.md; SFT model: $SFT_OUT" >&2
