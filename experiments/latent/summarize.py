"""results.jsonl -> the markdown table of experiments/latent/README.md (means over trials)."""

import json
import sys
from collections import defaultdict
from pathlib import Path

path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("results.jsonl"))
groups = defaultdict(list)
for line in path.read_text().splitlines():
    r = json.loads(line)
    groups[(r["setting"], r["defense"] or "-", r["batch"], r["attack"])].append(r)
print("| setting | defense | batch | attack | trials | PSNR (dB) | identified | PSNR to nearest training image | "
      "closer to a training image than to the true one | iterations | seconds |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for (setting, defense, batch, attack), rows in groups.items():
    n = len(rows)

    def mean(key):
        return sum(r[key] for r in rows) / n

    print(f"| {setting} | {defense} | {batch} | {attack} | {n} | {mean('psnr'):.1f} | {mean('identified'):.2f} | "
          f"{mean('nearest_training_psnr'):.1f} | {mean('closer_to_training'):.2f} | {mean('iterations'):.0f} | "
          f"{mean('seconds'):.0f} |")
