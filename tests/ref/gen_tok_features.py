"""Small tokenizers built with PyPI tokenizers, one per feature the three real tokenizers do
not exercise, and the ids HF gives for a set of probe strings.

Writes REF_DIR/tok_features/<case>.json (a tokenizer.json) and <case>.expect.jsonl lines
{"text": S, "ids": encode(S, False), "ids_special": encode(S, True)}; the C test
tests/unit/test_tokenizer_features.c loads each and compares.
Cases: every Split behaviour, invert, literal String patterns, Digits (both modes), ByteLevel
with add_prefix_space and its own regex, added tokens with lstrip / rstrip / single_word /
normalized (under NFC and NFKC), TemplateProcessing, ignore_merges, merges as "a b" strings,
byte_fallback with unk and fuse_unk on a non-byte-level BPE.
"""
import json
import os
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

TRAIN = ["The quick brown fox jumps over the lazy dog, 12345 times!", "naïve café résumé — déjà vu",
         "hello world hello there worldly words", "日本語 中文 한국어 👍🏽 emoji", "a1b2c3 99 bottles... of beer!"] * 20
PROBES = ["", "hello world", "  lots   of    space  ", "The, quick. brown! fox?", "a1b22c333d4444", "12345678",
          "x--y--z", "ab cab abab", "[L] left  [L]x   [R]  right[R]  y", "word words sword word.", "café cafe\u0301 CAFÉ",
          "<s>hello</s> <s>", "naïve ﬁ ligature ① ½", "日本語 👍🏽 tail", "\tTab\nNew\r\nLine", "déjà vu!!!"]


def byte_level_base():
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(TRAIN, tr)
    return tk


def with_json(tk, edit):
    j = json.loads(tk.to_str())
    edit(j)
    return Tokenizer.from_str(json.dumps(j))


def cases():
    out = {}
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)

    def pre(*steps):
        tk = byte_level_base()
        tk.pre_tokenizer = pre_tokenizers.Sequence(list(steps) + [bl])
        return tk

    out["split_removed"] = pre(pre_tokenizers.Split(Regex(r"\s+"), "removed"))
    out["split_isolated"] = pre(pre_tokenizers.Split(Regex(r"[,.!?]+"), "isolated"))
    out["split_merged_prev"] = pre(pre_tokenizers.Split(Regex(r"[,.!?]"), "merged_with_previous"))
    out["split_merged_next"] = pre(pre_tokenizers.Split(Regex(r"\s"), "merged_with_next"))
    out["split_contiguous"] = pre(pre_tokenizers.Split(Regex(r"\d"), "contiguous"))
    out["split_invert_removed"] = pre(pre_tokenizers.Split(Regex(r"\w+"), "removed", invert=True))
    out["split_invert_merged_next"] = pre(pre_tokenizers.Split(Regex(r"\s+"), "merged_with_next", invert=True))
    out["split_string"] = pre(pre_tokenizers.Split("--", "isolated"))
    out["split_empty_matches"] = pre(pre_tokenizers.Split(Regex(r"\b"), "isolated"))
    out["digits_individual"] = pre(pre_tokenizers.Digits(individual_digits=True))
    out["digits_contiguous"] = pre(pre_tokenizers.Digits(individual_digits=False))
    tk = byte_level_base()
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    out["bytelevel_prefix_regex"] = tk

    for norm in ("nfc", "nfkc"):
        tk = byte_level_base()
        tk.normalizer = normalizers.NFC() if norm == "nfc" else normalizers.NFKC()
        tk.add_special_tokens([AddedToken("<s>", special=True, normalized=False), AddedToken("</s>", special=True)])
        tk.add_tokens([AddedToken("[L]", lstrip=True, normalized=False), AddedToken("[R]", rstrip=True, normalized=False),
                       AddedToken("word", single_word=True), AddedToken("café", normalized=True),
                       AddedToken("ﬁ", normalized=True)])
        tk.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", tk.token_to_id("<s>")), ("</s>", tk.token_to_id("</s>"))])
        out[f"added_{norm}_template"] = tk

    out["ignore_merges"] = with_json(byte_level_base(), lambda j: j["model"].update(ignore_merges=True))
    out["merges_as_strings"] = with_json(
        byte_level_base(), lambda j: j["model"].update(merges=[" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]))

    # non-byte-level BPE: characters, byte_fallback through <0xXX>, unk (fused or not)
    for name, fallback, fuse in (("byte_fallback", True, False), ("unk_fused", False, True), ("unk_plain", False, False)):
        tk = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=fallback, fuse_unk=fuse))
        tk.pre_tokenizer = pre_tokenizers.Split(Regex(r" ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+"), "isolated")
        tr = trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>"] + [f"<0x{b:02X}>" for b in range(256)],
                                 limit_alphabet=30, show_progress=False)
        tk.train_from_iterator(TRAIN, tr)
        out[name] = tk
    return out


def main(out_dir):
    d = os.path.join(out_dir, "tok_features")
    os.makedirs(d, exist_ok=True)
    for name, tk in cases().items():
        tk.save(os.path.join(d, f"{name}.json"))
        tk = Tokenizer.from_file(os.path.join(d, f"{name}.json"))  # what the file says, exactly
        with open(os.path.join(d, f"{name}.expect.jsonl"), "w", encoding="utf-8") as f:
            for t in PROBES:
                f.write(json.dumps({"text": t, "ids": tk.encode(t, add_special_tokens=False).ids,
                                    "ids_special": tk.encode(t, add_special_tokens=True).ids},
                                   ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.environ["REF_DIR"]))
