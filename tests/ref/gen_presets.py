"""Expected parameter counts and tensor layouts of configs/models/* from transformers.

Writes REF_DIR/presets.json, read by tests/unit/test_model_config.c:
  {"counts": {preset: elements of every stored tensor (state_dict; tied lm_head once)},
   "tensors": {tiny preset: {name: [shape...]} as transformers' save_pretrained writes them}}
Big presets are built on the meta device (no memory); tiny ones are saved for real.
"""
import json, glob, os, sys, tempfile, warnings
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM
from safetensors import safe_open

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()
out = sys.argv[1]
res = {"counts": {}, "tensors": {}}
for path in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "../../configs/models/*.json"))):
    name = os.path.basename(path)[:-5]
    d = json.load(open(path))
    d.pop("quantization_config", None)      # count the architecture, not a quantized load
    cfg = AutoConfig.for_model(**d)
    if name.startswith("tiny-"):
        torch.manual_seed(0)
        m = AutoModelForCausalLM.from_config(cfg)
        with tempfile.TemporaryDirectory() as tmp:
            m.save_pretrained(tmp)
            shapes = {}
            for fn in glob.glob(os.path.join(tmp, "*.safetensors")):
                with safe_open(fn, "pt") as f:
                    for k in f.keys():
                        shapes[k] = list(f.get_slice(k).get_shape())
        res["tensors"][name] = shapes
    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(cfg)
    sd = m.state_dict()
    total = sum(t.numel() for k, t in sd.items()
                if not (cfg.tie_word_embeddings and k == "lm_head.weight") and "rotary_emb" not in k)
    res["counts"][name] = total
json.dump(res, open(os.path.join(out, "presets.json"), "w"), indent=1)
