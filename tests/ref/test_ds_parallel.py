"""Tensor-parallel attention and expert-parallel MoE (teacher/parallel.h) on CPU with the MPI
backend: tests/tools/ds_parallel_logits.c under mpirun -np 1..4 on a small DeepSeek-V3 shape
stored as R1 is (projections FP8 e4m3 with 128x128 block scales, the rest BF16, 2 shards):
2 layers (one dense, one MoE) and an MTP layer, 4 heads, 8 routed experts + 1 shared,
group-limited routing.

Expected values: transformers' DeepseekV3ForCausalLM (f32, eager) on the dequantized weights,
its logits and its greedy continuation (recomputed from scratch each step, no cache), and the
serial ds_forward (itself tested against transformers in test_deepseek.py).

Tolerances: the serial forward is f32 like transformers, so max |dlogit| < 1e-4 as in
test_deepseek.py. One rank must give exactly ds_forward's bits (same arithmetic, the
collectives are copies). P > 1 ranks change only the association of two sums — o_proj over
heads and the dense MLP over its columns are P partial sums added in rank order — so logits
stay within the same 1e-4 of the serial run (the largest seen is printed), and the greedy tokens
are identical."""
import glob
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

from conftest import ROOT, run

sys.path.insert(0, os.path.dirname(__file__))
from test_inspect import QUANTIZED, quantize_block  # noqa: E402  DeepSeek's 128x128 scheme

torch.set_grad_enabled(False)
TOL = 1e-4
NGEN = 8
HEADS, EXPERTS = 4, 8


def tool(tools_dir):
    t = os.path.join(tools_dir, "ds_parallel_logits")
    if not os.access(t, os.X_OK):
        pytest.fail(f"{t} not built (make tests-build)")
    return t


def mpirun_cmd(ranks):
    mpirun = shutil.which("mpirun")
    if not mpirun:
        pytest.skip("skipped: mpirun not installed (make deps installs openmpi-bin)")
    return [mpirun, "--oversubscribe", "-np", str(ranks), "--mca", "btl", "self,vader"]


def mpi_env():
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if "ASAN_OPTIONS" in env:  # Open MPI's start-up allocations read as leaks (see test_comm.py)
        env["ASAN_OPTIONS"] += ":detect_leaks=0"
    return env


def write_sharded(d, tensors, cfg, n_shards):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    names = sorted(tensors)
    per = -(-len(names) // n_shards)
    wm = {}
    for s in range(n_shards):
        fn = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: tensors[k].contiguous() for k in names[s * per:(s + 1) * per]}
        save_file(part, os.path.join(d, fn), metadata={"format": "pt"})
        wm.update({k: fn for k in part})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": wm}, f)


def build(tmp, q_lora=True):
    """The test checkpoint in tmp/fp8, and transformers' results on its dequantized weights.
    q_lora False: a plain q_proj (as DeepSeek-V2-Lite) instead of q_a/q_b."""
    cfg = json.load(open(os.path.join(ROOT, "configs", "models", "tiny-deepseek-v3.json")))
    cfg.update(num_hidden_layers=2, first_k_dense_replace=1, num_nextn_predict_layers=0, n_group=4, topk_group=2,
               num_attention_heads=HEADS, num_key_value_heads=HEADS, n_routed_experts=EXPERTS)
    if not q_lora:
        cfg["q_lora_rank"] = None
    plain = dict(cfg)
    plain.pop("quantization_config")
    torch.manual_seed(41)
    m = AutoModelForCausalLM.from_config(AutoConfig.for_model(**plain), attn_implementation="eager").float()
    g = torch.Generator().manual_seed(41)
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
    m.save_pretrained(str(tmp / "src"))
    sd = {}
    for fn in glob.glob(str(tmp / "src" / "*.safetensors")):
        with safe_open(fn, "pt") as f:
            sd.update({k: f.get_tensor(k) for k in f.keys()})
    # the MTP layer (model.layers.2.*), as gen_deepseek.py builds it: a perturbed copy of the
    # last layer plus its own embedding, norms, eh_proj and head (transformers has no MTP, so
    # the reference for its draft logits is the serial ds_mtp_forward, tested in test_deepseek.c)
    L, D, V = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]
    gm, last = torch.Generator().manual_seed(43), f"model.layers.{L - 1}."
    for k in [k for k in sd if k.startswith(last)]:
        v = sd[k]
        sd[f"model.layers.{L}." + k[len(last):]] = v + 0.3 * v.std() * torch.randn(v.shape, generator=gm) if v.numel() > 1 else v.clone()
    sd[f"model.layers.{L}.embed_tokens.weight"] = sd["model.embed_tokens.weight"].clone()
    for nm in ("enorm", "hnorm", "shared_head.norm"):
        sd[f"model.layers.{L}.{nm}.weight"] = 1 + 0.2 * torch.randn(D, generator=gm)
    sd[f"model.layers.{L}.eh_proj.weight"] = 0.8 / math.sqrt(2 * D) * torch.randn(D, 2 * D, generator=gm)
    sd[f"model.layers.{L}.shared_head.head.weight"] = 1 / math.sqrt(D) * torch.randn(V, D, generator=gm)
    stored, deq = {}, {}
    for k, v in sd.items():
        if k.endswith(".weight") and v.ndim == 2 and k.split(".")[-2] in QUANTIZED:
            q, s = quantize_block(v)
            stored[k], stored[k + "_scale_inv"] = q, s
            r, c = v.shape
            deq[k] = q.float() * s.repeat_interleave(128, 0)[:r].repeat_interleave(128, 1)[:, :c]
        elif k.endswith("e_score_correction_bias"):
            stored[k] = deq[k] = v.float()
        else:
            stored[k] = v.to(torch.bfloat16)
            deq[k] = stored[k].float()
    assert any(k.endswith("_scale_inv") for k in stored)
    fp8 = tmp / "fp8"
    write_sharded(str(fp8), stored, dict(cfg, num_nextn_predict_layers=1), n_shards=2)
    write_sharded(str(tmp / "deq"), {k: v for k, v in deq.items() if not k.startswith(f"model.layers.{L}.")}, plain,
                  n_shards=1)
    ref = AutoModelForCausalLM.from_pretrained(str(tmp / "deq"), dtype=torch.float32, attn_implementation="eager").eval()
    prompt = torch.randint(0, V, (37,), generator=torch.Generator().manual_seed(42))
    want_logits = ref(prompt[None]).logits[0].float()

    def greedy(seq):   # every step from scratch, no cache
        toks, dec = [], []
        for i in range(NGEN):
            lg = ref(seq[None]).logits[0, -1].float()
            if i:
                dec.append(lg)
            toks.append(int(lg.argmax()))
            seq = torch.cat([seq, torch.tensor([toks[-1]])])
        return toks, torch.stack(dec)

    toks, dec = greedy(prompt)
    b_prompt = prompt[:len(prompt) // 2 + 1].flip(0)   # the tool's second sequence in paged mode
    b_toks, _ = greedy(b_prompt)
    save_file({"prompt": prompt.to(torch.int32)}, str(tmp / "in.safetensors"))
    return {"dir": str(fp8), "in": str(tmp / "in.safetensors"), "logits": want_logits, "tokens": toks, "dec": dec,
            "b_logits": ref(b_prompt[None]).logits[0].float(), "b_tokens": b_toks, "tmp": tmp}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build(tmp_path_factory.mktemp("dsp"))


def run_tool(tools_dir, model, ranks, mode="parallel", tag=None):
    out = str(model["tmp"] / f"out-{tag or mode}-{ranks}.safetensors")
    args = [tool(tools_dir), model["dir"], model["in"], out, str(NGEN), "1", mode]
    if ranks is None:
        p = run(args, timeout=300)
    else:
        p = subprocess.run(mpirun_cmd(ranks) + args, capture_output=True, text=True, timeout=600, env=mpi_env())
    assert p.returncode == 0, p.stdout + p.stderr
    return load_file(out)


@pytest.fixture(scope="module")
def serial(model, tools_dir):
    return run_tool(tools_dir, model, None, "serial")


def test_serial_matches_transformers(model, serial):
    d = (serial["logits"] - model["logits"]).abs().max().item()
    assert d < TOL, f"prompt: max |dlogit| = {d}"
    assert serial["tokens"].tolist() == model["tokens"]
    d = (serial["decode_logits"] - model["dec"]).abs().max().item()
    assert d < TOL, f"decode: max |dlogit| = {d}"


def test_one_rank_is_bit_identical_to_ds_forward(model, serial, tools_dir):
    one = run_tool(tools_dir, model, 1)
    for k in ("logits", "tokens", "decode_logits", "mtp_logits"):
        assert torch.equal(one[k], serial[k]), f"{k}: max diff {(one[k].float() - serial[k].float()).abs().max().item()}"
    assert one["layout"].tolist() == [[HEADS, 512, 512, EXPERTS]]
    assert one["bytes"].tolist() == serial["bytes"].tolist()


@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_ranks_match_one_rank(model, serial, tools_dir, ranks):
    got = run_tool(tools_dir, model, ranks)
    d = (got["logits"] - serial["logits"]).abs().max().item()
    dd = (got["decode_logits"] - serial["decode_logits"]).abs().max().item()
    print(f"{ranks} ranks: max |dlogit| vs 1 rank: prompt {d:.3g}, decode {dd:.3g}")
    assert d < TOL and dd < TOL, (d, dd)
    assert got["tokens"].tolist() == serial["tokens"].tolist() == model["tokens"]
    assert (got["logits"] - model["logits"]).abs().max().item() < TOL
    dm = (got["mtp_logits"] - serial["mtp_logits"]).abs().max().item()
    print(f"{ranks} ranks: MTP draft max |dlogit| vs 1 rank {dm:.3g}")
    assert dm < TOL


@pytest.mark.parametrize("ranks", [2, 4])
def test_paged_batch_matches(model, tools_dir, ranks):
    """ds_forward_paged (the engine's forward) over a batch of two sequences of different
    lengths, prefilled together and decoded side by side."""
    want = run_tool(tools_dir, model, None, "serial-paged")
    got = run_tool(tools_dir, model, ranks, "paged")
    for k in ("logits", "decode_logits", "b_logits"):
        d = (got[k] - want[k]).abs().max().item()
        assert d < TOL, f"{k}: max |dlogit| vs 1 rank = {d}"
    assert (want["logits"] - model["logits"]).abs().max().item() < TOL
    assert (want["b_logits"] - model["b_logits"]).abs().max().item() < TOL
    assert got["tokens"].tolist() == want["tokens"].tolist() == model["tokens"]
    assert got["b_tokens"].tolist() == want["b_tokens"].tolist() == model["b_tokens"]


# per rank: heads, dense-MLP columns (intermediate_size 512), vocabulary rows (512), experts
# (round-robin: expert e on rank e mod P) — worked out by hand from the documented layout
LAYOUTS = {
    2: [[2, 256, 256, 4], [2, 256, 256, 4]],
    3: [[2, 171, 171, 3], [1, 171, 171, 3], [1, 170, 170, 2]],
    4: [[1, 128, 128, 2]] * 4,
}


@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_each_rank_reads_only_its_part(model, serial, tools_dir, ranks):
    got = run_tool(tools_dir, model, ranks, tag="bytes")
    assert got["layout"].tolist() == LAYOUTS[ranks]
    total, experts = serial["bytes"][0].tolist()
    # one expert: gate, up [128, 256] and down [256, 128] FP8 bytes + one 1x2 / 2x1 scale block each;
    # two MoE layers (layer 1 and the MTP layer)
    one_expert = 2 * (3 * 128 * 256 + 3 * 2 * 4)
    assert experts == EXPERTS * one_expert
    per_rank = got["bytes"].tolist()
    for r, (b, e) in enumerate(per_rank):
        assert e == LAYOUTS[ranks][r][3] * one_expert, (r, e)
        assert b < total
    print(f"{ranks} ranks: bytes read per rank {[b for b, _ in per_rank]} (1 rank: {total}); "
          f"expert bytes {[e for _, e in per_rank]} (1 rank: {experts})")
    if ranks == 4:
        assert all(e * 4 == experts for _, e in per_rank)


def test_more_ranks_than_heads_is_one_clear_error(model, tools_dir):
    out = str(model["tmp"] / "never.safetensors")
    p = subprocess.run(mpirun_cmd(HEADS + 1) + [tool(tools_dir), model["dir"], model["in"], out, "2", "1"],
                       capture_output=True, text=True, timeout=600, env=mpi_env())
    assert p.returncode != 0
    lines = [l for l in p.stderr.splitlines() if l.startswith("ds_parallel_logits:")]
    assert len(lines) == 1, p.stderr
    assert f"{HEADS + 1} ranks but the model has {HEADS} attention heads" in lines[0], lines[0]
    assert not os.path.exists(out)


@pytest.mark.parametrize("ranks", [None, 2, 3])
def test_engine_lockstep_follows_rank_0(model, tools_dir, ranks):
    """teacher/parallel_engine: followers get rank 0's submissions and cancellations through
    pe_step and produce the same results, in the same order, as one engine driven directly
    (tests/tools/pe_check.c; every rank holds the whole model until the engine can load
    ds_load_parallel — the protocol is the same)."""
    exe = os.path.join(tools_dir, "pe_check")
    if not os.access(exe, os.X_OK):
        pytest.fail(f"{exe} not built (make tests-build)")
    if ranks is None:
        p = run([exe, model["dir"]], timeout=300)
    else:
        p = subprocess.run(mpirun_cmd(ranks) + [exe, model["dir"]], capture_output=True, text=True, timeout=600,
                           env=mpi_env())
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"pe_check: {ranks or 1} ranks, 6 results" in p.stdout and "hashes equal" in p.stdout, p.stdout


def test_plain_q_proj_splits_too(tmp_path, tools_dir):
    """q_lora_rank null (q_proj [H*dq, D], sliced by the rank's heads like q_b_proj)."""
    m = build(tmp_path, q_lora=False)
    one = run_tool(tools_dir, m, None, "serial")
    assert (one["logits"] - m["logits"]).abs().max().item() < TOL
    for ranks in (2, 4):
        got = run_tool(tools_dir, m, ranks)
        assert (got["logits"] - one["logits"]).abs().max().item() < TOL
        assert (got["decode_logits"] - one["decode_logits"]).abs().max().item() < TOL
        assert got["tokens"].tolist() == one["tokens"].tolist() == m["tokens"]
