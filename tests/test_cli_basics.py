import subprocess
import sys


def _run(*args):
    return subprocess.run([sys.executable, "-m", "fuelcard.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_help_lists_commands():
    r = _run("--help")
    assert r.returncode == 0
    assert "schemas" in r.stdout


def test_unknown_command_is_one_line_error():
    r = _run("no-such-command")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert r.stderr.startswith("error:")
