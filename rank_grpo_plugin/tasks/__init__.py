"""Generators of learnable tasks: :mod:`.synth`, a miniature conversational-recommendation task built from a real
catalog (standard library only), and :mod:`.redial`, real ReDial conversations split by dialogue with an item-kNN
teacher and classical baselines (torch for the baselines)."""
from .synth import SynthConfig, SynthTask, build_task, write_task

__all__ = ["SynthConfig", "SynthTask", "build_task", "write_task"]
