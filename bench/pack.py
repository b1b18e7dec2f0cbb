"""The peer of bench/pack.sh: chat JSONL → packed shards in Python, with HF `tokenizers`
(Rust, all threads) and numpy — render the Qwen (ChatML) template as a string, encode_batch
with offsets, loss mask = tokens overlapping the assistant's part, best-fit decreasing with
bisect over open sequences' room, write tokens and masks with numpy.

usage: pack.py TOKENIZER.json CHAT.jsonl SEQ OUT_DIR   →  prints "wall_seconds cpu_seconds tokens"
"""
import os
import sys

# bench/ holds scripts named like standard modules (tokenize.py): keep it off the import path
sys.path = [p for p in sys.path if p not in ("", os.path.dirname(os.path.abspath(__file__)))]

import bisect
import json
import os
import resource
import sys
import time

import numpy as np
from tokenizers import Tokenizer

tok_path, src, seq, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
t0 = time.perf_counter()
tok = Tokenizer.from_file(tok_path)
texts, spans = [], []
for line in open(src, encoding="utf-8"):
    msgs = json.loads(line)["messages"]
    head = ""
    if msgs[0]["role"] != "system":
        head = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    for m in msgs[:-1]:
        head += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    head += "<|im_start|>assistant\n"
    a = msgs[-1]
    r = a.get("reasoning_content")
    body = (f"<think>\n{r}\n</think>\n\n" if r else "") + a["content"] + "<|im_end|>"
    texts.append(head + body + "\n")
    spans.append((len(head), len(head) + len(body)))
encs = tok.encode_batch(texts, add_special_tokens=False)
docs = []
for e, (a, b) in zip(encs, spans):
    off = np.array(e.offsets, dtype=np.int64).reshape(-1, 2)
    docs.append((np.array(e.ids, dtype=np.uint32), ((off[:, 0] < b) & (off[:, 1] > a)).astype(np.uint8)))
# best-fit decreasing: rooms is a sorted list of (room, seq)
order = sorted(range(len(docs)), key=lambda i: -len(docs[i][0]))
rooms, seqs = [], []
for i in order:
    n = len(docs[i][0])
    for k in range(0, n, seq):
        piece = (i, k, min(seq, n - k))
        j = bisect.bisect_left(rooms, (piece[2], -1))
        if j < len(rooms):
            room, s = rooms.pop(j)
        else:
            room, s = seq, len(seqs)
            seqs.append([])
        seqs[s].append(piece)
        if room - piece[2]:
            bisect.insort(rooms, (room - piece[2], s))
tokens = np.zeros((len(seqs), seq), dtype=np.uint32)
mask = np.zeros((len(seqs), seq), dtype=np.uint8)
total = 0
for s, pieces in enumerate(seqs):
    at = 0
    for i, k, n in pieces:
        tokens[s, at:at + n] = docs[i][0][k:k + n]
        mask[s, at:at + n] = docs[i][1][k:k + n]
        at += n
        total += n
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "shard.bin"), "wb") as f:
    f.write(tokens.tobytes())
    f.write(mask.tobytes())
ru = resource.getrusage(resource.RUSAGE_SELF)
print(f"{time.perf_counter() - t0:.4f} {ru.ru_utime + ru.ru_stime:.4f} {total}")
