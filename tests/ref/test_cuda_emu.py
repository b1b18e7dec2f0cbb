"""The student's CUDA kernels run on the CPU through tests/emu/cuda_emu.h (a warp-level
emulator: ucontext threads, barriers for __syncthreads and every warp collective, ldmatrix and
mma.sync m16n8k16 from the PTX fragment layouts), against their CPU twins. This checks the
kernels' tiling, masking and fragment bookkeeping on machines without a GPU; `make gpu-test`
checks the real thing. Each driver (tests/emu/*_emu.cpp) prints one line per comparison with
its bound and exits non-zero on any failure."""
import glob
import os
import shutil
import subprocess

import pytest

from conftest import ROOT, run

CPU_SRC = ["core/status.c", "core/log.c", "core/alloc.c", "core/threadpool.c", "core/dtype.c",
           "kernels/cpu/attention.c", "kernels/cpu/convert.c", "kernels/cpu/norm.c", "kernels/cpu/rope.c",
           "kernels/cpu/act.c", "kernels/cpu/embed.c", "kernels/cpu/optim.c", "kernels/cpu/noblas/cblas.c"]


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
def cpu_objects(tmp_path_factory):
    if not shutil.which("g++") or not shutil.which("gcc"):
        pytest.skip("skipped: g++/gcc not found")
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
    return d, objs


@pytest.mark.parametrize("driver", sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "tests/emu/*_emu.cpp"))))
def test_kernel_on_emulator_matches_cpu_twin(cpu_objects, driver):
    d, objs = cpu_objects
    exe = d / driver.replace(".cpp", "")
    p = run(["g++", "-std=c++17", "-O1", "-w", "-I" + ROOT, "-I" + cuda_include(), "-DRT_NO_BLAS",
             os.path.join(ROOT, "tests/emu", driver), *objs, "-o", str(exe), "-lpthread"])
    assert p.returncode == 0, p.stderr
    p = run([str(exe)], timeout=600)
    print(p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "FAIL" not in p.stdout
    assert p.stdout.count("ok ") >= 3
