#!/usr/bin/env bash
# Weight loading, side by side, at each of bench_threads (1, then 2): retort (bench/st_load.c:
# st_open's mmap, one rt_big_alloc'd f32 buffer per tensor, filled by cvt_to_f32_fill in 1 MiB
# chunks, each prefaulted in one madvise(MADV_POPULATE_WRITE) right before it is written, the
# chunks split over a pool of THREADS) against PyPI safetensors + torch (safe_open(..., "pt")
# and .float() on every tensor, torch.set_num_threads(THREADS): its copy kernel is parallel) on
# the same BF16 checkpoint, written here (ST_LOAD_TENSORS tensors of 4096 x 6144, default 8: 0.4 GB).
# Fair both ways:
#   - the same work: both read the file through mmap from the page cache (warm: each side
#     loads it once first), widen every tensor to f32 into freshly allocated memory and keep
#     every tensor until the whole checkpoint is loaded; freeing is outside the timing;
#   - a load is what a process does once: every repeat is a fresh process (in one process the
#     allocator and the kernel hand back memory the previous repeat already faulted in), the
#     two alternating; the time is taken inside the process around the load alone (not the
#     start of the process or Python's imports);
#   - the peer's best configuration on this machine: safetensors' default mmap backend (its
#     "pread" backend was slower, 0.9 s against 0.5 s CPU here), torch's default allocator.
#     Transparent huge pages (torch: THP_MEM_ALLOC_ENABLE=1) are off for both: on this VM
#     (virtio-balloon free page reporting) a first touch of 2 MiB pages costs 3-5x more CPU
#     than small pages (2026-12-08, retort chunked: 2.4 s against 0.45 s; later loads in the
#     same process are 4x faster: that flatters).
#   - each process starts SETTLE seconds (default 3) after the previous one ended: a process
#     that frees 0.8 GB sets the kernel reporting free pages to the hypervisor (virtio-balloon,
#     about 2 s later), which doubled the wall time of a load starting within that time:
#     retort's, as Python spends a second on imports before its timer starts (without the
#     pause retort measured 0.54-0.56x wall at equal CPU; with it 0.95x).
# Prints, for each thread count, medians of REPS (default 5) of wall and CPU (user + sys of the
# process during the load), the machine load before and after, and one summary row for each.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${PYTHON:=python3}" "${BENCH_BIN_DIR:=build/cpu/bench}"
REPS=${REPS:-5}
SETTLE=${SETTLE:-3}
NT=${ST_LOAD_TENSORS:-8}
dir=$(mktemp -d /tmp/retort-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
"$PYTHON" - "$dir/w.safetensors" "$NT" <<'PY'
import sys, torch
from safetensors.torch import save_file
g = torch.Generator().manual_seed(0)
save_file({f"layer{i}.weight": torch.randn(4096, 6144, generator=g).to(torch.bfloat16)
           for i in range(int(sys.argv[2]))}, sys.argv[1])
PY
cat > "$dir/peer.py" <<'PY'
import resource, sys, time, torch
from safetensors import safe_open
torch.set_num_threads(int(sys.argv[2]))
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t0, c0 = time.perf_counter(), cpu()
with safe_open(sys.argv[1], "pt") as f:
    d = {k: f.get_tensor(k).float() for k in f.keys()}
print("%.6f %.6f" % (time.perf_counter() - t0, cpu() - c0))
PY
retort() { sleep "$SETTLE"; "$BENCH_BIN_DIR/st_load" "$dir/w.safetensors" 1 "$1" | cut -d' ' -f1,2; }
peer() { sleep "$SETTLE"; "$PYTHON" "$dir/peer.py" "$dir/w.safetensors" "$1"; }
retort 1 > /dev/null; peer 1 > /dev/null   # warm the page cache, the binaries and Python's imports
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
gb=$(stat -c %s "$dir/w.safetensors" | awk '{print $1/1e9}')
for th in $(bench_threads); do
  lb=$(bench_load)
  rw=() rc=() pw=() pc=()
  for i in $(seq "$REPS"); do
    read -r w c < <(retort "$th"); rw+=("$w") rc+=("$c")
    read -r w c < <(peer "$th"); pw+=("$w") pc+=("$c")
  done
  la=$(bench_load)
  r_w=$(med "${rw[@]}") r_c=$(med "${rc[@]}") p_w=$(med "${pw[@]}") p_c=$(med "${pc[@]}")
  echo "bench/st_load   BF16 checkpoint ${gb} GB -> f32, $th thread(s), fresh process per load, median of $REPS, load $lb -> $la"
  awk -v rw="$r_w" -v rc="$r_c" -v pw="$p_w" -v pc="$p_c" -v gb="$gb" 'BEGIN {
    printf "  %-22s %8s %8s %10s\n", "", "wall s", "CPU s", "GB/s wall"
    printf "  %-22s %8.3f %8.3f %10.2f\n", "retort", rw, rc, gb / rw
    printf "  %-22s %8.3f %8.3f %10.2f\n", "safetensors + torch", pw, pc, gb / pw
    printf "  %-22s %7.2fx %7.2fx\n", "ratio (peer / retort)", pw / rw, pc / rc }'
  bench_row "st_load bf16->f32 ${gb} GB wall" s "$r_w" "$p_w" "safetensors+torch" "$th" "$lb" "$la"
  bench_row "st_load bf16->f32 ${gb} GB cpu" s "$r_c" "$p_c" "safetensors+torch" "$th" "$lb" "$la"
done
