"""Check a rebuild: every model's clean test metric within 1 point of the committed one.

    python models/compare_metrics.py OLD_metrics.json NEW_metrics.json

Compares ``test_accuracy`` (classifiers) and ``test_mean_dice`` (segmenters) of every model in
OLD; exits 1 and names the models that moved by more than 0.01 (one point) or went missing.
"""

from __future__ import annotations

import json
import sys

TOLERANCE = 0.01
KEYS = ("test_accuracy", "test_mean_dice")


def main(old_path: str, new_path: str) -> int:
    old, new = json.loads(open(old_path, encoding="utf-8").read()), json.loads(open(new_path, encoding="utf-8").read())
    bad = []
    for name, rec in sorted(old.items()):
        key = next(k for k in KEYS if k in rec)
        if name not in new or key not in new[name]:
            bad.append(f"{name}: missing after the rebuild")
            continue
        a, b = rec[key], new[name][key]
        flag = abs(a - b) > TOLERANCE
        print(
            f"{'FAIL' if flag else 'ok  '} {name:16s} {key:15s} committed {a:.4f} rebuilt {b:.4f} ({100 * (b - a):+.1f} pts)"
        )
        if flag:
            bad.append(f"{name}: {key} {a:.4f} -> {b:.4f}")
    if bad:
        print("rebuild does not reproduce the committed metrics within 1 point:\n  " + "\n  ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
