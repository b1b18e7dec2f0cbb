"""retort version names the CPU GEMM kernel in use (kernels/cpu/gemm.c), RETORT_GEMM forces it,
and a value the kernels cannot honour is one error line with exit status 2, before any work.
Expected strings come from the CPU's own flags (/proc/cpuinfo), not from the code under test."""
import os
import subprocess

from conftest import cpu_has_avx2_fma, onednn_loads, run


def version(retort_bin, **env):
    e = dict(os.environ)
    e.pop("RETORT_GEMM", None)
    e.update(env)
    return subprocess.run([retort_bin, "version"], capture_output=True, text=True, env=e, timeout=60)


def test_version_names_the_kernel(retort_bin):
    p = version(retort_bin)
    assert p.returncode == 0, p.stderr
    line = next(l for l in p.stdout.splitlines() if l.startswith("cpu gemm: "))
    assert "OpenBLAS" in line and "chosen for this CPU" in line
    p = version(retort_bin, RETORT_GEMM="blas")
    assert p.returncode == 0 and "cpu gemm: OpenBLAS" in p.stdout and "set by RETORT_GEMM" in p.stdout


def test_forced_avx2(retort_bin):
    p = version(retort_bin, RETORT_GEMM="avx2")
    if cpu_has_avx2_fma():
        assert p.returncode == 0 and "cpu gemm: retort avx2+fma" in p.stdout, p.stdout + p.stderr
    else:
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and "no AVX2" in p.stderr


def test_openblas_fallback_core_gets_another_kernel(retort_bin):
    # OpenBLAS's SSE3 core, what 0.3.21 runs on CPUs it does not know (Sapphire Rapids):
    # oneDNN where it is installed, else retort's AVX2 kernel (the choice without oneDNN is
    # checked case by case in tests/unit/test_kernels_gemm.c, automatic_rule)
    p = version(retort_bin, OPENBLAS_CORETYPE="Prescott")
    assert p.returncode == 0, p.stderr
    if not cpu_has_avx2_fma():
        want = "cpu gemm: OpenBLAS"
    elif onednn_loads():
        want = "cpu gemm: oneDNN "
    else:
        want = "cpu gemm: retort avx2+fma"
    assert want in p.stdout and "chosen for this CPU" in p.stdout, p.stdout
    if want == "cpu gemm: oneDNN ":
        assert "decode x*w^T of <= 8 rows retort avx2+fma" in p.stdout, p.stdout


def test_forced_onednn(retort_bin):
    p = version(retort_bin, RETORT_GEMM="dnnl")
    if onednn_loads():
        assert p.returncode == 0, p.stderr
        line = next(l for l in p.stdout.splitlines() if l.startswith("cpu gemm: "))
        assert line.startswith("cpu gemm: oneDNN ") and "set by RETORT_GEMM" in line, line
        # oneDNN's own cap on its code shows in the line: the ISA it runs is the one it reports
        p = version(retort_bin, RETORT_GEMM="dnnl", ONEDNN_MAX_CPU_ISA="SSE41")
        assert p.returncode == 0 and ", isa sse41 sgemm" in p.stdout, p.stdout + p.stderr
    else:
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
        assert p.stderr.startswith("retort: RETORT_GEMM=dnnl: oneDNN not available"), p.stderr


def test_bad_value_is_one_error_line(retort_bin):
    p = version(retort_bin, RETORT_GEMM="avx512")
    assert p.returncode == 2
    assert p.stderr == "retort: RETORT_GEMM=avx512: expected auto, blas, avx2 or dnnl\n"
    assert run([retort_bin, "version"]).returncode == 0
