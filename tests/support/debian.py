"""Debian packages a test needs (a browser, docker-compose): installed when missing and this user
may (root, apt-get), else the test is skipped with the reason printed."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def ensure_debian_packages(commands: list[str], packages: list[str]) -> None:
    """Every command in ``commands`` on PATH (or at its absolute path), installing ``packages``."""
    if all(shutil.which(command) for command in commands):
        return
    reason = f"{', '.join(packages)} not installed"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"SKIP: {reason}, and this user cannot apt-get install them")
        pytest.skip(f"{reason} (not root, or no apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"SKIP: {reason}, and apt-get could not install them:\n{done.stderr[-2000:]}")
            pytest.skip(f"{reason}; apt-get install failed")
