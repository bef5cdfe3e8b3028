"""The OpenRLHF adapter: the only part of rank_grpo_plugin that knows OpenRLHF (and Ray/vLLM/DeepSpeed).

Nothing here is imported by ``import rank_grpo_plugin``. Activation happens through a startup hook
(``rank_grpo_plugin.pth`` in site-packages -> :mod:`._startup`) that patches OpenRLHF lazily, in every Python
process, when OpenRLHF's modules are imported. See :mod:`.activate` for the patch list and version guard.

Importing this package is cheap: no torch, no OpenRLHF.
"""
