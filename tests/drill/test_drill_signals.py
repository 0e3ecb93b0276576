"""A drill started with SIGINT ignored (how a CI runner's background job starts) still stops Locust with
SIGINT: `interruptible_children` gives the processes it starts SIGINT back (real processes, real signals)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# The parent ignores SIGINT (as inherited), optionally calls the drill's fix, then starts a child that
# reports what SIGINT does to it: "ignored" or "interrupted".
PARENT = textwrap.dedent(
    """
    import signal, subprocess, sys
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.argv[1] == "fix":
        from pipeline.controller.canary_drill import interruptible_children
        interruptible_children()
    child = (
        "import os, signal, time\\n"
        "try:\\n"
        "    os.kill(os.getpid(), signal.SIGINT)\\n"
        "    time.sleep(2)\\n"
        "    print('ignored')\\n"
        "except KeyboardInterrupt:\\n"
        "    print('interrupted')\\n"
    )
    print(subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True).stdout.strip())
    """
)


@pytest.mark.parametrize(("mode", "expected"), [("as-inherited", "ignored"), ("fix", "interrupted")])
def test_children_take_sigint_after_the_fix(mode: str, expected: str) -> None:
    out = subprocess.run([sys.executable, "-c", PARENT, mode], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == expected, out.stderr
