"""`make demo`'s main job (bench/demo.py) runs end to end: the testbed,
isolaned, two tenants registered by two unix users through the CLI, the
load generator under fifo and cycles, the table, JSON and plot, and leaves
nothing behind. Its figures are the benchmark's business; this checks that
the job works and cleans up."""
from __future__ import annotations

import json
import os
import pathlib
import pwd
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_demo_runs_end_to_end_and_cleans_up(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("the demo needs root")
    users_before = {u: _user_exists(u) for u in ("isl-victim", "isl-aggr")}
    out_json, out_png = tmp_path / "demo.json", tmp_path / "demo.png"
    proc = subprocess.run([sys.executable, "bench/demo.py", "--duration", "1",
                           "--json", str(out_json), "--plot", str(out_png)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the tenants were registered by their own users, and saw only themselves
    assert "sudo -u isl-victim isolane prog load victim" in proc.stdout
    assert "sudo -u isl-aggr isolane prog load aggressor" in proc.stdout
    assert "loaded udp_echo into tenant victim" in proc.stdout
    assert "loaded hasher into tenant aggressor" in proc.stdout
    # the second daemon restored both programs from its state
    assert proc.stdout.count("udp_echo") >= 2 and "fifo / cycles" in proc.stdout
    doc = json.loads(out_json.read_text())
    for policy in ("fifo", "cycles"):
        res = doc["results"][policy]
        assert res["victim"]["sent"] > 0 and res["aggressor"]["sent"] > 0
        assert res["daemon"]["victim"]["rx"] > 0
    assert out_png.stat().st_size > 0
    # nothing left: no testbed namespaces, no users the demo made
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "isl-gen" not in netns and "isl-host" not in netns
    for user, existed in users_before.items():
        assert _user_exists(user) == existed
