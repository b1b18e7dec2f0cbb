"""math-verify's side of bench/verify.sh: the same work as `retort verify --last-number`.

usage: verify.py < PAIRS.jsonl > VERDICTS.jsonl
Reads {"gold", "pred"} lines, judges each with parse("$" + gold + "$"), parse(pred),
verify() (math-verify's defaults, timeouts on, as tests/ref/gen_verify.py judges them) and
writes one {"correct": bool} line per pair. bench/verify.sh times the whole process, as it
times retort's."""
import os
import sys

sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import json  # noqa: E402
import logging  # noqa: E402

logging.disable(logging.CRITICAL)
from math_verify import parse, verify  # noqa: E402

out = sys.stdout
for line in sys.stdin:
    if not line.strip():
        continue
    p = json.loads(line)
    ok = bool(verify(parse("$" + str(p["gold"]) + "$"), parse(str(p["pred"]))))
    out.write('{"correct": true}\n' if ok else '{"correct": false}\n')
