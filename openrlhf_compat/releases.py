"""The supported OpenRLHF releases: per release, the fingerprint of every OpenRLHF function that the Rank-GRPO
adapter (``rank_grpo_plugin.openrlhf``) or the CPU backend (``openrlhf_cpu``) patches or relies on, and the
launcher's ``choices`` that the flags extension checks, and how many values ``ActorPPOTrainer.training_step``
unpacks from the policy loss. The one table to edit when a release is added.

Fingerprint: sha256 of the definition's source text (:func:`openrlhf_compat.fingerprint`), each taken from that
release's own wheel; ``tests/openrlhf/test_release_wheels.py`` checks every entry against the wheels from PyPI.
Adding a release: ``python -m openrlhf_compat.wheel WHEEL`` prints its entry (read from the wheel, never
installed); then ``scripts/openrlhf_releases.py`` runs it end to end on CPU (docs/COMPATIBILITY.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Tuple


@dataclass(frozen=True)
class Release:
    version: str
    sources: Mapping[str, str]  # "module:qualname" -> sha256 of its source text in this release
    choices: Mapping[str, Tuple[str, ...]]  # train_ppo_ray flag -> its choices in this release (before ours)
    loss_outputs: int  # values ActorPPOTrainer.training_step unpacks from the policy loss call


_EM = "openrlhf.trainer.ppo_utils.experience_maker"
_PA = "openrlhf.trainer.ray.ppo_actor"
_WW = "openrlhf.trainer.ray.vllm_worker_wrap"

# CPU backend (openrlhf_cpu): the same source text in 0.10.4, 0.11.0, 0.11.1 and 0.11.2
_CPU_BACKEND = {
    "openrlhf.trainer.ppo_utils.replay_buffer:NaiveReplayBuffer.__init__":
        "7cad124520cf78705ea8b8178256a68d5097036914ece2a44fb7a97060fe5f7b",
    "openrlhf.utils.distributed_util:stateless_init_process_group":
        "0f4de7e6719a99226fee197e96b7aef206eeafd5ebf617bce825fca70ad54ea7",
    f"{_PA}:ActorPPOTrainer.broadcast_to_vllm": "82f48dd34edc7fc2046de5e3d418b9af8b9ddb428cdfd7419ca528bb100783f5",
    f"{_PA}:ActorPPOTrainer._init_vllm_sync_group":
        "6ad3bfaadc9fe3f708d6b8264fd1cc7f2351e7fe13e7e3c6c5d97e0548b9feca",
    f"{_WW}:WorkerWrap.update_weight": "11ab5bd0006d9e7ed3ab5f5f155d232406cf3657804faead3e83e9f1b874a34f",
    f"{_WW}:WorkerWrap.init_process_group": "7de4bb7cd9164f760f78e8ad99d12e452290acd1ab0392b600c36347b4677f12",
    "openrlhf.trainer.ray.vllm_engine:RolloutRayActor.update_weight":
        "f45884e1ca34de05723292b7458939120111cfaa56f7f4594ab2c069a44f1cca",
    "openrlhf.utils.utils:get_strategy": "be0c2a9f22b91fa67118fcde01f4c416c76343f0888626bea4c0963196312b60",
    "openrlhf.utils.config:hierarchize": "b1125e611a024351c8fce92fbf3d992dc958d671792cfbae231ca660fb490629",
    "openrlhf.utils.deepspeed.deepspeed:DeepspeedStrategy.setup_distributed":
        "5d18f192f8ea5d558f68e2a5c0fb3b81b904dfb1ea6e837270aec4d90968a3a4",
}
# CPU backend, engine watchdog (openrlhf_cpu/engines.py): the rollout loop it diagnoses; 0.11.1 changed its body
_SG = "openrlhf.trainer.ppo_utils.samples_generator:SamplesGenerator._generate_vllm"
_CPU_BACKEND_0_10_4 = dict(_CPU_BACKEND, **{_SG: "f461f232e17a59f9ec4007195446b4a80e4aa0b2141794d1c16d19c171aac22f"})
_CPU_BACKEND_0_11_1 = dict(_CPU_BACKEND, **{_SG: "bb043ccdcfb7f02d56b67b4609698ae28f277feb51522448f39983edb523394d"})

# Rank-GRPO adapter (shim.py), only without the registry of patches/. 0.10.4 and 0.11.0 have the same three
# definitions; 0.11.1 changes training_step (the KL-as-loss call gains log_probs_old / unbiased_gradient);
# 0.11.2 casts rewards to fp32 and adds flash_reinforce in compute_advantages_and_returns, and builds PolicyLoss
# with the is_correction_level/mode/gating knobs, whose forward returns a 5th value (is_filter_ratio).
_ADAPTER_0_10_4 = {
    f"{_EM}:RemoteExperienceMaker.compute_advantages_and_returns":
        "b2bf8e6b7e3e20c1974e51b1ed1d595b2afb59b2f84a5a4331dc2accd9bafded",
    f"{_PA}:ActorPPOTrainer.__init__": "a62c4098759689712729fdd1a5ed630f17a7c2d590f1f6de8e03b0e339dce5d4",
    f"{_PA}:ActorPPOTrainer.training_step": "3411a779fd1ede3540f48b8c613720ef277e28e87ce8edaa3814772b3afc5114",
}
_ADAPTER_0_11_1 = dict(_ADAPTER_0_10_4, **{
    f"{_PA}:ActorPPOTrainer.training_step": "012bc6e20f5fa35c023357f2ad5ac7eab87b8487a5f6d1dce4adcf0e39a3155d",
})
_ADAPTER_0_11_2 = {
    f"{_EM}:RemoteExperienceMaker.compute_advantages_and_returns":
        "edee114b74af1e792960f911d528043b286ff660ba28df78073a7300d1385c25",
    f"{_PA}:ActorPPOTrainer.__init__": "7a01d56d774f90820f3dc589948ca58473394b8373151d8bf3aa9f7791b74bb9",
    f"{_PA}:ActorPPOTrainer.training_step": "2ade5cf8894c07cc27adce23d61f517d252e79f706a2d1472e152dded60130f1",
}

_ESTIMATORS = ("gae", "reinforce", "rloo", "reinforce_baseline", "group_norm", "dr_grpo")
_CHOICES_0_10_4 = {"--algo.advantage.estimator": _ESTIMATORS, "--actor.policy_loss_type": ("ppo", "gspo")}
_CHOICES_0_11_2 = dict(_CHOICES_0_10_4, **{"--algo.advantage.estimator": _ESTIMATORS + ("flash_reinforce",)})


def _release(version, adapter, cpu_backend, choices, loss_outputs) -> "Release":
    return Release(version=version, sources={**adapter, **cpu_backend}, choices=choices, loss_outputs=loss_outputs)


RELEASES: Dict[str, Release] = {  # oldest first; the last one is the release patches/0001-* is written against
    "0.10.4": _release("0.10.4", _ADAPTER_0_10_4, _CPU_BACKEND_0_10_4, _CHOICES_0_10_4, 4),
    "0.11.0": _release("0.11.0", _ADAPTER_0_10_4, _CPU_BACKEND_0_10_4, _CHOICES_0_10_4, 4),
    "0.11.1": _release("0.11.1", _ADAPTER_0_11_1, _CPU_BACKEND_0_11_1, _CHOICES_0_10_4, 4),
    "0.11.2": _release("0.11.2", _ADAPTER_0_11_2, _CPU_BACKEND_0_11_1, _CHOICES_0_11_2, 5),
}
SUPPORTED_OPENRLHF_VERSIONS: Tuple[str, ...] = tuple(RELEASES)
