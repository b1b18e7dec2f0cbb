"""Tokenizer parity corpus and its expected ids from PyPI `tokenizers` (the Rust library).

Run as a script (tests/run.sh does): writes into REF_DIR/tok/
  corpus.jsonl            {"text": S} per line: benchmark texts, hard cases, random strings
  <name>.jsonl            per corpus line, for tokenizer <name> (deepseek_v3, qwen3, llama3_1):
                          {"ids": encode(S, add_special_tokens=False),
                           "ids_special": encode(S, add_special_tokens=True),
                           "skip": decode(ids_special, skip_special_tokens=True),
                           "decoded": decode(ids)}  (the text itself unless a normalizer changed it)
  <name>.decode.jsonl     random id sequences and HF's decode of them (lossy UTF-8 included)
  <name>.meta.json        vocab size, token_to_id and id_to_token of a few probes
Imported (by the pytest suites): build_corpus(), tokenizer_path(), ASSETS.
The random part is fresh every run; its seed is printed and written to tok/seed.
"""
import json
import os
import random
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ASSETS = os.environ.get("RETORT_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))
NAMES = ["deepseek_v3", "qwen3", "llama3_1"]


def tokenizer_path(name):
    return os.path.join(ASSETS, "tokenizers", name, "tokenizer.json")


def benchmark_texts():
    d = os.path.join(ASSETS, "benchmarks")
    out = []
    if not os.path.isdir(d):
        return out
    for f in sorted(os.listdir(d)):
        if not f.endswith(".jsonl"):
            continue
        with open(os.path.join(d, f), encoding="utf-8") as fh:
            for line in fh:
                for v in json.loads(line).values():
                    if isinstance(v, str) and v:
                        out.append(v)
    return out


SPECIALS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
            "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<|begin_of_text|>",
            "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<tool_call>", "<|fim_prefix|>",
            "<｜tool▁calls▁begin｜>", "<|reserved_special_token_3|>", "<|im_start", "im_end|>", "<<|im_end|>>"]

HARD = [
    "", " ", "  ", "\n", "\r\n", "\t", "a", "A", "0", "'", "'s", "'S", "'ll", "'LL", "'ſ", "I'M", "don't", "DON'T",
    "中文分词测试：今天天气很好，我们去公园散步吧。", "日本語のテキスト、カタカナとひらがな。漢字も。ｶﾀｶﾅ半角",
    "한국어 텍스트입니다. 조합형 한글: 한국어", "ภาษาไทยไม่มีช่องว่าง", "Tiếng Việt có dấu: Nguyễn Phương",
    "👩‍👩‍👧‍👦 family, 👍🏽 thumbs, 🏳️‍🌈 flag, 🧑🏿‍🔬 scientist, 🇯🇵🇺🇸 flags, ❤️‍🔥",
    "e\u0301 a\u0308 o\u0302\u0323 n\u0303 Z\u0351\u0352\u0353 combining \u0301\u0302 at start",
    "\u1100\u1161\u11a8 jamo, \u212b angstrom, \ufb01 ligature, \u2126 ohm, \u00c5 vs A\u030a",
    "العربية من اليمين إلى اليسار ١٢٣٤٥ مع أرقام", "עברית: שלום עולם 123", "RTL mark \u200f and \u200e LTR",
    "1234567890123456789012345678901234567890", "3.14159265358979323846264338327950288419716939937510",
    "٠١٢٣٤٥٦٧٨٩ ०१२३४५६७८९ ①②③ ½¾ Ⅻ ²³ 𝟙𝟚𝟛",
    " " * 17 + "x" + " " * 33, "\n\n\n\n\nx\n \n \n", "\t\t\tindent\t", "a\r\nb\rc\n\rd",
    "\u00a0nbsp\u2003em\u3000ideo\u2028ls\u2029ps\u0085nel\u000bvt\u000cff\u200bzw\u180emvs\ufeffbom",
    "def f(x: int) -> int:\n    \"\"\"Doc.\"\"\"\n    return x ** 2  # square\n\nclass A(B):\n\tpass\n",
    "for (int i = 0; i < n; ++i) { a[i] += b[i] * c; }  // C\n#include <stdio.h>\n",
    "$$\\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}$$ and \\(\\alpha_{i,j}^{(k)}\\) \\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}",
    "<html><body class=\"x\">&amp; &lt;tag&gt;</body></html>", "https://example.com/a?b=c&d=e#frag",
    "Mixed: Hello世界123abc!!!???...---___===+++", "ALLCAPS WORDS AND MiXeD CaSe", "snake_case camelCase kebab-case",
    "\u0000nul\u0001ctl\u001f\u007fdel", "\U0001F600\U0001F601\U0001F602" * 5, "🤗" * 40, "\U0010FFFD \U000E0041 tag chars",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐛𝐨𝐥𝐝 𝑖𝑡𝑎𝑙𝑖𝑐", "Ελληνικά και Кириллица и ελληνικά", "ﬀ ﬃ Ǆ ǅ ǆ İ ı ß ẞ",
    "ab" * 300, "." * 100, "-" * 80, "=" * 64, "…" * 10, "!?" * 20,
]


def random_strings(rng, n):
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789", " \t\n\r", " ", ".,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`",
        "中文字符测试你好世界日本語カタカナひらがな한국어",
        "éèêëàâäôöûüçñÅ\u0301\u0308\u0302\u0323",
        "👩🏽‍💻👍🏿🏳️‍🌈❤️🔥✨",
        "العربيةעברית", "\u00a0\u2003\u3000\u200b\u200d\u2028\u0085",
        "١٢٣٤५६७①½²",
    ]
    out = []
    for _ in range(n):
        k = rng.randint(1, 80)
        s = []
        for _ in range(k):
            p = rng.choice(pools)
            s.append(rng.choice(p) * (rng.randint(1, 6) if rng.random() < 0.1 else 1))
            if rng.random() < 0.03:
                s.append(rng.choice(SPECIALS))
        out.append("".join(s))
    return out


def with_specials(rng, texts, n):
    out = []
    for t in rng.sample(texts, min(n, len(texts))):
        parts = t.split(" ")
        for _ in range(rng.randint(1, 3)):
            i = rng.randint(0, len(parts))
            parts.insert(i, rng.choice(SPECIALS))
        out.append(rng.choice([" ", ""]).join(parts))
    return out


def build_corpus(seed, n_random=3000, bench=True):
    rng = random.Random(seed)
    texts = benchmark_texts() if bench else []
    base = texts or HARD
    return texts + HARD + [" ".join(HARD)] + random_strings(rng, n_random) + with_specials(rng, base, 500)


def random_ids(rng, vocab, n):
    return [[rng.randrange(vocab) for _ in range(rng.randint(0, 12))] for _ in range(n)]


def main(out_dir):
    from tokenizers import Tokenizer

    d = os.path.join(out_dir, "tok")
    os.makedirs(d, exist_ok=True)
    missing = [n for n in NAMES if not os.path.exists(tokenizer_path(n))]
    if missing:
        print(f"   gen_tok_corpus: skipped: tokenizers {missing} absent under {ASSETS}")
        return 0
    seed = int(os.environ.get("TOK_SEED", random.randrange(1 << 30)))
    print(f"   gen_tok_corpus: seed {seed}")
    with open(os.path.join(d, "seed"), "w") as f:
        f.write(f"{seed}\n")
    corpus = build_corpus(seed)
    with open(os.path.join(d, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for t in corpus:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    rng = random.Random(seed + 1)
    for name in NAMES:
        tk = Tokenizer.from_file(tokenizer_path(name))
        plain = tk.encode_batch(corpus, add_special_tokens=False)
        special = tk.encode_batch(corpus, add_special_tokens=True)
        skip = tk.decode_batch([e.ids for e in special], skip_special_tokens=True)
        back = tk.decode_batch([e.ids for e in plain], skip_special_tokens=False)
        with open(os.path.join(d, f"{name}.jsonl"), "w", encoding="utf-8") as f:
            for p, s, k, b in zip(plain, special, skip, back):
                f.write(json.dumps({"ids": p.ids, "ids_special": s.ids, "skip": k, "decoded": b},
                                   ensure_ascii=False) + "\n")
        probe = SPECIALS + ["Ġthe", "the", "ĠĠ", "Ċ", "<0x41>", "a", "é", "中", "nonexistent-token-xyz"]
        meta = {"vocab_size": tk.get_vocab_size(with_added_tokens=True),
                "token_to_id": {t: tk.token_to_id(t) for t in probe},
                "id_to_token": {str(i): tk.id_to_token(i) for i in [0, 1, 2, 100, 1000, 127999, 128000, 128001]
                                if tk.id_to_token(i) is not None}}
        with open(os.path.join(d, f"{name}.meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, ensure_ascii=False)
        ids = random_ids(rng, tk.get_vocab_size(with_added_tokens=True), 2000)
        with open(os.path.join(d, f"{name}.decode.jsonl"), "w", encoding="utf-8") as f:
            for x in ids:
                f.write(json.dumps({"ids": x, "text": tk.decode(x, skip_special_tokens=False),
                                    "skip": tk.decode(x, skip_special_tokens=True)}, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.environ["REF_DIR"]))
