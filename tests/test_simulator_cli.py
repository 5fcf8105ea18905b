"""``fuelcard simulate`` on the command line: writes the files, one-line errors, never partial output."""

import sys

import pandas as pd
import pytest

from fuelcard import cli

SMALL = ["--days", "3", "--stations", "10", "--members", "200", "--quiet"]


class _Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def _run(monkeypatch, capsys):
    """Run ``fuelcard simulate ...`` in-process through the console-script entry point."""

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["fuelcard", "simulate", *args])
        capsys.readouterr()
        code = 0
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return _Result(code, out, err)

    return run


def _leftovers(parent):
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_simulate_writes_every_file(tmp_path, _run):
    out = tmp_path / "net"
    r = _run("--out", str(out), "--seed", "3", *SMALL)
    assert r.returncode == 0, r.stderr
    assert "transactions" in r.stdout
    tx = pd.read_parquet(out / "transactions.parquet")
    assert len(tx) > 100
    assert (out / "ground_truth" / "truth.json").exists()
    # re-running over a previous simulation replaces it atomically
    r = _run("--out", str(out), "--seed", "4", *SMALL)
    assert r.returncode == 0, r.stderr
    assert not pd.read_parquet(out / "transactions.parquet")["amount_fen"].equals(tx["amount_fen"])
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(("args", "needle"), [
    (["--days", "-5"], "--days"),
    (["--start", "2026-13-45"], "--start"),
    (["--stations", "0"], "--stations"),
    (["--members", "abc"], "members"),
])
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, _run, args, needle):
    out = tmp_path / "net"
    r = _run("--out", str(out), *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_unwritable_or_foreign_output_is_refused(tmp_path, _run):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = _run("--out", str(blocker / "net"), *SMALL)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error:"), r.stderr
    r = _run("--out", str(blocker), *SMALL)
    assert r.returncode == 2 and "not a directory" in r.stderr
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    r = _run("--out", str(foreign), *SMALL)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert (foreign / "keep.txt").read_text() == "mine"
    assert _leftovers(tmp_path) == []
