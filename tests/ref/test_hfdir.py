"""The model directories `retort train` writes are complete Hugging Face directories: transformers
loads them offline (AutoTokenizer, AutoModelForCausalLM, GenerationConfig) and agrees with retort
(the tokens of "2+2", greedy generation); the weights shard with a valid
model.safetensors.index.json; the optimizer and trainer state sit in step-N.state beside the
model directory, and a run resumes from a sharded checkpoint. Expected values come from
transformers / tokenizers / safetensors in the venv, never from retort."""
import json
import os

import pytest
from conftest import run

# A Qwen2-shaped model on the real Qwen3 tokenizer (151,669 tokens; Qwen's padded vocabulary).
CFG = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 32,
       "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
       "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": True,
       "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu"}
CHATS = [[{"role": "user", "content": f"What is {a}+{b}?"}, {"role": "assistant", "content": f"{a}+{b} = {a + b}."}]
         for a in range(1, 9) for b in range(1, 4)]


@pytest.fixture(scope="module")
def qwen_tok(assets):
    p = os.path.join(assets, "tokenizers", "qwen3", "tokenizer.json")
    if not os.path.exists(p):
        pytest.skip(f"skipped: {p} missing")
    return p


@pytest.fixture(scope="module")
def packed(retort_bin, qwen_tok, tmp_path_factory):
    """Chats packed with `retort pack` (its index.json records the tokenizer and template)."""
    d = tmp_path_factory.mktemp("pack")
    (d / "chats.jsonl").write_text("".join(json.dumps({"messages": m}) + "\n" for m in CHATS))
    p = run([retort_bin, "pack", "--tokenizer", qwen_tok, "--template", "qwen", "--jsonl", str(d / "chats.jsonl"),
             "--seq", "64", "--out", str(d / "shards"), "--threads", "2"])
    assert p.returncode == 0, p.stderr
    (d / "cfg.json").write_text(json.dumps(CFG))
    return d


def train(retort_bin, *args):
    p = run([retort_bin, "train", "--threads", "2", "--batch", "2", "--lr", "3e-3", "--seed", "3", "--dtype", "f32",
             *args], timeout=600)
    assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def model_dir(retort_bin, packed):
    """4 steps, a checkpoint every 2, shards of at most 8 MB (the embedding, 19 MB in f32, alone
    in one of them)."""
    out = packed / "out"
    train(retort_bin, "--init", str(packed / "cfg.json"), "--data", str(packed / "shards"), "--steps", "4",
          "--save-every", "2", "--max-shard-size", "8e6", "--out", str(out))
    return out


def test_layout_model_directory_and_state_beside_it(model_dir):
    assert sorted(os.listdir(model_dir)) == ["step-2", "step-2.state", "step-4", "step-4.state"]
    names = sorted(os.listdir(model_dir / "step-4"))
    assert names == ["config.json", "generation_config.json", "model-00001-of-00002.safetensors",
                     "model-00002-of-00002.safetensors", "model.safetensors.index.json", "special_tokens_map.json",
                     "tokenizer.json", "tokenizer_config.json"], names
    assert sorted(os.listdir(model_dir / "step-4.state")) == ["optimizer.safetensors", "trainer_state.json"]


def test_shard_index_is_valid(model_dir):
    from safetensors import safe_open
    d = model_dir / "step-4"
    idx = json.loads((d / "model.safetensors.index.json").read_text())
    seen, total = {}, 0
    for fn in sorted(set(idx["weight_map"].values())):
        size, n = 0, 0
        with safe_open(str(d / fn), "pt") as f:
            n = len(f.keys())
            for k in f.keys():
                t = f.get_tensor(k)
                seen[k] = fn
                size += t.numel() * t.element_size()
        total += size
        assert size <= 8e6 or n == 1, (fn, size)   # a tensor larger than the limit is alone
    assert seen == idx["weight_map"]
    assert idx["metadata"]["total_size"] == total


def test_transformers_loads_the_directory_offline_and_agrees(retort_bin, model_dir, qwen_tok, tmp_path):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    d = str(model_dir / "step-4")
    tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
    ref = Tokenizer.from_file(qwen_tok).encode("2+2", add_special_tokens=False).ids
    ids = tok.encode("2+2", add_special_tokens=False)
    assert ids == ref and len(tok) == Tokenizer.from_file(qwen_tok).get_vocab_size(with_added_tokens=True)
    p = run([retort_bin, "tokenize", "--tokenizer", os.path.join(d, "tokenizer.json")], input='{"text": "2+2"}\n')
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["ids"] == ids
    # the training tokenizer's chat template came along
    src = json.load(open(os.path.join(os.path.dirname(qwen_tok), "tokenizer_config.json")))
    assert tok.chat_template == src["chat_template"]
    assert tok.eos_token == src["eos_token"]
    # generation_config: the model's eos and the template's end-of-turn
    g = GenerationConfig.from_pretrained(d, local_files_only=True)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert g.eos_token_id == [151643, im_end] and g.bos_token_id == 151643
    # greedy tokens: transformers' generate against retort generate
    model = AutoModelForCausalLM.from_pretrained(d, local_files_only=True, dtype=torch.float32)
    prompt = "What is 2+2?"
    x = torch.tensor([tok.encode(prompt, add_special_tokens=False)])
    with torch.no_grad():
        y = model.generate(x, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    want = y[0, x.shape[1]:].tolist()
    p = run([retort_bin, "generate", "--model", d, "--jsonl", "-", "--temperature", "0", "--max-tokens", "8",
             "--ignore-eos", "--threads", "2"], input=json.dumps({"prompt": prompt}) + "\n")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[0])["ids"] == want


def test_teacher_sampling_defaults_reach_generation_config(retort_bin, packed, qwen_tok, tmp_path):
    """generate (against tests/ref/fake_openai.py) → export chat-jsonl → pack → train, and export
    --format shards straight from the database → train: transformers' GenerationConfig of the
    trained model holds the sampling the teacher's samples were generated with (the values
    given to `retort generate` here). Chats without that metadata (the module's packed set)
    leave the sampling keys out: unknown, not invented."""
    from transformers import GenerationConfig
    from test_generate_db import Server, gen, make_db
    want = {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "max_new_tokens": 200}
    s = Server()
    try:
        db = make_db(retort_bin, tmp_path, n_math=3, n_chat=2)
        r = gen(retort_bin, db, s.url, "--n", "2", "--temperature", "0.7", "--top-p", "0.9", "--top-k", "40",
                "--max-tokens", "200", "--model", "teacher-x")
        assert r.returncode == 0, r.stderr
    finally:
        s.close()
    p = run([retort_bin, "export", "--db", str(db), "--format", "chat-jsonl", "--out", str(tmp_path / "x.jsonl")])
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in open(tmp_path / "x.jsonl")]
    assert len(rows) == 10 and all(r["metadata"]["sampling"] == want for r in rows), rows[0]["metadata"]
    p = run([retort_bin, "pack", "--tokenizer", qwen_tok, "--template", "qwen", "--jsonl", str(tmp_path / "x.jsonl"),
             "--seq", "512", "--out", str(tmp_path / "shards"), "--threads", "2"])
    assert p.returncode == 0, p.stderr
    assert json.load(open(tmp_path / "shards" / "index.json"))["generation_config"] == want
    p = run([retort_bin, "export", "--db", str(db), "--format", "shards", "--tokenizer", qwen_tok, "--template", "qwen",
             "--seq", "512", "--out", str(tmp_path / "direct"), "--threads", "2"])
    assert p.returncode == 0, p.stderr
    assert json.load(open(tmp_path / "direct" / "index.json"))["generation_config"] == want
    for data in ("shards", "direct"):
        train(retort_bin, "--init", str(packed / "cfg.json"), "--data", str(tmp_path / data), "--steps", "1",
              "--out", str(tmp_path / f"o-{data}"))
        g = GenerationConfig.from_pretrained(str(tmp_path / f"o-{data}" / "step-1"), local_files_only=True)
        got = {k: getattr(g, k) for k in want}
        assert got == want, (data, got)
        assert 151643 in ([g.eos_token_id] if isinstance(g.eos_token_id, int) else g.eos_token_id)
    # the module's chats carry no sampling: nothing recorded, nothing invented
    assert "generation_config" not in json.load(open(packed / "shards" / "index.json"))
    train(retort_bin, "--init", str(packed / "cfg.json"), "--data", str(packed / "shards"), "--steps", "1",
          "--out", str(tmp_path / "o-plain"))
    gc = json.load(open(tmp_path / "o-plain" / "step-1" / "generation_config.json"))
    assert not {"temperature", "top_p", "top_k", "do_sample", "max_new_tokens"} & gc.keys(), gc


def test_resume_from_a_sharded_checkpoint_is_exact(retort_bin, model_dir, packed, tmp_path):
    from safetensors.numpy import load_file
    train(retort_bin, "--resume", str(model_dir / "step-2"), "--data", str(packed / "shards"), "--steps", "4",
          "--max-shard-size", "8e6", "--out", str(tmp_path / "r"))
    for f in ("step-4.state/optimizer.safetensors", "step-4/model-00001-of-00002.safetensors",
              "step-4/model-00002-of-00002.safetensors"):
        a, b = load_file(str(model_dir / f)), load_file(str(tmp_path / "r" / f))
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), f


def test_explicit_tokenizer_without_its_config(retort_bin, packed, qwen_tok, tmp_path):
    """A tokenizer.json with no tokenizer_config.json beside it: a minimal config is written,
    with the template's end-of-turn marker as eos; AutoTokenizer still encodes as tokenizers does."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    lone = tmp_path / "tok"
    lone.mkdir()
    (lone / "tokenizer.json").write_bytes(open(qwen_tok, "rb").read())
    train(retort_bin, "--init", str(packed / "cfg.json"), "--data", str(packed / "shards"), "--steps", "1",
          "--tokenizer", str(lone / "tokenizer.json"), "--out", str(tmp_path / "o"))
    d = tmp_path / "o" / "step-1"
    assert (d / "model.safetensors").exists() and not (d / "model.safetensors.index.json").exists()
    tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    text = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    assert tok.encode(text, add_special_tokens=False) == Tokenizer.from_file(qwen_tok).encode(text, add_special_tokens=False).ids
    assert tok.eos_token == "<|im_end|>"
    assert json.loads((d / "special_tokens_map.json").read_text())["eos_token"] == "<|im_end|>"


CONVS = [[{"role": "user", "content": "What is 2+2?"}],
         [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " What is 2+2? "}],
         [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
          {"role": "user", "content": "What is 2+2?"}]]


@pytest.mark.parametrize("template,asset", [("qwen", "qwen3"), ("deepseek-r1", "deepseek_v3"), ("llama3", "llama3_1")])
def test_builtin_template_becomes_the_chat_template(retort_bin, assets, template, asset, tmp_path):
    """Packed with a tokenizer that has no tokenizer_config.json: the model directory's
    chat_template is the built-in template's Jinja text, and transformers' apply_chat_template
    renders what `retort tokenize --chat` renders (generation prompt on)."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    src = os.path.join(assets, "tokenizers", asset, "tokenizer.json")
    if not os.path.exists(src):
        pytest.skip(f"skipped: {src} missing")
    lone = tmp_path / "tok"
    lone.mkdir()
    (lone / "tokenizer.json").write_bytes(open(src, "rb").read())
    V = Tokenizer.from_file(src).get_vocab_size(with_added_tokens=True)
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps({"messages": m}) + "\n" for m in CHATS[:4]))
    p = run([retort_bin, "pack", "--tokenizer", str(lone / "tokenizer.json"), "--template", template, "--jsonl",
             str(tmp_path / "chats.jsonl"), "--seq", "64", "--out", str(tmp_path / "shards"), "--threads", "2"])
    assert p.returncode == 0, p.stderr
    cfg = dict(CFG, vocab_size=V, hidden_size=16, num_hidden_layers=1, bos_token_id=0, eos_token_id=1)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    train(retort_bin, "--init", str(tmp_path / "cfg.json"), "--data", str(tmp_path / "shards"), "--steps", "1",
          "--out", str(tmp_path / "o"))
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "o" / "step-1"), local_files_only=True)
    assert tok.chat_template
    p = run([retort_bin, "tokenize", "--tokenizer", src, "--chat", template, "--generation-prompt"],
            input="".join(json.dumps({"messages": m}) + "\n" for m in CONVS))
    assert p.returncode == 0, p.stderr
    want = [json.loads(line)["text"] for line in p.stdout.splitlines()]
    for conv, w in zip(CONVS, want):
        assert tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True) == w, conv
