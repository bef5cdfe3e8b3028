"""The Rank-GRPO options (``--rank_grpo.*`` on a host's launcher): the recipe's hyper-parameters
(:class:`rank_grpo_plugin.config.RecipeConfig`, where every default is declared) plus what a run needs besides, their
argparse flags (:func:`option_flags`), their checks (:meth:`RankGRPOOptions.problems`), and their transport: read from
a parsed namespace (nested or flat, e.g. OpenRLHF's args in the driver, trainer and policy actors) or from the
``RANK_GRPO_PLUGIN_OPTIONS`` environment variable (processes that never see the args, e.g. vLLM rollout actors).

This module sits above the core: it imports the core's registries (lazily, so that importing it stays cheap) to
check names and build the flags' choices; nothing in the core imports it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, fields
from typing import Any, List, Optional, Tuple

from .config import RecipeConfig

OPTIONS_ENV = "RANK_GRPO_PLUGIN_OPTIONS"
PREFIX = "rank_grpo"


@dataclass(frozen=True)
class RankGRPOOptions(RecipeConfig):
    """:class:`RecipeConfig` plus ``catalog`` (path of the item catalog of the plugin's reward),
    ``year_tolerance`` (max |year difference| of a ground-truth match) and ``per_rank_metrics`` (log per-rank
    reward / advantage / hit rate); ``catalog_sha256`` is no flag: the launcher records the catalog's content
    hash there, and every process that loads the catalog checks it (a catalog that changes during the run is an
    error, :func:`rank_grpo_plugin.scoring.load_catalog`)."""

    catalog: Optional[str] = None
    year_tolerance: int = 2
    per_rank_metrics: bool = True
    catalog_sha256: Optional[str] = None  # set at launch (no flag): every process checks it reads that catalog

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RankGRPOOptions":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{OPTIONS_ENV} must hold a JSON object, got {text[:80]!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{OPTIONS_ENV}: unknown option(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_env(cls) -> "RankGRPOOptions":
        text = os.environ.get(OPTIONS_ENV)
        return cls.from_json(text) if text else cls()

    @classmethod
    def from_args(cls, args: Any) -> "RankGRPOOptions":
        """From OpenRLHF's args: nested (``args.rank_grpo.catalog``) or flat (``getattr(args, 'rank_grpo.catalog')``).

        Falls back to the environment, then to the defaults, for options that are absent.
        """
        base = cls.from_env() if os.environ.get(OPTIONS_ENV) else cls()
        values = {}
        nested = getattr(args, PREFIX, None)
        for f in fields(cls):
            if nested is not None and hasattr(nested, f.name):
                values[f.name] = getattr(nested, f.name)
            elif hasattr(args, f"{PREFIX}.{f.name}"):
                values[f.name] = getattr(args, f"{PREFIX}.{f.name}")
            else:
                values[f.name] = getattr(base, f.name)
        return cls(**values)

    def problems(self) -> List[str]:
        """Every problem of these options on their own, each naming its flag ([] when fine)."""
        found = []
        if self.num_ranks < 1:
            found.append(f"--{PREFIX}.num_ranks must be >= 1, got {self.num_ranks}")
        if self.reward_scheme == "exp" and (self.gamma is None or not self.gamma > 1.0):
            found.append(f"--{PREFIX}.reward_scheme exp needs --{PREFIX}.gamma > 1, got {self.gamma}")
        if self.reward_scheme != "exp" and self.gamma is not None:
            found.append(f"--{PREFIX}.gamma is only used by --{PREFIX}.reward_scheme exp (got scheme "
                         f"{self.reward_scheme})")
        if self.year_tolerance < 0:
            found.append(f"--{PREFIX}.year_tolerance must be >= 0, got {self.year_tolerance}")
        if not self.adv_eps > 0:
            found.append(f"--{PREFIX}.adv_eps must be > 0, got {self.adv_eps}")
        for name, valid in flag_choices().items():
            if getattr(self, name) not in valid:
                found.append(f"--{PREFIX}.{name} must be one of {valid}, got {getattr(self, name)!r}")
        if self.catalog and not os.path.isfile(self.catalog):
            found.append(f"--{PREFIX}.catalog {self.catalog}: no such file")
        elif self.catalog:
            from .recsys.catalog import Catalog, CatalogError

            try:
                if not len(Catalog.from_file(self.catalog)):
                    found.append(f"--{PREFIX}.catalog {self.catalog}: empty catalog (no items); every list would "
                                 "score 0")
            except CatalogError as e:
                found.append(f"--{PREFIX}.catalog: {e}")
        return found


DEFAULTS = RankGRPOOptions()


def _bool(text: str) -> bool:
    from .hooks import parse_bool

    try:
        return parse_bool(text, f"--{PREFIX}.per_rank_metrics")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def flag_choices() -> dict:
    """option -> its valid values, from the core's registries (imported here, on first use)."""
    from .advantages import ADVANTAGE_LEVELS, ADVANTAGE_SCALES
    from .loss import LOSS_AGGREGATIONS
    from .ranks import SEPARATORS
    from .rewards import REWARD_SCHEMES

    return {"reward_scheme": REWARD_SCHEMES.names(), "advantage_level": ADVANTAGE_LEVELS.names(),
            "adv_scale": ADVANTAGE_SCALES.names(), "loss_agg": LOSS_AGGREGATIONS.names(),
            "separator": list(SEPARATORS)}


def option_flags() -> List[Tuple[str, dict]]:
    """``(name, argparse kwargs)`` of every option, for ``parser.add_argument(f"--{PREFIX}.{name}", **kwargs)``."""
    d, choices = DEFAULTS, flag_choices()
    return [
        ("catalog", dict(type=str, default=d.catalog, metavar="PATH",
                         help="item catalog (JSONL/JSON/CSV/TSV with title, year); enables the plugin's catalog "
                              "reward automatically when no other reward is given")),
        ("num_ranks", dict(type=int, default=d.num_ranks, metavar="K",
                           help=f"number of ranks K scored per list (default {d.num_ranks})")),
        ("reward_scheme", dict(type=str, default=d.reward_scheme, choices=choices["reward_scheme"],
                               help=f"per-rank reward (default {d.reward_scheme}; 'exp' needs --{PREFIX}.gamma)")),
        ("gamma", dict(type=float, default=d.gamma, metavar="G", help="discount base > 1 of the 'exp' reward scheme")),
        ("year_tolerance", dict(type=int, default=d.year_tolerance, metavar="N",
                                help=f"max |year difference| to a ground-truth item (default {d.year_tolerance})")),
        ("overflow_penalty", dict(type=float, default=d.overflow_penalty, metavar="A",
                                  help=f"advantage of tokens after the K-th item (default {d.overflow_penalty})")),
        ("early_stop_penalty", dict(type=float, default=d.early_stop_penalty, metavar="A",
                                    help=f"advantage of EOS after fewer than K items (default {d.early_stop_penalty})")),
        ("eos_bonus", dict(type=float, default=d.eos_bonus, metavar="A",
                           help=f"advantage of EOS right after exactly K items (default {d.eos_bonus})")),
        ("advantage_level", dict(type=str, default=d.advantage_level, choices=choices["advantage_level"],
                                 help="credit level: 'rank' (default: every rank normalised within the prompt's "
                                      "group, Rank-GRPO) or 'sequence' (the ablation: one return per list -- the "
                                      "sum of the per-rank rewards for exp_inf, the rank-1 reward for the look-ahead "
                                      "schemes -- normalised within the group and given to every token of the "
                                      "list; same rewards, shaping and loss)")),
        ("adv_scale", dict(type=str, default=d.adv_scale, choices=choices["adv_scale"],
                           help=f"per-rank group normalisation (default {d.adv_scale})")),
        ("adv_eps", dict(type=float, default=d.adv_eps, metavar="EPS", help=f"added to the group std (default {d.adv_eps})")),
        ("loss_agg", dict(type=str, default=d.loss_agg, choices=choices["loss_agg"],
                          help="rank_grpo loss aggregation: token_mean (global token mean, like OpenRLHF's "
                               "token-mean) or rank_mean (mean over (sequence, rank) units)")),
        ("separator", dict(type=str, default=d.separator, choices=choices["separator"],
                           help="rank of a token holding a newline, for its advantage and importance ratio: the "
                                "item it ends (default 'end') or the item it starts ('start': the choice to go on "
                                "after item k is credited with item k+1, not with item k)")),
        ("per_rank_metrics", dict(type=_bool, default=d.per_rank_metrics, metavar="{true,false}",
                                  help="log reward/advantage/hit rate per rank (default true)")),
    ]
