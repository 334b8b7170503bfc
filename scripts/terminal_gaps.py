"""How long a run leaves its terminal silent: runs `python -m experiments <overrides>`, stamps every
line it prints (a progress bar's redraws count: they end in a carriage return) and prints the longest
silence, where it was, and the whole time.

    .venv/bin/python scripts/terminal_gaps.py task=resnet debug=smoke model.weights=null
    .venv/bin/python scripts/terminal_gaps.py --max-gap 15 task=resnet debug=smoke model.weights=null  # 1 if longer

tests/e2e/test_terminal.py (slow) runs it on a resnet smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def gaps(argv: list[str], env: dict | None = None) -> dict:
    """Run the CLI; {'longest_gap_s', 'after_line', 'before_line', 'lines', 'wall_s', 'returncode'}."""
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    start = last = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments", *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    worst, after, before, lines, previous, buf = 0.0, "(start)", "", 0, "(start)", b""
    assert proc.stdout is not None
    while chunk := proc.stdout.read1(4096):
        buf += chunk
        *complete, buf = buf.replace(b"\r", b"\n").split(b"\n")
        for raw in complete:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            now = time.monotonic()
            if now - last > worst:
                worst, after, before = now - last, previous, line
            last, previous, lines = now, line, lines + 1
    proc.wait()
    end = time.monotonic()
    if end - last > worst:
        worst, after, before = end - last, previous, "(end)"
    return {
        "longest_gap_s": round(worst, 1),
        "after_line": after[:200],
        "before_line": before[:200],
        "lines": lines,
        "wall_s": round(end - start, 1),
        "returncode": proc.returncode,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-gap", type=float, default=None, help="exit 1 if a silence is longer (seconds)")
    args, overrides = parser.parse_known_args()
    result = gaps(overrides)
    print(json.dumps(result, indent=2))
    if result["returncode"] != 0 or (args.max_gap is not None and result["longest_gap_s"] > args.max_gap):
        sys.exit(1)


if __name__ == "__main__":
    main()
