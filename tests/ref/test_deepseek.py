"""DeepSeek-V3 logits from retort (tests/tools/ds_logits.c) against PyPI transformers on BF16
checkpoints written by save_pretrained (sharded), a batch of prompts of different lengths,
through the naive, absorbed and prefill+decode paths. transformers runs in f32 on the same
BF16 weights, so the bound is the f32 one: max |dlogit| < 1e-4."""
import json
import math
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

from conftest import ROOT, run

torch.set_grad_enabled(False)


def tool(tools_dir):
    t = os.path.join(tools_dir, "ds_logits")
    if not os.access(t, os.X_OK):
        pytest.fail(f"{t} not built (make tests-build)")
    return t


def model_dir(tmp_path, q_lora, seed):
    cfg = json.load(open(os.path.join(ROOT, "configs", "models", "tiny-deepseek-v3.json")))
    cfg.pop("quantization_config")
    cfg["num_nextn_predict_layers"] = 0
    cfg["n_group"], cfg["topk_group"] = 4, 2
    if not q_lora:
        cfg["q_lora_rank"] = None       # plain q_proj, as DeepSeek-V2-Lite
    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), attn_implementation="eager").float()
    g = torch.Generator().manual_seed(seed)
    for name, p in m.named_parameters():
        if name.endswith("norm.weight"):
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
        elif "embed_tokens" in name:
            p.copy_(torch.randn(p.shape, generator=g))
        elif name.endswith("gate.weight"):
            p.copy_(0.08 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.8 / math.sqrt(p.shape[-1]) * torch.randn(p.shape, generator=g))
    for name, b in m.named_buffers():
        if name.endswith("e_score_correction_bias"):
            b.copy_(0.1 * torch.randn(b.shape, generator=g))
    d = tmp_path / f"ds-bf16-{q_lora}"
    m.to(torch.bfloat16).save_pretrained(str(d), max_shard_size="1MB")
    ref = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32, attn_implementation="eager").eval()
    return d, ref, cfg["vocab_size"]


@pytest.fixture(scope="module", params=[True, False], ids=["q_lora", "q_proj"])
def bf16_model(request, tmp_path_factory):
    d, ref, V = model_dir(tmp_path_factory.mktemp("ds"), request.param, seed=5)
    g = torch.Generator().manual_seed(6)
    prompts = [torch.randint(0, V, (n,), generator=g) for n in (2, 19, 64, 270)]
    want = [ref(p[None]).logits[0].float() for p in prompts]
    return d, prompts, want


@pytest.mark.parametrize("mode", ["naive", "absorbed", "decode"])
def test_bf16_sharded_logits_match_transformers(bf16_model, tools_dir, tmp_path, mode):
    d, prompts, want = bf16_model
    assert os.path.exists(d / "model.safetensors.index.json"), "expected a sharded checkpoint"
    save_file({f"p{i}": p.to(torch.int32) for i, p in enumerate(prompts)}, str(tmp_path / "in.safetensors"))
    p = run([tool(tools_dir), str(d), str(tmp_path / "in.safetensors"), str(tmp_path / "out.safetensors"), mode, "2"])
    assert p.returncode == 0, p.stderr
    got = load_file(str(tmp_path / "out.safetensors"))
    for i, w in enumerate(want):
        diff = (got[f"p{i}"] - w).abs().max().item()
        assert diff < 1e-4, f"prompt {i} ({len(prompts[i])} tokens, {mode}): max |dlogit| = {diff}"


def test_tool_reports_a_missing_model(tools_dir, tmp_path):
    save_file({"p0": torch.zeros(3, dtype=torch.int32)}, str(tmp_path / "in.safetensors"))
    p = run([tool(tools_dir), str(tmp_path / "none"), str(tmp_path / "in.safetensors"), str(tmp_path / "o.safetensors")])
    assert p.returncode == 1 and "ds_logits:" in p.stderr
