"""``rank-grpo prepare``: conversational-recommendation rows -> OpenRLHF RL prompt / SFT datasets."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List

from .common import CliError, progress

HELP = """\
Convert rows (JSONL, JSON list or a datasets save_to_disk directory; fields prompt, completion, seen_titles,
groundtruth_with_release_year by default) into datasets OpenRLHF reads:

  --rl  FILE.jsonl : {input: <chat messages>, label: '{"groundtruth": [[title, year], ...], "seen": [...]}'}
                     train with: openrlhf.cli.train_ppo_ray --data.prompt_dataset FILE.jsonl
                       --data.input_key input --data.label_key label --data.apply_chat_template
  --sft FILE.jsonl : {input: <chat messages>, output: [{role: assistant, content: <20-line list>}]}
                     train with: openrlhf.cli.train_sft --data.dataset FILE.jsonl
                       --data.input_key input --data.output_key output --data.apply_chat_template

With --apply-chat-template --tokenizer DIR the prompt is rendered with the tokenizer's chat template instead
(input = templated string, SFT output = the templated assistant turn); then drop --data.apply_chat_template.
Every row is validated first; on any bad row nothing is written.
"""


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("prepare", help="rows -> OpenRLHF RL prompt / SFT datasets", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="input rows: .jsonl, .json, or a save_to_disk directory")
    p.add_argument("--split", help="split to read when the save_to_disk directory holds several")
    p.add_argument("--rl", metavar="OUT", help="write the RL prompt dataset here (.jsonl or .json)")
    p.add_argument("--sft", metavar="OUT", help="write the SFT dataset here (.jsonl or .json)")
    p.add_argument("--limit", type=int, help="use only the first N rows")
    g = p.add_argument_group("input fields")
    g.add_argument("--prompt-field", default="prompt")
    g.add_argument("--completion-field", default="completion", help="SFT target (string or assistant message)")
    g.add_argument("--seen-field", default="seen_titles", help="'' when the rows have none")
    g.add_argument("--groundtruth-field", default="groundtruth_with_release_year")
    g.add_argument("--keep", nargs="*", default=[], metavar="FIELD",
                   help="extra input fields copied unchanged into the outputs (e.g. dialog_id)")
    o = p.add_argument_group("output fields (OpenRLHF --data.input_key / label_key / output_key)")
    o.add_argument("--input-key", default="input")
    o.add_argument("--label-key", default="label")
    o.add_argument("--output-key", default="output")
    t = p.add_argument_group("chat template")
    t.add_argument("--apply-chat-template", action="store_true",
                   help="render prompts with --tokenizer's chat template (default: keep chat messages for "
                        "OpenRLHF's --data.apply_chat_template)")
    t.add_argument("--tokenizer", help="tokenizer directory (with --apply-chat-template)")
    p.set_defaults(func=run)


def _load_tokenizer(path: str):
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise CliError("--apply-chat-template needs the 'transformers' package") from None
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise CliError(f"cannot load tokenizer from {path}: {e}") from None
    if not getattr(tok, "chat_template", None):
        raise CliError(f"tokenizer {path} has no chat template")
    return tok


def build_outputs(rows, input_key="input", label_key="label", output_key="output", tokenizer=None,
                  want_rl=True, want_sft=True):
    """(rl_rows, sft_rows) from validated rows; templated strings when ``tokenizer`` is given."""
    from ..data import label_json

    rl: List[Dict[str, Any]] = []
    sft: List[Dict[str, Any]] = []
    for row in progress(rows, "prepare", unit="row"):
        if tokenizer is not None:
            prompt: Any = tokenizer.apply_chat_template(row.prompt, tokenize=False, add_generation_prompt=True)
        else:
            prompt = row.prompt
        if want_rl:
            rl.append({input_key: prompt, label_key: label_json(row.groundtruth, row.seen), **row.extra})
        if want_sft:
            answer = [{"role": "assistant", "content": row.completion}]
            if tokenizer is not None:
                full = tokenizer.apply_chat_template(row.prompt + answer, tokenize=False)
                if not full.startswith(prompt):
                    raise CliError("the tokenizer's chat template does not render the prompt as a prefix of the "
                                   "conversation; use OpenRLHF's --data.apply_chat_template instead")
                output: Any = full[len(prompt):]
            else:
                output = answer  # OpenRLHF's SFTDataset concatenates prompt messages + these messages
            sft.append({input_key: prompt, output_key: output, **row.extra})
    return rl, sft


def run(args: argparse.Namespace) -> int:
    from ..data import Fields, dump_rows, load_rows
    from ..files import write_atomic

    if not args.rl and not args.sft:
        raise CliError("nothing to write: give --rl OUT and/or --sft OUT")
    for out in (args.rl, args.sft):
        if out and os.path.splitext(out)[1].lower() not in (".jsonl", ".json"):
            raise CliError(f"{out}: output must end in .jsonl or .json (OpenRLHF loads both)")
    if args.apply_chat_template and not args.tokenizer:
        raise CliError("--apply-chat-template needs --tokenizer DIR")
    keys = {args.input_key, args.label_key, args.output_key}
    if len(keys) != 3:
        raise CliError("--input-key, --label-key and --output-key must differ")
    clash = keys & set(args.keep)
    if clash:
        raise CliError(f"--keep fields {sorted(clash)} collide with the output keys")
    fields = Fields(args.prompt_field, args.completion_field, args.seen_field, args.groundtruth_field)
    rows = load_rows(args.data, fields, need_completion=bool(args.sft), split=args.split, limit=args.limit,
                     keep=args.keep)
    tok = _load_tokenizer(args.tokenizer) if args.apply_chat_template else None
    rl, sft = build_outputs(rows, args.input_key, args.label_key, args.output_key, tok,
                            want_rl=bool(args.rl), want_sft=bool(args.sft))
    texts = []
    if args.rl:
        texts.append((args.rl, dump_rows(args.rl, rl)))
    if args.sft:
        texts.append((args.sft, dump_rows(args.sft, sft)))
    for path, text in texts:  # everything serialised before the first write
        write_atomic(path, text)
    conversations = len({r.prompt_key() for r in rows})
    mode = "templated strings" if tok is not None else "chat messages (use --data.apply_chat_template)"
    print(f"prepared {len(rows)} rows ({conversations} conversations) from {args.data}; prompts as {mode}",
          file=sys.stderr)
    for path, _ in texts:
        print(f"  wrote {path}", file=sys.stderr)
    return 0
