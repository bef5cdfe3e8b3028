"""Interpreter-startup entry point, run by ``rank_grpo_plugin.pth`` in site-packages (every Python process:
driver, Ray workers, vLLM engines, DeepSpeed launcher children).

Kept tiny on purpose: :func:`install` imports only the standard-library :mod:`rank_grpo_plugin.hooks` and
registers one import hook on ``openrlhf``. When OpenRLHF is imported, it switches on the CPU backend (the separate
``openrlhf_cpu`` package, only when CUDA is absent or ``RANK_GRPO_PLUGIN_CPU=1``) and the Rank-GRPO adapter
(:mod:`rank_grpo_plugin.openrlhf.register`). This module is the one place that wires the two; neither imports the
other. Every failure at start-up is swallowed with a one-line warning so that a broken plugin never stops an
unrelated Python program from starting. Opt out with ``RANK_GRPO_PLUGIN_DISABLE=1``.
"""
import sys


def _on_openrlhf(module) -> None:
    import importlib.util

    if importlib.util.find_spec("openrlhf_cpu") is not None:
        import openrlhf_cpu

        openrlhf_cpu.install()  # no-op when CUDA is available (or RANK_GRPO_PLUGIN_CPU=0)
    from .openrlhf.register import activate

    activate(module)


def install() -> None:
    """Called by the .pth file: wake up when ``openrlhf`` is imported (now, if it already is)."""
    try:
        from rank_grpo_plugin.hooks import disabled, when_imported

        if not disabled():
            when_imported("openrlhf", _on_openrlhf)
    except Exception as exc:  # never break interpreter startup
        sys.stderr.write(f"rank_grpo_plugin: startup hook not installed: {exc!r}\n")
