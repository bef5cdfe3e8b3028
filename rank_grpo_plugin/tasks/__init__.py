"""Generators of learnable tasks (standard library only): :mod:`.synth`, a miniature conversational-recommendation
task built from a real catalog."""
from .synth import SynthConfig, SynthTask, build_task, write_task

__all__ = ["SynthConfig", "SynthTask", "build_task", "write_task"]
