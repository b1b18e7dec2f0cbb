"""`retort export --format chat-jsonl` loads as it is in the Hugging Face world (issue 17):
`datasets` reads the file, one TRL SFTTrainer step runs on it with a tiny random Qwen2
model (offline; the tokenizer and its chat template come from shared/assets), and the text
the trainer trains on contains the reasoning. Also: the generation system prompt is in the
messages and each row carries its metadata. Everything expected comes from the source file
(Python's json) and from transformers' own apply_chat_template."""
import json
import os
import sqlite3

import pytest

from conftest import run


def gsm_chats(assets, n):
    p = os.path.join(assets, "benchmarks", "gsm8k_train.jsonl")
    if not os.path.exists(p):
        pytest.skip(f"skipped: {p} absent")
    out = []
    with open(p, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            work, final = r["answer"].rsplit("####", 1)
            out.append({"messages": [{"role": "user", "content": r["question"]},
                                     {"role": "assistant", "content": f"The answer is {final.strip()}.",
                                      "reasoning_content": work.strip()}]})
            if len(out) == n:
                break
    return out


def make_db(retort_bin, assets, tmp_path, n=8):
    chats = gsm_chats(assets, n)
    src = tmp_path / "chats.jsonl"
    src.write_text("".join(json.dumps(c) + "\n" for c in chats), encoding="utf-8")
    db = str(tmp_path / "run.db")
    p = run([retort_bin, "import", "--db", db, "--format", "chat", "--as-samples", str(src)])
    assert p.returncode == 0, p.stderr
    return db, chats


def export(retort_bin, db, out, *extra):
    p = run([retort_bin, "export", "--db", db, "--format", "chat-jsonl", "--out", out, *extra])
    assert p.returncode == 0, p.stderr
    with open(out, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def test_system_prompt_instruction_and_metadata(retort_bin, assets, tmp_path):
    db, chats = make_db(retort_bin, assets, tmp_path, n=3)
    # what `retort generate --system S --instruction I` records in samples.params (teacher/driver.c)
    con = sqlite3.connect(db)
    con.execute("UPDATE samples SET params = ? WHERE id = 1", (json.dumps(
        {"system": "You are a careful solver.", "instruction": "Put the answer in \\boxed{}.", "instruction_to": "all",
         "temperature": 0.6, "top_p": 0.95, "max_tokens": 100, "seed": 1, "think_prefix": False}),))
    con.execute("INSERT INTO verdicts (sample_id, filter, pass, score, reason) VALUES (1, 'verify', 1, 1.0, 'ok'), "
                "(1, 'length', 0, 0.25, 'long')")
    con.commit()
    con.close()
    rows = export(retort_bin, db, str(tmp_path / "out.jsonl"))
    q = chats[0]["messages"][0]["content"]
    assert rows[0]["messages"][:2] == [{"role": "system", "content": "You are a careful solver."},
                                       {"role": "user", "content": q + "\nPut the answer in \\boxed{}."}]
    assert rows[0]["metadata"] == {"sample_id": 1, "prompt_id": 1, "teacher": "reference",
                                   "filters": [{"filter": "length", "pass": False, "score": 0.25},
                                               {"filter": "verify", "pass": True, "score": 1.0}],
                                   # the params' sampling as transformers' GenerationConfig keys
                                   "sampling": {"do_sample": True, "temperature": 0.6, "top_p": 0.95,
                                                "max_new_tokens": 100}}
    assert rows[1]["messages"][0] == chats[1]["messages"][0]  # no params: the stored prompt as it is
    assert rows[1]["metadata"]["filters"] == [] and "sampling" not in rows[1]["metadata"]
    p = run([retort_bin, "export", "--db", db, "--format", "chat-jsonl", "--reasoning", "nope", "--out",
             str(tmp_path / "x.jsonl")])
    assert p.returncode == 2 and "--reasoning" in p.stderr


def test_datasets_and_one_trl_sft_step_train_on_the_reasoning(retort_bin, assets, tmp_path, monkeypatch):
    for mod in ("datasets", "trl", "transformers", "torch"):
        pytest.importorskip(mod)
    tok_dir = os.path.join(assets, "tokenizers", "qwen3")
    if not os.path.exists(os.path.join(tok_dir, "tokenizer_config.json")):
        pytest.skip(f"skipped: {tok_dir} absent")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
    from trl import SFTConfig, SFTTrainer

    db, chats = make_db(retort_bin, assets, tmp_path, n=8)
    out = str(tmp_path / "chats.jsonl")
    rows = export(retort_bin, db, out)
    ds = datasets.load_dataset("json", data_files=out, split="train")
    assert len(ds) == len(chats)
    assert ds[0]["metadata"]["sample_id"] == 1
    reasoning = [c["messages"][-1]["reasoning_content"] for c in chats]
    assert ds[0]["messages"][-1]["content"].startswith("<think>\n" + reasoning[0] + "\n</think>\n\n")

    tok = AutoTokenizer.from_pretrained(tok_dir)
    # the chat templates of the Qwen3 and Llama 3.1 tokenizers keep the inline reasoning; the
    # separate reasoning_content key of --reasoning field is what Llama 3.1's template drops
    for name in ("qwen3", "llama3_1"):
        d = os.path.join(assets, "tokenizers", name)
        if not os.path.exists(os.path.join(d, "tokenizer_config.json")):
            continue
        t = AutoTokenizer.from_pretrained(d)
        assert reasoning[0] in t.apply_chat_template(rows[0]["messages"], tokenize=False), name
    field = export(retort_bin, db, str(tmp_path / "field.jsonl"), "--reasoning", "field")
    llama = os.path.join(assets, "tokenizers", "llama3_1")
    if os.path.exists(os.path.join(llama, "tokenizer_config.json")):
        assert reasoning[0] not in AutoTokenizer.from_pretrained(llama).apply_chat_template(field[0]["messages"],
                                                                                           tokenize=False)

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                      tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg)
    args = SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1, per_device_train_batch_size=2,
                     learning_rate=1e-3, max_length=512, report_to=[], save_strategy="no", logging_steps=1,
                     use_cpu=True, dataloader_num_workers=0, seed=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds.remove_columns("metadata"), processing_class=tok)
    text = tok.decode(trainer.train_dataset[0]["input_ids"])
    assert "<think>" in text and reasoning[0][:200] in text
    # other test modules switch autograd off at import (torch.set_grad_enabled(False)); pytest
    # imports them all before running anything
    import torch
    with torch.enable_grad():
        result = trainer.train()
    assert result.global_step == 1
    assert result.training_loss > 0 and result.training_loss == result.training_loss  # finite, not NaN
