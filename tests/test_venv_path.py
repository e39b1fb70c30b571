"""`.venv/bin/dvc repro` with the venv not active (the README's commands, as written): the stages
call `fca` from PATH, and `make install` makes every Python of the venv put the venv's bin/ first
on PATH for the commands it starts (the Makefile's PATH_HOOK)."""

import os
import subprocess
import sys
from pathlib import Path


def test_a_python_of_the_venv_finds_fca_with_the_venv_off_path():
    bin_dir = Path(sys.executable).parent  # make test runs the venv's python
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    code = "import shutil; print(shutil.which('fca'))"
    found = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert found == str(bin_dir / "fca")
    # and what it starts (dvc's stage commands run in a shell) inherits it, once
    shell = subprocess.run([sys.executable, "-c", "import subprocess; subprocess.run('command -v fca; echo $PATH', shell=True)"],
                           env=env, capture_output=True, text=True, check=True).stdout.split()
    assert shell[0] == str(bin_dir / "fca")
    assert shell[1].split(os.pathsep).count(str(bin_dir)) == 1
