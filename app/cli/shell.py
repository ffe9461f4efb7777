"""``shell``: a shell whose environment is the service's."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import TYPE_CHECKING

from app.cli.bootstrap import attach, load_settings

if TYPE_CHECKING:
    from app.cli.bootstrap import Subcommands

SERVICE_URLS = ("DATABASE_URL", "REDIS_URL", "CACHE_REDIS_URL")


def add_shell_command(commands: Subcommands) -> None:
    shell = commands.add_parser("shell", help="a shell with the venv and the service's environment")
    shell.add_argument("--command", "-c", dest="command_line", help="run this instead of a shell")
    shell.set_defaults(handler=cmd_shell)


def cmd_shell(args: argparse.Namespace) -> int:
    """An interactive shell (or ``--command``) whose environment is the service's: the venv on
    PATH and DATABASE_URL / REDIS_URL / CACHE_REDIS_URL pointing at the servers in use (the
    embedded ones are started, or shared with a running ``make run``, and stopped on exit)."""
    with attach(load_settings(), export_env=True):
        venv_bin = os.path.dirname(sys.executable)
        env = {
            **os.environ,
            "VIRTUAL_ENV": os.path.dirname(venv_bin),
            "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        }
        for name in SERVICE_URLS:
            if name in env:
                print(f"{name}={env[name]}", file=sys.stderr)
        if args.command_line:
            return subprocess.call(["/bin/bash", "-c", args.command_line], env=env)
        return subprocess.call([os.environ.get("SHELL") or "/bin/bash", "-i"], env=env)
