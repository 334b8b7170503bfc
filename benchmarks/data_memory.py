"""Peak memory of a command and every process it starts (DataLoader workers included), sampled
from /proc every --interval seconds: the largest sum of PSS over the process tree (shared pages
counted once, split between the processes that share them), and the largest RSS of one process.

    python benchmarks/data_memory.py --out mem.json -- python -m experiments task=resnet data=folder data.root=DIR
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_of(pid: int) -> list[int]:
    tree, todo, found = children(), [pid], []
    while todo:
        p = todo.pop()
        found.append(p)
        todo += tree.get(p, [])
    return found


def memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in kB; (0, 0) once it is gone."""
    pss = rss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = p.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    start = time.time()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_pss = peak_rss = peak_procs = 0
    while proc.poll() is None:
        pids = tree_of(proc.pid)
        sizes = [memory_kb(pid) for pid in pids]
        peak_pss = max(peak_pss, sum(s[0] for s in sizes))
        peak_rss = max(peak_rss, max((s[1] for s in sizes), default=0))
        peak_procs = max(peak_procs, len(pids))
        time.sleep(args.interval)
    stderr = proc.stderr.read()
    result = {
        "command": command,
        "exit_code": proc.returncode,
        "wall_s": round(time.time() - start, 1),
        "peak_tree_pss_mb": round(peak_pss / 1024, 1),
        "peak_process_rss_mb": round(peak_rss / 1024, 1),
        "peak_processes": peak_procs,
    }
    print(json.dumps(result, indent=2))
    if proc.returncode:
        print(stderr[-3000:], file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
