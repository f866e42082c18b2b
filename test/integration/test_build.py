"""The build's own targets: make install into a DESTDIR puts each program
where the layout says, with the right modes."""
import os
import stat
import subprocess

from conftest import TOP


def test_make_install_destdir(tmp_path):
    r = subprocess.run(["make", "-s", "install", f"DESTDIR={tmp_path}"], cwd=TOP, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    prefix = subprocess.run(["sed", "-n", "s/^prefix *= *//p", str(TOP / "rules.mk")], capture_output=True,
                            text=True).stdout.strip()
    installed = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    rel = prefix.lstrip("/")
    for path in (f"{rel}/sbin/ternctl", f"{rel}/libexec/tern/master"):
        assert path in installed, sorted(installed)
        mode = os.stat(tmp_path / path).st_mode
        assert stat.S_IMODE(mode) == 0o755
