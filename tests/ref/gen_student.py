"""Expected logits, loss and gradients of the student from transformers (torch autograd, f64).

For the tiny llama, qwen2 and qwen3 presets (qwen3: q/k norms, head_dim 48 ≠ hidden/heads) (configs/models/tiny-*.json), with perturbed random
weights (norm weights ≠ 1, biases ≠ 0 so their gradients are exercised), writes
  REF_DIR/student_<arch>/{config.json, model.safetensors}   the weights (F32), HF layout
  REF_DIR/student_<arch>_ref.safetensors                     read by tests/unit/test_student.c:
    tokens  I32 [S, N]     two packed sequences of N tokens (pad id 0 where no document)
    mask    U8  [S, N]     1 = token is a training target
    docs    I32 [n, 3]     (seq, start, len) of every document
    logits  F32 [S, N, V]  logits of every position (padding: a one-token document)
    loss    F64 [1]        mean cross-entropy over targets: position t predicts t+1 when t+1
                           is in the same document and mask[t+1] = 1
    grad.NAME F32          ∂loss/∂NAME for every parameter
Each document runs through transformers on its own (positions from 0), so packing and
its block-diagonal causal mask are the C code's job; the model runs in float64 with eager
attention (the weights are the F32 values written to the file).
"""
import json, os, sys, warnings
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM
from safetensors.torch import save_file

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()
out = sys.argv[1]
root = os.path.join(os.path.dirname(__file__), "..", "..")

S, N = 2, 48
DOCS = [(0, 0, 20), (0, 20, 21), (1, 0, 30), (1, 30, 18)]   # seq 0 ends with 7 padding positions


def batch(vocab, g):
    tokens = torch.zeros(S, N, dtype=torch.int32)
    mask = torch.zeros(S, N, dtype=torch.uint8)
    for s, a, n in DOCS:
        tokens[s, a:a + n] = torch.randint(3, vocab, (n,), generator=g, dtype=torch.int32)
        prompt = int(torch.randint(1, n // 2, (1,), generator=g))          # prompt tokens: no loss
        mask[s, a + prompt:a + n] = (torch.rand(n - prompt, generator=g) > 0.15).to(torch.uint8)
    return tokens, mask


def run(name):
    d = json.load(open(os.path.join(root, "configs/models", f"tiny-{name}.json")))
    cfg = AutoConfig.for_model(**d)
    cfg._attn_implementation = "eager"
    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_config(cfg).float()
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif pname.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    mdir = os.path.join(out, f"student_{name}")
    model.save_pretrained(mdir, safe_serialization=True)

    tokens, mask = batch(cfg.vocab_size, g)
    m64 = model.double()
    m64.eval()
    logits = torch.zeros(S, N, cfg.vocab_size, dtype=torch.float64)
    covered = torch.zeros(S, N, dtype=torch.bool)
    total = torch.zeros((), dtype=torch.float64)
    count = 0

    def forward(s, a, n):
        ids = tokens[s, a:a + n].long()[None]
        pos = torch.arange(n)[None]
        return m64(input_ids=ids, position_ids=pos, use_cache=False).logits[0]

    for s, a, n in DOCS:
        lg = forward(s, a, n)
        logits[s, a:a + n] = lg.detach()
        covered[s, a:a + n] = True
        tgt = tokens[s, a + 1:a + n].long()
        keep = mask[s, a + 1:a + n].bool()
        lp = torch.log_softmax(lg[:-1], dim=-1)
        total = total - lp[keep].gather(1, tgt[keep][:, None]).sum()
        count += int(keep.sum())
    loss = total / count
    loss.backward()
    with torch.no_grad():
        for s in range(S):
            for t in range(N):
                if not covered[s, t]:
                    logits[s, t] = forward(s, t, 1)[0]

    docs = torch.tensor(DOCS, dtype=torch.int32)
    ref = {"tokens": tokens, "mask": mask, "docs": docs, "logits": logits.float(),
           "loss": loss.detach().reshape(1)}
    for pname, p in m64.named_parameters():
        if p.grad is not None:
            ref["grad." + pname] = p.grad.float().contiguous()
    save_file(ref, os.path.join(out, f"student_{name}_ref.safetensors"))


for name in ("llama", "qwen2", "qwen3"):
    run(name)
