"""Launcher flags for ``python -m openrlhf.cli.train_ppo_ray``: the ``rank_grpo`` estimator and policy loss,
the ``--rank_grpo.*`` options, the legacy ``--advantage_estimator`` alias, and validation.

:data:`CLI_EXTENSION` is what OpenRLHF's extension registry calls (``add_arguments(parser)`` before parsing,
``validate(args)`` after); on a stock release :mod:`.shim` calls it from its parser hook. Validation is a table
of rules (:data:`RULES`); every problem of a command line is reported at once, each naming its flag.
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
from typing import Any, Callable, List, NamedTuple, Optional, Sequence

from rank_grpo_plugin._hooks import on_ray_init, parse_bool

from .options import DEFAULTS, OPTIONS_ENV, RankGRPOOptions
from .upstream import UnsupportedOpenRLHF, arg, require_supported

ESTIMATOR = "rank_grpo"
POLICY_LOSS = "rank_grpo"
ESTIMATOR_FLAG = "--algo.advantage.estimator"
LEGACY_ESTIMATOR_FLAG = "--advantage_estimator"
LOSS_FLAG = "--actor.policy_loss_type"
REWARD_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reward.py")

class RankGRPOConfigError(ValueError):
    """A flag combination rank_grpo cannot run; the message names the flag and what is accepted."""


# -------------------------------------------------------------------------------------------------- flag table
def _flags():
    from rank_grpo_plugin.advantages import ADVANTAGE_SCALES
    from rank_grpo_plugin.loss import LOSS_AGGREGATIONS
    from rank_grpo_plugin.rewards import REWARD_SCHEMES

    d = DEFAULTS
    return [
        ("catalog", dict(type=str, default=d.catalog, metavar="PATH",
                         help="item catalog (JSONL/JSON/CSV/TSV with title, year); enables the plugin's catalog "
                              "reward automatically when --reward.remote_url is not given")),
        ("num_ranks", dict(type=int, default=d.num_ranks, metavar="K",
                           help=f"number of ranks K scored per list (default {d.num_ranks})")),
        ("reward_scheme", dict(type=str, default=d.reward_scheme, choices=REWARD_SCHEMES.names(),
                               help=f"per-rank reward (default {d.reward_scheme}; 'exp' needs --rank_grpo.gamma)")),
        ("gamma", dict(type=float, default=d.gamma, metavar="G", help="discount base > 1 of the 'exp' reward scheme")),
        ("year_tolerance", dict(type=int, default=d.year_tolerance, metavar="N",
                                help=f"max |year difference| to a ground-truth item (default {d.year_tolerance})")),
        ("overflow_penalty", dict(type=float, default=d.overflow_penalty, metavar="A",
                                  help=f"advantage of tokens after the K-th item (default {d.overflow_penalty})")),
        ("early_stop_penalty", dict(type=float, default=d.early_stop_penalty, metavar="A",
                                    help=f"advantage of EOS after fewer than K items (default {d.early_stop_penalty})")),
        ("eos_bonus", dict(type=float, default=d.eos_bonus, metavar="A",
                           help=f"advantage of EOS right after exactly K items (default {d.eos_bonus})")),
        ("adv_scale", dict(type=str, default=d.adv_scale, choices=ADVANTAGE_SCALES.names(),
                           help=f"per-rank group normalisation (default {d.adv_scale})")),
        ("adv_eps", dict(type=float, default=d.adv_eps, metavar="EPS", help=f"added to the group std (default {d.adv_eps})")),
        ("loss_agg", dict(type=str, default=d.loss_agg, choices=LOSS_AGGREGATIONS.names(),
                          help="rank_grpo loss aggregation: token_mean (global token mean, like OpenRLHF's "
                               "token-mean) or rank_mean (mean over (sequence, rank) units)")),
        ("per_rank_metrics", dict(type=_bool, default=d.per_rank_metrics, metavar="{true,false}",
                                  help="log reward/advantage/hit rate per rank (default true)")),
    ]


def _bool(text: str) -> bool:
    try:
        return parse_bool(text, "--rank_grpo.per_rank_metrics")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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
    for name, kw in _flags():
        group.add_argument(f"--rank_grpo.{name}", dest=f"rank_grpo.{name}", **kw)
    parser._rank_grpo_added = True


# ----------------------------------------------------------------------------------------------- namespace access
def _set(ns: Any, dotted: str, value: Any) -> None:
    if dotted in vars(ns):
        setattr(ns, dotted, value)
        return
    parts = dotted.split(".")
    node = ns
    for part in parts[:-1]:
        if not hasattr(node, part):
            setattr(ns, dotted, value)  # flat namespace without this key yet
            return
        node = getattr(node, part)
    setattr(node, parts[-1], value)


def _given(argv: Sequence[str], *flags: str) -> bool:
    return any(a == f or a.startswith(f + "=") for a in argv for f in flags)


def _core_eps():
    from rank_grpo_plugin.loss import rank_policy_loss

    params = inspect.signature(rank_policy_loss).parameters
    return [params["eps_low"].default, params["eps_high"].default]


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
    problem: Callable[[Run], Optional[str]]  # None when fine, else the message (names the flag)


def _always(run: Run) -> bool:
    return True


def _estimator(run: Run) -> bool:
    return run.estimator


def _loss(run: Run) -> bool:
    return run.loss


def _if(cond: bool, message: str) -> Optional[str]:
    return message if cond else None


def _catalog_problem(run: Run) -> Optional[str]:
    path = run.opts.catalog
    if not path:
        return None
    if not os.path.isfile(path):
        return f"--rank_grpo.catalog {path}: no such file"
    from rank_grpo_plugin.recsys.catalog import Catalog, CatalogError

    try:
        Catalog.from_file(path)
    except CatalogError as e:
        return f"--rank_grpo.catalog: {e}"
    return None


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


def _gamma_problem(run: Run) -> Optional[str]:
    o = run.opts
    if o.reward_scheme == "exp":
        return _if(o.gamma is None or not o.gamma > 1.0,
                   f"--rank_grpo.reward_scheme exp needs --rank_grpo.gamma > 1, got {o.gamma}")
    return _if(o.gamma is not None,
               f"--rank_grpo.gamma is only used by --rank_grpo.reward_scheme exp (got scheme {o.reward_scheme})")


def _n_samples(run: Run) -> Optional[str]:
    n = arg(run.ns, "rollout.n_samples_per_prompt", 1)
    return _if(int(n) <= 1, "rank_grpo normalises each rank within a prompt's group and requires "
               f"--rollout.n_samples_per_prompt > 1 (got {n})")


RULES = (
    # the options themselves (whenever the plugin's options are in use)
    Rule(_always, lambda r: _if(r.opts.num_ranks < 1, f"--rank_grpo.num_ranks must be >= 1, got {r.opts.num_ranks}")),
    Rule(_always, _gamma_problem),
    Rule(_always, lambda r: _if(r.opts.year_tolerance < 0,
                                f"--rank_grpo.year_tolerance must be >= 0, got {r.opts.year_tolerance}")),
    Rule(_always, lambda r: _if(not r.opts.adv_eps > 0, f"--rank_grpo.adv_eps must be > 0, got {r.opts.adv_eps}")),
    Rule(_always, _reward_problem),
    Rule(_always, _catalog_problem),
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
    Rule(_loss, lambda r: _if(arg(r.ns, "algo.advantage.is_correction_level", "off") != "off",
                              "--algo.advantage.is_correction_level (vLLM importance-sampling correction) is not "
                              "supported by the rank-level loss yet; use --actor.policy_loss_type ppo or turn the "
                              "correction off")),
    Rule(_loss, lambda r: _if(arg(r.ns, "actor.loss_agg_mode", "token-mean") != "token-mean",
                              "--actor.loss_agg_mode seq-mean-token-mean is not supported by the rank-level loss; use "
                              "--rank_grpo.loss_agg rank_mean (every (sequence, rank) unit weighs the same) or "
                              "token_mean")),
)


def problems(run: Run) -> List[str]:
    """Every rule's problem with this run, in table order."""
    return [msg for rule in RULES if rule.applies(run) for msg in [rule.problem(run)] if msg]


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
        _set(ns, "actor.policy_loss_type", POLICY_LOSS)
    if not run.plugin_reward and not arg(ns, "reward.remote_url"):
        _set(ns, "reward.remote_url", REWARD_FILE)
    opts = run.opts
    if opts.catalog:  # the rollout actors run elsewhere
        opts = RankGRPOOptions(**{**opts.__dict__, "catalog": os.path.abspath(opts.catalog)})
        _set(ns, "rank_grpo.catalog", opts.catalog)
    if run.loss and not _given(argv, "--actor.eps_clip", "--actor.eps_clip_low_high") and \
            arg(ns, "actor.eps_clip_low_high") is None:
        _set(ns, "actor.eps_clip_low_high", _core_eps())
    propagate_options(opts)
    print(f"[rank_grpo_plugin] Rank-GRPO active: K={opts.num_ranks}, reward={opts.reward_scheme}, "
          f"policy loss={arg(ns, 'actor.policy_loss_type')}, catalog={opts.catalog}", file=sys.stderr)
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
