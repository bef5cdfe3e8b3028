"""Launcher flags for ``python -m openrlhf.cli.train_ppo_ray``: the ``rank_grpo`` estimator and policy loss,
the ``--rank_grpo.*`` options, the legacy ``--advantage_estimator`` alias, and validation.

OpenRLHF 0.11.2 builds its parser under ``if __name__ == "__main__"`` of ``openrlhf/cli/train_ppo_ray.py``, so
there is no module attribute to patch. Instead :func:`install_argparse_hook` wraps
``argparse.ArgumentParser.parse_known_args`` and acts only on a parser that *is* OpenRLHF's PPO parser
(recognised by its option strings, with the exact 0.11.2 ``choices`` checked); every other parser in the process
is untouched. This works the same for ``python -m``, ``deepspeed --module`` and ``ray job submit -- python3 -m``.

With the upstream registry of ``patches/``, OpenRLHF itself calls :data:`CLI_EXTENSION` and no hook is needed.
"""
from __future__ import annotations

import argparse
import functools
import inspect
import os
import sys
from typing import Any, Callable, List, Optional, Sequence

from .options import DEFAULTS, OPTIONS_ENV, RankGRPOOptions

ESTIMATOR = "rank_grpo"
POLICY_LOSS = "rank_grpo"
ESTIMATOR_FLAG = "--algo.advantage.estimator"
LEGACY_ESTIMATOR_FLAG = "--advantage_estimator"
LOSS_FLAG = "--actor.policy_loss_type"
REWARD_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reward.py")

# OpenRLHF 0.11.2's choices for the two flags we extend (the parser "signature" we check before touching it).
EXPECTED_ESTIMATOR_CHOICES = [
    "gae", "reinforce", "rloo", "reinforce_baseline", "group_norm", "dr_grpo", "flash_reinforce",
]
EXPECTED_LOSS_CHOICES = ["ppo", "gspo"]
_MARKER_FLAGS = (ESTIMATOR_FLAG, LOSS_FLAG, "--rollout.n_samples_per_prompt", "--reward.remote_url")


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
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


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
def _get(ns: Any, dotted: str, default: Any = None) -> Any:
    if dotted in vars(ns):
        return getattr(ns, dotted)
    node = ns
    for part in dotted.split("."):
        if not hasattr(node, part):
            return default
        node = getattr(node, part)
    return node


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


def mentions_rank_grpo(argv: Sequence[str]) -> bool:
    return any(a == ESTIMATOR or a.endswith("=" + ESTIMATOR) or a.startswith("--rank_grpo.") for a in argv)


def _core_eps():
    from rank_grpo_plugin.loss import rank_policy_loss

    params = inspect.signature(rank_policy_loss).parameters
    return [params["eps_low"].default, params["eps_high"].default]


# ------------------------------------------------------------------------------------------------- validation
def _uses_plugin_reward(ns: Any) -> bool:
    remote = _get(ns, "reward.remote_url")
    if not remote:
        return False
    first = (remote if isinstance(remote, list) else str(remote).split(","))[0]
    return os.path.abspath(first) == REWARD_FILE or first.endswith("rank_grpo_plugin/openrlhf/reward.py")


def _checked_options(ns: Any, fail: Callable[[str], None]) -> RankGRPOOptions:
    opts = RankGRPOOptions.from_args(ns)
    if opts.num_ranks < 1:
        fail(f"--rank_grpo.num_ranks must be >= 1, got {opts.num_ranks}")
    if opts.reward_scheme == "exp":
        if opts.gamma is None or not opts.gamma > 1.0:
            fail(f"--rank_grpo.reward_scheme exp needs --rank_grpo.gamma > 1, got {opts.gamma}")
    elif opts.gamma is not None:
        fail(f"--rank_grpo.gamma is only used by --rank_grpo.reward_scheme exp (got scheme {opts.reward_scheme})")
    if opts.year_tolerance < 0:
        fail(f"--rank_grpo.year_tolerance must be >= 0, got {opts.year_tolerance}")
    if not opts.adv_eps > 0:
        fail(f"--rank_grpo.adv_eps must be > 0, got {opts.adv_eps}")
    return opts


def _configure_catalog(ns: Any, opts: RankGRPOOptions, fail: Callable[[str], None]) -> RankGRPOOptions:
    """Check the catalog file loads; store its absolute path (the rollout actors run elsewhere)."""
    if not opts.catalog:
        return opts
    if not os.path.isfile(opts.catalog):
        fail(f"--rank_grpo.catalog {opts.catalog}: no such file")
    from rank_grpo_plugin.recsys.catalog import Catalog, CatalogError

    try:
        Catalog.from_file(opts.catalog)
    except CatalogError as e:
        fail(f"--rank_grpo.catalog: {e}")
    opts = RankGRPOOptions(**{**opts.__dict__, "catalog": os.path.abspath(opts.catalog)})
    _set(ns, "rank_grpo.catalog", opts.catalog)
    return opts


def validate(ns: Any, argv: Optional[Sequence[str]] = None) -> Optional[RankGRPOOptions]:
    """Check and complete a parsed OpenRLHF namespace (flat or hierarchical). Returns the options when
    rank_grpo or the plugin's catalog reward is in use, else None (and leaves ``ns`` untouched). Raises
    :class:`RankGRPOConfigError`."""
    from .activate import UnsupportedOpenRLHF, require_supported

    argv = list(sys.argv[1:] if argv is None else argv)
    estimator = _get(ns, "algo.advantage.estimator")
    loss = _get(ns, "actor.policy_loss_type")

    def fail(msg: str):
        raise RankGRPOConfigError(f"rank_grpo: {msg}")

    if estimator != ESTIMATOR and loss != POLICY_LOSS:
        # Another estimator (e.g. a GRPO / GSPO baseline) may still score with the plugin's catalog reward (its
        # scalar reward is NDCG@K): then the options must be checked and reach the rollout actors like for rank_grpo.
        if not (_uses_plugin_reward(ns) or any(a.startswith("--rank_grpo.") for a in argv)):
            return None
        opts = _checked_options(ns, fail)
        if _uses_plugin_reward(ns) and not opts.catalog:
            fail("the plugin's catalog reward needs a catalog: give --rank_grpo.catalog PATH")
        if not _uses_plugin_reward(ns):
            if _get(ns, "reward.remote_url") or _get(ns, "reward.model_name_or_path"):
                fail("--rank_grpo.* options only configure the plugin's catalog reward, but this run uses another "
                     "reward (--reward.remote_url / --reward.model_name_or_path); drop them or drop that reward")
            if not opts.catalog:
                fail("--rank_grpo.* options without --rank_grpo.catalog: the catalog reward needs a catalog")
            _set(ns, "reward.remote_url", REWARD_FILE)
        opts = _configure_catalog(ns, opts, fail)
        propagate_options(opts)
        return opts

    try:
        require_supported()
    except UnsupportedOpenRLHF as e:
        raise RankGRPOConfigError(str(e)) from None

    if estimator != ESTIMATOR:
        fail(f"{LOSS_FLAG} rank_grpo needs {ESTIMATOR_FLAG} rank_grpo (it reads per-rank advantages); "
             f"got {ESTIMATOR_FLAG} {estimator}")
    if not _given(argv, LOSS_FLAG):
        _set(ns, "actor.policy_loss_type", POLICY_LOSS)
        loss = POLICY_LOSS

    n = _get(ns, "rollout.n_samples_per_prompt", 1)
    if n is None or int(n) <= 1:
        fail(f"rank_grpo normalises each rank within a prompt's group and requires --rollout.n_samples_per_prompt "
             f"> 1 (got {n})")
    if _get(ns, "critic.model_name_or_path"):
        fail("rank_grpo is critic-free; drop --critic.model_name_or_path")
    if _get(ns, "train.agent_func_path"):
        fail("rank_grpo scores single-turn ranked lists; --train.agent_func_path (multi-turn agents) is not supported")
    if _get(ns, "reward.overlong_buffer_len") is not None:
        fail("--reward.overlong_buffer_len is not supported with rank_grpo; use --rank_grpo.overflow_penalty / "
             "--rank_grpo.early_stop_penalty / --rank_grpo.eos_bonus (rank-level length shaping)")
    if _get(ns, "reward.stop_properly_penalty_coef") is not None:
        fail("--reward.stop_properly_penalty_coef is not supported with rank_grpo; truncated lists already get no "
             "EOS bonus, and --rank_grpo.overflow_penalty shapes lists that run long")
    if int(_get(ns, "data.max_images_per_prompt", 0) or 0) > 0:
        fail("VLM prompts (--data.max_images_per_prompt > 0) are not supported with rank_grpo")

    opts = _checked_options(ns, fail)

    if _get(ns, "reward.remote_url"):
        if _uses_plugin_reward(ns) and not opts.catalog:
            fail("the plugin's catalog reward needs --rank_grpo.catalog PATH")
    else:
        if _get(ns, "reward.model_name_or_path"):
            fail("rank_grpo needs per-rank hits, which a reward model cannot give; use --rank_grpo.catalog (or a "
                 "--reward.remote_url reward function emitting the rank_grpo/hit_rXX extra logs)")
        if not opts.catalog:
            fail("rank_grpo needs a reward: give --rank_grpo.catalog PATH (the plugin's catalog reward is then used "
                 "automatically) or --reward.remote_url pointing at a reward function that emits the per-rank "
                 "rank_grpo/hit_rXX extra logs")
        _set(ns, "reward.remote_url", REWARD_FILE)
    opts = _configure_catalog(ns, opts, fail)

    if loss == POLICY_LOSS:
        if _get(ns, "actor.dual_clip") is not None:
            fail("--actor.dual_clip is not supported by the rank-level loss (use --actor.policy_loss_type ppo for "
                 "token-level dual clip)")
        if _get(ns, "algo.advantage.is_correction_level", "off") != "off":
            fail("--algo.advantage.is_correction_level (vLLM importance-sampling correction) is not supported by "
                 "the rank-level loss yet; use --actor.policy_loss_type ppo or turn the correction off")
        if _get(ns, "actor.loss_agg_mode", "token-mean") != "token-mean":
            fail("--actor.loss_agg_mode seq-mean-token-mean is not supported by the rank-level loss; use "
                 "--rank_grpo.loss_agg rank_mean (every (sequence, rank) unit weighs the same) or token_mean")
        if not _given(argv, "--actor.eps_clip", "--actor.eps_clip_low_high") and \
                _get(ns, "actor.eps_clip_low_high") is None:
            _set(ns, "actor.eps_clip_low_high", _core_eps())

    propagate_options(opts)
    return opts


_PROPAGATED: dict = {}


def propagate_options(opts: RankGRPOOptions) -> None:
    """Make the options visible to every Ray worker of this job (the vLLM rollout actors read them from the
    environment): set the variable here, and add it to the ``runtime_env`` of the ``ray.init`` call that
    OpenRLHF's ``train()`` makes (``ray`` itself is not OpenRLHF; the wrapper only adds one env var)."""
    text = opts.to_json()
    os.environ[OPTIONS_ENV] = text
    _PROPAGATED["json"] = text
    ray = sys.modules.get("ray")
    if ray is None:
        try:
            import ray  # noqa: F811
        except ImportError:
            return
    if getattr(ray.init, "_rank_grpo_patch", False):
        return
    original = ray.init

    @functools.wraps(original)
    def init(*args, **kwargs):
        runtime_env = kwargs.get("runtime_env")
        if "json" in _PROPAGATED and (runtime_env is None or isinstance(runtime_env, dict)):
            runtime_env = dict(runtime_env or {})
            env_vars = dict(runtime_env.get("env_vars") or {})
            env_vars.setdefault(OPTIONS_ENV, _PROPAGATED["json"])
            runtime_env["env_vars"] = env_vars
            kwargs["runtime_env"] = runtime_env
        return original(*args, **kwargs)

    init._rank_grpo_patch = True
    ray.init = init


# --------------------------------------------------------------------------------------------- argparse hook
def is_openrlhf_ppo_parser(parser: argparse.ArgumentParser) -> bool:
    return all(flag in parser._option_string_actions for flag in _MARKER_FLAGS)


def parser_problem(parser: argparse.ArgumentParser) -> Optional[str]:
    """None when the parser is OpenRLHF 0.11.2's and the version is supported, else why not."""
    from .activate import unsupported_message, version_supported

    if not version_supported():
        return unsupported_message()
    est = [c for c in (_action(parser, ESTIMATOR_FLAG).choices or []) if c != ESTIMATOR]
    loss = [c for c in (_action(parser, LOSS_FLAG).choices or []) if c != POLICY_LOSS]
    if est != EXPECTED_ESTIMATOR_CHOICES or loss != EXPECTED_LOSS_CHOICES:
        return (
            f"rank_grpo_plugin: OpenRLHF's train_ppo_ray parser changed ({ESTIMATOR_FLAG} choices {est}, "
            f"{LOSS_FLAG} choices {loss}; expected {EXPECTED_ESTIMATOR_CHOICES} and {EXPECTED_LOSS_CHOICES} as in "
            f"OpenRLHF 0.11.2); refusing to patch it"
        )
    return None


def install_argparse_hook() -> None:
    """Wrap ``argparse.ArgumentParser.parse_known_args`` (stdlib) once per process."""
    current = argparse.ArgumentParser.parse_known_args
    if getattr(current, "_rank_grpo_patch", False):
        return
    original = current

    @functools.wraps(original)
    def parse_known_args(self, args=None, namespace=None):
        if getattr(self, "_rank_grpo_busy", False) or not is_openrlhf_ppo_parser(self):
            return original(self, args, namespace)
        from .activate import disabled, has_registry

        if disabled() or has_registry():  # upstream registry calls CLI_EXTENSION itself
            return original(self, args, namespace)
        argv = list(sys.argv[1:] if args is None else args)
        problem = parser_problem(self)
        if problem is not None:
            if mentions_rank_grpo(argv):
                self.error(problem)
            return original(self, args, namespace)
        add_arguments(self)
        self._rank_grpo_busy = True
        try:
            ns, rest = original(self, args, namespace)
        finally:
            self._rank_grpo_busy = False
        try:
            opts = validate(ns, argv)
        except RankGRPOConfigError as e:
            self.error(str(e))
        if opts is not None:
            print(f"[rank_grpo_plugin] Rank-GRPO active: K={opts.num_ranks}, reward={opts.reward_scheme}, "
                  f"policy loss={_get(ns, 'actor.policy_loss_type')}, catalog={opts.catalog}", file=sys.stderr)
        return ns, rest

    parse_known_args._rank_grpo_patch = True
    argparse.ArgumentParser.parse_known_args = parse_known_args


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
