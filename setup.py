"""rank_grpo_plugin: Rank-GRPO (arXiv 2510.20150) for OpenRLHF.

torch is deliberately NOT an install requirement: a bare ``torch`` requirement makes pip pull a multi-GB CUDA
build on machines without one installed. Install the torch build you want first (``torch==2.13.0`` for the
CPU wheel on our machines; see README and scripts/install.sh).
"""
from setuptools import find_packages, setup

setup(
    name="rank_grpo_plugin",
    version="0.1.0",
    description="Rank-GRPO for OpenRLHF: rank-level RL for LLM-based conversational recommenders",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["rank_grpo_plugin", "rank_grpo_plugin.*"]),
    install_requires=[],
    extras_require={
        "test": ["pytest>=7", "tokenizers>=0.15", "transformers>=4.40"],
    },
    entry_points={"console_scripts": ["rank-grpo=rank_grpo_plugin.cli:main"]},
)
