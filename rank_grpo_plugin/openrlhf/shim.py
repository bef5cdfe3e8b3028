"""On a stock OpenRLHF release: the extension points that ``patches/0001-*`` adds upstream, provided from outside.

The same names as ``openrlhf.utils.extensions`` (:data:`ADVANTAGE_ESTIMATORS`, :data:`POLICY_LOSSES`,
:data:`CLI_EXTENSIONS`) and the same call sites, made by wrapping the functions the patch edits:

* ``RemoteExperienceMaker.compute_advantages_and_returns``: a registered estimator replaces the body;
* ``ActorPPOTrainer.__init__``: a registered policy loss replaces ``PolicyLoss`` (built ``(args, tokenizer=)``);
* ``ActorPPOTrainer.training_step``: a loss with ``needs_experience`` gets ``experience=`` (the micro-batch);
* ``argparse.ArgumentParser.parse_known_args`` (stdlib, through :func:`rank_grpo_plugin.hooks.on_parse_args`; acts
  only on OpenRLHF's ``train_ppo_ray`` parser, recognised by its option strings, with the release's ``choices``
  checked): the CLI extensions' flags and validation, as the patched launcher calls them.

Each wrapped function is checked against :mod:`openrlhf_compat`. A mismatch never touches runs that use no registered
name; a run that does gets :class:`~openrlhf_compat.OpenRLHFChanged` naming the function. Not used when OpenRLHF ships
the registry (:func:`openrlhf_compat.has_registry`).
"""
from __future__ import annotations

import argparse
import functools
import threading
from typing import Any, Callable, Dict, List, Optional

from rank_grpo_plugin._registry import Registry

import openrlhf_compat
from rank_grpo_plugin.hooks import on_parse_args, when_imported

ADVANTAGE_ESTIMATORS: Registry = Registry("advantage estimator")
POLICY_LOSSES: Registry = Registry("policy loss")
CLI_EXTENSIONS: List[Any] = []

STATUS: Dict[str, str] = {}  # "module:qualname" -> "patched" | "changed: ..."
_LOCK = threading.RLock()
_EM = "openrlhf.trainer.ppo_utils.experience_maker"
_PA = "openrlhf.trainer.ray.ppo_actor"
_MARKER_FLAGS = ("--algo.advantage.estimator", "--actor.policy_loss_type", "--rollout.n_samples_per_prompt",
                 "--reward.remote_url")


def _changed(problem: str) -> openrlhf_compat.OpenRLHFChanged:
    return openrlhf_compat.OpenRLHFChanged(
        f"rank_grpo_plugin cannot run rank_grpo: {problem}. The plugin's runtime patches were written against "
        f"OpenRLHF {', '.join(openrlhf_compat.SUPPORTED_OPENRLHF_VERSIONS)} and refuse to patch a function that "
        "changed. "
        f"Install OpenRLHF {openrlhf_compat.SUPPORTED_OPENRLHF_VERSIONS[-1]} or apply rank_grpo_plugin's patches/ diff."
    )


def _wrap(module, qualname: str, make: Callable[[Callable, Optional[str]], Callable]) -> None:
    """Replace ``module.Class.method`` with ``make(original, problem)`` once; ``problem`` is None when the source is
    the expected one. Wrappers behave exactly like the original unless a registered name is used."""
    cls_name, method = qualname.split(".")
    key = f"{module.__name__}:{qualname}"
    with _LOCK:
        cls = getattr(module, cls_name, None)
        original = getattr(cls, "__dict__", {}).get(method)
        if original is None:
            STATUS[key] = f"changed: {qualname} missing"
            return
        if getattr(original, "_rank_grpo_patch", False):
            return
        problem = openrlhf_compat.verify(module, qualname)
        wrapper = functools.update_wrapper(make(original, problem), original)
        wrapper._rank_grpo_patch = True
        setattr(cls, method, wrapper)
        STATUS[key] = "patched" if problem is None else f"changed: {problem}"


def _patch_experience_maker(module) -> None:
    def make(original, problem):
        def compute_advantages_and_returns(self, experiences):
            name = openrlhf_compat.arg(self.strategy.args, "algo.advantage.estimator")
            if name not in ADVANTAGE_ESTIMATORS:
                return original(self, experiences)
            if problem is not None:
                raise _changed(problem)
            return ADVANTAGE_ESTIMATORS.get(name)(self, experiences)

        return compute_advantages_and_returns

    _wrap(module, "RemoteExperienceMaker.compute_advantages_and_returns", make)


def _patch_ppo_actor(module) -> None:
    def make_init(original, problem):
        def __init__(self, strategy, *args, **kwargs):
            original(self, strategy, *args, **kwargs)
            name = openrlhf_compat.arg(strategy.args, "actor.policy_loss_type")
            if name not in POLICY_LOSSES:
                return
            if problem is not None:
                raise _changed(problem)
            self.actor_loss_fn = POLICY_LOSSES.get(name)(strategy.args, tokenizer=self.tokenizer)

        return __init__

    def make_step(original, problem):
        def training_step(self, experience, *args, **kwargs):
            loss_fn = getattr(self, "actor_loss_fn", None)
            if not getattr(loss_fn, "needs_experience", False):
                return original(self, experience, *args, **kwargs)
            if problem is not None:
                raise _changed(problem)
            # the patched call site passes experience=; here the bound forward does
            loss_fn.forward = functools.partial(type(loss_fn).forward, loss_fn, experience=experience)
            try:
                return original(self, experience, *args, **kwargs)
            finally:
                del loss_fn.forward

        return training_step

    _wrap(module, "ActorPPOTrainer.__init__", make_init)
    _wrap(module, "ActorPPOTrainer.training_step", make_step)


# --------------------------------------------------------------------------------------------- launcher parser
def is_openrlhf_ppo_parser(parser: argparse.ArgumentParser) -> bool:
    return all(flag in parser._option_string_actions for flag in _MARKER_FLAGS)


def parser_problem(parser: argparse.ArgumentParser) -> Optional[str]:
    """None when the parser is the supported release's, else why not."""
    ours = set(ADVANTAGE_ESTIMATORS.names()) | set(POLICY_LOSSES.names())
    return openrlhf_compat.choices_problem(lambda flag: parser._option_string_actions[flag].choices, ours)


def _mentions_ours(argv: List[str]) -> bool:
    names = set(ADVANTAGE_ESTIMATORS.names()) | set(POLICY_LOSSES.names())
    return any(a in names or a.split("=")[-1] in names or a.startswith("--rank_grpo.") for a in argv)


def _add_flags(parser: argparse.ArgumentParser, argv: List[str]) -> None:
    """Parse step: the CLI extensions' flags on OpenRLHF's launcher parser (when it is the supported release's)."""
    if not is_openrlhf_ppo_parser(parser):
        return
    problem = parser_problem(parser)
    parser._rank_grpo_unsupported = problem is not None
    if problem is not None:
        if _mentions_ours(argv):
            parser.error(problem)
        return
    for extension in CLI_EXTENSIONS:
        extension.add_arguments(parser)


def _validate(parser: argparse.ArgumentParser, ns: Any, argv: List[str]) -> None:
    """Parse step: the CLI extensions' validation of what the launcher parser returned."""
    if not is_openrlhf_ppo_parser(parser) or getattr(parser, "_rank_grpo_unsupported", True):
        return
    for extension in CLI_EXTENSIONS:
        try:
            extension.validate(ns, argv)
        except ValueError as e:
            parser.error(str(e))


def install() -> None:
    """Provide the extension points in this process (idempotent; patches each module when it is imported)."""
    on_parse_args("rank_grpo_cli_extensions", before=_add_flags, after=_validate)
    when_imported(_EM, _patch_experience_maker)
    when_imported(_PA, _patch_ppo_actor)
