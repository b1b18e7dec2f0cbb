"""`retort resize-vocab` against transformers: the tokens a template needs are added to the
tokenizer with the ids tokenizer.add_special_tokens gives them, and the embedding (and an untied
LM head) grow as model.resize_token_embeddings(len(tokenizer), mean_resizing=True) grows them
(old rows unchanged; new rows the mean of the old, up to the 1e-9-scaled covariance noise
transformers adds). Expected values come from transformers and tokenizers in the venv."""
import json
import os
import shutil

import pytest
from conftest import assert_one_error_line, run

R1 = ["<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>", "<\uff5cUser\uff5c>",
      "<\uff5cAssistant\uff5c>"]


@pytest.fixture(scope="module")
def qwen_tok_dir(assets):
    d = os.path.join(assets, "tokenizers", "qwen3")
    if not os.path.exists(os.path.join(d, "tokenizer.json")):
        pytest.skip(f"skipped: {d}/tokenizer.json missing")
    return d


def base_model(tmp_path, tok_dir, tied):
    """A tiny Qwen2 whose vocabulary is exactly the Qwen3 tokenizer's (151,669 tokens)."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM
    V = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    cfg = AutoConfig.for_model("qwen2", vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                               num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied,
                               max_position_embeddings=256, bos_token_id=151643, eos_token_id=151645)
    torch.manual_seed(5)
    m = AutoModelForCausalLM.from_config(cfg).float()
    d = tmp_path / ("tied" if tied else "untied")
    m.save_pretrained(d)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok_dir, f), d / f)
    return d, V


@pytest.mark.parametrize("tied", [True, False])
def test_r1_markers_added_as_transformers_adds_them(retort_bin, qwen_tok_dir, tmp_path, tied):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d, V = base_model(tmp_path, qwen_tok_dir, tied)
    out = tmp_path / "out"
    p = run([retort_bin, "resize-vocab", "--model", str(d), "--add-tokens-from", "deepseek-r1", "--out", str(out)])
    assert p.returncode == 0, p.stderr
    assert "4 token(s) added" in p.stdout, p.stdout   # <think> and </think> are Qwen3's already
    # the reference: transformers' tokenizer and resize on the original directory
    ref_tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    ref_tok.add_special_tokens({"additional_special_tokens": R1})
    ref = AutoModelForCausalLM.from_pretrained(str(d), local_files_only=True, dtype=torch.float32)
    ref.resize_token_embeddings(len(ref_tok), mean_resizing=True)
    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert len(tok) == len(ref_tok) == V + 4
    for t in R1 + ["<think>", "</think>"]:
        assert tok.convert_tokens_to_ids(t) == ref_tok.convert_tokens_to_ids(t), t
    text = R1[0] + R1[2] + "What is 2+2?" + R1[3] + "<think>\n4\n</think>\n\n4" + R1[1]
    ids = ref_tok.encode(text, add_special_tokens=False)
    assert tok.encode(text, add_special_tokens=False) == ids
    assert all(ref_tok.convert_tokens_to_ids(t) in ids for t in R1)   # each marker one token
    p = run([retort_bin, "tokenize", "--tokenizer", str(out / "tokenizer.json")], input=json.dumps({"text": text}) + "\n")
    assert p.returncode == 0 and json.loads(p.stdout)["ids"] == ids, p.stderr
    # the weights
    got = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True, dtype=torch.float32)
    assert got.config.vocab_size == V + 4
    pairs = [(got.get_input_embeddings().weight, ref.get_input_embeddings().weight)]
    if not tied:
        pairs.append((got.get_output_embeddings().weight, ref.get_output_embeddings().weight))
    for a, b in pairs:
        assert a.shape == b.shape == (V + 4, 32)
        assert torch.equal(a[:V], b[:V])
        assert torch.allclose(a[V:], b[V:], rtol=0, atol=1e-5), (a[V:] - b[V:]).abs().max()
    sd_got, sd_ref = got.state_dict(), ref.state_dict()
    for k in sd_ref:
        if "embed_tokens" not in k and "lm_head" not in k:
            assert torch.equal(sd_got[k], sd_ref[k]), k
    # the generation config and the chat template came along
    assert json.loads((out / "generation_config.json").read_text())["bos_token_id"] == 151643
    assert tok.chat_template == ref_tok.chat_template


def test_nothing_to_add_is_a_copy_and_a_used_out_is_refused(retort_bin, qwen_tok_dir, tmp_path):
    d, V = base_model(tmp_path, qwen_tok_dir, True)
    out = tmp_path / "out"
    p = run([retort_bin, "resize-vocab", "--model", str(d), "--add-tokens-from", "qwen", "--out", str(out)])
    assert p.returncode == 0, p.stderr
    assert "already holds every token" in p.stdout
    assert json.loads((out / "config.json").read_text())["vocab_size"] == V
    p = run([retort_bin, "resize-vocab", "--model", str(d), "--add-tokens-from", "qwen", "--out", str(out)])
    assert_one_error_line(p, "not empty")
    p = run([retort_bin, "resize-vocab", "--model", str(d), "--add-tokens-from", "chatml", "--out", str(tmp_path / "x")])
    assert p.returncode == 2 and "neither a template" in p.stderr
