"""The CUDA kernels (the student's and the teacher's) run on the CPU through tests/emu/cuda_emu.h
(a warp-level emulator: coroutine threads on an adversarial schedule, barriers for __syncthreads
and every warp collective, ldmatrix and mma.sync m16n8k16 bf16 / m16n8k32 e4m3 from the PTX
fragment layouts, cp.async groups that land early or at the wait), against their CPU twins. This
checks the kernels' tiling, masking, fragment bookkeeping and synchronization on machines without
a GPU; `make gpu-test` checks the real thing. Each driver (tests/emu/*_emu.cpp) prints one line
per comparison with its bound and exits non-zero on any failure.

The emulator's own power is tested too: test_planted_bug_fails_the_comparison compiles a driver
against a copy of a kernel with one deliberate bug (a wrong mma fragment, a missing barrier, a
divergent warp collective) and requires the comparison to fail (or the deadlock to be reported)."""
import glob
import os
import shutil

import pytest

from conftest import ROOT, run

CPU_SRC = ["core/status.c", "core/log.c", "core/alloc.c", "core/threadpool.c", "core/dtype.c",
           "kernels/cpu/attention.c", "kernels/cpu/convert.c", "kernels/cpu/norm.c", "kernels/cpu/rope.c",
           "kernels/cpu/act.c", "kernels/cpu/embed.c", "kernels/cpu/optim.c", "kernels/cpu/noblas/cblas.c",
           "kernels/cpu/matmul.c", "kernels/cpu/gemm.c", "kernels/cpu/gemm_dnnl.c", "kernels/cpu/fp8.c", "kernels/cpu/mla.c", "kernels/cpu/moe.c",
           "kernels/cpu/sample.c", "kernels/cpu/yarn.c", "kernels/cpu/loss.c"]

# (driver, extra compiler flags): every driver once; the FP8 GEMM also on its sm_80 scalar path
DRIVERS = [(os.path.basename(p), []) for p in sorted(glob.glob(os.path.join(ROOT, "tests/emu/*_emu.cpp")))]
DRIVERS.append(("fp8_emu.cpp", ["-DRT_EMU_SM80"]))


def cuda_include():
    cands = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        cands.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for c in cands:
        if c and os.path.exists(os.path.join(c, "include", "cuda_bf16.h")):
            return os.path.join(c, "include")
    return None


@pytest.fixture(scope="module")
def cpu_lib(tmp_path_factory):
    """The CPU twins as one static archive (a driver links only what it uses)."""
    if not shutil.which("g++") or not shutil.which("gcc") or not shutil.which("ar"):
        pytest.skip("skipped: g++/gcc/ar not found")
    if not cuda_include():
        pytest.skip("skipped: no CUDA headers (cuda_bf16.h) to compile the kernels for the emulator")
    d = tmp_path_factory.mktemp("emu")
    objs = []
    for src in CPU_SRC:
        o = d / (src.replace("/", "_") + ".o")
        p = run(["gcc", "-std=c11", "-O2", "-I" + ROOT, "-I" + os.path.join(ROOT, "kernels/cpu/noblas"),
                 "-D_GNU_SOURCE", "-DRT_NO_BLAS", "-c", os.path.join(ROOT, src), "-o", str(o)])
        assert p.returncode == 0, p.stderr
        objs.append(str(o))
    lib = d / "libtwins.a"
    p = run(["ar", "rcs", str(lib), *objs])
    assert p.returncode == 0, p.stderr
    return d, str(lib)


def build(lib, driver, exe, flags=(), first_include=None):
    inc = (["-I" + str(first_include)] if first_include else []) + ["-I" + ROOT, "-I" + cuda_include()]
    p = run(["g++", "-std=c++17", "-O1", "-w", *inc, "-DRT_NO_BLAS", *flags, os.path.join(ROOT, "tests/emu", driver),
             lib, "-o", str(exe), "-lpthread"])
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("driver,flags", DRIVERS, ids=[d + "".join(f) for d, f in DRIVERS])
def test_kernel_on_emulator_matches_cpu_twin(cpu_lib, driver, flags):
    d, lib = cpu_lib
    exe = d / (driver.replace(".cpp", "") + "".join(f.replace("-D", "_") for f in flags))
    build(lib, driver, exe, flags)
    p = run([str(exe)], timeout=600)
    print(p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "FAIL" not in p.stdout
    assert p.stdout.count("ok ") >= 3


# Planted bugs: (name, kernel file, text, replacement, driver, driver arguments, the FAIL line
# that must appear). The text must occur exactly once, so a changed kernel fails loudly here
# instead of silently planting nothing.
PLANTS = [
    # the A fragment registers a1 (rows g+8) and a2 (k+16) swapped in the e4m3 mma
    ("fp8_mma_fragment", "kernels/cuda/fp8_gemm.cu",
     "                af[i][1] = *reinterpret_cast<const uint32_t *>(p + 8 * GB_LDS);\n"
     "                af[i][2] = *reinterpret_cast<const uint32_t *>(p + 16);\n",
     "                af[i][1] = *reinterpret_cast<const uint32_t *>(p + 16);\n"
     "                af[i][2] = *reinterpret_cast<const uint32_t *>(p + 8 * GB_LDS);\n",
     "fp8_emu.cpp", ["grouped"], "FAIL     grouped gemm"),
    # no barrier between the scores (phase 1, written per warp) and the softmax that reads them
    ("mla_missing_syncthreads", "kernels/cuda/ds_mla.cu",
     "        __syncthreads();\n        // phase 2", "        // phase 2",
     "mla_emu.cpp", ["bf16"], "FAIL     decode bf16 cache"),
    # no barrier before the next cp.async overwrites the stage just read (write after read)
    ("fp8_pipeline_war", "kernels/cuda/fp8_gemm.cu",
     "        __syncthreads();   // the stage just read is the next load's target\n", "",
     "fp8_emu.cpp", ["grouped"], "FAIL     grouped gemm"),
    # a warp collective reached by half the lanes while the others wait at __syncthreads: the
    # emulator must report the deadlock (and stop) instead of hanging
    # the top-k logprobs pop every thread's head instead of the winner's (ids unique: one pops)
    ("topk_pop_all", "kernels/cuda/ds_sample.cu",
     "if (best >= 0 && ai[0] == best)", "if (best >= 0 && ai[0] >= 0)",
     "sample_emu.cpp", [], "FAIL     top-20 logprobs"),
    # the paged prefill (tensor cores): Q's A fragments loaded in the B operand's lane order
    # (matrices a1 and a2 swapped)
    ("prefill_q_fragment", "kernels/cuda/paged_attention.cu",
     "ldsm_x4(qf[kc], a_addr(sQ, LD, warp * 16, kc * 16, lane))",
     "ldsm_x4(qf[kc], bn_addr(sQ, LD, warp * 16, kc * 16, lane))",
     "paged_attn_emu.cpp", ["prefill"], "FAIL     prefill mixed"),
    # the P → A fragment of the shared tile step with a register's two halves swapped
    ("attn_tile_p_fragment", "kernels/cuda/mma_tile.cuh",
     "rtk::pack_bf2(s[2 * kc][2], s[2 * kc][3]),\n", "rtk::pack_bf2(s[2 * kc][3], s[2 * kc][2]),\n",
     "paged_attn_emu.cpp", ["prefill"], "FAIL     prefill mixed"),
    # no barrier between the last reads of a K/V buffer and the prefetch into it (write after read)
    ("prefill_missing_syncthreads", "kernels/cuda/paged_attention.cu",
     "        __syncthreads();   // the buffer just read is the next prefetch's target\n", "",
     "paged_attn_emu.cpp", ["prefill"], "FAIL     prefill mixed"),
    # the causal mask one position late: each query also sees the position after its own
    ("prefill_causal_off_by_one", "kernels/cuda/paged_attention.cu",
     ">= (e < 2 ? cA : cB)", "> (e < 2 ? cA : cB)",
     "paged_attn_emu.cpp", ["prefill"], "FAIL     prefill mixed"),
    ("divergent_warp_collective", "kernels/cuda/ds_norm.cu",
     "    ss = warp_sum(ss);\n", "    if (threadIdx.x & 1) ss = warp_sum(ss);\n",
     "ds_misc_emu.cpp", [], "FAIL     emu: deadlock"),
]


@pytest.mark.parametrize("name,src,old,new,driver,args,fail_line", PLANTS, ids=[p[0] for p in PLANTS])
def test_planted_bug_fails_the_comparison(cpu_lib, tmp_path, name, src, old, new, driver, args, fail_line):
    _, lib = cpu_lib
    text = open(os.path.join(ROOT, src)).read()
    assert text.count(old) == 1, f"{name}: the text to replace occurs {text.count(old)} times in {src}"
    planted = tmp_path / "plant" / src
    planted.parent.mkdir(parents=True)
    planted.write_text(text.replace(old, new))
    exe = tmp_path / name
    build(lib, driver, exe, first_include=tmp_path / "plant")   # the copy shadows the real kernel
    p = run([str(exe), *args], timeout=600)
    print(p.stdout)
    assert p.returncode == 1, f"{name}: the planted bug went unnoticed\n" + p.stdout + p.stderr
    assert fail_line in p.stdout, p.stdout
    if "deadlock" not in fail_line:
        assert "deadlock" not in p.stdout, p.stdout


def test_topk_logprobs_kernel_matches_torch(cpu_lib, tmp_path):
    """k_top_logprobs (kernels/cuda/ds_sample.cu) on the emulator against torch.log_softmax (f64)
    and a stable sort of −logits (torch.topk's order among equal values is unspecified; the
    contract is larger logit first, ties by lower id). Rows with planted ties, −inf holes and a
    vocabulary of Qwen's size (151,936). Ids exact, logprobs within 1e-6·max(1, |lp|)."""
    torch = pytest.importorskip("torch")
    import numpy as np
    _, lib = cpu_lib
    exe = tmp_path / "sample_emu"
    build(lib, "sample_emu.cpp", exe)
    g = torch.Generator().manual_seed(17)
    n, V, k = 3, 151936, 20
    x = torch.randn(n, V, generator=g, dtype=torch.float64).float() * 4
    x[0, [5, 70000, 150000, 9]] = x[0].max() + 1   # a four-way tie at the top
    x[1, ::3] = float("-inf")
    x[2, 1000:1100] = x[2].max()                   # a hundred-way tie: the lowest 20 ids
    inp, out = tmp_path / "in.bin", tmp_path / "out.bin"
    with open(inp, "wb") as f:
        f.write(np.array([n, V], dtype=np.int64).tobytes())
        f.write(x.numpy().astype(np.float32).tobytes())
    p = run([str(exe), "topk", str(inp), str(out), str(k)], timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    raw = open(out, "rb").read()
    ids = np.frombuffer(raw[: n * k * 4], dtype=np.int32).reshape(n, k)
    lp = np.frombuffer(raw[n * k * 4:], dtype=np.float32).reshape(n, k)
    want_lp_all = torch.log_softmax(x.double(), dim=-1)
    want_ids = torch.sort(-x, dim=-1, stable=True).indices[:, :k]
    assert (ids == want_ids.numpy()).all(), (ids, want_ids)
    want_lp = torch.gather(want_lp_all, 1, want_ids).numpy()
    assert np.all(np.abs(lp - want_lp) <= 1e-6 * np.maximum(1, np.abs(want_lp))), (lp, want_lp)
    assert list(ids[0, :4]) == [5, 9, 70000, 150000]
    assert list(ids[2]) == list(range(1000, 1020))
