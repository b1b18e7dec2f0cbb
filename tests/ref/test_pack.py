"""`retort pack` and `retort export --format shards`: the shards, read back by an
independent reader (struct + numpy, following docs/formats.md), hold exactly the tokens
Hugging Face `tokenizers` gives for each conversation's chat-template text, with a loss mask
on the assistant's part; no document crosses a sequence boundary unsplit; long documents are
split or dropped and counted."""
import json
import math
import os
import struct

import numpy as np
import pytest

from conftest import run, assert_one_error_line

tokenizers = pytest.importorskip("tokenizers")

TEMPLATES = {"deepseek-r1": "deepseek_v3", "qwen": "qwen3", "llama3": "llama3_1"}
DOC = np.dtype([("id", "<u8"), ("seq", "<u4"), ("start", "<u4"), ("len", "<u4"), ("offset", "<u4"), ("flags", "<u4"),
                ("reserved", "<u4")])


def read_shard(path):
    b = open(path, "rb").read()
    magic, ver, dt, n, vocab, s, d, pad, flags, _ck, res = struct.unpack("<8sIIIIQQIIQQ", b[:64])
    assert magic == b"RTSHARD\0" and ver == 2 and dt in (2, 4) and flags == 0 and res == 0
    tok = np.frombuffer(b, dtype="<u2" if dt == 2 else "<u4", count=s * n, offset=64).reshape(s, n)
    mo = 64 + s * n * dt
    mask = np.frombuffer(b, dtype=np.uint8, count=s * n, offset=mo).reshape(s, n)
    do = (mo + s * n + 7) // 8 * 8
    docs = np.frombuffer(b, dtype=DOC, count=d, offset=do)
    assert len(b) == do + d * 32 and (docs["reserved"] == 0).all()
    return dict(seq_len=n, vocab=vocab, pad=pad, tokens=tok, mask=mask, docs=docs)


def read_dir(d):
    index = json.load(open(os.path.join(d, "index.json")))
    return index, [read_shard(os.path.join(d, s["file"])) for s in index["shards"]]


def documents(shards):
    """doc id → (tokens, mask) reassembled from its pieces; checks the boundaries on the way."""
    pieces = {}
    for sh in shards:
        n = sh["seq_len"]
        covered = np.zeros(sh["tokens"].shape, dtype=bool)
        for x in sh["docs"]:
            s, a, l = int(x["seq"]), int(x["start"]), int(x["len"])
            assert l >= 1 and a + l <= n, "a piece crosses its sequence's end"
            assert not covered[s, a:a + l].any(), "pieces overlap"
            covered[s, a:a + l] = True
            pieces.setdefault(int(x["id"]), []).append((int(x["offset"]), int(x["flags"]), sh["tokens"][s, a:a + l],
                                                        sh["mask"][s, a:a + l]))
        assert (sh["tokens"][~covered] == sh["pad"]).all() and (sh["mask"][~covered] == 0).all()
    out = {}
    for i, ps in pieces.items():
        ps.sort(key=lambda p: p[0])
        # the pieces tile the document: offsets follow on, only the first lacks CONT_PREV, only the last CONT_NEXT
        assert [p[0] for p in ps] == list(np.cumsum([0] + [len(p[2]) for p in ps[:-1]]))
        assert ps[0][1] & 1 == 0 and ps[-1][1] & 2 == 0
        assert all(p[1] & 2 for p in ps[:-1]) and all(p[1] & 1 for p in ps[1:])
        out[i] = (np.concatenate([p[2] for p in ps]).astype(np.int64), np.concatenate([p[3] for p in ps]), len(ps))
    return out


def assistant_text(m):
    r = m.get("reasoning_content")
    return (f"<think>\n{r}\n</think>\n\n" if r else "") + m["content"]


def render(kind, msgs):
    """The template text (transformers' apply_chat_template with each model's template, written
    out for system? + user + assistant) and the [start, end) span of the assistant's part
    (its content and end-of-turn token)."""
    sys = [m["content"] for m in msgs if m["role"] == "system"]
    user = next(m["content"] for m in msgs if m["role"] == "user")
    a = assistant_text(msgs[-1])
    if kind == "deepseek-r1":
        head = "<｜begin▁of▁sentence｜>" + "\n\n".join(sys) + "<｜User｜>" + user + "<｜Assistant｜>"
        body = a + "<｜end▁of▁sentence｜>"
        tail = ""
    elif kind == "qwen":
        s = sys[0] if sys else "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
        head = (f"<|im_start|>system\n{s}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
                "<|im_start|>assistant\n")
        body = a + "<|im_end|>"
        tail = "\n"
    else:
        head = "<|begin_of_text|>"
        if sys:
            head += f"<|start_header_id|>system<|end_header_id|>\n\n{sys[0].strip()}<|eot_id|>"
        head += (f"<|start_header_id|>user<|end_header_id|>\n\n{user.strip()}<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n")
        body = a.strip() + "<|eot_id|>"
        tail = ""
    return head + body + tail, (len(head), len(head) + len(body))


def expected(tok, kind, conv):
    text, (a, b) = render(kind, conv["messages"])
    enc = tok.encode(text, add_special_tokens=False)
    mask = np.array([1 if s < b and e > a else 0 for s, e in enc.offsets], dtype=np.uint8)
    return np.array(enc.ids, dtype=np.int64), mask


def gsm8k_chats(assets, n):
    p = os.path.join(assets, "benchmarks", "gsm8k_test.jsonl")
    if not os.path.exists(p):
        pytest.skip(f"skipped: {p} absent")
    out = []
    with open(p, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i == n:
                break
            r = json.loads(line)
            work, final = r["answer"].rsplit("####", 1)
            msgs = [{"role": "system", "content": "Solve step by step."}] if i % 4 == 0 else []
            msgs.append({"role": "user", "content": r["question"]})
            a = {"role": "assistant", "content": f"The answer is {final.strip()}."}
            if i % 3:
                a["reasoning_content"] = work.strip()
            msgs.append(a)
            out.append({"messages": msgs})
    return out


def tokenizer_path(assets, kind):
    p = os.path.join(assets, "tokenizers", TEMPLATES[kind], "tokenizer.json")
    if not os.path.exists(p):
        pytest.skip(f"skipped: {p} absent")
    return p


def write_jsonl(path, recs):
    with open(path, "w", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def pack(retort_bin, tok, kind, src, out, seq, *extra):
    p = run([retort_bin, "pack", "--tokenizer", tok, "--template", kind, "--jsonl", str(src), "--seq", str(seq),
             "--out", str(out), *extra])
    assert p.returncode == 0, p.stderr
    return read_dir(str(out))


@pytest.mark.parametrize("kind", list(TEMPLATES))
def test_shards_hold_the_hf_tokens_and_assistant_mask(retort_bin, assets, tmp_path, kind):
    tokp = tokenizer_path(assets, kind)
    tok = tokenizers.Tokenizer.from_file(tokp)
    chats = gsm8k_chats(assets, 300)
    src = tmp_path / "chats.jsonl"
    write_jsonl(src, chats)
    index, shards = pack(retort_bin, tokp, kind, src, tmp_path / "out", 1024, "--seed", "7", "--shard-seqs", "16")
    docs = documents(shards)
    assert sorted(docs) == list(range(len(chats)))
    n_tok = n_loss = 0
    for i, c in enumerate(chats):
        ids, mask = expected(tok, kind, c)
        got_ids, got_mask, n_pieces = docs[i]
        assert n_pieces == 1, "a document shorter than the sequence must not be split"
        assert got_ids.tolist() == ids.tolist(), f"conversation {i}"
        assert got_mask.tolist() == mask.tolist(), f"conversation {i}"
        n_tok += len(ids)
        n_loss += int(mask.sum())
    st = index["stats"]
    assert (st["docs"], st["tokens"], st["loss_tokens"], st["docs_split"], st["docs_dropped"]) == \
        (len(chats), n_tok, n_loss, 0, 0)
    seqs = sum(s["tokens"].shape[0] for s in shards)
    assert seqs == st["seqs"] and len(shards) == math.ceil(seqs / 16)
    assert st["pad_tokens"] == seqs * 1024 - n_tok
    # best-fit decreasing packs these short chats within 3% of the bound
    assert seqs <= math.ceil(1.03 * n_tok / 1024) + 1
    assert index["vocab_size"] == tok.get_vocab_size(with_added_tokens=True)
    assert all(int(s["tokens"].max()) < index["vocab_size"] for s in shards)


def test_long_documents_split_or_dropped(retort_bin, assets, tmp_path):
    kind = "qwen"
    tokp = tokenizer_path(assets, kind)
    tok = tokenizers.Tokenizer.from_file(tokp)
    chats = gsm8k_chats(assets, 120)
    src = tmp_path / "chats.jsonl"
    write_jsonl(src, chats)
    seq = 160
    want = [expected(tok, kind, c) for c in chats]
    index, shards = pack(retort_bin, tokp, kind, src, tmp_path / "split", seq)
    docs = documents(shards)
    n_long = sum(len(ids) > seq for ids, _ in want)
    assert n_long > 10, "the test needs documents longer than the sequence"
    for i, (ids, mask) in enumerate(want):
        got_ids, got_mask, n_pieces = docs[i]
        assert got_ids.tolist() == ids.tolist() and got_mask.tolist() == mask.tolist()
        assert n_pieces == math.ceil(len(ids) / seq)
    assert index["stats"]["docs_split"] == n_long
    index, shards = pack(retort_bin, tokp, kind, src, tmp_path / "drop", seq, "--drop-long")
    docs = documents(shards)
    assert sorted(docs) == [i for i, (ids, _) in enumerate(want) if len(ids) <= seq]
    assert index["stats"]["docs_dropped"] == n_long
    assert index["stats"]["dropped_tokens"] == sum(len(ids) for ids, _ in want if len(ids) > seq)


def test_seed_shuffles_sequences_not_content(retort_bin, assets, tmp_path):
    kind = "llama3"
    tokp = tokenizer_path(assets, kind)
    src = tmp_path / "chats.jsonl"
    write_jsonl(src, gsm8k_chats(assets, 200))
    _, a = pack(retort_bin, tokp, kind, src, tmp_path / "a", 512, "--seed", "1")
    _, b = pack(retort_bin, tokp, kind, src, tmp_path / "b", 512, "--seed", "2")
    _, c = pack(retort_bin, tokp, kind, src, tmp_path / "c", 512, "--seed", "1")
    da, db_ = documents(a), documents(b)
    assert {k: v[0].tolist() for k, v in da.items()} == {k: v[0].tolist() for k, v in db_.items()}
    assert not np.array_equal(a[0]["tokens"], b[0]["tokens"])
    assert open(tmp_path / "a" / "shard-00000.bin", "rb").read() == open(tmp_path / "c" / "shard-00000.bin", "rb").read()


def test_export_shards_from_snapshot_matches_pack(retort_bin, assets, tmp_path):
    kind = "deepseek-r1"
    tokp = tokenizer_path(assets, kind)
    chats = gsm8k_chats(assets, 200)
    src = tmp_path / "chats.jsonl"
    write_jsonl(src, chats)
    db = str(tmp_path / "run.db")
    assert run([retort_bin, "import", "--db", db, "--format", "chat", "--as-samples", str(src)]).returncode == 0
    assert run([retort_bin, "db", "snapshot", db, "all"]).returncode == 0
    p = run([retort_bin, "export", "--db", db, "--snapshot", "all", "--format", "shards", "--tokenizer", tokp,
             "--template", kind, "--seq", "2048", "--out", str(tmp_path / "exp")])
    assert p.returncode == 0, p.stderr
    _, packed = pack(retort_bin, tokp, kind, src, tmp_path / "pk", 2048)
    _, exported = read_dir(str(tmp_path / "exp"))
    tok = tokenizers.Tokenizer.from_file(tokp)
    docs = documents(exported)
    for i, c in enumerate(chats):
        ids, mask = expected(tok, kind, c)
        assert docs[i][0].tolist() == ids.tolist() and docs[i][1].tolist() == mask.tolist()
    assert open(tmp_path / "exp" / "shard-00000.bin", "rb").read() == \
        open(tmp_path / "pk" / "shard-00000.bin", "rb").read()


def test_bad_conversation_names_the_line_and_writes_nothing(retort_bin, assets, tmp_path):
    kind = "qwen"
    tokp = tokenizer_path(assets, kind)
    src = tmp_path / "chats.jsonl"
    good = gsm8k_chats(assets, 3)
    with open(src, "w") as f:
        f.write(json.dumps(good[0]) + "\n" + json.dumps(good[1]) + "\n")
        f.write(json.dumps({"messages": [{"role": "user", "content": "only a question"}]}) + "\n")
    out = tmp_path / "out"
    p = run([retort_bin, "pack", "--tokenizer", tokp, "--template", kind, "--jsonl", str(src), "--seq", "512",
             "--out", str(out)])
    assert_one_error_line(p, f"{src}:3")
    assert not os.path.exists(out), "a failed pack leaves no directory it created"
    src.write_text(json.dumps(good[0]) + "\n{not json\n")
    assert_one_error_line(run([retort_bin, "pack", "--tokenizer", tokp, "--template", kind, "--jsonl", str(src),
                               "--seq", "512", "--out", str(out)]), f"{src}:2", "invalid JSON")
    for bad in (["--template", "mistral"], ["--seq", "0"]):
        args = [retort_bin, "pack", "--tokenizer", tokp, "--template", kind, "--jsonl", str(src), "--seq", "512",
                "--out", str(out)]
        args[args.index(bad[0]) + 1] = bad[1]
        assert run(args).returncode == 2


def test_full_disk_into_a_new_directory_leaves_nothing(retort_bin, assets, tmp_path):
    """The disk fills (RLIMIT_FSIZE: writes past it fail with EFBIG) during a pack into a
    directory the pack creates: the error names the directory and the reason, and the
    directory is gone."""
    import resource
    import signal
    import subprocess
    kind = "llama3"
    tokp = tokenizer_path(assets, kind)
    src = tmp_path / "chats.jsonl"
    with open(src, "w") as f:
        for c in gsm8k_chats(assets, 400):
            f.write(json.dumps(c) + "\n")
    out = tmp_path / "shards"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
    for extra in ([], ["--shard-seqs", "4"]):
        p = subprocess.run([retort_bin, "pack", "--tokenizer", tokp, "--template", kind, "--jsonl", str(src), "--seq", "2048",
                            "--out", str(out), *extra], capture_output=True, text=True, preexec_fn=limit)
        assert_one_error_line(p, str(out), "File too large")
        assert not os.path.exists(out)


def test_temporaries_of_a_killed_pack_are_removed(retort_bin, assets, tmp_path):
    kind = "qwen"
    tokp = tokenizer_path(assets, kind)
    src = tmp_path / "chats.jsonl"
    with open(src, "w") as f:
        for c in gsm8k_chats(assets, 5):
            f.write(json.dumps(c) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    # what a pack killed with SIGKILL leaves: its spill file and temporaries of shards and index
    stale = [".pack-spill.tmp.a1B2c3", "shard-00007.bin.tmp.Zz9Yy8", "index.json.tmp.Qq1Ww2"]
    for name in stale:
        (out / name).write_bytes(b"partial")
    (out / "notes.txt").write_text("not ours")
    p = run([retort_bin, "pack", "--tokenizer", tokp, "--template", kind, "--jsonl", str(src), "--seq", "512",
             "--out", str(out)])
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(out)) == ["index.json", "notes.txt", "shard-00000.bin"]
