"""The peers of bench/minhash.sh, on one core: datasketch with retort's shingles and bands, then
datatrove's MinHash signature step as an extra row.

usage: minhash.py TEXTS.jsonl REPS
Prints one line "label MB_per_s docs_per_s" (medians) per peer, datasketch first.

datasketch (the main peer: the same work as retort, nothing more): the text normalized as
retort and datatrove do (simplify below), whitespace words, 5-grams joined with " " (a text of
fewer words is one shingle, as in filters/minhash.h), each shingle hashed with xxhash64, then
datasketch's fastest batch API, MinHash.bulk over all texts, with 112 = 14 bands × 8 rows
permutations of its 64-bit affine scheme (mod 2^61 − 1, retort's arithmetic), and the
signature split into the 14 bands.

datatrove (extra row): when PyPI datatrove is importable, its own MinhashDedupSignature (default MinhashConfig:
5-grams, 14 buckets × 8 hashes, xxhash64) computes get_shingles + get_signature per text.
Otherwise — datatrove is not in the test environment, see tests/requirements.txt — this is
a faithful reimplementation of that same step, labelled "datatrove-numpy": datatrove's
simplify_text (lowercase, digit runs → 0, its punctuation table → spaces, whitespace
collapsed, NFD without combining marks), whitespace words, 5-grams joined with " ",
xxhash64 of each (the xxhash module, or libxxhash through ctypes when that module is
absent), then numpy: (shingles * a + b) % (2^61 - 1), min over shingles, split into 14
bands — the same array code datatrove runs.
"""
import os
import sys

# bench/ holds tokenize.py, which would shadow the standard library's tokenize module
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import ctypes  # noqa: E402
import ctypes.util  # noqa: E402
import json
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import unicodedata  # noqa: E402

import numpy as np  # noqa: E402

path, reps = sys.argv[1], int(sys.argv[2])
texts = [json.loads(l)["text"] for l in open(path, encoding="utf-8")]
nbytes = sum(len(t.encode("utf-8")) for t in texts)


def make_simplify():
    """datatrove's simplify_text, as retort's filters/minhash.h normalizes."""
    try:
        import regex
        numbers = regex.compile(r"\p{Nd}+([.,،٫⎖⎗⎘]{1}\p{Nd}+)?")
    except ImportError:
        numbers = re.compile(r"\d+([.,]\d+)?")
    punct = "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»" + "".join(
        map(chr, (x for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b))))
    trans = str.maketrans(punct, " " * len(punct))
    ws = re.compile(r"\s+")

    def simplify(t):
        t = numbers.sub("0", t.lower()).translate(trans)
        t = ws.sub(" ", t.strip())
        return "".join(c for c in unicodedata.normalize("NFD", t) if unicodedata.category(c) != "Mn").strip()

    return simplify


simplify = make_simplify()


def peer_datatrove():
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    sig = MinhashDedupSignature(output_folder="/tmp/retort-bench-dt", config=MinhashConfig())
    return "datatrove", lambda t: sig.get_signature(sig.get_shingles(t))


def peer_numpy():
    try:
        import xxhash
        h64 = xxhash.xxh64_intdigest
        label = "datatrove-numpy"
    except ImportError:
        lib = ctypes.CDLL(ctypes.util.find_library("xxhash") or "libxxhash.so.0")
        lib.XXH64.restype = ctypes.c_uint64
        lib.XXH64.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]

        def h64(s):
            b = s.encode("utf-8")
            return lib.XXH64(b, len(b), 0)
        label = "datatrove-numpy (xxhash via ctypes)"
    p = np.uint64((1 << 61) - 1)
    gen = np.random.RandomState(1)
    a = gen.randint(1, p, dtype=np.uint64, size=(1, 112))
    b = gen.randint(0, p, dtype=np.uint64, size=(1, 112))

    def signature(t):
        w = simplify(t).split()
        sh = np.fromiter([h64(" ".join(x)) for x in zip(*(w[i:] for i in range(5)))], dtype=np.uint64).reshape((-1, 1))
        with np.errstate(over="ignore"):
            phv = (sh * a + b) % p
        if phv.shape[0] == 0:
            return []
        return [x.tolist() for x in np.split(np.min(phv, axis=0), 14)]
    return label, signature


def peer_datasketch():
    from datasketch import MinHash
    import xxhash
    h64 = xxhash.xxh64_intdigest

    def shingles(t):
        w = simplify(t).split()
        if not w:
            return []
        if len(w) < 5:
            return [" ".join(w).encode("utf-8")]
        return [" ".join(x).encode("utf-8") for x in zip(*(w[i:] for i in range(5)))]

    def run_all(ts):
        sigs = MinHash.bulk([shingles(t) for t in ts], num_perm=112, seed=1, hashfunc=h64, scheme="affine64")
        return [[m.hashvalues[i * 8:(i + 1) * 8].tobytes() for i in range(14)] for m in sigs]
    return "datasketch", run_all


def median_time(run_all):
    run_all(texts[:50])   # warm-up: imports, first allocations
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run_all(texts)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def per_text(fn):
    return lambda ts: [fn(t) for t in ts]


rows = [peer_datasketch()]
try:
    label, fn = peer_datatrove()
except Exception:
    label, fn = peer_numpy()
rows.append((label, per_text(fn)))
for label, run_all in rows:
    med = median_time(run_all)
    print(f"{label.replace(' ', '_')} {nbytes / 1e6 / med:.3f} {len(texts) / med:.1f}", flush=True)
