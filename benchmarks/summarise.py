"""One markdown table (and one JSON) from the benchmark JSON files in a folder.

python benchmarks/summarise.py OUT          # writes OUT/summary.json, prints the table
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(results: list[dict]) -> str:
    lines = [
        "| benchmark | device | framework | seed | bound | framework / seed | framework / bound |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    data_paths = [r for r in results if "plain" in r["contenders"]]  # data_path.py: each pipeline against plain
    for r in results:
        if r in data_paths:
            continue
        c, ratios, unit = r["contenders"], r["ratios"], r["unit"]

        def cell(name, c=c, unit=unit):
            if name not in c:
                return "—"
            x = c[name]
            return f"{x['per_s']:,.0f} {unit} ({x['min']:,.0f}..{x['max']:,.0f})"

        for fw in [n for n in c if n == "framework" or n.startswith("framework_")]:  # e.g. framework_cpu_decode
            fw_seed, fw_bound = ratios.get(f"{fw}/seed"), ratios.get(f"{fw}/bound")
            name = r["benchmark"] + ("" if fw == "framework" else f" [{fw}]")
            lines.append(
                f"| {name} | {r['device']} | {cell(fw)} | {cell('seed')} | {cell('bound')} | "
                f"{'—' if fw_seed is None else f'{fw_seed:.2f}x'} | {'—' if fw_bound is None else f'{fw_bound:.3f}'} |"
            )
    if data_paths:
        lines += [
            "",
            "| benchmark | device | pipeline | images/s | per worker | / plain |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in data_paths:
            base = r["contenders"]["plain"]["per_s"]
            for name, x in r["contenders"].items():
                rate = f"{x['per_s']:,.0f} ({x['min']:,.0f}..{x['max']:,.0f})"
                per_worker = x.get("per_worker", x["per_s"])
                lines.append(
                    f"| {r['benchmark']} | {r['device']} | {name} | {rate} | {per_worker:,.0f} "
                    f"| {x['per_s'] / base:.2f}x |"
                )
    return "\n".join(lines)


def main() -> None:
    folder = Path(sys.argv[1])
    results = [
        json.loads(p.read_text())
        for p in sorted(folder.glob("*.json"))
        if p.name != "summary.json" and p.stat().st_size
    ]
    (folder / "summary.json").write_text(json.dumps(results, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
