"""Read a release's :class:`~openrlhf_compat.releases.Release` entry straight from an OpenRLHF wheel (a zip file),
without installing or importing it: the fingerprints of the definitions the table lists, the launcher's
``choices`` and the number of values the training step unpacks from the policy loss.

Used by ``tests/openrlhf/test_release_wheels.py`` (every listed release's wheel against the table) and, when a
release is added, ``python -m openrlhf_compat.wheel WHEEL`` prints the entry it reads (keys of the newest listed
release). Standard library only.
"""
from __future__ import annotations

import ast
import sys
import zipfile
from typing import Dict, Iterable, Optional, Tuple

from . import fingerprint_source
from .releases import RELEASES, SUPPORTED_OPENRLHF_VERSIONS, Release

LAUNCHER = "openrlhf.cli.train_ppo_ray"
TRAINING_STEP = "openrlhf.trainer.ray.ppo_actor:ActorPPOTrainer.training_step"


class WheelError(ValueError):
    """The wheel does not have what the table describes (a module, a flag, the policy-loss call)."""


def module_source(wheel: zipfile.ZipFile, module: str) -> str:
    """Source text of ``module`` (dotted) in the wheel: ``openrlhf/...py`` at the root or under ``*.data/purelib``
    (OpenRLHF's wheels put their files there)."""
    rel = module.replace(".", "/") + ".py"
    names = [n for n in wheel.namelist() if n == rel or n.endswith(".data/purelib/" + rel)
             or n.endswith(".data/platlib/" + rel)]
    if not names:
        raise WheelError(f"{rel} is not in {wheel.filename}")
    return wheel.read(names[0]).decode("utf-8")


def wheel_version(wheel: zipfile.ZipFile) -> str:
    meta = next((n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")), None)
    if meta is None:
        raise WheelError(f"{wheel.filename} has no .dist-info/METADATA")
    for line in wheel.read(meta).decode("utf-8").splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    raise WheelError(f"{wheel.filename}: no Version in {meta}")


def parser_choices(launcher_source: str, flags: Iterable[str]) -> Dict[str, Tuple[str, ...]]:
    """``flag -> choices`` of ``parser.add_argument(flag, ..., choices=[...])`` calls in the launcher's source (the
    choices must be a literal list, as they are in every listed release)."""
    found: Dict[str, Tuple[str, ...]] = {}
    wanted = set(flags)
    for node in ast.walk(ast.parse(launcher_source)):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument" and node.args
                and isinstance(node.args[0], ast.Constant) and node.args[0].value in wanted):
            choices = next((k.value for k in node.keywords if k.arg == "choices"), None)
            if choices is None:
                raise WheelError(f"{node.args[0].value} has no choices= in {LAUNCHER}")
            found[node.args[0].value] = tuple(ast.literal_eval(choices))
    missing = wanted - set(found)
    if missing:
        raise WheelError(f"{sorted(missing)} not declared in {LAUNCHER}")
    return found


def loss_outputs(actor_source: str) -> int:
    """Number of targets of ``... = self.actor_loss_fn(...)`` in ``ActorPPOTrainer.training_step``."""
    module_name, qualname = TRAINING_STEP.split(":")
    node: Optional[ast.AST] = ast.parse(actor_source)
    for part in qualname.split("."):
        node = next((c for c in getattr(node, "body", []) if isinstance(c, (ast.ClassDef, ast.FunctionDef))
                     and c.name == part), None)
        if node is None:
            raise WheelError(f"{TRAINING_STEP} not found")
    counts = {len(a.targets[0].elts) for a in ast.walk(node) if isinstance(a, ast.Assign)
              and isinstance(a.value, ast.Call) and isinstance(a.value.func, ast.Attribute)
              and a.value.func.attr == "actor_loss_fn" and isinstance(a.targets[0], ast.Tuple)}
    if len(counts) != 1:
        raise WheelError(f"{TRAINING_STEP}: expected one tuple assignment from self.actor_loss_fn(...), found "
                         f"{sorted(counts) or 'none'}")
    return counts.pop()


def read_release(path: str, keys: Optional[Iterable[str]] = None,
                 flags: Optional[Iterable[str]] = None) -> Release:
    """The :class:`Release` the wheel at ``path`` is: fingerprints of ``keys`` ("module:qualname", default the
    newest listed release's), choices of ``flags`` (default the newest's). A definition missing from the wheel
    gets the fingerprint ``None``."""
    newest = RELEASES[SUPPORTED_OPENRLHF_VERSIONS[-1]]
    keys = list(newest.sources if keys is None else keys)
    flags = list(newest.choices if flags is None else flags)
    with zipfile.ZipFile(path) as wheel:
        sources: Dict[str, Optional[str]] = {}
        cache: Dict[str, str] = {}
        for key in keys:
            module, qualname = key.split(":")
            if module not in cache:
                cache[module] = module_source(wheel, module)
            sources[key] = fingerprint_source(cache[module], qualname)
        choices = parser_choices(module_source(wheel, LAUNCHER), flags)
        outputs = loss_outputs(module_source(wheel, TRAINING_STEP.split(":")[0]))
        return Release(version=wheel_version(wheel), sources=sources, choices=choices, loss_outputs=outputs)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m openrlhf_compat.wheel WHEEL [WHEEL ...]  (e.g. from pip download openrlhf==X "
              "--no-deps)", file=sys.stderr)
        return 2
    for path in argv:
        rel = read_release(path)
        print(f"# {path}")
        print(f'"{rel.version}": Release(version="{rel.version}", loss_outputs={rel.loss_outputs},')
        print("    sources={")
        for key, digest in rel.sources.items():
            print(f'        "{key}": {digest!r},')
        print("    },")
        print(f"    choices={dict(rel.choices)!r},")
        print("),")
    return 0


if __name__ == "__main__":
    sys.exit(main())
