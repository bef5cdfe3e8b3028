"""``rank-grpo recipe sft|rl|env``: print the OpenRLHF launcher command of the launch recipe
(rank_grpo_plugin.recipes), or the environment it runs under."""
from __future__ import annotations

import argparse
import shlex
import sys

from .common import CliError

DESCRIPTION = """\
Print the OpenRLHF launcher command line the project's own runs use (the main job, the learning benchmark), from
a few named settings, to run or to copy into a script. `sft` is the SFT warm start (deepspeed --module
openrlhf.cli.train_sft); `rl` one RL run (python -m openrlhf.cli.train_ppo_ray) with --algorithm rank_grpo (the
plugin: --advantage-level rank|sequence, --shaping true|false), grpo or gspo (stock OpenRLHF, each with its
authors' clip); `env` the environment a launch needs on a CPU machine (export lines; values already set in this
shell are kept). Flags after "--" are appended to the launcher command. --env also prints the environment before
the command. --null prints the arguments NUL-separated (for `mapfile -d ''`).

  rank-grpo recipe rl --model sft/ --prompts data/rl.jsonl --catalog catalog.jsonl --out runs/rl --steps 30
  eval "$(rank-grpo recipe env)"
"""


def add_parser(sub: "argparse._SubParsersAction") -> None:
    from ..recipes import RLRecipe, SFTRecipe, add_arguments

    p = sub.add_parser("recipe", help="print the SFT / RL launcher command of the launch recipe",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, cls, text in (("sft", SFTRecipe, "SFT warm start"), ("rl", RLRecipe, "one RL run")):
        k = kinds.add_parser(kind, help=text)
        add_arguments(k, cls)
        if cls is RLRecipe:
            k.add_argument("--rows", type=int, help="rows of the prompt dataset (default: counted in --prompts; "
                           "give it when the file is written later)")
        k.add_argument("--env", action="store_true", help="print the launch environment first (export lines)")
        k.add_argument("--null", action="store_true", help="NUL-separated arguments, nothing else")
        k.add_argument("launcher_flags", nargs=argparse.REMAINDER, metavar="-- FLAG ...",
                       help="extra launcher flags, appended last")
        k.set_defaults(func=run, recipe_class=cls)
    kinds.add_parser("env", help="the launch environment (export lines)").set_defaults(func=run, recipe_class=None)


def _exports() -> str:
    from ..recipes import launch_environment

    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in launch_environment().items())


def run(args: argparse.Namespace) -> int:
    from ..recipes import RLRecipe, from_namespace, rl_command, sft_command

    if args.recipe_class is None:
        sys.stdout.write(_exports())
        return 0
    extra = list(args.launcher_flags)
    extra = extra[1:] if extra[:1] == ["--"] else extra
    if extra and args.recipe_class is not RLRecipe:
        raise CliError(f"extra launcher flags are for `rl` only, got {extra}")
    try:
        recipe = from_namespace(args.recipe_class, args, extra)
        if isinstance(recipe, RLRecipe) and recipe.advantage_level != RLRecipe.advantage_level:
            from ..options import flag_choices  # the core's registry (imports torch: only for a non-default level)

            levels = flag_choices()["advantage_level"]
            if recipe.advantage_level not in levels:
                raise ValueError(f"--advantage-level {recipe.advantage_level!r}: valid: {', '.join(levels)}")
        cmd = rl_command(recipe, rows=args.rows) if isinstance(recipe, RLRecipe) else sft_command(recipe)
    except (ValueError, OSError) as e:
        raise CliError(f"recipe {args.kind}: {e}") from None
    if args.null:
        sys.stdout.write("\0".join(cmd) + "\0")
        return 0
    if args.env:
        sys.stdout.write(_exports())
    print(shlex.join(cmd))
    return 0
