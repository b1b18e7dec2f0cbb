"""A model and the tokenizer put in front of it (issue #16): generate, serve and eval refuse a
tokenizer whose largest id is at or beyond the model's vocab_size (one line, exit 1), accept one
with fewer ids (a padded vocabulary), and refuse a model whose weights hold NaN or Inf at load.
The tokenizer is hand-made (12 ids, counted by PyPI tokenizers); the models are written by
transformers, the poisoned one through PyPI safetensors."""
import json
import os

import pytest
from conftest import ROOT, run

N_IDS = 12


def tokenizer(path):
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"<eos>": 0, "\u0120": 1, **{str(i): 2 + i for i in range(10)}}
    tk = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = tokenizers.decoders.ByteLevel()
    tk.add_special_tokens([tokenizers.AddedToken("<eos>", special=True)])
    tk.save(str(path))
    assert tk.get_vocab_size() == N_IDS
    return str(path)


def model(d, vocab, poison=None):
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = json.load(open(os.path.join(ROOT, "configs", "models", "tiny-qwen2.json")))
    cfg.update(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
               num_key_value_heads=2, eos_token_id=0, bos_token_id=0)
    torch.manual_seed(1)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg)).float().save_pretrained(str(d))
    if poison:
        from safetensors.numpy import load_file, save_file
        w = load_file(str(d / "model.safetensors"))
        poison(w)
        save_file(w, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    t = tmp_path_factory.mktemp("pair")
    tok = tokenizer(t / "tokenizer.json")
    prompts = t / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "1 2 3"}) + "\n")
    bench = t / "digits.jsonl"
    bench.write_text(json.dumps({"prompt": "1 2", "answer": "3"}) + "\n")
    return t, tok, prompts, bench


def one_line(p, *needles):
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert p.returncode == 1 and len(lines) == 1 and lines[0].startswith("retort: "), (p.returncode, p.stderr)
    for n in needles:
        assert n in lines[0], (n, lines[0])


def commands(retort_bin, d, tok, prompts, bench, db):
    gen = [retort_bin, "generate", "--model", str(d), "--tokenizer", tok, "--jsonl", str(prompts), "--max-tokens", "2",
           "--threads", "1"]
    serve = [retort_bin, "serve", "--model", str(d), "--tokenizer", tok, "--port", "0", "--threads", "1"]
    ev = [retort_bin, "eval", "--db", str(db), "--model", f"local:{d}", "--tokenizer", tok, "--bench", str(bench),
          "--k", "1", "--max-tokens", "2", "--threads", "1"]
    return {"generate": gen, "serve": serve, "eval": ev}


@pytest.mark.parametrize("cmd", ["generate", "serve", "eval"])
def test_tokenizer_with_ids_beyond_the_vocabulary_is_refused(retort_bin, files, tmp_path, cmd):
    t, tok, prompts, bench = files
    d = model(tmp_path / "m", N_IDS - 1)          # the largest id, 11, is one past the vocabulary
    c = commands(retort_bin, d, tok, prompts, bench, tmp_path / "run.db")[cmd]
    one_line(run(c, timeout=120), "tokenizer", tok, f"ids up to {N_IDS - 1}", "vocabulary of 11")


def test_tokenizer_smaller_than_the_vocabulary_is_fine(retort_bin, files, tmp_path):
    t, tok, prompts, bench = files
    for v in (N_IDS, N_IDS + 20):                 # exactly the ids, and a padded vocabulary
        d = model(tmp_path / f"m{v}", v)
        p = run(commands(retort_bin, d, tok, prompts, bench, tmp_path / "run.db")["generate"])
        assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("cmd", ["generate", "serve", "eval"])
def test_non_finite_weights_are_refused_at_load(retort_bin, files, tmp_path, cmd):
    import numpy as np
    t, tok, prompts, bench = files

    def poison(w):
        w["model.layers.0.self_attn.q_proj.weight"][1, 2] = np.nan
        w["model.layers.0.self_attn.q_proj.weight"][3, 4] = np.inf
    d = model(tmp_path / "m", N_IDS, poison)
    c = commands(retort_bin, d, tok, prompts, bench, tmp_path / "run.db")[cmd]
    one_line(run(c, timeout=120), "model.layers.0.self_attn.q_proj.weight", "1 NaN and 1 Inf", "not finite",
             "--check-values")
