/* cli/main.c — `retort`: dispatch to subcommands, global help, version. */
#include <assert.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/log.h"
#include "core/status.h"
#include "kernels/matmul.h"

#define RETORT_VERSION "0.1.0"

static const cli_command commands[] = {
    {"inspect", "check a model directory (config.json + safetensors) and summarize it",
     "usage: retort inspect DIR [--json] [--check-values]\n"
     "\n"
     "Reads DIR/config.json (model_type llama, qwen2, qwen3 or deepseek_v3) and the safetensors in DIR\n"
     "(model.safetensors, or shards named by model.safetensors.index.json), checks that every\n"
     "tensor the architecture needs is present with the right shape and dtype, and prints the\n"
     "architecture, shapes, dtypes, tensor count and parameter count.\n"
     "\n"
     "Exit status: 0 valid, 1 invalid or unreadable checkpoint (or non-finite values with\n"
     "--check-values), 2 usage error.\n",
     cmd_inspect},
    {"db", "create, check and summarize a run database",
     "usage: retort db init DB\n"
     "       retort db stats DB [--json]\n"
     "       retort db check DB\n"
     "       retort db dict DB [--size BYTES] [--max-samples N] [--recompress]\n"
     "       retort db snapshot DB NAME [--source S] [--teacher T] [--passed]\n"
     "\n"
     "  init      create DB (SQLite, WAL) or bring its schema up to date; prints the schema version\n"
     "  stats     prompts, samples, per-source and per-teacher counts, pass counts and rates per filter,\n"
     "            snapshots, text compression, sample-length histograms per source and stage\n"
     "            (--json: one object with at least \"prompts\", \"samples\", \"verdicts\")\n"
     "  check     PRAGMA integrity_check and foreign_key_check, and the schema version\n"
     "  dict      train a zstd dictionary (default 112640 bytes) on up to N samples (default 20000),\n"
     "            store it, compress new text with it, and print its ratio against plain zstd;\n"
     "            --recompress rewrites the existing samples with it\n"
     "  snapshot  freeze the samples of a source / teacher (all, or --passed: those whose every\n"
     "            verdict passed) as snapshot NAME\n"
     "\n"
     "Exit status: 0 ok, 1 error (check: problems found), 2 usage error.\n",
     cmd_db},
    {"import", "load prompt sets and reference answers (JSONL) into a run database",
     "usage: retort import --db DB --format gsm8k|math|aime|jsonl|chat [--prompt-field F] [--answer-field F]\n"
     "                     [--source NAME] [--as-samples] [--skip-bad] [--max-prompt-bytes N] [--batch N]\n"
     "                     [--threads N] FILE...\n"
     "\n"
     "  gsm8k   {question, answer ending in \"#### N\"}: gold = N\n"
     "  math    {problem, solution, answer}: gold = answer\n"
     "  aime    {problem, answer}: gold = answer\n"
     "  jsonl   prompt = --prompt-field, gold = --answer-field (optional)\n"
     "  chat    {\"messages\": [{role, content, reasoning_content?}, ...]}: the prompt is every message\n"
     "          before the final assistant turn\n"
     "\n"
     "DB is created when absent. Prompts are identified by content hash: re-importing a file changes\n"
     "nothing, and rerunning a killed import completes it without duplicates.\n"
     "Exit status: 0 ok, 1 a file could not be imported, 2 usage error.\n",
     cmd_import},
    {"verify", "check math answers: JSONL {gold, pred} on stdin → {correct, pred_answer, gold_answer, reason}",
     "usage: retort verify [--last-number] [--float-digits N] [--decimal-places] [--reason] < PAIRS.jsonl\n"
     "\n"
     "Reads one JSON object per line, {\"gold\": ANSWER, \"pred\": SOLUTION} (strings or numbers; pred\n"
     "may be a whole solution), and writes one line per input line, in order:\n"
     "{\"correct\": true|false, \"pred_answer\": STRING|null, \"gold_answer\": STRING, \"reason\": RULE}, RULE\n"
     "saying where the answer was found and how it compared (\"boxed answer equal\", …).\n"
     "The answer in pred is the last \\boxed{} or \\fbox{}, else the last \"#### N\", else the last\n"
     "\"answer is …\" / \"Answer: …\", else pred itself when it is a short bare answer.\n"
     "\n"
     "Exit status: 0 ok, 1 bad input (the message names the line), 2 usage error.\n",
     cmd_verify},
    {"dedup", "exact and MinHash near-duplicate clusters: JSONL {id, text} → {id, cluster}",
     "usage: retort dedup [--threshold J] [--exact-only] [--threads N] < DOCS.jsonl\n"
     "\n"
     "Reads one JSON object per line, {\"id\": ID, \"text\": STRING} (id a string or an integer), and\n"
     "writes {\"id\": ID, \"cluster\": ID} per line, in order. Documents whose normalized text is\n"
     "identical, or whose MinHash-LSH signatures collide and whose estimated Jaccard similarity of\n"
     "word 5-grams is at least J, share a cluster; the cluster id is the id of its first member,\n"
     "the one kept.\n"
     "\n"
     "MinHash: word 5-grams after lowercasing and removing punctuation and extra whitespace,\n"
     "112 64-bit xxhash permutations in 14 bands of 8 rows (datatrove's defaults).\n"
     "\n"
     "Exit status: 0 ok, 1 bad input (the message names the line), 2 usage error.\n",
     cmd_dedup},
    {"filter", "score samples in a run database: verify, format, language, readability, repetition, length, decontam, dedup",
     "usage: retort filter --db DB [--config FILTERS.yaml | --preset r1] [--threads N] [--assets DIR]\n"
     "                     [--decontam FILE.jsonl]... [--decontam-field F]... [--batch N] [--quiet]\n"
     "       retort filter [--config FILE | --preset r1] --print-config\n"
     "\n"
     "Runs the chosen filters over every sample that has no verdict yet for one of them and writes\n"
     "one verdict (pass, score, reason) per sample per filter; dedup also writes clusters. Each\n"
     "batch of samples is one transaction: a killed run continues where it stopped and nothing is\n"
     "scored twice. Without --config/--preset every filter runs with its defaults.\n"
     "\n"
     "Progress (rate, ETA) goes to stderr; a summary and the funnel to stdout.\n"
     "Exit status: 0 ok, 1 error (bad configuration, database), 2 usage error.\n",
     cmd_filter},
    {"select", "choose up to K passing samples per prompt into a named snapshot",
     "usage: retort select --db DB --snapshot NAME [--per-prompt K] [--policy shortest|longest|random|all]\n"
     "                     [--seed S] [--balance-sources]\n"
     "\n"
     "Keeps, per prompt, up to K (default 1) samples that passed every filter that was run (verify\n"
     "only where the prompt has a gold answer) and are dedup representatives, chosen by policy\n"
     "(default shortest; random uses --seed, default 0; all keeps every one), and writes them as\n"
     "snapshot NAME with the selection and filter configuration in its filter_config.\n"
     "\n"
     "Exit status: 0 ok, 1 error (existing snapshot name, no verdicts), 2 usage error.\n",
     cmd_select},
    {"tokenize", "Hugging Face tokenizer.json BPE: JSONL {text} → {ids}, --decode, --chat templates",
     "usage: retort tokenize --tokenizer FILE [--special] [--threads N] < TEXTS.jsonl\n"
     "       retort tokenize --tokenizer FILE --decode [--special | --skip-special] < IDS.jsonl\n"
     "       retort tokenize --tokenizer FILE --chat KIND [--generation-prompt] < CHATS.jsonl\n"
     "\n"
     "Reads one JSON object per line on stdin and writes one line per input line, in order.\n"
     "Ids are exactly those of Hugging Face tokenizers (byte-level BPE from tokenizer.json).\n"
     "\n"
     "  encode (default)  {\"text\": S} → {\"ids\": [...]}. Special-token strings inside S are matched\n"
     "                    as tokens, as HF does; BOS/EOS are added only with --special.\n"
     "\n"
     "Exit status: 0 ok, 1 bad input (the message names the line) or unreadable tokenizer,\n"
     "2 usage error.\n",
     cmd_tokenize},
    {"export", "write samples as chat JSONL, prompts as JSONL, or packed training shards",
     "usage: retort export --db DB --format chat-jsonl|jsonl [--snapshot NAME] [--source NAME] --out FILE\n"
     "                     [--reasoning inline|field]\n"
     "       retort export --db DB [--snapshot NAME] [--source NAME] --format shards --tokenizer FILE\n"
     "                     [--template T] --seq N --out DIR [--seed S] [--drop-long]\n"
     "                     [--shard-seqs N] [--threads N] [--top-k K [--teacher-vocab N]]\n"
     "\n"
     "  chat-jsonl  one line per sample: {\"messages\": [prompt..., {\"role\": \"assistant\", \"content\":\n"
     "              \"<think>\\nTHINKING\\n</think>\\n\\nANSWER\"}], \"metadata\": {\"sample_id\", \"prompt_id\",\n"
     "              \"teacher\", \"filters\": [{\"filter\", \"pass\", \"score\"}, ...]}}; ANSWER is the text after\n"
     "              </think> (all of it without the tag, and then no think block); the prompt is the\n"
     "              messages generation sent (its system prompt and instruction included).\n"
     "              --reasoning field: content is ANSWER and THINKING goes in \"reasoning_content\"\n"
     "  jsonl       one line per prompt: the record it was imported from\n"
     "  shards      the selected samples' conversations rendered with the chat template and packed as\n"
     "              with 'retort pack' (see docs/formats.md); --template as for retort pack\n"
     "\n"
     "--snapshot selects a frozen snapshot's samples, --source one source's; by default every sample.\n"
     "FILE is written atomically ('-' is stdout). Exit status: 0 ok, 1 error, 2 usage error.\n",
     cmd_export},
    {"pack", "render chat JSONL with a chat template and pack it into training shards",
     "usage: retort pack --tokenizer FILE [--template T] --jsonl CHAT.jsonl --seq N --out DIR\n"
     "                   [--seed S] [--drop-long] [--shard-seqs N] [--threads N] [--top-k K [--teacher-vocab N]]\n"
     "\n"
     "Renders each {\"messages\": [...]} line with the chat template; the assistant mask is the loss mask.\n"
     "The template (docs/chat-templates.md): --template deepseek-r1|qwen|llama3 (built-in), auto or FILE\n"
     "(a tokenizer_config.json or a Jinja file); by default the chat_template of the tokenizer_config.json\n"
     "beside FILE, else the built-in whose markers the tokenizer has. Its markers must be single tokens of\n"
     "the tokenizer, or pack stops naming the one that is not.\n"
     "Documents are packed into sequences of N tokens by best-fit decreasing (ties and the order of\n"
     "sequences shuffled with --seed, default 0); a document longer than N is split into pieces of N\n"
     "(or dropped with --drop-long), and counted. DIR gets shard-00000.bin, ... and index.json; the\n"
     "shard format (header, token ids, loss mask, document boundaries) is in docs/formats.md.\n"
     "\n"
     "Exit status: 0 ok, 1 error (a line that is not a conversation names file and line), 2 usage error.\n",
     cmd_pack},
    {"train", "train a dense student (llama/qwen2/qwen3) on packed shards: SFT with AdamW, checkpoints, exact resume",
     "usage: retort train (--init CONFIG.json | --model DIR | --resume DIR/step-N) --data SHARDS --batch B\n"
     "                    (--steps N | --epochs E) --lr X --out DIR [--resume auto | --overwrite] [options]\n"
     "\n"
     "Trains on the packed shards of `retort pack` (a directory of *.bin, or one file): each sequence\n"
     "holds whole documents; positions restart and attention stays inside each document; the loss is\n"
     "the mean cross-entropy over the tokens whose loss mask is 1.\n"
     "\n"
     "\n"
     "retort train --plan --init CONFIG.json --seq T [--batch B] [--ranks N] [--zero 0-3] [--checkpoint-layers]\n"
     "             [--offload-optimizer] [--offload-activations] [--ce-chunk N] [--kd-top-k K]\n"
     "             [--gpu-memory GIB] [--json]\n"
     "  prints the GPU trainer's memory per rank by component (weights, master weights, moments,\n"
     "  gradient, buckets, gathered layers, activations, loss chunk, workspace; with --kd-top-k, the\n"
     "  teacher top-k buffer of logit distillation) and whether it fits\n"
     "  GIB (default 80); nothing is read but the config, nothing trained. --json: one object\n"
     "  {\"per_rank_bytes\": {...}, \"total_bytes\", \"gpu_memory_bytes\", \"fits\"}. Exit 0 either way.\n"
     "\n"
     "Data parallel: `mpirun -np P retort train ...` runs P ranks (one per GPU; on the CPU, --threads\n"
     "defaults to the node's CPUs divided by its ranks). A step reads batch × grad-accum × P sequences,\n"
     "each rank its own batch × grad-accum of them; the loss is normalized by the step's loss tokens\n"
     "over all ranks, so P ranks compute the 1-rank step of the same global batch. Rank 0 prints,\n"
     "logs and writes checkpoints (in the 1-rank format: a run resumes at any rank count).\n"
     "\n"
     "A progress line on stderr shows step, loss, lr, gradient norm, tokens/s and ETA. A NaN or Inf\n"
     "loss or gradient norm stops the run at that step, before the update and without saving.\n"
     "Exit status: 0 ok, 1 error (bad data, checkpoint, another run's --out, divergence or I/O),\n"
     "2 usage error.\n",
     cmd_train},
    {"generate", "sample completions from a teacher (the CPU engine or an OpenAI-compatible endpoint)",
     "usage: retort generate --model DIR [--tokenizer FILE] [--template T] --jsonl PROMPTS [--n K]\n"
     "                       [--max-tokens N] [--temperature X] [--top-p P] [--top-k K] [--min-p P] [--seed S]\n"
     "                       [--max-batch B] [--logprobs K] [--stop STR]... [--ignore-eos] [--cache-tokens N]\n"
     "                       [--threads N] [--device cpu|cuda] [--gpu-memory-fraction F] [--no-cuda-graphs]\n"
     "\n"
     "Reads PROMPTS ('-': stdin), one JSON object per line: {\"prompt\": TEXT} (tokenized with the\n"
     "tokenizer's special tokens), {\"messages\": [{role, content}, ...]} (rendered with the chat template\n"
     "and its generation prompt: --template deepseek-r1|qwen|llama3|auto|FILE, by default the tokenizer's\n"
     "own chat_template, docs/chat-templates.md) or {\"prompt_ids\": [ids]}. Writes one line per\n"
     "sample as it finishes: {\"index\": LINE (0-based, blank lines skipped), \"sample\": J, \"ids\": [...],\n"
     "\"text\": S (null without a tokenizer; special tokens and a matched stop string left out),\n"
     "\"finish_reason\": \"stop\"|\"length\"}; with --logprobs K also \"logprobs\": [{\"id\", \"logprob\",\n"
     "\"top\": [[id, logprob] x K]}] (log_softmax of the model's logits; K = 0: no \"top\").\n"
     "\n"
     "A progress line (samples, tokens, tokens/s) goes to stderr.\n"
     "Exit status: 0 ok, 1 error (bad input names its line; nothing is generated), 2 usage error.\n"
     "\n"
     "usage: retort generate --db DB --teacher local:MODEL_DIR|URL [--model NAME] [--api-key-env VAR]\n"
     "                       [--source S] [--n K] [--max-tokens N] [--temperature 0.6] [--top-p 0.95]\n"
     "                       [--seed S] [--concurrency C] [--logprobs K] [--system TEXT]\n"
     "                       [--instruction auto|none|TEXT] [--no-think-prefix] [--tokenizer FILE]\n"
     "                       [--template T] [--threads N] [--cache-tokens N] [--timeout S] [--retries N]\n"
     "                       [--top-k K] [--min-p P] [--no-stream] [--quiet] [--device cpu|cuda]\n"
     "                       [--gpu-memory-fraction F] [--no-cuda-graphs]\n"
     "\n"
     "Fills DB (--db and --jsonl are mutually exclusive): every prompt (of source S) that lacks K samples\n"
     "(default 1) for this teacher and sampling configuration gets the missing indices 0..K-1, each stored\n"
     "in its own transaction (zstd text, prompt/thinking/answer tokens, finish reason, mean logprob, with\n"
     "--logprobs K the top-K alternatives). A rerun, also after kill -9, generates exactly the missing ones.\n"
     "\n"
     "Here --temperature and --top-p default to DeepSeek's R1 advice, 0.6 and 0.95, and --max-tokens to\n"
     "32768 (clipped to a local model's context); sample j of prompt p has its own seed derived from\n"
     "(--seed, p, j), stored with it. --top-k and --min-p are off by default; when set they join the\n"
     "params (sent to an endpoint as vLLM's top_k / min_p fields). --template, --threads, --cache-tokens,\n"
     "--device, --gpu-memory-fraction and --no-cuda-graphs are for local teachers only (ignored for an\n"
     "endpoint).\n"
     "\n"
     "Reasoning arriving as reasoning_content or inline in <think>…</think> is stored the same way:\n"
     "\"<think>\\nREASONING\\n</think>\\n\\nANSWER\". A progress line (prompts and samples done, tokens/s,\n"
     "ETA, errors) goes to stderr every 2 s. Ctrl-C (SIGINT/SIGTERM) stops issuing, drops what is in\n"
     "flight and exits 130; everything stored stays. Exit status: 0 done, 1 error, 2 usage error, 130\n"
     "interrupted.\n",
     cmd_generate},
    {"eval", "run a benchmark (GSM8K, MATH-500, AIME 2024, or a JSONL file) through a model: pass@1, cons@k",
     "usage: retort eval --db DB --model local:DIR|URL --bench gsm8k|math500|aime24|FILE.jsonl [--k K]\n"
     "                   [--temperature T] [--top-p P] [--max-tokens N] [--name RUN] [--tokenizer FILE]\n"
     "                   [--template deepseek-r1|qwen|llama3|auto|FILE] [--seed S] [--threads N] [--max-batch B]\n"
     "                   [--cache-tokens N] [--limit N] [--json] [--device cpu|cuda] [--gpu-memory-fraction F]\n"
     "                   [--no-cuda-graphs]\n"
     "                   [--model-name NAME] [--api-key-env VAR] [--concurrency C] [--timeout S] [--retries N]\n"
     "                   [--no-stream]                                   (URL models)\n"
     "\n"
     "The R1 protocol: K samples per question (default 4) at temperature T (0.6), top-p P (0.95), at most\n"
     "N new tokens (32768, clipped to the model's context). Each answer is checked by the verifier\n"
     "(retort verify) against the gold answer, and every sample is stored in DB's eval_results (run,\n"
     "model, benchmark, question, sample index, response, extracted answer, correct, tokens, finish,\n"
     "latency). Samples already stored for the run are skipped, so a killed eval resumes and a rerun\n"
     "adds nothing. Prints pass@1 (mean correctness over the K samples, averaged over questions, with a\n"
     "95% normal interval over questions), cons@K (majority vote over the extracted answers), mean\n"
     "length in tokens and the truncation rate (finish \"length\").\n"
     "\n"
     "\n"
     "Under mpirun (`mpirun -np P retort eval ...`, one rank per GPU) a model that splits over the ranks\n"
     "(DeepSeek-V3 on the CPU, dense on cuda) is loaded in parts and rank 0 alone writes the results, as\n"
     "for retort generate; a dense model on the CPU and a URL model run on rank 0 alone.\n"
     "\n"
     "Exit status: 0 ok, 1 error, 2 usage error.\n",
     cmd_eval},
    {"compare", "eval runs side by side: pass@1 with 95% interval, cons@k, length, per-question agreement",
     "usage: retort compare --db DB RUN_A RUN_B [RUN...] [--json]\n"
     "\n"
     "For every benchmark the runs were evaluated on (retort eval): each run's questions, k, pass@1\n"
     "with its 95% interval (the normal interval over questions, mean +- 1.96 s/sqrt(n) of the\n"
     "per-question pass@1), cons@k, mean length in tokens and truncation rate; then for every pair of\n"
     "runs the questions both answered, how often they agree (a question is solved when its majority\n"
     "vote is right), and the prompt ids that one run solves and the other does not.\n"
     "\n"
     "Exit status: 0 ok, 1 error (a run with no results), 2 usage error.\n",
     cmd_compare},
    {"report", "write one self-contained HTML report: funnel, length histograms, train curves, eval bars",
     "usage: retort report --db DB --out report.html [--train-log FILE.jsonl ...]\n"
     "\n"
     "One HTML file with inline SVG charts (no script, no network): the filter funnel, length\n"
     "histograms (tokens when counted, and bytes) of kept and removed samples, training loss and\n"
     "learning rate against step from each --train-log (the JSON lines of retort train --log), and per\n"
     "benchmark each eval run's pass@1 (with its 95% interval) and cons@k, with tables. Sections\n"
     "without data say which command fills them. The file is written atomically.\n"
     "\n"
     "Exit status: 0 ok, 1 error, 2 usage error.\n",
     cmd_report},
    {"resize-vocab", "add a chat template's special tokens to a model's tokenizer and grow its embeddings",
     "usage: retort resize-vocab --model DIR --add-tokens-from TEMPLATE|TOKENIZER.json --out DIR [--overwrite]\n"
     "\n"
     "Writes OUT, a copy of the model directory DIR whose tokenizer holds the tokens a chat template\n"
     "renders as single tokens (deepseek-r1: <\uff5cbegin\u2581of\u2581sentence\uff5c>, <\uff5cend\u2581of\u2581sentence\uff5c>, <\uff5cUser\uff5c>,\n"
     "<\uff5cAssistant\uff5c>, <think>, </think>; qwen: <|im_start|>, <|im_end|>; llama3: <|begin_of_text|>,\n"
     "<|start_header_id|>, <|end_header_id|>, <|eot_id|>), or the special added tokens of another\n"
     "tokenizer.json. Tokens already there are kept; new ones get the next free ids. When they pass\n"
     "the config's vocab_size, embed_tokens (and an untied lm_head) grow, each new row the mean of the\n"
     "old rows (transformers' resize_token_embeddings with mean_resizing), as DeepSeek-R1-Distill-Qwen\n"
     "added R1's markers to Qwen2.5's tokenizer. OUT must be new or empty (--overwrite: its files are\n"
     "removed first).\n"
     "\n"
     "Exit status: 0 ok, 1 error, 2 usage error.\n",
     cmd_resize_vocab},
    {"demo", "the whole pipeline on a built-in task: teacher, samples, filters, student, eval, report",
     "usage: retort demo [--seed S] [--quick] [--dir DIR] [--threads N]\n"
     "\n"
     "Runs every stage from nothing on a synthetic task (two-step arithmetic word problems with a\n"
     "worked <think> solution and a \\boxed{} answer): writes the task and a byte-level tokenizer.json,\n"
     "imports the train split into DIR/run.db, trains a small qwen2 teacher, samples it at\n"
     "temperature 0.6 into run.db, filters (verify, format, repetition, dedup, decontamination\n"
     "against the test split, ...), selects a snapshot, trains a smaller student on it, evaluates both\n"
     "on the test split and writes DIR/report.html. Each stage is printed with its timing; the end\n"
     "states both accuracies and their ratio. An earlier demo's run.db in DIR is replaced.\n"
     "\n"
     "Exit status: 0 ok, 1 error, 2 usage error.\n",
     cmd_demo},
    {"serve", "serve a model over an OpenAI-compatible HTTP API (chat, completions, streaming)",
     "usage: retort serve --model DIR [--host 127.0.0.1] [--port 8000] [--api-key KEY]\n"
     "                    [--tokenizer FILE] [--template T] [--served-model-name NAME]\n"
     "                    [--max-batch 16] [--cache-tokens 65536] [--threads N] [--max-body 4194304]\n"
     "                    [--device cpu|cuda] [--gpu-memory-fraction F] [--no-cuda-graphs]\n"
     "                    [--max-connections 4096] [--max-connections-per-ip 512] [--header-timeout 10]\n"
     "\n"
     "Serves DIR over an OpenAI-compatible HTTP API: POST /v1/chat/completions and /v1/completions\n"
     "(streaming with \"stream\": true, n, temperature, top_p, top_k, min_p, max_tokens, seed, stop,\n"
     "logprobs / top_logprobs, usage; chat output split into reasoning_content and content at </think>),\n"
     "GET /v1/models, /health, /metrics (Prometheus). Binds 127.0.0.1 unless --host says otherwise;\n"
     "--port 0 picks a free port. Prints \"retort serve: listening on http://HOST:PORT\" on stderr.\n"
     "An empty --api-key (or RETORT_API_KEY) is a usage error.\n"
     "SIGTERM or SIGINT stops accepting, finishes the requests in flight, and exits 0.\n", cmd_serve},
    {"run", "run a recipe (RECIPE.yaml): the pipeline's stages in order, resumably",
     "usage: retort run RECIPE.yaml [--dry-run] [--from STAGE | --only STAGE] [--set KEY=VALUE]...\n"
     "\n"
     "Runs the recipe's stages (import, generate, filter, select, export, pack, train, eval, compare,\n"
     "report) in order, each as a child process of this binary behind its launcher (\"mpirun -np 8\",\n"
     "\"srun ...\") when it has one; their output streams through, and the first failure stops the run\n"
     "with one line naming the stage. The recipe format is in docs/recipes.md; configs/recipes/ holds\n"
     "the R1-distill recipes and tiny-cpu.yaml.\n"
     "\n"
     "WORK_DIR/recipe-state.json records each finished stage with a hash of its resolved command: a\n"
     "rerun skips the finished stages whose command did not change and runs the first one that is\n"
     "not finished or changed and every stage after it. A stage that was interrupted continues\n"
     "(train: --resume from the newest checkpoint in its --out; the other stages resume by themselves).\n"
     "\n"
     "Exit status: 0 ok, 1 error (a bad recipe names file, line and key; a failed stage), 2 usage error.\n",
     cmd_run},
    {"version", "print the version and what this build supports",
     "usage: retort version\n", cmd_version},
};

const cli_command *cli_find(const char *name) {
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(commands[i].name, name)) return &commands[i];
    return NULL;
}

int cli_fail(const char *what) {
    const char *m = rt_errmsg();
    if (what && *what) fprintf(stderr, "retort: %s: %s\n", what, *m ? m : "failed");
    else fprintf(stderr, "retort: %s\n", *m ? m : "failed");
    return EXIT_RUNTIME;
}

int cli_usage_error(const char *name, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "retort %s: ", name);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see 'retort help %s')\n", name);
    return EXIT_USAGE;
}

int cli_wants_help(const char *name, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) break;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            cli_print_usage(name, stdout);
            return 1;
        }
    }
    return 0;
}

void cli_getopt_init(const char *name, unsigned mode, cli_getopt *g) {
    const co_command *c = co_find(name);
    int n = c ? co_getopt(c, mode, g->opts, sizeof g->opts / sizeof *g->opts, g->shorts, sizeof g->shorts) : -1;
    assert(n >= 0 && "cli_getopt: a command without a table, or one too large for cli_getopt");
    (void)n;
}

void cli_print_usage(const char *name, FILE *out) {
    const cli_command *c = cli_find(name);
    const co_command *t = co_find(name);
    /* the options go before the closing "Exit status: ..." paragraph, when there is one */
    const char *tail = NULL;
    for (const char *q = strstr(c->usage, "\nExit status:"); q; q = strstr(q + 1, "\nExit status:"))
        if (!strstr(q + 1, "\n\n")) tail = q + 1;   /* the last paragraph only */
    if (!t || !(t->opts[0].name || t->opts[0].recipe)) { fputs(c->usage, out); return; }
    if (!tail) tail = c->usage + strlen(c->usage);
    fwrite(c->usage, 1, (size_t)(tail - c->usage), out);
    size_t k = (size_t)(tail - c->usage);
    if (!(k >= 2 && c->usage[k - 1] == '\n' && c->usage[k - 2] == '\n')) fputc('\n', out);   /* a blank line before */
    co_help(out, t, 0);
    if (*tail) fprintf(out, "\n%s", tail);
}

int cli_parse_seed(const char *name, const char *arg, uint64_t *out) {
    if (co_parse_u64(arg, out)) return 0;
    return cli_usage_error(name, "--seed must be an integer from 0 to 18446744073709551615, got '%s'", arg);
}

const char *cli_thousands(long long n, char *buf, size_t len) {
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, "%lld", n < 0 ? -n : n), o = 0;
    if (n < 0 && (size_t)o + 1 < len) buf[o++] = '-';
    for (int i = 0; i < k && (size_t)o + 2 < len; i++) {
        if (i && (k - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = 0;
    return buf;
}

static void print_help(FILE *out) {
    fprintf(out,
            "retort — distill reasoning models: teacher generation, filtering, student training, evaluation\n"
            "\n"
            "usage: retort [--log-level debug|info|warn|error|quiet] [--verbose] COMMAND [ARGS]\n"
            "  (--verbose: --log-level debug; errors also show the failing call and source line)\n"
            "\n"
            "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "  %-10s %s\n", "help", "show the usage of a command: retort help COMMAND");
    fprintf(out, "\nExit status: 0 ok, 1 runtime error (bad input, I/O), 2 usage error.\n");
}

int cmd_version(int argc, char **argv) {
    if (cli_wants_help("version", argc, argv)) return EXIT_OK;
    if (argc > 1) return cli_usage_error("version", "unexpected argument '%s'", argv[1]);
    printf("retort %s\n", RETORT_VERSION);
    char gemm[320];
    printf("cpu gemm: %s\n", mm_gemm_describe(gemm, sizeof gemm));
#ifdef RT_HAVE_CUDA
    printf("cuda: built (sm_80, sm_90a)\n");
#else
    printf("cuda: not built (CPU only)\n");
#endif
    return EXIT_OK;
}

int main(int argc, char **argv) {
    int i = 1;
    while (i < argc && argv[i][0] == '-') {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { print_help(stdout); return EXIT_OK; }
        if (!strcmp(argv[i], "--version")) return cmd_version(1, argv);
        if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "-v")) {
            rt_log_set_level(RT_LOG_DEBUG);
            i++;
            continue;
        }
        if (!strcmp(argv[i], "--log-level") && i + 1 < argc) {
            int lv = rt_log_parse_level(argv[i + 1]);
            if (lv < 0) {
                fprintf(stderr, "retort: unknown log level '%s' (debug, info, warn, error, quiet)\n", argv[i + 1]);
                return EXIT_USAGE;
            }
            rt_log_set_level((rt_log_level)lv);
            i += 2;
            continue;
        }
        fprintf(stderr, "retort: unknown option '%s'\n(see 'retort --help')\n", argv[i]);
        return EXIT_USAGE;
    }
    if (i >= argc) {
        print_help(stderr);
        return EXIT_USAGE;
    }
    mm_gemm_kernel gemm_kernel;   /* a RETORT_GEMM the kernels cannot honour is one clear line, up front */
    if (mm_gemm_choose(&gemm_kernel)) {
        fprintf(stderr, "retort: %s\n", rt_errmsg());
        return EXIT_USAGE;
    }
    const char *name = argv[i];
    if (!strcmp(name, "help")) {
        if (i + 1 >= argc) { print_help(stdout); return EXIT_OK; }
        const cli_command *c = cli_find(argv[i + 1]);
        if (!c) {
            fprintf(stderr, "retort: unknown command '%s'\n(see 'retort --help')\n", argv[i + 1]);
            return EXIT_USAGE;
        }
        cli_print_usage(c->name, stdout);
        return EXIT_OK;
    }
    const cli_command *c = cli_find(name);
    if (!c) {
        fprintf(stderr, "retort: unknown command '%s'\n(see 'retort --help')\n", name);
        return EXIT_USAGE;
    }
    return c->run(argc - i, argv + i);
}
