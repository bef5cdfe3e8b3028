"""Macro benchmark: Rank-GRPO vs GRPO vs GSPO through OpenRLHF 0.11.2's own launcher, on CPU.

    python3 benchmarks/macro.py --quick     # smoke: 1 seed x 3 algorithms x 4 steps, no mu=2 run (~5 min at load 1-3)
    python3 benchmarks/macro.py --full      # 3 seeds x 3 algorithms x 15 steps + one mu=2 run (~37 min on 2 cores)
    python3 benchmarks/macro.py --full --only report   # re-read the logs / evaluations, print tables, plots

Task (synthetic, known optimum; see docs/BENCHMARKS.md "Macro" for why): a 60-item catalog of real Reddit-v2
catalog titles, 3 request "genres"; the ground truth of every prompt of a genre is a fixed set of 6 items
(disjoint across genres), nothing seen. The optimum is NDCG@20 = Recall@20 = 1 (the 6 items on ranks 1-6). The
tiny random Qwen2 (rank_grpo_plugin.tiny_model) gets an SFT warm start (deepspeed --module
openrlhf.cli.train_sft) on 20-line lists of *uniformly random* distinct catalog items, so it emits the format and
hits the ground truth only by chance (expected 2 hits per list); RL has to move the mass to the right items.

Phases (each skipped when its outputs exist, so an interrupted run resumes):
  setup   tiny model, synthetic rows -> `rank-grpo prepare` -> SFT/RL datasets, SFT warm start
  train   for seed in seeds: grpo, gspo, rank_grpo back to back (seed-major, interleaved on a shared CPU),
          then rank_grpo with --train.max_epochs 2 (mu = 2); HF checkpoints every --eval-every steps
  eval    `rank-grpo evaluate` (greedy, HF backend) on the SFT model and every saved checkpoint
  report  tables (stdout), benchmarks/results/macro[_quick].json, docs/img/macro_*.png

Everything runs under runs/macro[_quick]/ (gitignored). GRPO and GSPO score with the plugin's catalog reward
(`--rank_grpo.catalog` with `group_norm`: scalar NDCG@20 of the same matching). Its per-rank hit extra logs are
logged for every algorithm, so per-rank curves come from the same hits for all three. The commands come from the
launch recipe (rank_grpo_plugin.recipes): GSPO with its paper's clip 3e-4 / 4e-4, GRPO with clip 0.2 and reward 0
for a truncated list. The figures in benchmarks/results/macro*.json predate that (both at OpenRLHF's token clip 0.2,
GRPO without the truncation rule); docs/BENCHMARKS.md says so.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from rank_grpo_plugin import recipes  # noqa: E402
from rank_grpo_plugin.resources import REDDIT_V2_CATALOG  # noqa: E402
RESULTS = ROOT / "benchmarks" / "results"
IMG = ROOT / "docs" / "img"

ALGOS = ["grpo", "gspo", "rank_grpo"]
LABEL = {"grpo": "GRPO", "gspo": "GSPO", "rank_grpo": "Rank-GRPO", "rank_grpo_mu2": "Rank-GRPO mu=2"}
GENRES = ["space adventure", "heist thriller", "ghost story"]
N_CATALOG, N_GT = 60, 6
K = 20
INSTRUCTION = "Recommend 20 movies for a {genre} night (request {i}). One \"Title (Year)\" per line."

ENV = dict(os.environ, **recipes.launch_environment())


def uptime() -> List[float]:
    return [round(x, 2) for x in os.getloadavg()]


def log(msg: str) -> None:
    print(f"[macro {datetime.datetime.now().strftime('%H:%M:%S')} load {uptime()}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------ config
def config(quick: bool) -> dict:
    if quick:
        return dict(seeds=[1], steps=4, eval_every=2, mu2=False, work=ROOT / "runs" / "macro_quick",
                    n_eval=12, sft_rows=240)
    return dict(seeds=[1, 2, 3], steps=15, eval_every=5, mu2=True, work=ROOT / "runs" / "macro",
                n_eval=24, sft_rows=480)


ROLLOUT_BATCH = 8        # prompts per step
N_SAMPLES = 8            # G
MAX_NEW_TOKENS = 176     # a 20-line list of these titles is 140 tokens with the tiny tokenizer
RL_LR = 1e-4
SFT_LR = 3e-3
SFT_EPOCHS = 6


# ------------------------------------------------------------------------------------------------ setup
def catalog_items(tokenizer_dir: Path, seed: int = 0) -> List[dict]:
    """N_CATALOG distinct real catalog entries whose line "Title (Year)\\n" is 7 tiny-tokenizer tokens (the
    minimum: the year alone is 4 digit tokens), so a 20-line list is ~140 tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    rows = [json.loads(line) for line in REDDIT_V2_CATALOG.open(encoding="utf-8")]
    seen, pool = set(), []
    for r in rows:
        t = r["title"]
        if t.isascii() and t.isalpha() and t.lower() not in seen \
                and len(tok(f"{t} ({r['year']})\n")["input_ids"]) <= 7:
            seen.add(t.lower())
            pool.append({"title": t, "year": int(r["year"])})
    rng = random.Random(seed)
    return rng.sample(pool, N_CATALOG)


def write_rows(path: Path, rows: List[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def make_rows(items: List[dict], n: int, offset: int, rng: random.Random, with_completion: bool) -> List[dict]:
    rows = []
    for i in range(n):
        g = i % len(GENRES)
        gt = items[g * N_GT:(g + 1) * N_GT]
        row = {
            "prompt": [{"role": "user", "content": INSTRUCTION.format(genre=GENRES[g], i=offset + i)}],
            "seen_titles": [],
            "groundtruth_with_release_year": [[it["title"], str(it["year"])] for it in gt],
        }
        lst = rng.sample(items, K)  # uniformly random distinct items: format only, no preference
        row["completion"] = [{"role": "assistant",
                              "content": "\n".join(f"{it['title']} ({it['year']})" for it in lst)}]
        rows.append(row)
    return rows


def run_cmd(cmd: List[str], logfile: Path, cwd: Optional[Path] = None) -> int:
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("w", encoding="utf-8") as f:
        f.write("+ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        f.flush()
        t = time.time()
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=str(cwd or ROOT), env=ENV)
        f.write(f"\n[macro] exit {p.returncode} after {time.time() - t:.1f}s\n")
    return p.returncode


def paths_of(cfg: dict) -> dict:
    work = cfg["work"]
    data = work / "data"
    return {"catalog": data / "catalog.jsonl", "sft": data / "sft.jsonl", "rl": data / "rl.jsonl",
            "eval_rows": data / "eval_rows.jsonl",
            "tiny": work / "tiny_model", "sft_model": work / "sft"}


def setup(cfg: dict) -> dict:
    work = cfg["work"]
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    paths = paths_of(cfg)
    if not (paths["tiny"] / "config.json").exists():
        log("tiny model")
        if run_cmd([sys.executable, "-m", "rank_grpo_plugin.tiny_model", str(paths["tiny"])], work / "tiny.log"):
            raise SystemExit("tiny model build failed")
    if not paths["eval_rows"].exists():
        items = catalog_items(paths["tiny"])
        write_rows(paths["catalog"], items)
        rng = random.Random(0)
        n_rl = cfg["steps"] * ROLLOUT_BATCH
        write_rows(data / "sft_rows.jsonl", make_rows(items, cfg["sft_rows"], 0, rng, True))
        write_rows(data / "rl_rows.jsonl", make_rows(items, n_rl, 10_000, rng, False))
        write_rows(paths["eval_rows"], make_rows(items, cfg["n_eval"], 20_000, rng, False))
        for kind, rows in (("sft", "sft_rows"), ("rl", "rl_rows")):
            rc = run_cmd(["rank-grpo", "prepare", str(data / f"{rows}.jsonl"), f"--{kind}", str(paths[kind])],
                         data / f"prepare_{kind}.log")
            if rc:
                raise SystemExit(f"rank-grpo prepare failed, see {data}/prepare_{kind}.log")
    if not (paths["sft_model"] / "model.safetensors").exists():
        log(f"SFT warm start ({cfg['sft_rows']} rows x {SFT_EPOCHS} epochs, lr {SFT_LR})")
        cmd = recipes.sft_command(recipes.SFTRecipe(
            model=str(paths["tiny"]), data=str(paths["sft"]), out=str(paths["sft_model"]), ckpt=str(work / "sft_ckpt"),
            epochs=SFT_EPOCHS, batch=16, micro_batch=16, lr=SFT_LR)) + ["--train.seed", "0"]
        t = time.time()
        rc = run_cmd(cmd, work / "sft.log")
        log(f"SFT exit {rc} in {time.time() - t:.0f}s")
        if rc:
            raise SystemExit(f"SFT failed, see {work}/sft.log")
    return paths


# ------------------------------------------------------------------------------------------------ train
def rl_command(algo: str, seed: int, cfg: dict, paths: dict, run_dir: Path, mu: int = 1) -> List[str]:
    """The launch recipe's command (rank_grpo_plugin.recipes): no KL, an HF checkpoint every ``eval_every`` steps."""
    recipe = recipes.RLRecipe(
        model=str(paths["sft_model"]), prompts=str(paths["rl"]), catalog=str(paths["catalog"]), out=str(run_dir),
        algorithm="rank_grpo" if algo.startswith("rank_grpo") else algo, steps=cfg["steps"],
        prompts_per_step=ROLLOUT_BATCH, samples=N_SAMPLES, lr=RL_LR, mu=mu, kl_coef=0.0,
        max_new_tokens=MAX_NEW_TOKENS, seed=seed, save_steps=cfg["eval_every"],
        extra=("--ckpt.save_hf", "--ckpt.disable_ds", "--ckpt.max_num", "100"))
    return recipes.rl_command(recipe)


def run_list(cfg: dict) -> List[tuple]:
    runs = [(algo, seed, 1) for seed in cfg["seeds"] for algo in ALGOS]
    if cfg["mu2"]:
        runs.append(("rank_grpo_mu2", cfg["seeds"][0], 2))
    return runs


def run_dir_of(cfg: dict, algo: str, seed: int) -> Path:
    return cfg["work"] / "rl" / f"{algo}_s{seed}"


def train(cfg: dict, paths: dict) -> None:
    for algo, seed, mu in run_list(cfg):
        d = run_dir_of(cfg, algo, seed)
        if (d / "done.json").exists():
            continue
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        cmd = rl_command(algo, seed, cfg, paths, d, mu)
        load0, t = uptime(), time.time()
        log(f"train {algo} seed {seed} (mu={mu})")
        rc = run_cmd(cmd, d / "train.log", cwd=d)
        wall = time.time() - t
        (d / "done.json").write_text(json.dumps({"rc": rc, "wall_s": round(wall, 1), "load_start": load0,
                                                 "load_end": uptime(), "cmd": cmd,
                                                 "finished": datetime.datetime.now().isoformat(timespec="seconds")}))
        log(f"  exit {rc}, {wall:.0f}s")


# ------------------------------------------------------------------------------------------------ eval
def checkpoints(cfg: dict, algo: str, seed: int) -> Dict[int, Path]:
    d = run_dir_of(cfg, algo, seed)
    out = {}
    for p in (d / "ckpt").glob("global_step*_hf"):
        m = re.fullmatch(r"global_step(\d+)_hf", p.name)
        if m and (p / "config.json").exists():
            out[int(m.group(1))] = p
    if (d / "model" / "config.json").exists():
        out.setdefault(cfg["steps"], d / "model")
    return dict(sorted(out.items()))


def eval_argv(model: Path, out: Path, name: str, paths: dict) -> List[str]:
    """`rank-grpo evaluate` arguments (greedy, HF backend, all validation conversations in one batch)."""
    return ["evaluate", "--model", str(model), "--data", str(paths["eval_rows"]), "--catalog", str(paths["catalog"]),
            "--backend", "hf", "--batch-size", "32", "--max-new-tokens", str(MAX_NEW_TOKENS),
            "--name", name, "--out", str(out), "--no-plot"]


def evaluate(cfg: dict, paths: dict) -> None:
    """Every checkpoint through `rank-grpo evaluate`, called in one Python process (the CLI's own entry point,
    rank_grpo_plugin.cli.main, with the same arguments as the shell command) to pay the torch/transformers import
    once instead of ~10 s per checkpoint."""
    ev = cfg["work"] / "eval"
    jobs = [("sft", paths["sft_model"], ev / "sft")]
    for algo, seed, _ in run_list(cfg):
        for step, ck in checkpoints(cfg, algo, seed).items():
            jobs.append((f"{algo}_s{seed}_step{step}", ck, ev / f"{algo}_s{seed}_step{step}"))
    todo = [eval_argv(ck, out, name, paths) for name, ck, out in jobs if not (out / "metrics.json").exists()]
    if not todo:
        return
    ev.mkdir(parents=True, exist_ok=True)
    jobfile = ev / f"jobs_{int(time.time())}.json"
    jobfile.write_text(json.dumps(todo, indent=1))
    log(f"evaluate {len(todo)} checkpoints (rank-grpo evaluate, one process; log {ev / 'eval.log'})")
    t = time.time()
    with (ev / "eval.log").open("a", encoding="utf-8") as f:
        for argv in todo:
            f.write("+ rank-grpo " + " ".join(shlex.quote(a) for a in argv) + "\n")
        f.flush()
        rc = subprocess.run([sys.executable, __file__, "--eval-jobs", str(jobfile)], stdout=f,
                            stderr=subprocess.STDOUT, cwd=str(ROOT), env=ENV).returncode
    log(f"evaluate exit {rc} in {time.time() - t:.0f}s")


def run_eval_jobs(jobfile: str) -> int:
    from rank_grpo_plugin.cli import main as cli_main

    bad = 0
    for argv in json.loads(Path(jobfile).read_text()):
        t = time.time()
        try:
            rc = cli_main(argv)
        except SystemExit as e:  # argparse / CliError paths
            rc = e.code
        print(f"[macro-eval] {argv[argv.index('--name') + 1]}: exit {rc} in {time.time() - t:.1f}s", flush=True)
        bad += bool(rc)
    return 1 if bad else 0


# ------------------------------------------------------------------------------------------------ report
def parse_steps(logfile: Path) -> List[dict]:
    """Every logged step as a dict with its number under ``_step`` (the project's one, nan-tolerant, log parser)."""
    from openrlhf_compat.logs import read_steps

    return [dict(s, _step=s.step) for s in read_steps(logfile) if "reward" in s]


def mean_sd(xs: List[float]) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def eval_metrics(cfg: dict, algo: str, seed: int, step: int) -> Optional[dict]:
    p = cfg["work"] / "eval" / ("sft" if step == 0 else f"{algo}_s{seed}_step{step}") / "metrics.json"
    if not p.exists():
        return None
    s = json.loads(p.read_text())["summary"]
    return {**s["metrics"], "per_rank_hit_rate": s["per_rank_hit_rate"], "format_rate": s["format_rate"],
            "in_catalog_rate": s["in_catalog_rate"], "duplicate_rate": s["duplicate_rate"],
            "exact_k_rate": s["exact_k_rate"]}


def per_rank(step: dict, key: str) -> List[float]:
    vals = sorted((k, v) for k, v in step.items() if re.fullmatch(rf"rank_grpo/{key}_r\d+", k))
    return [float(v) for _, v in vals]


def report(cfg: dict, quick: bool, paths: dict) -> dict:
    runs = {}
    for algo, seed, mu in run_list(cfg):
        d = run_dir_of(cfg, algo, seed)
        done = json.loads((d / "done.json").read_text()) if (d / "done.json").exists() else None
        steps = parse_steps(d / "train.log")
        evals = {0: eval_metrics(cfg, algo, seed, 0)}
        for step in checkpoints(cfg, algo, seed):
            evals[step] = eval_metrics(cfg, algo, seed, step)
        nan = any(isinstance(v, float) and v != v for s in steps for v in s.values())
        runs[f"{algo}_s{seed}"] = {
            "algo": algo, "seed": seed, "mu": mu, "rc": done and done["rc"], "wall_s": done and done["wall_s"],
            "load_start": done and done["load_start"], "load_end": done and done["load_end"],
            "cmd": done and done["cmd"], "n_steps_logged": len(steps), "any_nan": nan,
            "steps": [{k: v for k, v in s.items() if not k.startswith("rank_grpo/adv_r")} for s in steps],
            "eval": {str(k): v for k, v in evals.items()},
        }
    out = {"benchmark": "macro", "quick": quick, "machine": machine(), "load_at_report": uptime(),
           "config": {k: str(v) if isinstance(v, Path) else v for k, v in cfg.items()},
           "hyper": dict(rollout_batch=ROLLOUT_BATCH, n_samples=N_SAMPLES, max_new_tokens=MAX_NEW_TOKENS,
                         rl_lr=RL_LR, sft_lr=SFT_LR, sft_epochs=SFT_EPOCHS, n_catalog=N_CATALOG, n_gt=N_GT,
                         genres=GENRES),
           "runs": runs}

    # ---- 1. step time
    print("\n## 1. Step time (timing/step_total from OpenRLHF's 'Global step' log, step 1 excluded)\n")
    tkeys = ["timing/step_total", "timing/generation"]
    extra = sorted({k for r in runs.values() for s in r["steps"] for k in s if k.startswith("timing/")} - set(tkeys))
    tkeys += extra
    rows, per_seed = [], {}
    for name, r in runs.items():
        st = [s for s in r["steps"] if s["_step"] > 1]
        med = {k: statistics.median([s[k] for s in st if k in s]) if st else None for k in tkeys}
        r["step_time_median"] = med
        per_seed.setdefault(r["seed"], {})[r["algo"]] = med
        rows.append([name, r["rc"], r["n_steps_logged"], r["wall_s"], r["load_start"]] +
                    [f"{med[k]:.2f}" if med[k] is not None else "n/a" for k in tkeys])
    print(table(["run", "rc", "steps", "wall s", "load at start", *[k.replace("timing/", "") + " s" for k in tkeys]],
                rows))
    ratios = {}
    for num in ("rank_grpo", "gspo", "rank_grpo_mu2"):
        for key in tkeys:
            rs = [ps[num][key] / ps["grpo"][key] for ps in per_seed.values()
                  if num in ps and "grpo" in ps and ps[num].get(key) and ps["grpo"].get(key)]
            if rs:
                ratios[f"{num}/grpo {key}"] = rs
    print("\nper-seed ratios to GRPO (same seed, back-to-back runs):\n")
    print(table(["ratio", "per seed", "median"],
                [[k, " ".join(f"{x:.2f}" for x in v), f"{statistics.median(v):.3f}"] for k, v in ratios.items()]))
    out["step_time_ratios"] = ratios

    # ---- 2. learning
    print("\n## 2. Learning (greedy validation via rank-grpo evaluate; mean ± sd over seeds)\n")
    metric_keys = ["rank/ndcg@20", "rank/recall@20", "paper/ndcg@20", "paper/recall@20"]
    eval_steps = sorted({int(s) for r in runs.values() for s in r["eval"]})
    curves = {}
    rows = []
    for algo in ALGOS + (["rank_grpo_mu2"] if cfg["mu2"] else []):
        rs = [r for r in runs.values() if r["algo"] == algo]
        for step in eval_steps:
            vals = {m: [r["eval"][str(step)][m] for r in rs if r["eval"].get(str(step))] for m in metric_keys}
            if not vals[metric_keys[0]]:
                continue
            curves.setdefault(algo, {})[step] = {m: v for m, v in vals.items()}
            rows.append([LABEL[algo], step, len(vals[metric_keys[0]])] + [mean_sd(vals[m]) for m in metric_keys])
    print(table(["algorithm", "step", "seeds", *metric_keys], rows))
    out["eval_curves"] = {a: {str(s): v for s, v in c.items()} for a, c in curves.items()}

    # training-reward curves (rank_grpo/ndcg = the scalar reward, every step)
    train_curves = {}
    for algo in ALGOS + (["rank_grpo_mu2"] if cfg["mu2"] else []):
        rs = [r for r in runs.values() if r["algo"] == algo and r["steps"]]
        n = min((len(r["steps"]) for r in rs), default=0)
        train_curves[algo] = [[r["steps"][i].get("rank_grpo/ndcg", r["steps"][i].get("reward")) for r in rs]
                              for i in range(n)]
    out["train_ndcg_curves"] = train_curves
    print("\ntraining reward (NDCG@20 of the sampled lists, T=1), mean over seeds, per step:\n")
    print(table(["algorithm", *[str(i + 1) for i in range(max((len(v) for v in train_curves.values()), default=0))]],
                [[LABEL[a]] + [f"{statistics.mean(x):.3f}" for x in v] for a, v in train_curves.items()]))

    # steps to reach GRPO's final NDCG@20
    reach = {}
    for key in ("rank/ndcg@20", "paper/ndcg@20"):
        g_final = curves.get("grpo", {}).get(cfg["steps"], {}).get(key)
        if not g_final:
            continue
        target = statistics.mean(g_final)
        hit = [s for s in eval_steps if curves["rank_grpo"].get(s, {}).get(key)
               and statistics.mean(curves["rank_grpo"][s][key]) >= target]
        reach[key] = {"grpo_final_mean": target, "rank_grpo_first_eval_step": hit[0] if hit else None}
    g_tr = train_curves.get("grpo")
    if g_tr:
        target = statistics.mean(statistics.mean(x) for x in g_tr[-3:])
        rk = [i + 1 for i, x in enumerate(train_curves.get("rank_grpo", [])) if statistics.mean(x) >= target]
        reach["train_ndcg (GRPO mean of last 3 steps)"] = {"grpo_final_mean": target,
                                                          "rank_grpo_first_step": rk[0] if rk else None}
    out["steps_to_grpo_final"] = reach
    print("\nsteps for Rank-GRPO to reach GRPO's final NDCG@20:", json.dumps(reach))

    # per-rank mean reward (= hit rate with exp_inf) from the training logs, first vs last 3 steps
    print("\nper-rank mean reward (hit rate of the sampled lists; rank_grpo/hit_rXX extra logs), mean over seeds:\n")
    prk = {}
    rows = []
    for algo in ALGOS + (["rank_grpo_mu2"] if cfg["mu2"] else []):
        rs = [r for r in runs.values() if r["algo"] == algo and r["steps"]]
        if not rs:
            continue
        first = [statistics.mean(per_rank(r["steps"][0], "hit")[j] for r in rs) for j in range(K)]
        last = [statistics.mean(statistics.mean(per_rank(s, "hit")[j] for s in r["steps"][-3:]) for r in rs)
                for j in range(K)]
        prk[algo] = {"step1": first, "last3": last}
        rows.append([LABEL[algo], "step 1"] + [f"{x:.2f}" for x in first])
        rows.append([LABEL[algo], "last 3"] + [f"{x:.2f}" for x in last])
    print(table(["algorithm", "steps", *[f"r{j + 1}" for j in range(K)]], rows))
    out["per_rank_hit_rate_train"] = prk

    # ---- 3. off-policy mu = 2
    mu2 = [r for r in runs.values() if r["mu"] == 2]
    if mu2:
        r = mu2[0]
        print(f"\n## 3. Off-policy mu = 2 (--train.max_epochs 2), seed {r['seed']}\n")
        keys = ["reward", "rank_grpo/clip_frac_low", "rank_grpo/clip_frac_high", "rank_grpo/ratio_mean",
                "ppo_clip_ratio", "ppo_kl", "policy_loss", "actor_grad_norm", "rank_grpo/in_catalog_rate"]
        print(table(["step", *keys], [[s["_step"]] + [f"{s[k]:.4f}" if isinstance(s.get(k), float) else s.get(k, "n/a")
                                                      for k in keys] for s in r["steps"]]))
        cl = [s.get("rank_grpo/clip_frac_low", 0) + s.get("rank_grpo/clip_frac_high", 0) for s in r["steps"]]
        out["mu2"] = {"run": f"{r['algo']}_s{r['seed']}", "any_nan": r["any_nan"],
                      "clip_frac_low": [s.get("rank_grpo/clip_frac_low") for s in r["steps"]],
                      "clip_frac_high": [s.get("rank_grpo/clip_frac_high") for s in r["steps"]],
                      "reward": [s.get("reward") for s in r["steps"]],
                      "steps_with_clipping": sum(1 for c in cl if c > 0)}
        print(f"\nsteps with clip_frac > 0: {out['mu2']['steps_with_clipping']}/{len(cl)}; any NaN: {r['any_nan']}")

    plots(cfg, out, quick)
    path = RESULTS / f"macro{'_quick' if quick else ''}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")
    return out


def plots(cfg: dict, out: dict, quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sfx = "_quick" if quick else ""
    IMG.mkdir(parents=True, exist_ok=True)
    colors = {"grpo": "tab:blue", "gspo": "tab:orange", "rank_grpo": "tab:green", "rank_grpo_mu2": "tab:red"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, key in zip(axes[:2], ("rank/ndcg@20", "paper/ndcg@20")):
        for algo, c in out["eval_curves"].items():
            xs = sorted(int(s) for s in c if c[s].get(key))
            m = [statistics.mean(c[str(s)][key]) for s in xs]
            sd = [statistics.stdev(c[str(s)][key]) if len(c[str(s)][key]) > 1 else 0 for s in xs]
            ax.errorbar(xs, m, yerr=sd, label=LABEL[algo], color=colors[algo], marker="o", capsize=3)
        ax.set_title(f"validation {key} (greedy)")
        ax.set_xlabel("RL step")
        ax.legend()
    ax = axes[2]
    for algo, v in out["train_ndcg_curves"].items():
        if not v:
            continue
        xs = list(range(1, len(v) + 1))
        m = [statistics.mean(x) for x in v]
        sd = [statistics.stdev(x) if len(x) > 1 else 0 for x in v]
        ax.plot(xs, m, label=LABEL[algo], color=colors[algo])
        ax.fill_between(xs, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)], color=colors[algo],
                        alpha=0.15)
    ax.set_title("training reward: NDCG@20 of sampled lists (T=1)")
    ax.set_xlabel("RL step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(IMG / f"macro_learning{sfx}.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for algo, d in out["per_rank_hit_rate_train"].items():
        axes[0].plot(range(1, K + 1), d["last3"], label=f"{LABEL[algo]} (last 3 steps)", color=colors[algo],
                     marker=".")
        axes[0].plot(range(1, K + 1), d["step1"], color=colors[algo], ls=":", alpha=0.6)
    axes[0].set_title("per-rank mean reward (hit rate) of sampled lists; dotted = step 1")
    axes[0].set_xlabel("rank")
    axes[0].legend()
    last = str(cfg["steps"])
    # validation per-rank hit rate at the last step, mean over seeds
    for algo in out["eval_curves"]:
        rs = [r for r in out["runs"].values() if r["algo"] == algo and r["eval"].get(last)]
        if rs:
            m = [statistics.mean(r["eval"][last]["per_rank_hit_rate"][j] for r in rs) for j in range(K)]
            axes[1].plot(range(1, K + 1), m, label=LABEL[algo], color=colors[algo], marker=".")
    sft = next((r["eval"].get("0") for r in out["runs"].values() if r["eval"].get("0")), None)
    if sft:
        axes[1].plot(range(1, K + 1), sft["per_rank_hit_rate"], label="SFT (step 0)", color="gray", ls="--")
    axes[1].set_title(f"validation per-rank hit rate at step {last} (greedy)")
    axes[1].set_xlabel("rank")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(IMG / f"macro_per_rank{sfx}.png", dpi=110)
    plt.close(fig)

    if "mu2" in out:
        m = out["mu2"]
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = list(range(1, len(m["reward"]) + 1))
        ax.plot(xs, m["clip_frac_low"], label="clip_frac_low", marker="o")
        ax.plot(xs, m["clip_frac_high"], label="clip_frac_high", marker="o")
        ax2 = ax.twinx()
        ax2.plot(xs, m["reward"], color="k", ls="--", label="reward (NDCG@20)")
        ax.set_xlabel("RL step")
        ax.set_ylabel("fraction of tokens clipped")
        ax2.set_ylabel("reward")
        ax.legend(loc="upper left")
        ax2.legend(loc="upper right")
        ax.set_title("Rank-GRPO mu=2 (--train.max_epochs 2)")
        fig.tight_layout()
        fig.savefig(IMG / f"macro_mu2{sfx}.png", dpi=110)
        plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true")
    g.add_argument("--full", action="store_true")
    p.add_argument("--only", choices=["setup", "train", "eval", "report"], nargs="+")
    p.add_argument("--seeds", type=int, nargs="+", help="override the seeds")
    p.add_argument("--steps", type=int, help="override the RL steps")
    p.add_argument("--no-mu2", action="store_true")
    p.add_argument("--eval-jobs", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.eval_jobs:
        return run_eval_jobs(args.eval_jobs)
    quick = not args.full
    cfg = config(quick)
    if args.seeds:
        cfg["seeds"] = args.seeds
    if args.steps:
        cfg["steps"] = args.steps
    if args.no_mu2:
        cfg["mu2"] = False
    phases = args.only or ["setup", "train", "eval", "report"]
    if ("train" in phases or "eval" in phases) and "setup" not in phases:
        phases = ["setup"] + phases  # idempotent: only builds what is missing
    log(f"macro benchmark ({'quick' if quick else 'full'}): {cfg}")
    t = time.time()
    paths = setup(cfg) if "setup" in phases else paths_of(cfg)
    if "train" in phases:
        train(cfg, paths)
    if "eval" in phases:
        evaluate(cfg, paths)
    if "report" in phases:
        report(cfg, quick, paths)
    log(f"done in {time.time() - t:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
