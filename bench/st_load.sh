#!/usr/bin/env bash
# Weight loading, side by side: retort (mmap + convert to f32) against PyPI safetensors + torch
# (.float()) on the same BF16 checkpoint (~400 MB, written here), cold page cache not forced:
# both read from the page cache after a warm-up. Prints medians and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${PYTHON:=python3}" "${BENCH_BIN_DIR:=build/cpu/bench}"
dir=$(mktemp -d /tmp/retort-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
"$PYTHON" - "$dir/w.safetensors" <<'PY'
import sys, torch
from safetensors.torch import save_file
g = torch.Generator().manual_seed(0)
save_file({f"layer{i}.weight": torch.randn(4096, 6144, generator=g).to(torch.bfloat16) for i in range(8)}, sys.argv[1])
PY
"$BENCH_BIN_DIR/st_load" "$dir/w.safetensors" 1 >/dev/null   # warm the page cache
lb=$(bench_load)
r=$("$BENCH_BIN_DIR/st_load" "$dir/w.safetensors" 5 | sort -n | sed -n 3p | cut -d' ' -f1)
p=$("$PYTHON" - "$dir/w.safetensors" <<'PY'
import sys, time, torch
from safetensors import safe_open
torch.set_num_threads(1)
ts = []
for _ in range(5):
    t0 = time.perf_counter()
    with safe_open(sys.argv[1], "pt") as f:
        s = 0.0
        for k in f.keys():
            s += float(f.get_tensor(k).float()[0, 0])
    ts.append(time.perf_counter() - t0)
print(sorted(ts)[2])
PY
)
la=$(bench_load)
gb=$(stat -c %s "$dir/w.safetensors" | awk '{print $1/1e9}')
echo "bench/st_load   BF16 checkpoint ${gb} GB -> f32, 1 thread, load $lb -> $la"
awk -v r="$r" -v p="$p" -v gb="$gb" 'BEGIN {
  printf "  retort                 %8.2f GB/s   (median of 5)\n", gb / r
  printf "  safetensors + torch    %8.2f GB/s   (median of 5)\n", gb / p
  printf "  ratio                  %8.2fx\n", p / r }'
bench_row "st_load bf16->f32 ${gb} GB" s "$r" "$p" "safetensors+torch" 1 "$lb" "$la"
