"""The ``--rank_grpo.*`` options: one table, read from OpenRLHF's args (driver, trainer and policy actors) or
from the ``RANK_GRPO_PLUGIN_OPTIONS`` environment variable (vLLM rollout actors, which never see the args).

No torch, no OpenRLHF.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, fields
from typing import Any, Optional

OPTIONS_ENV = "RANK_GRPO_PLUGIN_OPTIONS"
PREFIX = "rank_grpo"


@dataclass(frozen=True)
class RankGRPOOptions:
    catalog: Optional[str] = None
    num_ranks: int = 20
    reward_scheme: str = "exp_inf"
    gamma: Optional[float] = None
    year_tolerance: int = 2
    overflow_penalty: float = -0.1
    early_stop_penalty: float = -0.1
    eos_bonus: float = 0.1
    adv_scale: str = "group"
    adv_eps: float = 1e-4
    loss_agg: str = "token_mean"
    per_rank_metrics: bool = True

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


DEFAULTS = RankGRPOOptions()
