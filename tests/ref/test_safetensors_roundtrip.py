"""Round trips between retort's safetensors reader/writer and the PyPI safetensors library,
bit-exact, every dtype (tests/tools/st_copy reads with st_open and writes with st_write)."""
import os
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file as np_save, load_file as np_load
from safetensors.torch import save_file as torch_save, load_file as torch_load

from conftest import run

NP_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
             "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8,
             "BOOL": np.bool_}
TORCH_DTYPES = {"BF16": torch.bfloat16, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


def random_tensors(rng):
    t = {}
    for name, dt in NP_DTYPES.items():
        shape = (3, 7) if name != "I8" else (2, 3, 4)
        if dt == np.bool_:
            t[name] = rng.integers(0, 2, size=shape).astype(np.bool_)
        else:
            t[name] = rng.integers(0, 256, size=np.prod(shape) * np.dtype(dt).itemsize, dtype=np.uint8).view(dt).reshape(shape)
    t["scalar"] = np.array(3.5, dtype=np.float32)            # rank 0
    t["empty"] = np.zeros((0, 4), dtype=np.float32)            # zero elements
    return t


def test_python_writes_c_reads_and_rewrites_bit_exact(tmp_path, tools_dir):
    rng = np.random.default_rng(7)
    src, dst = tmp_path / "py.safetensors", tmp_path / "c.safetensors"
    tensors = random_tensors(rng)
    np_save(tensors, str(src), metadata={"format": "np", "note": "ünïcode"})
    p = run([f"{tools_dir}/st_copy", str(src), str(dst)])
    assert p.returncode == 0, p.stderr
    back = np_load(str(dst))
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        assert back[k].tobytes() == v.tobytes(), k
    with safe_open(str(dst), "np") as f:
        assert f.metadata() == {"format": "np", "note": "ünïcode"}


def test_torch_only_dtypes_round_trip(tmp_path, tools_dir):
    g = torch.Generator().manual_seed(3)
    tensors = {name: torch.randint(0, 256, (5, 9 * dt.itemsize), generator=g, dtype=torch.uint8).view(dt)
               for name, dt in TORCH_DTYPES.items()}
    src, dst = tmp_path / "t.safetensors", tmp_path / "c.safetensors"
    torch_save(tensors, str(src))
    p = run([f"{tools_dir}/st_copy", str(src), str(dst)])
    assert p.returncode == 0, p.stderr
    back = torch_load(str(dst))
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype
        assert torch.equal(back[k].view(torch.uint8), v.view(torch.uint8)), k


def test_c_writes_python_reads_every_dtype(tmp_path, tools_dir):
    out = tmp_path / "pattern.safetensors"
    p = run([f"{tools_dir}/st_copy", "--pattern", str(out)])
    assert p.returncode == 0, p.stderr
    names = list(NP_DTYPES) + list(TORCH_DTYPES)
    with safe_open(str(out), "pt") as f:
        assert sorted(f.keys()) == sorted(names)
        assert f.metadata() == {"writer": "retort"}
        for k in names:
            t = f.get_tensor(k)
            assert list(t.shape) == [3, 5]
            raw = t.contiguous().view(torch.uint8).flatten().numpy().tobytes() if t.dtype != torch.bool else \
                t.flatten().numpy().astype(np.uint8).tobytes()
            want = bytes(((i * 37 + 11) % 256) & (1 if k == "BOOL" else 0xFF) for i in range(len(raw)))
            assert raw == want, k
    # header padded to 8 bytes with spaces, as the format recommends
    data = out.read_bytes()
    n = int.from_bytes(data[:8], "little")
    assert n % 8 == 0


def test_sharded_checkpoint_round_trip(tmp_path, tools_dir):
    rng = np.random.default_rng(1)
    d = tmp_path / "model"
    d.mkdir()
    a = {"a": rng.standard_normal((4, 4)).astype(np.float32)}
    b = {"b": rng.standard_normal((2,)).astype(np.float32)}
    np_save(a, str(d / "model-00001-of-00002.safetensors"))
    np_save(b, str(d / "model-00002-of-00002.safetensors"))
    (d / "model.safetensors.index.json").write_text(
        '{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}')
    out = tmp_path / "merged.safetensors"
    p = run([f"{tools_dir}/st_copy", str(d), str(out)])
    assert p.returncode == 0, p.stderr
    back = np_load(str(out))
    assert np.array_equal(back["a"], a["a"]) and np.array_equal(back["b"], b["b"])
