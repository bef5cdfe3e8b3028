"""The OpenRLHF adapter: the only part of rank_grpo_plugin that touches OpenRLHF's internals.

Nothing here is imported by ``import rank_grpo_plugin``. The startup hook (``rank_grpo_plugin.pth`` ->
:mod:`rank_grpo_plugin._startup`) calls :func:`.register.activate` when OpenRLHF is imported, in every process;
:mod:`.shim` provides the extension points of ``patches/`` on a stock release, checked against
:mod:`openrlhf_compat`. Modules: register, shim, flags, estimator, policy_loss, reward.
"""
