"""FP8-resident DeepSeek-V3 on the CPU (teacher/deepseek.h, issue #15): a checkpoint stored as
R1 is (linear layers e4m3 with 128x128 weight_scale_inv, the rest BF16, router bias F32), made
here with FP8 matrices large enough that their bytes dominate (~37 MB of e4m3 against ~4 MB of
other tensors), loaded by tests/tools/ds_resident.c, which reports ds_resident_bytes and the
process's VmRSS / VmHWM from /proc/self/status around ds_load.

Expected sizes come from the checkpoint's own headers (safetensors in Python): the e4m3
bytes, the scale bytes, and every other tensor as f32 (4 bytes per element, what the engine
converts them to). Bounds: the model's count and the RSS growth (after the load, and at its
peak) stay within 1.25x of e4m3 + scales + other-as-f32 (the slack covers allocator rounding,
the per-layer tables, the one tensor being copied while its mapping pages are resident, and the
process's own noise), and at least the e4m3 bytes are held. Widening to f32 would hold ~4x
the e4m3 bytes, so the test also checks the growth is under half of that.

Under mpirun (2 and 3 ranks, ds_load_parallel), each rank's e4m3 bytes equal, to the 64-byte
rounding of each slice, what teacher/parallel.h's layout gives it (worked out here from the
rules: heads' rows of q_b/kv_b and columns of o_proj, the dense MLP's columns, experts
e mod P, q_a/kv_a/shared experts replicated); its count and RSS growth stay within 1.25x of that
plus the scales and the f32 tensors."""
import json
import os
import subprocess

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import ROOT

torch.set_grad_enabled(False)
QUANTIZED = ("q_a_proj", "q_b_proj", "q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj", "up_proj",
             "down_proj", "eh_proj")


def tool(tools_dir):
    t = os.path.join(tools_dir, "ds_resident")
    if not os.access(t, os.X_OK):
        pytest.fail(f"{t} not built (make tests-build)")
    return t


def quantize(w, b=128):
    """DeepSeek's scheme, vectorized: per 128x128 block scale = amax / 448, q = fp8(w / scale)."""
    r, c = w.shape
    br, bc = -(-r // b), -(-c // b)
    p = torch.zeros(br * b, bc * b)
    p[:r, :c] = w
    blk = p.reshape(br, b, bc, b)
    s = blk.abs().amax(dim=(1, 3)).clamp_min(1e-12) / 448.0
    q = (blk / s[:, None, :, None]).to(torch.float8_e4m3fn).reshape(br * b, bc * b)[:r, :c]
    return q.contiguous(), s.float().contiguous()


def shapes(c):
    """Every tensor of a DeepSeek-V3 checkpoint with config c (no MTP): name -> shape."""
    D, H, V = c["hidden_size"], c["num_attention_heads"], c["vocab_size"]
    dq = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    R, dr, dv = c["kv_lora_rank"], c["qk_rope_head_dim"], c["v_head_dim"]
    t = {"model.embed_tokens.weight": (V, D), "model.norm.weight": (D,), "lm_head.weight": (V, D)}

    def mlp(p, inter):
        t.update({f"{p}.gate_proj.weight": (inter, D), f"{p}.up_proj.weight": (inter, D),
                  f"{p}.down_proj.weight": (D, inter)})

    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        t.update({f"{p}.input_layernorm.weight": (D,), f"{p}.post_attention_layernorm.weight": (D,),
                  f"{p}.self_attn.q_a_proj.weight": (c["q_lora_rank"], D),
                  f"{p}.self_attn.q_a_layernorm.weight": (c["q_lora_rank"],),
                  f"{p}.self_attn.q_b_proj.weight": (H * dq, c["q_lora_rank"]),
                  f"{p}.self_attn.kv_a_proj_with_mqa.weight": (R + dr, D),
                  f"{p}.self_attn.kv_a_layernorm.weight": (R,),
                  f"{p}.self_attn.kv_b_proj.weight": (H * (c["qk_nope_head_dim"] + dv), R),
                  f"{p}.self_attn.o_proj.weight": (D, H * dv)})
        if i < c["first_k_dense_replace"]:
            mlp(f"{p}.mlp", c["intermediate_size"])
        else:
            E = c["n_routed_experts"]
            t.update({f"{p}.mlp.gate.weight": (E, D), f"{p}.mlp.gate.e_score_correction_bias": (E,)})
            for e in range(E):
                mlp(f"{p}.mlp.experts.{e}", c["moe_intermediate_size"])
            mlp(f"{p}.mlp.shared_experts", c["moe_intermediate_size"] * c["n_shared_experts"])
    return t


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = json.load(open(os.path.join(ROOT, "configs", "models", "tiny-deepseek-v3.json")))
    cfg.update(hidden_size=1024, intermediate_size=2048, moe_intermediate_size=1024, n_routed_experts=8,
               n_shared_experts=1, num_hidden_layers=2, num_nextn_predict_layers=0, vocab_size=512)
    d = tmp_path_factory.mktemp("fp8mem")
    g = torch.Generator().manual_seed(15)
    out = {}
    for name, shape in shapes(cfg).items():
        leaf = name.split(".")[-2]
        if len(shape) == 2 and leaf in QUANTIZED:
            w = torch.randn(shape, generator=g) / shape[1] ** 0.5
            out[name], out[name + "_scale_inv"] = quantize(w)
        elif name.endswith("e_score_correction_bias"):
            out[name] = 0.01 * torch.randn(shape, generator=g)
        elif name.endswith("norm.weight"):
            out[name] = (1 + 0.1 * torch.randn(shape, generator=g)).to(torch.bfloat16)
        else:
            out[name] = (torch.randn(shape, generator=g) / shape[-1] ** 0.5).to(torch.bfloat16)
    names = sorted(out)   # two shards, as R1 is sharded
    wm = {}
    for s, part in enumerate((names[:len(names) // 2], names[len(names) // 2:])):
        fn = f"model-{s + 1:05d}-of-00002.safetensors"
        save_file({k: out[k] for k in part}, str(d / fn), metadata={"format": "pt"})
        wm.update({k: fn for k in part})
    json.dump({"metadata": {}, "weight_map": wm}, open(d / "model.safetensors.index.json", "w"))
    json.dump(cfg, open(d / "config.json", "w"))
    return d


def expected_sizes(d):
    """From the files' headers: e4m3 bytes, scale bytes, other tensors as f32 bytes."""
    fp8 = scales = other = 0
    for fn in sorted(os.listdir(d)):
        if not fn.endswith(".safetensors"):
            continue
        with safe_open(str(d / fn), "pt") as f:
            for k in f.keys():
                sl = f.get_slice(k)
                n = 1
                for s in sl.get_shape():
                    n *= s
                if sl.get_dtype() == "F8_E4M3":
                    fp8 += n
                elif k.endswith("_scale_inv"):
                    scales += 4 * n
                else:
                    other += 4 * n
    return fp8, scales, other


@pytest.mark.parametrize("threads", [1, 2])
def test_fp8_weights_stay_about_one_byte_per_parameter(checkpoint, tools_dir, threads):
    fp8, scales, other = expected_sizes(checkpoint)
    assert fp8 > 30e6 and fp8 > 5 * other, "the test checkpoint's FP8 bytes must dominate"
    want = fp8 + scales + other
    widened = 4 * fp8 + scales + other
    r = subprocess.run([tool(tools_dir), str(checkpoint), str(threads)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["logits_finite"] == 1
    grow, peak = got["rss_after"] - got["rss_before"], got["hwm_after"] - got["rss_before"]
    print(f"threads {threads}: e4m3 {fp8 / 1e6:.1f} MB, scales {scales / 1e3:.1f} kB, other as f32 "
          f"{other / 1e6:.1f} MB; ds_resident_bytes {got['resident'] / 1e6:.1f} MB "
          f"(fp8 {got['fp8'] / 1e6:.1f}, scales {got['scales'] / 1e3:.1f} kB, f32 {got['f32'] / 1e6:.1f}, "
          f"other {got['other'] / 1e3:.1f} kB); RSS +{grow / 1e6:.1f} MB, peak +{peak / 1e6:.1f} MB "
          f"(f32 widening would hold {widened / 1e6:.1f} MB)")
    # the model's own count: every e4m3 byte and scale held once, the rest as f32
    assert fp8 <= got["fp8"] <= fp8 * 1.01
    assert scales <= got["scales"] <= scales + 64 * 1000
    assert other <= got["f32"] <= other * 1.05
    assert fp8 <= got["resident"] <= 1.25 * want
    # what the process holds: after the load and at its peak
    assert got["hwm_reset"] == 1, "could not reset the peak RSS (/proc/self/clear_refs)"
    assert 0.9 * fp8 <= grow <= 1.25 * want
    assert peak <= 1.25 * want
    assert peak < 0.5 * widened


def split(n, rank, size):
    """teacher/parallel.h's contiguous split: the first n % size ranks take one more."""
    q, r = divmod(n, size)
    return rank * q + min(rank, r), q + (1 if rank < r else 0)


def rank_fp8_bytes(cfg, rank, size):
    """The e4m3 bytes rank `rank` of `size` should hold, from the layout rules of
    teacher/parallel.h: heads' rows of q_b/kv_b and columns of o_proj, the dense MLP's columns,
    experts e with e % size == rank; q_a, kv_a and the shared experts replicated."""
    D, H, R = cfg["hidden_size"], cfg["num_attention_heads"], cfg["kv_lora_rank"]
    dq = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
    dkv, dv = cfg["qk_nope_head_dim"] + cfg["v_head_dim"], cfg["v_head_dim"]
    _, nh = split(H, rank, size)
    _, ni = split(cfg["intermediate_size"], rank, size)
    mi = cfg["moe_intermediate_size"]
    total = 0
    for i in range(cfg["num_hidden_layers"]):
        total += cfg["q_lora_rank"] * D + (R + cfg["qk_rope_head_dim"]) * D   # replicated
        total += nh * dq * cfg["q_lora_rank"] + nh * dkv * R + D * nh * dv
        if i < cfg["first_k_dense_replace"]:
            total += 3 * ni * D
        else:
            held = sum(1 for e in range(cfg["n_routed_experts"]) if e % size == rank)
            total += 3 * mi * D * (held + cfg["n_shared_experts"])
    return total


@pytest.mark.parametrize("ranks", [2, 3])
def test_parallel_ranks_hold_their_share_in_fp8(checkpoint, tools_dir, ranks):
    import shutil
    mpirun = shutil.which("mpirun")
    if not mpirun:
        pytest.skip("skipped: mpirun not installed (make deps installs openmpi-bin)")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if "ASAN_OPTIONS" in env:
        env["ASAN_OPTIONS"] += ":detect_leaks=0"
    cfg = json.load(open(checkpoint / "config.json"))
    fp8, scales, other = expected_sizes(checkpoint)
    assert rank_fp8_bytes(cfg, 0, 1) == fp8, "the layout model must account for every e4m3 byte"
    r = subprocess.run([mpirun, "--oversubscribe", "-np", str(ranks), "--mca", "btl", "self,vader", tool(tools_dir),
                        str(checkpoint), "1", "parallel"], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    got = sorted((json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")), key=lambda g: g["rank"])
    assert [g["rank"] for g in got] == list(range(ranks)) and all(g["logits_finite"] == 1 for g in got)
    for g in got:
        want = rank_fp8_bytes(cfg, g["rank"], ranks)
        grow = g["rss_after"] - g["rss_before"]
        print(f"{ranks} ranks, rank {g['rank']}: e4m3 held {g['fp8'] / 1e6:.2f} MB (layout says {want / 1e6:.2f}), "
              f"ds_resident_bytes {g['resident'] / 1e6:.2f} MB, RSS +{grow / 1e6:.2f} MB (1 rank: e4m3 {fp8 / 1e6:.2f})")
        # each FP8 slice is one allocation rounded up to 64 bytes: < 64 per tensor, < 100 tensors
        assert want <= g["fp8"] <= want + 64 * 100
        assert g["resident"] <= 1.25 * (want + scales + other)
        assert grow <= 1.25 * (want + scales + other)
        assert g["fp8"] < 0.7 * fp8   # a share, not the whole model
