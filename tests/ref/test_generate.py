"""`retort generate` end to end against PyPI transformers: greedy ids equal transformers'
generate (prompt_ids, from an F32 and a BF16 checkpoint; text prompts and chat messages through the Qwen tokenizer asset),
logprobs equal torch.log_softmax of transformers' logits (|Δ| < 1e-4), n samples and
seeded sampling independent of the batch, stop strings, bad input named by line (exit 1,
no output) and usage errors (exit 2)."""
import json
import math
import os

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM

from conftest import ROOT, assert_one_error_line, run, jsonl_lines

torch.set_grad_enabled(False)


def randomize(m, seed):
    g = torch.Generator().manual_seed(seed)
    tied = m.config.tie_word_embeddings
    for name, p in m.named_parameters():
        if name.endswith("norm.weight"):
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
        elif "embed_tokens" in name:
            p.copy_(torch.randn(p.shape, generator=g) / (math.sqrt(p.shape[-1]) if tied else 1))
        elif p.ndim == 1:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(1.0 / math.sqrt(p.shape[-1]) * torch.randn(p.shape, generator=g))


def make_model(d, cfg, seed):
    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), attn_implementation="eager").float().eval()
    randomize(m, seed)
    m.save_pretrained(str(d))
    m = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32, attn_implementation="eager").eval()
    m.generation_config.eos_token_id = None
    return m


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    cfg = json.load(open(os.path.join(ROOT, "configs", "models", "tiny-llama.json")))
    d = tmp_path_factory.mktemp("gen") / "llama"
    return d, make_model(d, cfg, 41)


@pytest.fixture(scope="module")
def llama_bf16(tmp_path_factory):
    """the same shape saved in BF16 (the CPU engine keeps its matrices bf16 on an AVX2 CPU);
    transformers loads the file as float32: bf16 -> f32 is exact, the same weights"""
    cfg = json.load(open(os.path.join(ROOT, "configs", "models", "tiny-llama.json")))
    d = tmp_path_factory.mktemp("gen") / "llama-bf16"
    make_model(d, cfg, 42).to(torch.bfloat16).save_pretrained(str(d))
    with safe_open(str(d / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    m = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32, attn_implementation="eager").eval()
    m.generation_config.eos_token_id = None
    return d, m


def generate(retort_bin, model, lines, *args, tmp, name="in.jsonl"):
    p = tmp / name
    p.write_text("".join(json.dumps(l) + "\n" for l in lines))
    r = run([retort_bin, "generate", "--model", str(model), "--jsonl", str(p), "--threads", "2", *args])
    out = jsonl_lines(r.stdout) if r.returncode == 0 else []
    return r, sorted(out, key=lambda o: (o["index"], o["sample"]))


def hf_greedy(m, ids, n):
    out = m.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("ckpt", ["llama", "llama_bf16"])
def test_greedy_ids_and_logprobs_match_transformers(retort_bin, ckpt, request, tmp_path):
    d, m = request.getfixturevalue(ckpt)
    prompts = [[5, 17, 99, 3, 250], [77], list(range(100, 140))]
    r, out = generate(retort_bin, d, [{"prompt_ids": p} for p in prompts], "--temperature", "0", "--max-tokens", "32",
                      "--ignore-eos", "--n", "2", "--max-batch", "3", "--logprobs", "3", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "tokens/s" in r.stderr
    assert [(o["index"], o["sample"]) for o in out] == [(i, s) for i in range(3) for s in range(2)]
    for o in out:
        p = prompts[o["index"]]
        assert o["ids"] == hf_greedy(m, p, 32), f"prompt {o['index']} sample {o['sample']}"
        assert o["finish_reason"] == "length" and o["text"] is None
        lp = torch.log_softmax(m(torch.tensor([p + o["ids"]])).logits[0, len(p) - 1:-1].double(), -1)
        for t, (tok, e) in enumerate(zip(o["ids"], o["logprobs"])):
            assert e["id"] == tok
            assert abs(e["logprob"] - lp[t, tok].item()) < 1e-4
            top = torch.topk(lp[t], 3)
            assert [x[0] for x in e["top"]] == top.indices.tolist()
            assert max(abs(x[1] - v) for x, v in zip(e["top"], top.values.tolist())) < 1e-4


def test_seeded_samples_do_not_depend_on_the_batch(retort_bin, llama, tmp_path):
    d, _ = llama
    lines = [{"prompt_ids": [5, 6, 7]}, {"prompt_ids": [300, 301, 302, 303, 304, 305, 306, 307, 308]},
             {"prompt_ids": [9]}]
    args = ["--temperature", "0.9", "--top-p", "0.9", "--top-k", "50", "--min-p", "0.01", "--seed", "7",
            "--max-tokens", "24", "--ignore-eos"]
    _, together = generate(retort_bin, d, lines, *args, "--n", "3", "--max-batch", "16", tmp=tmp_path)
    _, one_by_one = generate(retort_bin, d, lines, *args, "--n", "3", "--max-batch", "1", tmp=tmp_path)
    assert together and together == one_by_one
    # prompt i is seeded with seed + i: prompt 1 alone, with --seed 8, gives the same samples
    r, alone = generate(retort_bin, d, lines[1:2], *args[:8], "--seed", "8", "--max-tokens", "24", "--ignore-eos",
                        "--n", "2", tmp=tmp_path, name="one.jsonl")
    assert r.returncode == 0, r.stderr
    assert [o["ids"] for o in alone] == [o["ids"] for o in together if o["index"] == 1][:2]
    assert together[0]["ids"] != together[1]["ids"], "samples of one prompt should differ"


@pytest.fixture(scope="module")
def qwen_with_tokenizer(tmp_path_factory):
    tok_path = os.path.join(ROOT, "..", "shared", "assets", "tokenizers", "qwen3", "tokenizer.json")
    tok_path = os.path.join(os.environ.get("RETORT_ASSETS", os.path.dirname(os.path.dirname(os.path.dirname(tok_path)))),
                            "tokenizers", "qwen3", "tokenizer.json")
    if not os.path.exists(tok_path):
        pytest.skip(f"skipped: {tok_path} absent (set RETORT_ASSETS)")
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(tok_path)
    cfg = json.load(open(os.path.join(ROOT, "configs", "models", "tiny-qwen2.json")))
    cfg.update(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, eos_token_id=tok.token_to_id("<|im_end|>"))
    d = tmp_path_factory.mktemp("genq") / "qwen"
    m = make_model(d, cfg, 43)
    return d, m, tok, tok_path


def test_text_prompts_messages_and_stop_strings(retort_bin, qwen_with_tokenizer, tmp_path):
    d, m, tok, tok_path = qwen_with_tokenizer
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    lines = [{"prompt": "The quick brown fox"}, {"messages": msgs}]
    r, out = generate(retort_bin, d, lines, "--tokenizer", tok_path, "--template", "qwen", "--temperature", "0",
                      "--max-tokens", "20", "--ignore-eos", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    p0 = tok.encode("The quick brown fox").ids
    assert out[0]["ids"] == hf_greedy(m, p0, 20)
    assert out[0]["text"] == tok.decode(out[0]["ids"], skip_special_tokens=True)
    chat = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n" \
           "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    p1 = tok.encode(chat, add_special_tokens=False).ids
    assert out[1]["ids"] == hf_greedy(m, p1, 20)
    # a stop string taken from the middle of the greedy text
    text = out[0]["text"]
    stop = text[len(text) // 2:len(text) // 2 + 3]
    if not stop.strip():
        pytest.skip("greedy text has no usable stop string")
    r, st = generate(retort_bin, d, lines[:1], "--tokenizer", tok_path, "--temperature", "0", "--max-tokens", "20",
                     "--ignore-eos", "--stop", stop, tmp=tmp_path, name="stop.jsonl")
    assert r.returncode == 0, r.stderr
    assert st[0]["finish_reason"] == "stop"
    assert st[0]["text"] == text[:text.index(stop)]
    assert st[0]["ids"] == out[0]["ids"][:len(st[0]["ids"])]


def test_bad_input_names_the_line(retort_bin, llama, tmp_path):
    d, _ = llama
    cases = [
        ('{"prompt_ids": [1, 2]}\n{"prompt_ids": [1,\n', "line 2", "invalid JSON"),
        ('{"prompt_ids": [1, 2]}\n\n{"prompt_ids": [1, 99999]}\n', "line 3", "prompt_ids[1]"),
        ('{"prompt": "hello"}\n', "line 1", "tokenizer"),
        ('{"prompt_ids": []}\n', "line 1", "non-empty"),
        ('{"foo": 1}\n', "line 1", "exactly one"),
        ('[1, 2]\n', "line 1", "object"),
    ]
    for text, *needles in cases:
        p = tmp_path / "bad.jsonl"
        p.write_text(text)
        r = run([retort_bin, "generate", "--model", str(d), "--jsonl", str(p)])
        assert_one_error_line(r, *needles)
    r = run([retort_bin, "generate", "--model", str(tmp_path / "none"), "--jsonl", str(p)])
    assert r.returncode == 1 and r.stdout == ""


def test_usage_errors_exit_2(retort_bin, llama, tmp_path):
    d, _ = llama
    p = tmp_path / "in.jsonl"
    p.write_text('{"prompt_ids": [1]}\n')
    for args in (["--jsonl", str(p)], ["--model", str(d)], ["--model", str(d), "--jsonl", str(p), "--top-p", "2"],
                 ["--model", str(d), "--jsonl", str(p), "--n", "0"], ["--model", str(d), "--jsonl", str(p), "--bogus"],
                 ["--model", str(d), "--jsonl", str(p), "--max-tokens", "1.5"],
                 ["--model", str(d), "--jsonl", str(p), "--template", "nope"],
                 ["--model", str(d), "--jsonl", str(p), "--stop", "x"]):
        r = run([retort_bin, "generate", *args])
        assert r.returncode == 2, (args, r.stderr)
        assert r.stdout == ""


def test_deepseek_greedy_and_n_samples_match_transformers(retort_bin, tmp_path):
    cfg = json.load(open(os.path.join(ROOT, "configs", "models", "tiny-deepseek-v3.json")))
    cfg.pop("quantization_config")
    cfg.update(num_nextn_predict_layers=0, n_group=4, topk_group=2)
    d = tmp_path / "ds"
    m = make_model(d, cfg, 45)
    prompts = [[3, 1, 4, 1, 5, 9, 2, 6], [27, 18, 28]]
    r, out = generate(retort_bin, d, [{"prompt_ids": p} for p in prompts], "--temperature", "0", "--max-tokens", "24",
                      "--ignore-eos", "--n", "2", "--cache-tokens", "256", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(out) == 4
    for o in out:
        assert o["ids"] == hf_greedy(m, prompts[o["index"]], 24), f"prompt {o['index']} sample {o['sample']}"


def add_mtp_layer(d, seed):
    """An MTP layer on a saved DeepSeek-V3 checkpoint (model.layers.<L>.*: a perturbed copy of the
    last decoder layer, random enorm/hnorm/eh_proj/shared_head.norm, the main embedding and head),
    num_nextn_predict_layers 1. transformers ignores it: its greedy tokens stay the reference."""
    from safetensors.torch import load_file, save_file
    path = d / "model.safetensors"
    sd = load_file(str(path))
    cfg = json.load(open(d / "config.json"))
    L, D = cfg["num_hidden_layers"], cfg["hidden_size"]
    g = torch.Generator().manual_seed(seed)
    last = f"model.layers.{L - 1}."
    for k in [k for k in sd if k.startswith(last)]:
        v = sd[k]
        sd[f"model.layers.{L}." + k[len(last):]] = v + 0.3 * v.std() * torch.randn(v.shape, generator=g) if v.numel() > 1 else v.clone()
    sd[f"model.layers.{L}.embed_tokens.weight"] = sd["model.embed_tokens.weight"].clone()
    for n in ("enorm", "hnorm", "shared_head.norm"):
        sd[f"model.layers.{L}.{n}.weight"] = 1 + 0.2 * torch.randn(D, generator=g)
    sd[f"model.layers.{L}.eh_proj.weight"] = torch.randn(D, 2 * D, generator=g) / math.sqrt(2 * D)
    sd[f"model.layers.{L}.shared_head.head.weight"] = sd["lm_head.weight"].clone()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata={"format": "pt"})
    cfg["num_nextn_predict_layers"] = 1
    json.dump(cfg, open(d / "config.json", "w"))


def test_speculative_mtp_gives_transformers_greedy_tokens(retort_bin, tmp_path):
    """--speculative mtp on the CPU engine: the ids of transformers' greedy generate (the MTP layer
    only drafts), the acceptance in the progress line; sampling, --n 2, --logprobs, another
    method and a model without MTP weights are refused with one line before any output. (The
    --device cuda path runs sd_greedy_cuda, tested on the CPU stand-ins in test_ds_cuda_fake.)"""
    cfg = json.load(open(os.path.join(ROOT, "configs", "models", "tiny-deepseek-v3.json")))
    cfg.pop("quantization_config")
    cfg.update(num_nextn_predict_layers=0, n_group=4, topk_group=2)
    d = tmp_path / "ds"
    m = make_model(d, cfg, 45)
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in ("config.json", "model.safetensors"):
        (plain / f).write_bytes((d / f).read_bytes())
    add_mtp_layer(d, 46)
    prompts = [[3, 1, 4, 1, 5, 9, 2, 6], [27, 18, 28]]
    lines = [{"prompt_ids": p} for p in prompts]
    r, out = generate(retort_bin, d, lines, "--speculative", "mtp", "--temperature", "0", "--max-tokens", "24",
                      "--ignore-eos", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [o["index"] for o in out] == [0, 1]
    for o in out:
        assert o["ids"] == hf_greedy(m, prompts[o["index"]], 24), f"prompt {o['index']}"
        assert o["finish_reason"] == "length"
    assert "MTP drafts accepted" in r.stderr.splitlines()[-1], r.stderr
    for args in (["--temperature", "1"], ["--temperature", "0", "--n", "2"], ["--temperature", "0", "--logprobs", "1"]):
        r, _ = generate(retort_bin, d, lines, "--speculative", "mtp", *args, tmp=tmp_path)
        assert r.returncode == 2 and r.stdout == "" and "decodes greedily" in r.stderr, (args, r.stderr)
    r, _ = generate(retort_bin, d, lines, "--speculative", "eagle", "--temperature", "0", tmp=tmp_path)
    assert r.returncode == 2 and r.stdout == "" and "--speculative wants mtp" in r.stderr
    r, _ = generate(retort_bin, plain, lines, "--speculative", "mtp", "--temperature", "0", tmp=tmp_path)
    assert_one_error_line(r, "MTP layer", "num_nextn_predict_layers")
