# retort — one binary, CPU path always, CUDA objects when nvcc is found (CUDA=1 forces, CUDA=0 disables).
#
#   make            build ./retort
#   make deps       install the Debian packages and the Python reference environment
#   make test       deps + build + every test (C unit tests, reference comparisons, CLI tests)
#   make sanitize   the same tests under ASan + UBSan (CPU build)
#   make bench      side-by-side benchmarks
#   make fuzz       libFuzzer targets (clang) in build/fuzz/; make fuzz-long runs each 10 minutes
#   make demo       the whole pipeline on the built-in task

CC      ?= cc
NVCC    ?= nvcc
VENV    ?= $(HOME)/.cache/retort/venv
PYTHON  := $(VENV)/bin/python

ifeq ($(origin CUDA),undefined)
CUDA := $(if $(shell command -v $(NVCC) 2>/dev/null),1,0)
endif

BUILD   ?= build/$(if $(filter 1,$(CUDA)),gpu,cpu)

OPT      ?= -O2
WARN     := -Wall -Wextra -Wshadow -Wno-unused-parameter -Wstrict-prototypes
# Read when this Makefile is parsed: the targets that install packages first (demo, test,
# sanitize, bench) build through a second make that parses it again after `make deps`
# (tests/ref/test_makefile.py checks this on a simulated fresh machine).
PKG_CONFIG ?= pkg-config
DEPS       ?= scripts/deps.sh
RUN_TESTS  ?= tests/run.sh
# MPI=0: no Open MPI (single process: core/mpi_none.h). SYSROOT=DIR: headers and libraries
# from Debian packages unpacked into DIR (scripts/device_sysroot.sh), for a GPU machine that
# has the CUDA toolkit but none of the -dev packages; the binary finds them through its rpath.
MPI     ?= 1
SYSROOT ?=
ifeq ($(MPI),1)
MPI_CFLAGS := $(shell $(PKG_CONFIG) --cflags ompi-c 2>/dev/null)
MPI_LIBS   := $(shell $(PKG_CONFIG) --libs ompi-c 2>/dev/null || echo -lmpi)
else
MPI_CFLAGS := -DRT_NO_MPI
MPI_LIBS   :=
endif
ifneq ($(SYSROOT),)
SYSROOT_ABS := $(abspath $(SYSROOT))
SYSROOT_LIB := $(SYSROOT_ABS)/usr/lib/x86_64-linux-gnu
CPPFLAGS += -isystem $(SYSROOT_ABS)/usr/include -isystem $(SYSROOT_ABS)/usr/include/x86_64-linux-gnu \
            -isystem $(SYSROOT_ABS)/usr/include/x86_64-linux-gnu/openblas-pthread
LDFLAGS  += -L$(SYSROOT_LIB) -L$(SYSROOT_LIB)/openblas-pthread -Wl,-rpath,$(SYSROOT_LIB) \
            -Wl,-rpath,$(SYSROOT_LIB)/openblas-pthread -Wl,-rpath-link,$(SYSROOT_LIB)
endif
CPPFLAGS += -I. -D_GNU_SOURCE $(MPI_CFLAGS)
CFLAGS   += -std=c11 $(OPT) -g $(WARN) -pthread -fno-strict-aliasing
LDLIBS   += -Wl,--as-needed -ljansson -lzstd -lsqlite3 -lpcre2-8 -lutf8proc -lopenblas $(MPI_LIBS) -lmicrohttpd -lcurl -lm -lpthread -lxxhash

LIB_SRC := $(sort $(wildcard core/*.c kernels/cpu/*.c dataset/*.c filters/*.c teacher/*.c student/*.c eval/*.c))
CLI_SRC := $(sort $(wildcard cli/*.c))
CU_SRC  := $(sort $(wildcard kernels/cuda/*.cu))
TEST_SRC := $(sort $(wildcard tests/unit/test_*.c))
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
BENCH_SRC := $(filter-out bench/lab_%,$(sort $(wildcard bench/*.c)))
TOOL_SRC := $(sort $(wildcard tests/tools/*.c))

ifeq ($(CUDA),1)
ifeq ($(shell command -v $(NVCC) 2>/dev/null),)
$(error CUDA=1 but $(NVCC) was not found: install the CUDA toolkit, set NVCC=/path/to/nvcc, or build with CUDA=0)
endif
CUDA_HOME ?= $(patsubst %/bin/,%,$(dir $(shell command -v $(NVCC))))
CPPFLAGS  += -DRT_HAVE_CUDA=1 -isystem $(CUDA_HOME)/include
NVFLAGS   ?= -O3 -std=c++17 -I. -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=sm_80 \
             -Xcompiler -Wall,-Wextra,-Wno-unused-parameter
CU_OBJ    := $(CU_SRC:%.cu=$(BUILD)/%.o)
# cuBLASLt and NCCL are not linked: core/cuda_dynload.c opens them at first use (through this rpath).
LDLIBS    += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++
endif

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(CU_OBJ)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libretort.a
BIN      := retort
SQLITE_EXT := $(BUILD)/retort_sqlite.so
TESTS    := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
BENCHES  := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
TOOLS    := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tools/%)

.PHONY: all deps test sanitize bench fuzz fuzz-long demo clean tests-build gpu-test gpu-test-build gpu-bench gpu-check-cuda emu-test
all: $(BIN) $(SQLITE_EXT)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -DRT_HAVE_CUDA=1 -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BIN): $(CLI_OBJ) $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LIB) $(LDLIBS)

# A loadable SQLite extension (retort_text(); docs/database.md), apart from libretort.
$(SQLITE_EXT): dataset/ext/retort_sqlite.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -std=c11 $(OPT) -g $(WARN) -fPIC -shared $(LDFLAGS) -o $@ $< -lzstd

$(BUILD)/tests/%: tests/unit/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -MMD -MP -o $@ $< $(LIB) -lcriterion $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

$(BUILD)/tools/%: tests/tools/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

tests-build: $(BIN) $(TESTS) $(TOOLS)

# ---- GPU-only build: the CUDA kernels, their CPU twins, GPU tests and kernel labs ----------
# Builds from core/ basics + kernels/ + CUDA alone (no jansson, SQLite, HTTP, MPI, OpenBLAS,
# Criterion), so it works on a GPU machine that reaches no package registry:
#   make gpu-test-build   library + tests/gpu/test_*.c + bench/lab_*.{c,cu}, in $(GPU_BUILD)
#   make gpu-test         ... and run every GPU test (each compares a kernel to its CPU twin)
#   make gpu-bench        ... and run every kernel lab (time, TFLOP/s or GB/s, % of measured peak)
#   make emu-test         the CUDA kernels' device code on a CPU warp emulator (no GPU needed)
# The CPU twins' few CBLAS calls go to kernels/cpu/noblas (plain C) under -DRT_NO_BLAS;
# -DRT_KERNELS_ONLY drops the config-parsing parts of kernel headers (rope_inv_freq).
# Link: -lcublasLt -lcublas -lcudart -lm -lpthread only (checked with -Wl,--no-undefined).
GPU_BUILD    ?= $(BUILD)/gpuonly
GPU_CORE_SRC := core/status.c core/log.c core/alloc.c core/threadpool.c core/dtype.c
GPU_CPU_EXCLUDE ?= kernels/cpu/yarn.c
GPU_CPU_SRC  := $(filter-out $(GPU_CPU_EXCLUDE),$(sort $(wildcard kernels/cpu/*.c))) kernels/cpu/noblas/cblas.c
GPU_OBJ      := $(GPU_CORE_SRC:%.c=$(GPU_BUILD)/%.o) $(GPU_CPU_SRC:%.c=$(GPU_BUILD)/%.o) $(CU_SRC:%.cu=$(GPU_BUILD)/%.o)
GPU_LIB      := $(GPU_BUILD)/libretort_gpu.a
GPU_CPPFLAGS := -Ikernels/cpu/noblas -I. -D_GNU_SOURCE -DRT_HAVE_CUDA=1 -DRT_KERNELS_ONLY -DRT_NO_BLAS
# no C++ exceptions or thread-safe statics in the .cu host code: no libstdc++ at link time
GPU_NVFLAGS  := -DRT_HAVE_CUDA=1 -DRT_KERNELS_ONLY -Xcompiler -fno-exceptions,-fno-threadsafe-statics
GPU_CFLAGS   := -std=c11 -O2 -g $(WARN) -pthread -fno-strict-aliasing
GPU_LDLIBS    = -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -Wl,--no-undefined -lcublasLt -lcublas -lcudart -lm -lpthread
GPU_TEST_SRC := $(sort $(wildcard tests/gpu/test_*.c))
GPU_TESTS    := $(GPU_TEST_SRC:tests/gpu/%.c=$(GPU_BUILD)/gpu-tests/%)
GPU_LAB_SRC  := $(sort $(wildcard bench/lab_*.c bench/lab_*.cu))
GPU_LABS     := $(basename $(GPU_LAB_SRC:bench/%=$(GPU_BUILD)/labs/%))

$(GPU_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(GPU_CPPFLAGS) $(GPU_CFLAGS) -MMD -MP -c $< -o $@
$(GPU_BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) $(GPU_NVFLAGS) -MMD -MP -c $< -o $@
$(GPU_LIB): $(GPU_OBJ)
	rm -f $@ && ar rcs $@ $^
$(GPU_BUILD)/gpu-tests/%: tests/gpu/%.c $(GPU_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(GPU_CPPFLAGS) $(GPU_CFLAGS) -I$(CUDA_HOME)/include -MMD -MP -o $@ $< $(GPU_LIB) $(GPU_LDLIBS)
$(GPU_BUILD)/labs/%: bench/%.c $(GPU_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(GPU_CPPFLAGS) $(GPU_CFLAGS) -I$(CUDA_HOME)/include -MMD -MP -o $@ $< $(GPU_LIB) $(GPU_LDLIBS)
$(GPU_BUILD)/labs/%: bench/%.cu $(GPU_LIB)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) $(GPU_NVFLAGS) -o $@ $< $(GPU_LIB) -lcublasLt -lcublas -lm -lpthread

gpu-check-cuda:
	@test "$(CUDA)" = 1 || { echo "the GPU build needs CUDA (nvcc)"; exit 1; }
gpu-test-build: gpu-check-cuda
	@$(MAKE) --no-print-directory $(GPU_LIB) $(GPU_TESTS) $(GPU_LABS)
gpu-test: gpu-test-build
	@fail=0; for t in $(GPU_TESTS); do echo "== $$t"; $$t || fail=1; done; exit $$fail
gpu-bench: gpu-test-build
	@fail=0; for l in $(GPU_LABS); do echo "== $$l"; $$l || fail=1; done; exit $$fail
# The CUDA kernels' device code on the CPU (tests/emu: warp-level emulator), no GPU needed.
emu-test:
	@$(PYTHON) -m pytest -q tests/ref/test_cuda_emu.py

deps:
	@VENV=$(VENV) $(DEPS)

# Every test: C unit tests (Criterion) and the reference comparisons (pytest, against
# PyPI safetensors/torch/transformers/tokenizers), summed up in one closing line.
test: deps
	@$(MAKE) --no-print-directory tests-build
	@RETORT=$(CURDIR)/$(BIN) TEST_BIN_DIR=$(BUILD)/tests TOOLS_DIR=$(CURDIR)/$(BUILD)/tools PYTHON=$(PYTHON) $(RUN_TESTS)

sanitize: deps
	@$(MAKE) --no-print-directory BUILD=build/san CUDA=0 CC=clang OPT=-O1 \
	  CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fsanitize=address,undefined" BIN=build/san/retort tests-build
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  RETORT=$(CURDIR)/build/san/retort TEST_BIN_DIR=build/san/tests TOOLS_DIR=$(CURDIR)/build/san/tools PYTHON=$(PYTHON) $(RUN_TESTS)

bench:
	@VENV=$(VENV) BENCH_DEPS=1 $(DEPS)
	@$(MAKE) --no-print-directory $(BIN) $(BENCHES)
	@PYTHON=$(PYTHON) BENCH_BIN_DIR=$(BUILD)/bench bench/run.sh

# libFuzzer targets: the library is built once more with clang, instrumented for fuzzing.
FUZZ_TARGETS := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
FUZZ_OBJ := $(LIB_SRC:%.c=build/fuzz/obj/%.o)
FUZZ_FLAGS := -std=c11 -O1 -g -fno-omit-frame-pointer $(WARN) -I. -D_GNU_SOURCE $(MPI_CFLAGS)
fuzz: $(FUZZ_TARGETS)
build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link,address,undefined -MMD -MP -c $< -o $@
build/fuzz/libretort.a: $(FUZZ_OBJ)
	rm -f $@ && ar rcs $@ $^
build/fuzz/%: tests/fuzz/%.c build/fuzz/libretort.a
	clang $(FUZZ_FLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< build/fuzz/libretort.a \
	  $(filter-out -lcudart_static -lstdc++ -lcublasLt -lcublas -lnccl,$(LDLIBS))

# Every target for FUZZ_SECONDS (default 10 minutes) from its seeds (tests/fuzz/corpus/NAME,
# read only: new inputs go to build/fuzz/work/NAME) and dictionary (tests/fuzz/NAME.dict)
# where present; prints executions and coverage per target, logs in build/fuzz/NAME.log.
FUZZ_SECONDS ?= 600
fuzz-long: $(FUZZ_TARGETS)
	@fail=0; for t in $(FUZZ_TARGETS); do \
	  n=$${t#build/fuzz/fuzz_}; w=build/fuzz/work/$$n; mkdir -p $$w; \
	  seeds=; [ -d tests/fuzz/corpus/$$n ] && seeds=tests/fuzz/corpus/$$n; \
	  dict=; [ -f tests/fuzz/$$n.dict ] && dict=-dict=tests/fuzz/$$n.dict; \
	  $$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $$dict $$w $$seeds > build/fuzz/$$n.log 2>&1; rc=$$?; \
	  execs=$$(sed -n 's/^stat::number_of_executed_units: *//p' build/fuzz/$$n.log); \
	  cov=$$(grep -o 'cov: [0-9]*' build/fuzz/$$n.log | tail -1 | cut -d' ' -f2); \
	  printf '%-14s %12s executions  cov: %6s edges  seeds: %-3s dict: %-3s %s\n' $$n "$${execs:-?}" "$${cov:-?}" \
	    $$([ -n "$$seeds" ] && echo yes || echo no) $$([ -n "$$dict" ] && echo yes || echo no) \
	    "$$([ $$rc -ne 0 ] && echo "FAILED (exit $$rc, see build/fuzz/$$n.log)")"; \
	  [ $$rc -eq 0 ] || fail=1; \
	done; exit $$fail

# The binary is built by a second make, which reads the package flags (MPI) that deps installed.
demo: deps
	@$(MAKE) --no-print-directory $(BIN)
	./$(BIN) demo

clean:
	rm -rf build $(BIN)

-include $(shell find build -path build/sysroot -prune -o -name '*.d' -type f -print 2>/dev/null)
