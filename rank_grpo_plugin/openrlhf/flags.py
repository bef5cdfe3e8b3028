"""Launcher flags for ``python -m openrlhf.cli.train_ppo_ray``: the ``rank_grpo`` estimator and policy loss,
the ``--rank_grpo.*`` options, the legacy ``--advantage_estimator`` alias, and validation.

:data:`CLI_EXTENSION` is what OpenRLHF's extension registry calls (``add_arguments(parser)`` before parsing,
``validate(args)`` after); on a stock release :mod:`.shim` calls it from its parser hook. Validation is a table
of rules (:data:`RULES`); every problem of a command line is reported at once, each naming its flag. With the
plugin's catalog reward the rules also read the local prompt / eval dataset files and check every label with the
one row schema, so a bad row stops the launcher before Ray starts, naming the file, the line and the field
(:func:`_dataset_problems`); the catalog's content hash is recorded for the workers (``catalog_sha256``).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, List, NamedTuple, Optional, Sequence

from openrlhf_compat import UnsupportedOpenRLHF, arg, require_supported, set_arg
from rank_grpo_plugin.hooks import on_ray_init
from rank_grpo_plugin.config import EPS_HIGH, EPS_LOW
from rank_grpo_plugin.options import OPTIONS_ENV, PREFIX, RankGRPOOptions, option_flags

ESTIMATOR = "rank_grpo"
POLICY_LOSS = "rank_grpo"
ESTIMATOR_FLAG = "--algo.advantage.estimator"
LEGACY_ESTIMATOR_FLAG = "--advantage_estimator"
LOSS_FLAG = "--actor.policy_loss_type"
REWARD_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reward.py")

class RankGRPOConfigError(ValueError):
    """A flag combination rank_grpo cannot run; the message names the flag and what is accepted."""


def _action(parser: argparse.ArgumentParser, flag: str) -> Optional[argparse.Action]:
    return parser._option_string_actions.get(flag)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``rank_grpo`` to the estimator / policy-loss choices, the alias and the ``--rank_grpo.*`` flags.

    Idempotent. Works on OpenRLHF's own parser (runtime patch) and in the upstream registry's CLI hook.
    """
    if getattr(parser, "_rank_grpo_added", False):
        return
    est = _action(parser, ESTIMATOR_FLAG)
    loss = _action(parser, LOSS_FLAG)
    if est is not None and est.choices is not None and ESTIMATOR not in est.choices:
        est.choices = list(est.choices) + [ESTIMATOR]
    if loss is not None and loss.choices is not None and POLICY_LOSS not in loss.choices:
        loss.choices = list(loss.choices) + [POLICY_LOSS]
    if est is not None and _action(parser, LEGACY_ESTIMATOR_FLAG) is None:
        parser.add_argument(
            LEGACY_ESTIMATOR_FLAG, dest=est.dest, type=str, choices=est.choices, default=argparse.SUPPRESS,
            help=f"alias of {ESTIMATOR_FLAG} (older OpenRLHF flag style; added by rank_grpo_plugin)",
        )
    group = parser.add_argument_group(
        "Rank-GRPO (rank_grpo_plugin)",
        f"Used with {ESTIMATOR_FLAG} rank_grpo (default policy loss: {LOSS_FLAG} rank_grpo). Dataset labels "
        '(--data.label_key) are JSON: {"groundtruth": [["Title", 1999], ...], "seen": ["Title", ...]}.',
    )
    for name, kw in option_flags():
        group.add_argument(f"--{PREFIX}.{name}", dest=f"{PREFIX}.{name}", **kw)
    parser._rank_grpo_added = True


# ----------------------------------------------------------------------------------------------- namespace access
def _given(argv: Sequence[str], *flags: str) -> bool:
    return any(a == f or a.startswith(f + "=") for a in argv for f in flags)


# ------------------------------------------------------------------------------------------------- validation
def _uses_plugin_reward(ns: Any) -> bool:
    remote = arg(ns, "reward.remote_url")
    if not remote:
        return False
    first = (remote if isinstance(remote, list) else str(remote).split(","))[0]
    return os.path.abspath(first) == REWARD_FILE or first.endswith("rank_grpo_plugin/openrlhf/reward.py")


class Run(NamedTuple):
    """What a rule sees: the namespace, the command line, the options, and which parts of the plugin are used."""

    ns: Any
    argv: List[str]
    opts: RankGRPOOptions
    estimator: bool  # --algo.advantage.estimator rank_grpo
    loss: bool  # --actor.policy_loss_type rank_grpo (given, or the default with the estimator)
    plugin_reward: bool  # --reward.remote_url is the plugin's catalog reward


class Rule(NamedTuple):
    applies: Callable[[Run], bool]
    problem: Callable[[Run], Any]  # None when fine, else the message(s) naming the flag


def _always(run: Run) -> bool:
    return True


def _estimator(run: Run) -> bool:
    return run.estimator


def _loss(run: Run) -> bool:
    return run.loss


def _if(cond: bool, message: str) -> Optional[str]:
    return message if cond else None


def _reward_problem(run: Run) -> Optional[str]:
    ns, opts = run.ns, run.opts
    if run.plugin_reward and not opts.catalog:
        return "the plugin's catalog reward needs a catalog: give --rank_grpo.catalog PATH"
    if run.plugin_reward:
        return None
    if run.estimator:
        if arg(ns, "reward.remote_url"):
            return None
        if arg(ns, "reward.model_name_or_path"):
            return ("rank_grpo needs per-rank hits, which a reward model cannot give; use --rank_grpo.catalog (or a "
                    "--reward.remote_url reward function emitting the rank_grpo/hit_rXX extra logs)")
        return _if(not opts.catalog, "rank_grpo needs a reward: give --rank_grpo.catalog PATH (the plugin's catalog "
                   "reward is then used automatically) or --reward.remote_url pointing at a reward function that "
                   "emits the per-rank rank_grpo/hit_rXX extra logs")
    if arg(ns, "reward.remote_url") or arg(ns, "reward.model_name_or_path"):
        return ("--rank_grpo.* options only configure the plugin's catalog reward, but this run uses another reward "
                "(--reward.remote_url / --reward.model_name_or_path); drop them or drop that reward")
    return _if(not opts.catalog, "--rank_grpo.* options without --rank_grpo.catalog: the catalog reward needs a "
               "catalog")


def _n_samples(run: Run) -> Optional[str]:
    n = arg(run.ns, "rollout.n_samples_per_prompt", 1)
    return _if(int(n) <= 1, "rank_grpo normalises each rank within a prompt's group and requires "
               f"--rollout.n_samples_per_prompt > 1 (got {n})")


def _is_correction(run: Run) -> Optional[str]:
    """vLLM importance-sampling correction: ``--algo.advantage.is_correction_level`` from OpenRLHF 0.11.2 on,
    ``--algo.advantage.is_correction_enable`` up to 0.11.1."""
    if arg(run.ns, "algo.advantage.is_correction_level", "off") != "off":
        flag = "--algo.advantage.is_correction_level"
    elif arg(run.ns, "algo.advantage.is_correction_enable", False):
        flag = "--algo.advantage.is_correction_enable"
    else:
        return None
    return (f"{flag} (vLLM importance-sampling correction) is not supported by the rank-level loss yet; use "
            "--actor.policy_loss_type ppo or turn the correction off")


def _catalog_reward(run: Run) -> bool:
    """The plugin's catalog reward scores this run (given as --reward.remote_url, or selected by the catalog)."""
    return run.plugin_reward or (bool(run.opts.catalog) and not arg(run.ns, "reward.remote_url")
                                 and not arg(run.ns, "reward.model_name_or_path"))


LOCAL_DATA_EXTENSIONS = (".jsonl", ".json")


def local_dataset_files(spec: Optional[str]) -> List[str]:
    """The local JSON/JSONL files of an OpenRLHF dataset flag (``a.jsonl,b.json@dir`` -- comma-separated, each
    with an optional ``@data_dir``, as ``openrlhf.datasets.utils.blending_datasets`` reads it) that exist here.
    Hub names, folders, other formats and files that do not exist (yet) are left to OpenRLHF."""
    files = []
    for part in str(spec or "").split(","):
        path = part.split("@")[0].strip()
        if os.path.splitext(path)[1].lower() in LOCAL_DATA_EXTENSIONS and os.path.isfile(path):
            files.append(path)
    return files


def _dataset_problems(run: Run) -> List[str]:
    """The labels of every local prompt / eval dataset file, checked with the one row schema before Ray starts
    (:func:`rank_grpo_plugin.data.check_label_file`; the first ``--data.max_samples`` rows, the ones OpenRLHF
    uses). A bad row names the file, the line and the field. Datasets this process cannot read (hub names,
    folders, parquet ...) are checked by the reward on the first batch that holds a bad label
    (:mod:`.estimator` stops the run there, before anything is trained on it)."""
    from rank_grpo_plugin.data import DataError, check_label_file

    found = []
    label_key, input_key = arg(run.ns, "data.label_key"), arg(run.ns, "data.input_key")
    limit = int(arg(run.ns, "data.max_samples", 10 ** 8))
    for flag, name in (("--data.prompt_dataset", "data.prompt_dataset"), ("--eval.dataset", "eval.dataset")):
        spec = arg(run.ns, name)
        if not spec:
            continue
        if not label_key:
            found.append(f"the plugin's catalog reward scores each prompt against its label: give --data.label_key "
                         f"(the field of {flag} {spec} holding the JSON label written by `rank-grpo prepare --rl`)")
            return found
        for path in local_dataset_files(spec):
            try:
                check_label_file(path, label_key, input_key, limit=limit)
            except DataError as e:
                found.append(f"{flag} {path}: {e}")
    return found


RULES = (
    # the options themselves (whenever the plugin's options are in use), then the reward they configure
    Rule(_always, lambda r: r.opts.problems()),
    Rule(_always, _reward_problem),
    Rule(_catalog_reward, _dataset_problems),  # bad labels stop the run here, before Ray starts
    # the rank_grpo estimator
    Rule(lambda r: r.loss and not r.estimator, lambda r: (
        f"{LOSS_FLAG} rank_grpo needs {ESTIMATOR_FLAG} rank_grpo (it reads per-rank advantages); got "
        f"{ESTIMATOR_FLAG} {arg(r.ns, 'algo.advantage.estimator')}")),
    Rule(_estimator, _n_samples),
    Rule(_estimator, lambda r: _if(arg(r.ns, "critic.model_name_or_path"),
                                   "rank_grpo is critic-free; drop --critic.model_name_or_path")),
    Rule(_estimator, lambda r: _if(arg(r.ns, "train.agent_func_path"), "rank_grpo scores single-turn ranked "
                                   "lists; --train.agent_func_path (multi-turn agents) is not supported")),
    Rule(_estimator, lambda r: _if(arg(r.ns, "reward.overlong_buffer_len") is not None,
                                   "--reward.overlong_buffer_len is not supported with rank_grpo; use "
                                   "--rank_grpo.overflow_penalty / --rank_grpo.early_stop_penalty / "
                                   "--rank_grpo.eos_bonus (rank-level length shaping)")),
    Rule(_estimator, lambda r: _if(arg(r.ns, "reward.stop_properly_penalty_coef") is not None,
                                   "--reward.stop_properly_penalty_coef is not supported with rank_grpo; truncated "
                                   "lists already get no EOS bonus, and --rank_grpo.overflow_penalty shapes lists "
                                   "that run long")),
    Rule(_estimator, lambda r: _if(int(arg(r.ns, "data.max_images_per_prompt", 0)) > 0,
                                   "VLM prompts (--data.max_images_per_prompt > 0) are not supported with "
                                   "rank_grpo")),
    # the rank-level policy loss
    Rule(_loss, lambda r: _if(arg(r.ns, "actor.dual_clip") is not None,
                              "--actor.dual_clip is not supported by the rank-level loss (use --actor.policy_loss_type "
                              "ppo for token-level dual clip)")),
    Rule(_loss, _is_correction),
    Rule(_loss, lambda r: _if(arg(r.ns, "actor.loss_agg_mode", "token-mean") != "token-mean",
                              "--actor.loss_agg_mode seq-mean-token-mean is not supported by the rank-level loss; use "
                              "--rank_grpo.loss_agg rank_mean (every (sequence, rank) unit weighs the same) or "
                              "token_mean")),
)


def problems(run: Run) -> List[str]:
    """Every rule's problem with this run, in table order (a rule gives None, one message or a list)."""
    found: List[str] = []
    for rule in RULES:
        if rule.applies(run):
            msg = rule.problem(run)
            found += [msg] if isinstance(msg, str) else list(msg or [])
    return found


def validate(ns: Any, argv: Optional[Sequence[str]] = None) -> Optional[RankGRPOOptions]:
    """Check and complete a parsed OpenRLHF namespace (flat or hierarchical). Returns the options when
    rank_grpo or the plugin's catalog reward is in use, else None (and leaves ``ns`` untouched). Raises
    :class:`RankGRPOConfigError` listing every problem."""
    argv = list(sys.argv[1:] if argv is None else argv)
    estimator = arg(ns, "algo.advantage.estimator") == ESTIMATOR
    loss_given = arg(ns, "actor.policy_loss_type") == POLICY_LOSS
    if not (estimator or loss_given or _uses_plugin_reward(ns) or any(a.startswith("--rank_grpo.") for a in argv)):
        return None  # another algorithm with another reward: nothing of ours
    if estimator or loss_given:
        try:
            require_supported()
        except UnsupportedOpenRLHF as e:
            raise RankGRPOConfigError(str(e)) from None
    default_loss = estimator and not _given(argv, LOSS_FLAG)
    run = Run(ns, argv, RankGRPOOptions.from_args(ns), estimator, loss_given or default_loss, _uses_plugin_reward(ns))
    found = problems(run)
    if found:
        text = found[0] if len(found) == 1 else f"{len(found)} problems:\n  - " + "\n  - ".join(found)
        raise RankGRPOConfigError(f"rank_grpo: {text}")

    # complete the namespace: the loss default, the reward, the catalog's absolute path, the clip range
    if default_loss:
        set_arg(ns, "actor.policy_loss_type", POLICY_LOSS)
    if not run.plugin_reward and not arg(ns, "reward.remote_url"):
        set_arg(ns, "reward.remote_url", REWARD_FILE)
    opts = run.opts
    if opts.catalog:  # the rollout actors run elsewhere, and check that they read the catalog checked here
        from rank_grpo_plugin.scoring import file_sha256

        opts = RankGRPOOptions(**{**opts.__dict__, "catalog": os.path.abspath(opts.catalog),
                                  "catalog_sha256": file_sha256(opts.catalog)})
        set_arg(ns, "rank_grpo.catalog", opts.catalog)
    if run.loss and not _given(argv, "--actor.eps_clip", "--actor.eps_clip_low_high") and \
            arg(ns, "actor.eps_clip_low_high") is None:
        set_arg(ns, "actor.eps_clip_low_high", [EPS_LOW, EPS_HIGH])
    propagate_options(opts)
    loss = arg(ns, "actor.policy_loss_type")
    if run.estimator:
        print(f"[rank_grpo_plugin] Rank-GRPO active: K={opts.num_ranks}, reward={opts.reward_scheme}, "
              f"advantage level={opts.advantage_level}, separator={opts.separator}, policy loss={loss}, "
              f"catalog={opts.catalog}", file=sys.stderr)
    else:  # OpenRLHF's own estimator: the plugin gives the reward (and the loss if asked), no rank-level credit
        print(f"[rank_grpo_plugin] catalog reward active (NDCG@{opts.num_ranks} per list) with OpenRLHF's "
              f"estimator {arg(ns, 'algo.advantage.estimator')} and policy loss {loss}: K={opts.num_ranks}, "
              f"separator={opts.separator}, catalog={opts.catalog}", file=sys.stderr)
    return opts


_PROPAGATED: dict = {}


def _options_env(ray, args, kwargs):
    """ray.init step: the options reach every worker through the job's runtime_env (``ray`` itself is not
    OpenRLHF; this only adds one environment variable)."""
    runtime_env = kwargs.get("runtime_env")
    if "json" in _PROPAGATED and (runtime_env is None or isinstance(runtime_env, dict)):
        runtime_env = dict(runtime_env or {})
        env_vars = dict(runtime_env.get("env_vars") or {})
        env_vars.setdefault(OPTIONS_ENV, _PROPAGATED["json"])
        kwargs = dict(kwargs, runtime_env=dict(runtime_env, env_vars=env_vars))
    return args, kwargs


def propagate_options(opts: RankGRPOOptions) -> None:
    """Make the options visible to every Ray worker of this job (the vLLM rollout actors read them from the
    environment): set the variable here, and add it to the ``runtime_env`` of the ``ray.init`` call that
    OpenRLHF's ``train()`` makes."""
    text = opts.to_json()
    os.environ[OPTIONS_ENV] = text
    _PROPAGATED["json"] = text
    on_ray_init("rank_grpo_options", before=_options_env)


class _CLIExtension:
    """The object the upstream registry (``patches/``) calls: ``add_arguments(parser)``, ``validate(args)``."""

    name = "rank_grpo"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_arguments(parser)

    @staticmethod
    def validate(args: Any, argv: Optional[List[str]] = None) -> None:
        validate(args, argv)


CLI_EXTENSION = _CLIExtension()
