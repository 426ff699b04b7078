#!/usr/bin/env python3
"""Read a callgrind output file (written with --compress-strings=no) without callgrind_annotate.

  callers.py FILE top [N]              exclusive instructions per function, highest first
  callers.py FILE calls REGEX [MIN]    caller -> callee call counts for callees matching REGEX
                                       (e.g. '^(malloc|realloc|calloc)$': who allocates, how often)

Why not callgrind_annotate: on dumps taken mid-run with `callgrind_control -d` (how
benches/e2e/profile.sh excludes startup) it attributes everything to `clone`; and it does not
show "which caller makes how many calls to X" readably. This reads the raw format: `fn=`
starts a function, `calls=` lines are followed by the inclusive cost of that call (not self
cost), every other cost line is self cost.
"""
import sys
from collections import Counter


def parse(path):
    self_cost, calls = Counter(), Counter()
    fn = cfn = None
    after_calls = False
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                fn, after_calls = line[3:].strip(), False
            elif line.startswith("cfn="):
                cfn = line[4:].strip()
            elif line.startswith("calls="):
                calls[(fn, cfn)] += int(line[6:].split()[0])
                after_calls = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if len(parts) >= 2 and fn is not None:
                    if after_calls:
                        after_calls = False  # inclusive cost of the call just listed
                    else:
                        self_cost[fn] += int(parts[1])
    return self_cost, calls


def main():
    path, mode = sys.argv[1], sys.argv[2]
    self_cost, calls = parse(path)
    if mode == "top":
        n = int(sys.argv[3]) if len(sys.argv) > 3 else 25
        total = sum(self_cost.values())
        print(f"total {total}")
        for name, v in self_cost.most_common(n):
            print(f"{v:>12} {v / total * 100:5.1f}%  {name[:120]}")
    elif mode == "calls":
        import re

        pattern = re.compile(sys.argv[3])
        min_calls = int(sys.argv[4]) if len(sys.argv) > 4 else 1
        found = Counter({k: v for k, v in calls.items() if pattern.search(k[1])})
        for (caller, callee), v in found.most_common():
            if v < min_calls:
                break
            print(f"{v:>10}  {caller[:110]}  ->  {callee[:40]}")
    else:
        sys.exit(f"unknown mode {mode}")


main()
