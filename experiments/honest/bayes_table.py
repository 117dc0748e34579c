"""Tables of experiments/honest/bayes_part4.jsonl: mean PSNR per (defense, attack), the
mean-colour floor, and Bayes minus each baseline paired by photo with its standard error.

    python experiments/honest/bayes_table.py experiments/honest/bayes_part4.jsonl
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict

ATTACKS = ("bayes", "bayes-l2warm", "bayes-exact", "l2", "l1", "cosine")


def paired(a: dict[int, float], b: dict[int, float]) -> str:
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return "-"
    diffs = [a[i] - b[i] for i in common]
    se = statistics.stdev(diffs) / len(diffs) ** 0.5
    return f"{statistics.mean(diffs):+.2f} ± {se:.2f} (n={len(diffs)})"


def main(path: str) -> None:
    psnr: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    floor: dict[str, dict[int, float]] = defaultdict(dict)
    with open(path) as fh:
        rows = [json.loads(line) for line in fh]
    for row in rows:
        psnr[row["defense"]][row["attack"]][row["image"]] = row["psnr"]
        floor[row["defense"]][row["image"]] = row["floor_psnr"]
    print("| defense | " + " | ".join(f"{a} dB (n)" for a in ATTACKS)
          + " | floor dB | l2 - floor | bayes - l2 | bayes-l2warm - l2 | bayes-exact - l2 | bayes - l1 | bayes - cosine |")
    print("|" + " --- |" * (len(ATTACKS) + 8))
    for defense, by_attack in psnr.items():
        cells = []
        for a in ATTACKS:
            v = by_attack.get(a, {})
            cells.append(f"{statistics.mean(v.values()):.2f} ({len(v)})" if v else "-")
        l2 = by_attack.get("l2", {})
        fl = {i: floor[defense][i] for i in l2}
        margin = paired(l2, fl)
        floor_mean = f"{statistics.mean(fl.values()):.2f}" if fl else "-"
        diffs = [paired(by_attack.get(x, {}), by_attack.get(y, {}))
                 for x, y in (("bayes", "l2"), ("bayes-l2warm", "l2"), ("bayes-exact", "l2"), ("bayes", "l1"), ("bayes", "cosine"))]
        print(f"| {defense} | " + " | ".join(cells) + f" | {floor_mean} | {margin} | " + " | ".join(diffs) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
