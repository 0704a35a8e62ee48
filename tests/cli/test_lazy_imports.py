"""Starting ``cutpoint`` imports only what the chosen command needs (cli/common.py says how): parsing the command
line and ``--help`` import no vault, driver, restore or service machinery, and ``points`` no QEMU monitor client.

What a process imported is read from its ``sys.modules`` as it exits (module names only; no time is measured or
compared).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

# Never needed to parse arguments or print help. Of cutpoint.api only ``auth`` is (serve's --role choices).
THIRD_PARTY = ("asyncio", "qemu", "cryptography", "boto3", "botocore", "fastapi", "starlette", "uvicorn",
               "pydantic", "yaml", "rich", "nbd", "libvirt", "zstandard", "blake3")
CUTPOINT = ("cutpoint.backup", "cutpoint.cut", "cutpoint.drivers", "cutpoint.reader", "cutpoint.service",
            "cutpoint.lab", "cutpoint.api.app", "cutpoint.api.console", "cutpoint.vault.vault",
            "cutpoint.vault.s3backend", "cutpoint.restore.orchestrator", "cutpoint.restore.drill",
            "cutpoint.policy.store", "cutpoint.jobs.record")


def imported(*args: str) -> tuple[int, set[str]]:
    """Exit code and every module a ``cutpoint ARGS`` process imported (``sys.modules`` as it exits: unlike
    ``-X importtime``, this also sees modules imported through ``importlib``, as main imports command groups)."""
    code = ("import atexit, runpy, sys\n"
            "atexit.register(lambda: sys.stderr.write(''.join(f'module: {m}\\n' for m in sorted(sys.modules))))\n"
            f"sys.argv = ['cutpoint', *{list(args)!r}]\n"
            "runpy.run_module('cutpoint.cli.main', run_name='__main__')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    names = {line.removeprefix("module: ") for line in p.stderr.splitlines() if line.startswith("module: ")}
    assert "cutpoint.cli.common" in names, p.stderr[-2000:]       # (main itself runs as __main__)
    return p.returncode, names


def heavy(names: set[str], allowed: tuple[str, ...] = ()) -> list[str]:
    def under(name: str, roots: tuple[str, ...]) -> bool:
        return any(name == r or name.startswith(r + ".") for r in roots)
    return sorted(n for n in names if under(n, THIRD_PARTY + CUTPOINT) and not under(n, allowed))


def test_parsing_every_command_imports_nothing_heavy() -> None:
    """The whole parser, built and used on each command, in one process."""
    code = ("import sys\n"
            "from cutpoint.cli.main import build_parser\n"
            "p = build_parser()\n"
            "for argv in (['backup', 'vm1', '--json'], ['points'], ['restore', 'vm1', 'latest', '--to', 'd'],\n"
            "             ['gc', '--dry-run'], ['prune', 'vm1', '--keep-last', '3'], ['serve', '--show-token'],\n"
            "             ['vault', 'init', '--no-encrypt'], ['policy', 'create', 'p', '--daily', '02:00'],\n"
            "             ['drill', 'vm1'], ['files', 'ls', 'vm1', 'latest'], ['jobs', '--kind', 'backup'],\n"
            "             ['copy', '--from', 'a', '--to', 'b'], ['lab', 'list'], ['vm', 'set', 'vm1', '--policy', 'x']):\n"
            "    assert p.parse_args(argv).func is not None\n"
            "print('\\n'.join(sorted(sys.modules)))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert heavy(set(p.stdout.split())) == []


@pytest.mark.parametrize("args", [["--help"], ["backup", "--help"], ["restore", "--help"], ["serve", "--help"],
                                  ["vault", "init", "--help"], ["nosuch"]],
                         ids=lambda a: "_".join(a).lstrip("-"))
def test_help_and_usage_errors_import_nothing_heavy(args: list[str]) -> None:
    code, names = imported(*args)
    assert code in (0, 2)
    assert heavy(names) == []


def test_points_needs_no_qemu_no_crypto_no_service() -> None:
    """``points`` opens the (unencrypted, local) vault and its catalog: no monitor client, no cryptography, no S3
    client, no service or API."""
    code, names = imported("points", "--json")
    assert code == 0
    assert "cutpoint.vault.vault" in names                  # the check sees what the command really ran on
    assert heavy(names, allowed=("cutpoint.vault.vault", "zstandard", "blake3")) == []


def test_every_command_is_in_main_s_table_and_parses_alone_as_in_the_whole_parser() -> None:
    """main builds only the given command's parser (cli/main.py COMMANDS): each command's help and usage from that
    parser are the whole parser's."""
    import argparse

    from cutpoint.cli.main import COMMANDS, build_parser, command_of

    def subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        action = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        return dict(action.choices)

    whole = subparsers(build_parser())
    assert sorted(whole) == sorted(COMMANDS)
    for name, full in whole.items():
        alone = subparsers(build_parser(name))[name]
        assert (alone.format_help(), alone.format_usage()) == (full.format_help(), full.format_usage()), name
    assert command_of(["-v", "backup", "x"]) == "backup"
    assert command_of(["-h", "backup"]) is None and command_of(["--", "backup"]) is None and command_of([]) is None


@pytest.mark.parametrize("args", [["points", "--help"], ["backup", "--help"]], ids=lambda a: a[0])
def test_a_command_imports_only_its_own_command_group(args: list[str]) -> None:
    """Every other group's module (the demo, the service, drills, jobs) stays unimported: 20 ms per command."""
    code, names = imported(*args)
    assert code == 0
    groups = {n for n in names if n.startswith("cutpoint.cli.") and n not in ("cutpoint.cli.common",
                                                                               "cutpoint.cli.progress")}
    assert groups == {f"cutpoint.cli.{args[0]}"}, groups
