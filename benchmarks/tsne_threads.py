"""The depth-features t-SNE with its OpenMP pool as sklearn sizes it (one thread per core) against one
thread (what analysis.embedding.project_2d now uses), on 2,000 points of 50 dims in 10 clusters (the
resnet task's default: 2,000 test images, PCA-50), on this machine as it is, and with `--busy N`
extra processes spinning on the CPUs (a machine shared with other jobs).

    .venv/bin/python benchmarks/tsne_threads.py [--busy 2] [--repeats 2]

Prints one JSON line: seconds for each setting (best of the repeats) and their ratio.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits


def spin(stop) -> None:
    while not stop.is_set():
        pass


def tsne_seconds(x: np.ndarray, threads: int | None) -> float:
    from sklearn.manifold import TSNE

    start = time.perf_counter()
    with threadpool_limits(limits=threads):
        TSNE(n_components=2, init="pca", perplexity=30.0, random_state=0).fit_transform(x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--busy", type=int, default=0, help="spinning processes started beside it")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--points", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (10, 50))
    x = centres[rng.integers(0, 10, args.points)] + rng.normal(0, 1, (args.points, 50))
    stop = mp.Event()
    spinners = [mp.Process(target=spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    try:
        pools = {p["internal_api"]: p["num_threads"] for p in threadpool_info()}
        default = min(tsne_seconds(x, None) for _ in range(args.repeats))
        one = min(tsne_seconds(x, 1) for _ in range(args.repeats))
    finally:
        stop.set()
        for p in spinners:
            p.join()
    print(
        json.dumps(
            {
                "points": args.points,
                "busy_processes": args.busy,
                "cpus": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 2),
                "default_pools": pools,
                "default_threads_s": round(default, 2),
                "one_thread_s": round(one, 2),
                "ratio_default_over_one": round(default / one, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
