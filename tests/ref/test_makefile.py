"""The README's two commands on a fresh machine: `make demo` and `make test` install the
packages first (`make deps`) and only then compile. Everything the Makefile reads from an
installed package at parse time (pkg-config for Open MPI) must therefore be read by a make
that starts after deps has run.

Simulated here without touching the machine: a fake pkg-config that knows Open MPI only
once a fake `deps` has "installed" it (a stamp file), and a fake compiler that records its
command lines. A compile of core/comm.c without the flag the package provides is the
first-run failure the issue reported (`mpi.h: No such file or directory`)."""
import os
import shutil
import stat
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FLAG = "-DRT_FRESH_MACHINE_MPI_FLAGS"


def _script(path, body):
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture()
def fresh(tmp_path):
    stamp = tmp_path / "ompi-installed"
    log = tmp_path / "cc.log"
    _script(tmp_path / "pkg-config",
            f'[ -f "{stamp}" ] || exit 1\n'
            f'case "$*" in *--cflags*) echo "{FLAG}";; *) echo "-lmpi";; esac\n')
    _script(tmp_path / "deps", f'touch "{stamp}"\n')
    # The fake compiler logs its arguments and writes a runnable no-op wherever -o points.
    _script(tmp_path / "cc",
            f'echo "$*" >> "{log}"\n'
            'out=""; prev=""\n'
            'for a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; done\n'
            '[ -n "$out" ] && mkdir -p "$(dirname "$out")" && printf "#!/bin/sh\\nexit 0\\n" > "$out" && chmod +x "$out"\n'
            'exit 0\n')
    build = os.path.join("build", f"freshcheck-{os.getpid()}")
    yield tmp_path, log, build
    shutil.rmtree(os.path.join(ROOT, build), ignore_errors=True)


def _make(tmp, build, target):
    args = ["make", "--no-print-directory", target, "CUDA=0",
            f"CC={tmp / 'cc'}", f"PKG_CONFIG={tmp / 'pkg-config'}", f"DEPS={tmp / 'deps'}",
            f"BUILD={build}", f"BIN={build}/retort", "RUN_TESTS=true"]
    env = dict(os.environ)
    env.pop("MAKEFLAGS", None)
    env.pop("MAKELEVEL", None)
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _comm_compile_lines(log):
    lines = open(log).read().splitlines()
    return [l for l in lines if "core/comm.c" in l and " -c " in f" {l} "]


@pytest.mark.parametrize("target", ["demo", "test"])
def test_first_command_on_a_fresh_machine_compiles_with_the_installed_packages(fresh, target):
    tmp, log, build = fresh
    r = _make(tmp, build, target)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp / "ompi-installed").exists(), "deps did not run"
    comm = _comm_compile_lines(log)
    assert comm, "core/comm.c was never compiled"
    for line in comm:
        assert FLAG in line, f"core/comm.c compiled without the MPI flags deps provides: {line}"


def test_the_check_fails_on_a_makefile_that_reads_packages_too_early(fresh):
    """The check itself can fail: a Makefile that builds in the same make as deps."""
    tmp, log, build = fresh
    bad = tmp / "Makefile.early"
    src = open(os.path.join(ROOT, "Makefile")).read()
    # the pre-fix rule: demo depends on the binary in the same make that runs deps
    src = src.replace("demo: deps\n\t@$(MAKE) --no-print-directory $(BIN)\n", "demo: deps $(BIN)\n")
    assert "demo: deps $(BIN)" in src
    bad.write_text(src)
    args = ["make", "--no-print-directory", "-f", str(bad), "demo", "CUDA=0",
            f"CC={tmp / 'cc'}", f"PKG_CONFIG={tmp / 'pkg-config'}", f"DEPS={tmp / 'deps'}",
            f"BUILD={build}", f"BIN={build}/retort"]
    env = dict(os.environ)
    env.pop("MAKEFLAGS", None)
    env.pop("MAKELEVEL", None)
    subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    comm = _comm_compile_lines(log)
    assert comm and all(FLAG not in l for l in comm)


NO_MPI_MAIN = r"""
#include <stdio.h>
#include <string.h>
#include "core/comm.h"
#include "core/status.h"
int main(void) {
    rt_comm *c = NULL;
    int rc = comm_open(COMM_MPI, &c);
    if (rc != RT_EUNSUPPORTED || c || !strstr(rt_errmsg(), "without MPI")) { printf("mpi: %d %s\n", rc, rt_errmsg()); return 1; }
    if (comm_open(COMM_AUTO, &c) || comm_size(c) != 1) { printf("auto: %s\n", rt_errmsg()); return 1; }
    float x[3] = {1, 2, 3}, y[3];
    if (comm_allreduce(c, x, y, 3, RT_DT_F32, COMM_SUM) || y[2] != 3) { printf("allreduce\n"); return 1; }
    comm_close(c);
    printf("ok\n");
    return 0;
}
"""


def test_a_build_without_mpi_runs_as_one_process(tmp_path):
    """make MPI=0 (the GPU machine, which has no Open MPI): core/comm.c compiles against
    core/mpi_none.h, runs single-rank collectives, and refuses MPI with one clear message."""
    main = tmp_path / "m.c"
    main.write_text(NO_MPI_MAIN)
    srcs = [os.path.join(ROOT, f) for f in ("core/comm.c", "core/status.c", "core/log.c", "core/alloc.c",
                                                "core/dtype.c")]
    exe = tmp_path / "m"
    env = dict(os.environ, OMPI_COMM_WORLD_SIZE="")
    env.pop("OMPI_COMM_WORLD_SIZE")
    r = subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter", "-D_GNU_SOURCE",
                        "-DRT_NO_MPI", "-I", ROOT, str(main), *srcs, "-o", str(exe), "-lm", "-pthread"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(exe)], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
