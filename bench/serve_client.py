"""Client half of bench/serve.sh: B concurrent requests to a running `retort serve` (raw HTTP
through urllib, streaming or not), each with its own prompt of token ids, NEW tokens each
(ignore_eos, greedy). Prints "<seconds> <completion tokens> <requests>" measured from the first
request sent to the last response read."""
import json
import sys
import threading
import time
import urllib.request

url, prompts_path, new, stream = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
prompts = [json.loads(l)["prompt_ids"] for l in open(prompts_path) if l.strip()]
tokens, errors = [0] * len(prompts), []


def one(i):
    body = {"prompt": prompts[i], "max_tokens": new, "ignore_eos": True, "temperature": 0, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    req = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            if stream:
                usage = None
                for line in r:
                    line = line.strip()
                    if line.startswith(b"data: {"):
                        j = json.loads(line[6:])
                        usage = j.get("usage") or usage
                tokens[i] = usage["completion_tokens"]
            else:
                tokens[i] = json.loads(r.read())["usage"]["completion_tokens"]
    except Exception as e:  # noqa: BLE001
        errors.append(repr(e))


ts = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
t0 = time.perf_counter()
for t in ts:
    t.start()
for t in ts:
    t.join()
dt = time.perf_counter() - t0
if errors:
    sys.exit(f"serve_client: {len(errors)} errors, first: {errors[0]}")
print(f"{dt:.6f} {sum(tokens)} {len(prompts)}")
