"""Fixtures shared by the integration tests: paths to the built programs and
helpers that write configuration files into a per-test temporary directory."""
import json
import pathlib
import subprocess

import pytest

TOP = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent


class Result:
    """What a finished command printed and returned."""

    def __init__(self, proc):
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def ternctl():
    """Runs ctl/ternctl with the given arguments; returns a Result."""
    binary = TOP / "ctl" / "ternctl"
    assert binary.exists(), f"{binary} is not built"

    def run(*args, timeout=30):
        proc = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        return Result(proc)

    return run


@pytest.fixture
def write_config(tmp_path):
    """Writes text to tmp_path/NAME and returns its path."""

    def write(text, name="tern.conf"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return write


def line_of(path, needle, start=1):
    """The 1-based number of the first line at or after start holding needle."""
    for number, line in enumerate(pathlib.Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if number >= start and needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


@pytest.fixture
def design_config(tmp_path):
    """The configuration of DESIGN.md, verbatim, in a temporary file."""
    path = tmp_path / "design.conf"
    path.write_text((HERE / "design.conf").read_text(encoding="utf-8"), encoding="utf-8")
    return path
