"""rank_grpo_plugin.hooks: the one import hook, the one ray.init step chain, the one argparse step chain, the boolean
parser (stdlib only)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from rank_grpo_plugin.hooks import env_flag, parse_bool


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow  # a fresh Python process
def test_hook_registered_while_its_module_initialises_still_runs():
    code = (
        "from rank_grpo_plugin.hooks import when_imported\n"
        "seen = []\n"
        "def first(m):\n"
        "    seen.append('first')\n"
        "    when_imported('json.tool', lambda m: seen.append('second'))  # module still initialising\n"
        "when_imported('json.tool', first)\n"
        "import json.tool\n"
        "assert seen == ['first', 'second'], seen\n"
        "print('OK')\n"
    )
    assert "OK" in _run(code)


@pytest.mark.slow  # a fresh Python process
def test_ray_init_steps_run_in_order_once_each():
    code = (
        "import sys, types\n"
        "from rank_grpo_plugin.hooks import on_ray_init, when_imported\n"
        "calls = []\n"
        "ray = types.ModuleType('ray')\n"
        "ray.init = lambda *a, **kw: calls.append(('init', kw)) or 'ctx'\n"
        "sys.modules['ray'] = ray\n"
        "on_ray_init('a', before=lambda r, a, kw: (a, dict(kw, x=1)))\n"
        "on_ray_init('b', before=lambda r, a, kw: (a, dict(kw, y=kw['x'] + 1)), after=lambda r, res, a, kw: calls.append(('after', res)))\n"
        "on_ray_init('a', before=lambda r, a, kw: 1 / 0)  # same name: ignored\n"
        "assert ray.init(z=0) == 'ctx'\n"
        "assert calls == [('init', {'z': 0, 'x': 1, 'y': 2}), ('after', 'ctx')], calls\n"
        "assert ray.init.steps() == ['a', 'b']\n"
        "print('OK')\n"
    )
    assert "OK" in _run(code)


@pytest.mark.slow  # a fresh Python process (the wrapper stays on argparse for the process's life)
def test_parse_args_steps_see_every_parser_and_can_refuse():
    code = (
        "import argparse\n"
        "from rank_grpo_plugin.hooks import on_parse_args\n"
        "seen = []\n"
        "def add(p, argv):\n"
        "    if '--lr' in p._option_string_actions and '--extra' not in p._option_string_actions:\n"
        "        p.add_argument('--extra', type=int, default=0)\n"
        "def check(p, ns, argv):\n"
        "    seen.append((p.prog, argv, vars(ns)))\n"
        "    if getattr(ns, 'extra', 0) < 0:\n"
        "        p.error('--extra must be >= 0')\n"
        "on_parse_args('a', before=add, after=check)\n"
        "on_parse_args('a', after=lambda p, ns, argv: 1 / 0)  # same name: ignored\n"
        "p = argparse.ArgumentParser(prog='launcher')\n"
        "p.add_argument('--lr', type=float)\n"
        "assert vars(p.parse_args(['--lr', '1e-4', '--extra', '3'])) == {'lr': 1e-4, 'extra': 3}\n"
        "q = argparse.ArgumentParser(prog='other')\n"
        "assert q.parse_known_args(['--lr', '1']) == (argparse.Namespace(), ['--lr', '1'])\n"
        "assert [s[:2] for s in seen] == [('launcher', ['--lr', '1e-4', '--extra', '3']), ('other', ['--lr', '1'])]\n"
        "assert argparse.ArgumentParser.parse_known_args.steps() == ['a']\n"
        "try:\n"
        "    p.parse_args(['--extra', '-1'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 2\n"
        "print('OK')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
    assert "launcher: error: --extra must be >= 0" in out.stderr


def test_boolean_parser(monkeypatch):
    assert parse_bool(" Yes ") is True and parse_bool("0") is False
    with pytest.raises(ValueError, match="THING: expected one of"):
        parse_bool("maybe", "THING")
    monkeypatch.delenv("RGP_TEST_FLAG", raising=False)
    assert env_flag("RGP_TEST_FLAG") is None and env_flag("RGP_TEST_FLAG", False) is False
    monkeypatch.setenv("RGP_TEST_FLAG", "on")
    assert env_flag("RGP_TEST_FLAG") is True
    monkeypatch.setenv("RGP_TEST_FLAG", "2")
    with pytest.raises(ValueError, match="environment variable RGP_TEST_FLAG"):
        env_flag("RGP_TEST_FLAG")
