"""math-verify's side of bench/verify.sh: pairs per second on one core.

usage: verify.py PAIRS.jsonl
Prints "pairs pairs_per_s": parse("$" + gold + "$"), parse(pred), verify() per pair, the
way tests/ref/gen_verify.py judges them (timeouts on, as in its default use)."""
import os
import sys

sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402

logging.disable(logging.CRITICAL)
from math_verify import parse, verify  # noqa: E402

pairs = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
t0 = time.perf_counter()
for p in pairs:
    verify(parse("$" + p["gold"] + "$"), parse(p["pred"]))
dt = time.perf_counter() - t0
print(f"{len(pairs)} {len(pairs) / dt:.1f}")
