"""math-verify's side of bench/verify.sh: the same work as `retort verify --last-number`.

usage: verify.py [--no-timeouts] < PAIRS.jsonl > VERDICTS.jsonl
Reads {"gold", "pred"} lines, judges each with parse("$" + gold + "$"), parse(pred),
verify() (math-verify's defaults, timeouts on, as tests/ref/gen_verify.py judges them) and
writes one {"correct": bool} line per pair. --no-timeouts turns off its signal-alarm timeouts
(parsing_timeout and timeout_seconds None: its fastest configuration, safe only on trusted
input). bench/verify.sh times the whole process, as it times retort's."""
import os
import sys

sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import json  # noqa: E402
import logging  # noqa: E402

logging.disable(logging.CRITICAL)
from math_verify import parse, verify  # noqa: E402

kw_parse, kw_verify = ({"parsing_timeout": None}, {"timeout_seconds": None}) if "--no-timeouts" in sys.argv[1:] else ({}, {})
out = sys.stdout
for line in sys.stdin:
    if not line.strip():
        continue
    p = json.loads(line)
    ok = bool(verify(parse("$" + str(p["gold"]) + "$", **kw_parse), parse(str(p["pred"]), **kw_parse), **kw_verify))
    out.write('{"correct": true}\n' if ok else '{"correct": false}\n')
