"""Writes the tiny-cpu recipe's data from the task files of `retort demo --quick --seed 0`
(DIR/train.jsonl: {prompt, answer, solution}; DIR/demo-test.jsonl: {prompt, answer}).

usage: python make_data.py DEMO_DIR   (writes into this script's folder)

  teacher-chats.jsonl  system + user + worked solution: what the tiny teacher is trained on
  prompts.jsonl        system + user and the gold answer: the prompts the teacher samples
  test.jsonl           the test questions rendered with the qwen template as the models saw
                       their training chats (system message, user turn, assistant header)
Every conversation carries the demo's short system message, so the qwen template does not
insert Qwen2.5's default one (about 70 more tokens per conversation).
"""
import json
import os
import sys

SYSTEM = "Solve step by step."
here = os.path.dirname(os.path.abspath(__file__))
demo = sys.argv[1]


def rows(name):
    with open(os.path.join(demo, name), encoding="utf-8") as f:
        return [json.loads(line) for line in f.read().split("\n") if line]


def write(name, objs):
    with open(os.path.join(here, name), "w", encoding="utf-8") as f:
        for o in objs:
            f.write(json.dumps(o, ensure_ascii=False) + "\n")


train = rows("train.jsonl")
sysmsg = {"role": "system", "content": SYSTEM}
write("teacher-chats.jsonl",
      [{"messages": [sysmsg, {"role": "user", "content": r["prompt"]},
                     {"role": "assistant", "content": r["solution"]}]} for r in train])
write("prompts.jsonl",
      [{"messages": [sysmsg, {"role": "user", "content": r["prompt"]}], "answer": r["answer"]} for r in train])
write("test.jsonl",
      [{"prompt": "<|im_start|>system\n%s<|im_end|>\n<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n"
                  % (SYSTEM, r["prompt"]), "answer": r["answer"]} for r in rows("demo-test.jsonl")])
