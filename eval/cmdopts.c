/* eval/cmdopts.c — every subcommand's options, once (contract in cmdopts.h). */
#include "eval/cmdopts.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Columns: name, getopt value, short letter, argument, modes, metavar, help, recipe key, roles. */
#define HELP_OPT {"help", 'h', 'h', CO_FLAG, 0, NULL, "print this help and exit", NULL, 0}
#define END {0}

static const co_opt INSPECT[] = {
    {"json", 'j', 0, CO_FLAG, 0, NULL, "one JSON object on stdout instead of the summary", NULL, 0},
    {"check-values", 'v', 0, CO_FLAG, 0, NULL, "read every floating-point value and list tensors holding NaN or Inf", NULL, 0},
    HELP_OPT, END};

static const co_opt DB[] = {
    {"json", 'j', 0, CO_FLAG, 0, NULL, "stats: one JSON object", NULL, 0},
    {"size", 's', 0, CO_STR, 0, "BYTES", "dict: dictionary size (default 112640)", NULL, 0},
    {"max-samples", 'm', 0, CO_STR, 0, "N", "dict: samples to train it on (default 20000)", NULL, 0},
    {"recompress", 'r', 0, CO_FLAG, 0, NULL, "dict: rewrite the existing samples with it", NULL, 0},
    {"source", 'S', 0, CO_STR, 0, "S", "snapshot: only samples of prompts of source S", NULL, 0},
    {"teacher", 'T', 0, CO_STR, 0, "T", "snapshot: only samples of teacher T", NULL, 0},
    {"passed", 'p', 0, CO_FLAG, 0, NULL, "snapshot: only samples whose every verdict passed", NULL, 0},
    HELP_OPT, END};

static const co_opt IMPORT[] = {
    {"db", 'd', 0, CO_STR, 0, "DB", "the run database (created when absent)", "db", 0},
    {"format", 'f', 0, CO_STR, 0, "F", "gsm8k, math, aime, jsonl or chat", "format", 0},
    {"prompt-field", 'p', 0, CO_STR, 0, "F", "jsonl: the prompt's field", "prompt-field", 0},
    {"answer-field", 'a', 0, CO_STR, 0, "F", "jsonl: the gold answer's field (optional)", "answer-field", 0},
    {"source", 's', 0, CO_STR, 0, "NAME", "source recorded with each prompt (default: file name without extension)", "source", 0},
    {"as-samples", 'S', 0, CO_FLAG, 0, NULL, "also store the reference answer as a sample of teacher \"reference\"", "as-samples", 0},
    {"skip-bad", 'k', 0, CO_FLAG, 0, NULL, "import the good lines of a file with malformed ones", "skip-bad", 0},
    {"batch", 'b', 0, CO_INT, 0, "N", "lines per transaction (default 5000)", "batch", 0},
    {"threads", 't', 0, CO_INT, 0, "N", "parsing threads (default: one per CPU)", "threads", 0},
    {"max-prompt-bytes", 'M', 0, CO_STR, 0, "N", "longest prompt accepted (K, M, G suffixes; default 4M)", "max-prompt-bytes", 0},
    HELP_OPT,
    {NULL, 0, 0, CO_POS, 0, "FILE...", "the files to import", "files", CO_IN},
    END};

static const co_opt VERIFY[] = {
    {"last-number", 'l', 0, CO_FLAG, 0, NULL, "fall back to the last $…$ span or number of pred", NULL, 0},
    {"float-digits", 'd', 0, CO_INT, 0, "N", "floats agree when rounded to N significant digits (default 6)", NULL, 0},
    {"decimal-places", 'p', 0, CO_FLAG, 0, NULL, "count those digits after the decimal point instead", NULL, 0},
    {"reason", 'r', 0, CO_FLAG, 0, NULL, "accepted for compatibility (the reason is always written)", NULL, 0},
    HELP_OPT, END};

static const co_opt DEDUP[] = {
    {"threshold", 't', 0, CO_NUM, 0, "J", "estimated Jaccard similarity to merge (0..1, default 0.8)", NULL, 0},
    {"exact-only", 'x', 0, CO_FLAG, 0, NULL, "only exact duplicates (normalized text)", NULL, 0},
    {"threads", 'j', 'j', CO_INT, 0, "N", "signature threads (default: one per CPU)", NULL, 0},
    HELP_OPT, END};

static const co_opt FILTER[] = {
    {"db", 'd', 0, CO_STR, 0, "DB", "the run database", "db", 0},
    {"config", 'c', 0, CO_STR, 0, "FILE", "filters and thresholds (YAML subset or JSON; docs/filters.md)", "config", CO_IN},
    {"preset", 'p', 0, CO_STR, 0, "r1", "DeepSeek-R1's rejection-sampling recipe", "preset", 0},
    {"threads", 't', 0, CO_INT, 0, "N", "scoring threads (default: one per CPU)", "threads", 0},
    {"assets", 'a', 0, CO_STR, 0, "DIR", "benchmarks for decontam in DIR/benchmarks (default $RETORT_ASSETS)", "assets", CO_IN},
    {"decontam", 'D', 0, CO_LIST, 0, "FILE", "also decontaminate against FILE (JSONL); repeatable", "decontam", CO_IN},
    {"batch", 'b', 0, CO_INT, 0, "N", "samples per transaction (default 512)", "batch", 0},
    {"print-config", 'P', 0, CO_FLAG, 0, NULL, "print the resolved configuration (JSON) and exit", NULL, 0},
    {"quiet", 'q', 0, CO_FLAG, 0, NULL, "no progress line", "quiet", 0},
    {"decontam-field", 'F', 0, CO_LIST, 0, "F", "index field F of the benchmark records (repeatable)", "decontam-field", 0},
    HELP_OPT, END};

static const co_opt SELECT[] = {
    {"db", 'd', 0, CO_STR, 0, "DB", "the run database", "db", 0},
    {"snapshot", 's', 0, CO_STR, 0, "NAME", "the snapshot to write", "snapshot", 0},
    {"per-prompt", 'k', 0, CO_INT, 0, "K", "samples kept per prompt (default 1)", "per-prompt", 0},
    {"policy", 'p', 0, CO_STR, 0, "P", "shortest (default), longest, random or all", "policy", 0},
    {"seed", 'S', 0, CO_U64, 0, "S", "seed of the random policy (default 0)", "seed", 0},
    {"balance-sources", 'b', 0, CO_FLAG, 0, NULL, "every source keeps at most as many samples as the smallest", "balance-sources", 0},
    HELP_OPT, END};

static const co_opt TOKENIZE[] = {
    {"tokenizer", 't', 0, CO_STR, 0, "FILE", "tokenizer.json (required)", NULL, 0},
    {"decode", 'd', 0, CO_FLAG, 0, NULL, "{\"ids\"} → {\"text\"}", NULL, 0},
    {"special", 's', 0, CO_FLAG, 0, NULL, "encode: add BOS/EOS; decode: keep special tokens", NULL, 0},
    {"skip-special", 'k', 0, CO_FLAG, 0, NULL, "decode: leave special tokens out", NULL, 0},
    {"chat", 'c', 0, CO_STR, 0, "KIND", "render {\"messages\"} with chat template KIND (deepseek-r1, qwen, llama3)", NULL, 0},
    {"generation-prompt", 'g', 0, CO_FLAG, 0, NULL, "with --chat: add the generation prompt", NULL, 0},
    {"threads", 'j', 0, CO_INT, 0, "N", "encoding threads (default: one per CPU)", NULL, 0},
    END};

static const co_opt EXPORT[] = {
    {"db", 'd', 0, CO_STR, 0, "DB", "the run database", "db", 0},
    {"format", 'f', 0, CO_STR, 0, "F", "chat-jsonl, jsonl or shards", "format", 0},
    {"snapshot", 's', 0, CO_STR, 0, "NAME", "the samples of snapshot NAME", "snapshot", 0},
    {"source", 'S', 0, CO_STR, 0, "NAME", "only prompts of source NAME", "source", 0},
    {"out", 'O', 0, CO_STR, 0, "PATH", "the file (or the shard directory) to write", "out", 0},
    {"tokenizer", 'K', 0, CO_STR, 0, "FILE", "shards: tokenizer.json", "tokenizer", CO_IN},
    {"template", 'T', 0, CO_STR, 0, "T", "shards: chat template (deepseek-r1|qwen|llama3|auto|FILE)", "template", 0},
    {"seq", 'N', 0, CO_INT, 0, "N", "shards: sequence length", "seq", 0},
    {"seed", 'R', 0, CO_U64, 0, "S", "shards: shuffle seed (default 0)", "seed", 0},
    {"drop-long", 'D', 0, CO_FLAG, 0, NULL, "shards: drop documents longer than --seq instead of splitting them", "drop-long", 0},
    {"shard-seqs", 'P', 0, CO_INT, 0, "N", "shards: sequences per shard", "shard-seqs", 0},
    {"threads", 'j', 0, CO_INT, 0, "N", "shards: tokenizing threads (1..64)", "threads", 0},
    {"reasoning", 'r', 0, CO_STR, 0, "R", "chat-jsonl: reasoning inline (in <think>) or as a field", NULL, 0},
    {"top-k", 'k', 0, CO_INT, 0, "K", "shards: carry the teacher's top-K logprobs (logit distillation)", "top-k", 0},
    {"teacher-vocab", 'U', 0, CO_INT, 0, "V", "shards: the teacher's vocabulary size", "teacher-vocab", 0},
    HELP_OPT, END};

static const co_opt PACK[] = {
    {"tokenizer", 'K', 0, CO_STR, 0, "FILE", "tokenizer.json", "tokenizer", CO_IN},
    {"template", 'T', 0, CO_STR, 0, "T", "chat template (deepseek-r1|qwen|llama3|auto|FILE)", "template", 0},
    {"jsonl", 'J', 0, CO_STR, 0, "FILE", "chat JSONL to pack", "jsonl", CO_IN},
    {"seq", 'N', 0, CO_INT, 0, "N", "sequence length", "seq", 0},
    {"out", 'O', 0, CO_STR, 0, "DIR", "the shard directory", "out", 0},
    {"seed", 'R', 0, CO_U64, 0, "S", "shuffle seed (default 0)", "seed", 0},
    {"drop-long", 'D', 0, CO_FLAG, 0, NULL, "drop documents longer than --seq instead of splitting them", "drop-long", 0},
    {"shard-seqs", 'P', 0, CO_INT, 0, "N", "sequences per shard", "shard-seqs", 0},
    {"threads", 'j', 0, CO_INT, 0, "N", "tokenizing threads (1..64)", "threads", 0},
    HELP_OPT,
    {"top-k", 'k', 0, CO_INT, 0, "K", "carry the teacher's top-K logprobs", "top-k", 0},
    {"teacher-vocab", 'U', 0, CO_INT, 0, "V", "the teacher's vocabulary size", "teacher-vocab", 0},
    END};

/* train: CO_MODE1 the trainer, CO_MODE2 --plan (memory arithmetic) */
#define M1 CO_MODE1
#define M2 CO_MODE2
static const co_opt TRAIN[] = {
    {"init", CO_TRAIN_INIT, 0, CO_STR, 0, "CONFIG.json", "start from random weights of this config", "init", CO_IN},
    {"model", CO_TRAIN_MODEL, 0, CO_STR, 0, "DIR", "start from this Hugging Face model directory", "model", CO_IN},
    {"data", CO_TRAIN_DATA, 0, CO_STR, M1, "SHARDS", "packed shards (retort pack / export)", "data", CO_IN},
    {"seq", CO_TRAIN_SEQ, 0, CO_INT, 0, "T", "sequence length", "seq", 0},
    {"batch", CO_TRAIN_BATCH, 0, CO_INT, 0, "B", "sequences per micro-batch", "batch", 0},
    {"grad-accum", CO_TRAIN_ACCUM, 0, CO_INT, 0, "N", "micro-batches per step", "grad-accum", 0},
    {"steps", CO_TRAIN_STEPS, 0, CO_INT, M1, "N", "optimizer steps (or --epochs)", "steps", 0},
    {"epochs", CO_TRAIN_EPOCHS, 0, CO_NUM, M1, "E", "passes over the data (or --steps)", "epochs", 0},
    {"lr", CO_TRAIN_LR, 0, CO_NUM, M1, "X", "peak learning rate", "lr", 0},
    {"min-lr-ratio", CO_TRAIN_MINLR, 0, CO_NUM, M1, "R", "cosine/linear end at R·lr (default 0.1)", "min-lr-ratio", 0},
    {"warmup", CO_TRAIN_WARMUP, 0, CO_INT, M1, "N", "linear warmup steps (default 0)", "warmup", 0},
    {"weight-decay", CO_TRAIN_WD, 0, CO_NUM, M1, "W", "AdamW decoupled decay on matrices (default 0)", "weight-decay", 0},
    {"clip", CO_TRAIN_CLIP, 0, CO_NUM, M1, "C", "clip the global gradient norm to C (default 1; 0: off)", "clip", 0},
    {"seed", CO_TRAIN_SEED, 0, CO_U64, M1, "S", "data order and --init weights (default 0)", "seed", 0},
    {"out", CO_TRAIN_OUT, 0, CO_STR, M1, "DIR", "checkpoints go to DIR/step-N/ and DIR/step-N.state/", "out", CO_OUT},
    {"save-every", CO_TRAIN_SAVE, 0, CO_INT, M1, "N", "also save every N steps", "save-every", 0},
    {"resume", CO_TRAIN_RESUME, 0, CO_STR, M1, "DIR|auto", "continue from a checkpoint", "resume", CO_IN},
    {"log", CO_TRAIN_LOG, 0, CO_STR, M1, "FILE", "append one JSON object per step", "log", CO_LOG},
    {"schedule", CO_TRAIN_SCHED, 0, CO_STR, M1, "S", "cosine (default), linear or constant", "schedule", 0},
    {"dtype", CO_TRAIN_DTYPE, 0, CO_STR, M1, "bf16|f32", "model.safetensors element type (default bf16)", "dtype", 0},
    {"threads", CO_TRAIN_THREADS, 0, CO_INT, M1, "N", "worker threads (default: one per CPU)", "threads", 0},
    {"checkpoint-layers", CO_TRAIN_CKPT, 0, CO_FLAG, 0, NULL, "recompute each layer's forward in the backward", "checkpoint-layers", 0},
    {"ce-chunk", CO_TRAIN_CHUNK, 0, CO_INT, 0, "N", "rows per chunk of the fused LM-head cross-entropy", "ce-chunk", 0},
    {"beta1", CO_TRAIN_B1, 0, CO_NUM, M1, "B", "AdamW beta1 (default 0.9)", "beta1", 0},
    {"beta2", CO_TRAIN_B2, 0, CO_NUM, M1, "B", "AdamW beta2 (default 0.95)", "beta2", 0},
    {"adam-eps", CO_TRAIN_EPS, 0, CO_NUM, M1, "E", "AdamW epsilon (default 1e-8)", "adam-eps", 0},
    {"zero", CO_TRAIN_ZERO, 0, CO_INT, 0, "0|1|2|3", "ZeRO stage of the data-parallel run", "zero", 0},
    {"device", CO_TRAIN_DEVICE, 0, CO_STR, 0, "cpu|cuda", "the trainer's device (default cpu; --plan: cuda)", "device", 0},
    {"overwrite", CO_TRAIN_OVERWRITE, 0, CO_FLAG, M1, NULL, "delete the step-* entries of --out first", "overwrite", 0},
    {"offload-optimizer", CO_TRAIN_OFFLOAD, 0, CO_FLAG, 0, NULL, "(cuda) optimizer state in pinned host memory", "offload-optimizer", 0},
    {"offload-activations", CO_TRAIN_OFFLOAD_ACTS, 0, CO_FLAG, 0, NULL, "(cuda) layer inputs in pinned host memory", "offload-activations", 0},
    {"tokenizer", CO_TRAIN_TOKENIZER, 0, CO_STR, M1, "FILE", "the tokenizer.json copied into the model directories", "tokenizer", CO_IN},
    {"max-shard-size", CO_TRAIN_SHARD, 0, CO_NUM, M1, "B", "split model.safetensors into shards of at most B bytes", "max-shard-size", 0},
    {"tensorboard", CO_TRAIN_TB, 0, CO_STR, M1, "DIR", "also write TensorBoard event files there", "tensorboard", 0},
    {"val-data", CO_TRAIN_VAL_DATA, 0, CO_STR, M1, "SHARDS", "validation shards", "val-data", CO_IN},
    {"val-every", CO_TRAIN_VAL_EVERY, 0, CO_INT, M1, "N", "validation loss every N steps", "val-every", 0},
    {"val-frac", CO_TRAIN_VAL_FRAC, 0, CO_NUM, M1, "F", "hold out the last F of --data for validation", "val-frac", 0},
    {"kd-alpha", CO_TRAIN_KD_ALPHA, 0, CO_NUM, M1, "A", "logit distillation weight (default 0: SFT)", "kd-alpha", 0},
    {"kd-temperature", CO_TRAIN_KD_TEMP, 0, CO_NUM, M1, "T", "distillation temperature (default 1)", "kd-temperature", 0},
    {"kd-loss", CO_TRAIN_KD_LOSS, 0, CO_STR, M1, "KIND", "forward (default), reverse, jsd:B or uld", "kd-loss", 0},
    HELP_OPT,
    {"plan", CO_TRAIN_PLAN, 0, CO_FLAG, M2, NULL, "print the GPU trainer's memory per rank; train nothing", NULL, 0},
    {"ranks", CO_TRAIN_RANKS, 0, CO_INT, M2, "N", "--plan: data-parallel ranks (default 1)", NULL, 0},
    {"gpu-memory", CO_TRAIN_GPUMEM, 0, CO_NUM, M2, "GIB", "--plan: memory of one GPU (default 80)", NULL, 0},
    {"json", CO_TRAIN_JSON, 0, CO_FLAG, M2, NULL, "--plan: one JSON object", NULL, 0},
    {"kd-top-k", CO_TRAIN_KD_TOPK, 0, CO_INT, M2, "K", "--plan: teacher top-k of logit distillation (1..20)", NULL, 0},
    END};

/* generate: CO_MODE1 --jsonl (the engine on a prompt file), CO_MODE2 --db (a database) */
static const co_opt GENERATE[] = {
    {"model", 'm', 0, CO_STR, 0, "DIR|NAME", "--jsonl: the model directory; --db: the teacher's name", "model", 0},
    {"tokenizer", 't', 0, CO_STR, 0, "FILE", "tokenizer.json (default DIR/tokenizer.json)", "tokenizer", CO_IN},
    {"template", 'T', 0, CO_STR, 0, "T", "chat template: deepseek-r1|qwen|llama3|auto|FILE", "template", 0},
    {"jsonl", 'j', 0, CO_STR, M1, "PROMPTS", "prompts, one JSON object per line ('-': stdin)", "jsonl", CO_IN},
    {"n", 'n', 0, CO_INT, 0, "K", "samples per prompt (default 1)", "n", 0},
    {"max-tokens", 'x', 0, CO_INT, 0, "N", "new tokens per sample at most (default 256; --db 32768)", "max-tokens", 0},
    {"temperature", 'e', 0, CO_NUM, 0, "X", "0 is greedy (default 1; --db 0.6)", "temperature", 0},
    {"top-p", 'p', 0, CO_NUM, 0, "P", "nucleus sampling (default 1: off; --db 0.95)", "top-p", 0},
    {"top-k", 'k', 0, CO_INT, 0, "K", "top-k sampling (0: off)", "top-k", 0},
    {"min-p", 'i', 0, CO_NUM, 0, "P", "min-p sampling (0: off)", "min-p", 0},
    {"seed", 's', 0, CO_U64, 0, "S", "sampling seed (default 0)", "seed", 0},
    {"max-batch", 'b', 0, CO_INT, M1, "B", "sequences decoded together (default 16)", "max-batch", 0},
    {"logprobs", 'l', 0, CO_INT, 0, "K", "logprobs and K top alternatives per token", "logprobs", 0},
    {"threads", 'J', 0, CO_INT, 0, "N", "worker threads (default: one per CPU)", "threads", 0},
    {"cache-tokens", 'c', 0, CO_INT, 0, "N", "KV cache positions over all running sequences (default 65536)", "cache-tokens", 0},
    {"stop", 'S', 0, CO_LIST, M1, "STR", "stop when the text contains STR (repeatable)", "stop", 0},
    {"ignore-eos", 'I', 0, CO_FLAG, M1, NULL, "do not stop at the config's eos_token_id", "ignore-eos", 0},
    {"device", 'D', 0, CO_STR, 0, "cpu|cuda", "the engine's device (default cpu)", "device", 0},
    {"gpu-memory-fraction", 'G', 0, CO_NUM, 0, "F", "share of the GPU's memory to use (default 0.9)", "gpu-memory-fraction", 0},
    {"no-cuda-graphs", CO_NO_CUDA_GRAPHS, 0, CO_FLAG, 0, NULL, "cuda: run decode steps eagerly", "no-cuda-graphs", 0},
    {"db", 'd', 0, CO_STR, M2, "DB", "fill the database's pending prompts", "db", 0},
    {"teacher", 'R', 0, CO_STR, M2, "local:DIR|URL", "the in-process engine or an OpenAI-compatible endpoint", "teacher", CO_IN},
    {"api-key-env", 'K', 0, CO_STR, M2, "VAR", "environment variable holding the API key (default OPENAI_API_KEY)", "api-key-env", 0},
    {"source", 'O', 0, CO_STR, M2, "S", "only prompts of source S", "source", 0},
    {"concurrency", 'C', 0, CO_INT, M2, "C", "requests in flight (remote) or sequences per batch (local) (default 8)", "concurrency", 0},
    {"system", 'y', 0, CO_STR, M2, "TEXT", "add a system message", "system", 0},
    {"instruction", 'u', 0, CO_STR, M2, "auto|none|TEXT", "instruction appended to the prompts (default auto)", "instruction", 0},
    {"no-think-prefix", 'P', 0, CO_FLAG, M2, NULL, "do not force the response to begin with \"<think>\\n\"", "no-think-prefix", 0},
    {"timeout", 'o', 0, CO_NUM, M2, "S", "seconds per attempt (default 600)", "timeout", 0},
    {"retries", 'r', 0, CO_INT, M2, "N", "retries after the first attempt (default 8)", "retries", 0},
    {"no-stream", 'N', 0, CO_FLAG, M2, NULL, "plain JSON responses instead of SSE", "no-stream", 0},
    {"quiet", 'q', 0, CO_FLAG, M2, NULL, "no progress line", "quiet", 0},
    END};
#undef M1
#undef M2

static const co_opt EVAL[] = {
    {"db", 'd', 0, CO_STR, 0, "DB", "the run database", "db", 0},
    {"model", 'm', 0, CO_STR, 0, "local:DIR|URL", "the model: a local directory or an OpenAI-compatible endpoint", "model", CO_IN},
    {"bench", 'b', 0, CO_STR, 0, "B", "gsm8k, math500, aime24 or FILE.jsonl", "bench", CO_IN_JSONL},
    {"k", 'k', 0, CO_INT, 0, "K", "samples per question (default 4)", "k", 0},
    {"temperature", 'e', 0, CO_NUM, 0, "T", "sampling temperature (default 0.6)", "temperature", 0},
    {"top-p", 'p', 0, CO_NUM, 0, "P", "nucleus sampling (default 0.95)", "top-p", 0},
    {"max-tokens", 'x', 0, CO_INT, 0, "N", "new tokens per sample at most (default 32768)", "max-tokens", 0},
    {"name", 'n', 0, CO_STR, 0, "RUN", "the run's name (default: DIR's last component); recipe key run:", "run", 0},
    {"tokenizer", 't', 0, CO_STR, 0, "FILE", "tokenizer.json (default DIR/tokenizer.json)", "tokenizer", CO_IN},
    {"template", 'T', 0, CO_STR, 0, "T", "chat template: deepseek-r1|qwen|llama3|auto|FILE", "template", 0},
    {"seed", 's', 0, CO_U64, 0, "S", "sampling seed (default 0)", "seed", 0},
    {"threads", 'J', 0, CO_INT, 0, "N", "worker threads (default: one per CPU)", "threads", 0},
    {"max-batch", 'B', 0, CO_INT, 0, "B", "sequences decoded together (default 16)", "max-batch", 0},
    {"cache-tokens", 'c', 0, CO_INT, 0, "N", "KV cache positions (default: one question's K samples)", "cache-tokens", 0},
    {"limit", 'L', 0, CO_INT, 0, "N", "only the first N questions", "limit", 0},
    {"json", 'j', 0, CO_FLAG, 0, NULL, "the summary as one JSON object", "json", 0},
    {"model-name", 'M', 0, CO_STR, 0, "NAME", "URL models: the endpoint's model", "model-name", 0},
    {"api-key-env", 'K', 0, CO_STR, 0, "VAR", "URL models: environment variable holding the key", "api-key-env", 0},
    {"concurrency", 'C', 0, CO_INT, 0, "C", "URL models: requests in flight (default 8)", "concurrency", 0},
    {"timeout", 'o', 0, CO_NUM, 0, "S", "URL models: seconds per attempt", "timeout", 0},
    {"retries", 'r', 0, CO_INT, 0, "N", "URL models: retries after the first attempt", "retries", 0},
    {"no-stream", 'N', 0, CO_FLAG, 0, NULL, "URL models: plain JSON responses instead of SSE", "no-stream", 0},
    {"device", 'D', 0, CO_STR, 0, "cpu|cuda", "the engine's device (default cpu)", "device", 0},
    {"gpu-memory-fraction", 'G', 0, CO_NUM, 0, "F", "share of the GPU's memory to use (default 0.9)", "gpu-memory-fraction", 0},
    {"no-cuda-graphs", CO_NO_CUDA_GRAPHS, 0, CO_FLAG, 0, NULL, "cuda: run decode steps eagerly", "no-cuda-graphs", 0},
    END};

static const co_opt COMPARE[] = {
    {"db", 'd', 0, CO_STR, 0, "DB", "the run database", "db", 0},
    {"json", 'j', 0, CO_FLAG, 0, NULL, "the same data as one JSON object", "json", 0},
    {NULL, 0, 0, CO_POS, 0, "RUN...", "the runs to compare", "runs", 0},
    END};

static const co_opt REPORT[] = {
    {"db", 'd', 0, CO_STR, 0, "DB", "the run database", "db", 0},
    {"out", 'o', 0, CO_STR, 0, "FILE", "the HTML file to write", "out", 0},
    {"train-log", 'l', 0, CO_LIST, 0, "FILE", "a retort train --log file (repeatable)", "train-log", CO_IN},
    END};

static const co_opt RESIZE_VOCAB[] = {
    {"model", CO_RV_MODEL, 0, CO_STR, 0, "DIR", "the model directory", "model", CO_IN},
    {"add-tokens-from", CO_RV_FROM, 0, CO_STR, 0, "TEMPLATE|FILE", "a chat template's name or a tokenizer.json", "add-tokens-from", 0},
    {"out", CO_RV_OUT, 0, CO_STR, 0, "DIR", "the new model directory (new or empty)", "out", 0},
    {"overwrite", CO_RV_OVERWRITE, 0, CO_FLAG, 0, NULL, "remove OUT's files first", "overwrite", 0},
    HELP_OPT, END};

static const co_opt DEMO[] = {
    {"seed", 's', 0, CO_U64, 0, "S", "the task, weights and samples all derive from S (default 0)", NULL, 0},
    {"quick", 'q', 0, CO_FLAG, 0, NULL, "a reduced size (about 2 minutes on 2 cores)", NULL, 0},
    {"dir", 'd', 0, CO_STR, 0, "DIR", "where everything is written (default ./demo-run)", NULL, 0},
    {"threads", 't', 0, CO_INT, 0, "N", "worker threads (default: one per CPU)", NULL, 0},
    HELP_OPT, END};

static const co_opt SERVE[] = {
    {"model", 'm', 0, CO_STR, 0, "DIR", "the model directory (required)", NULL, 0},
    {"host", 'H', 0, CO_STR, 0, "ADDR", "address to bind (default 127.0.0.1)", NULL, 0},
    {"port", 'p', 0, CO_INT, 0, "PORT", "port (default 8000; 0: a free one)", NULL, 0},
    {"api-key", 'k', 0, CO_STR, 0, "KEY", "require \"Authorization: Bearer KEY\" (default $RETORT_API_KEY)", NULL, 0},
    {"max-batch", 'b', 0, CO_INT, 0, "B", "sequences per engine step (default 16)", NULL, 0},
    {"cache-tokens", 'c', 0, CO_INT, 0, "N", "KV-cache positions in all (default 65536)", NULL, 0},
    {"threads", 'J', 0, CO_INT, 0, "N", "worker threads (default: one per CPU)", NULL, 0},
    {"tokenizer", 't', 0, CO_STR, 0, "FILE", "tokenizer.json (default DIR/tokenizer.json)", NULL, 0},
    {"template", 'T', 0, CO_STR, 0, "T", "chat template: deepseek-r1|qwen|llama3|auto|FILE", NULL, 0},
    {"served-model-name", 'N', 0, CO_STR, 0, "NAME", "the model's name in the API", NULL, 0},
    {"max-body", 'B', 0, CO_INT, 0, "BYTES", "larger request bodies get 413 (default 4194304)", NULL, 0},
    {"max-connections", 'C', 0, CO_INT, 0, "N", "open connections in all (default 4096)", NULL, 0},
    {"max-connections-per-ip", 'I', 0, CO_INT, 0, "N", "open connections from one address (default 512)", NULL, 0},
    {"header-timeout", 'h', 0, CO_NUM, 0, "S", "seconds to send a request's line and headers (default 10)", NULL, 0},
    {"device", 'D', 0, CO_STR, 0, "cpu|cuda", "the engine's device (default cpu)", NULL, 0},
    {"gpu-memory-fraction", 'G', 0, CO_NUM, 0, "F", "share of the GPU's memory to use (default 0.9)", NULL, 0},
    {"no-cuda-graphs", CO_NO_CUDA_GRAPHS, 0, CO_FLAG, 0, NULL, "cuda: run decode steps eagerly", NULL, 0},
    END};

static const co_opt RUN[] = {
    {"dry-run", CO_RUN_DRY, 0, CO_FLAG, 0, NULL, "print the commands a run would start now; run nothing", NULL, 0},
    {"from", CO_RUN_FROM, 0, CO_STR, 0, "STAGE", "run STAGE and every later stage", NULL, 0},
    {"only", CO_RUN_ONLY, 0, CO_STR, 0, "STAGE", "run STAGE alone", NULL, 0},
    {"set", CO_RUN_SET, 0, CO_LIST, 0, "KEY=VALUE", "override a variable or STAGE.KEY (repeatable)", NULL, 0},
    HELP_OPT, END};

static const co_opt VERSION[] = {END};

#undef HELP_OPT
#undef END

static const co_command COMMANDS[] = {
    {"inspect", INSPECT, false},   {"db", DB, false},          {"import", IMPORT, true},
    {"verify", VERIFY, false},     {"dedup", DEDUP, false},    {"filter", FILTER, true},
    {"select", SELECT, true},      {"tokenize", TOKENIZE, false}, {"export", EXPORT, true},
    {"pack", PACK, true},          {"train", TRAIN, true},     {"generate", GENERATE, true},
    {"eval", EVAL, true},          {"compare", COMPARE, true}, {"report", REPORT, true},
    {"resize-vocab", RESIZE_VOCAB, true}, {"demo", DEMO, false}, {"serve", SERVE, false},
    {"run", RUN, false},           {"version", VERSION, false},
};

const co_command *co_all(size_t *n) {
    *n = sizeof COMMANDS / sizeof *COMMANDS;
    return COMMANDS;
}

const co_command *co_find(const char *name) {
    for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++)
        if (!strcmp(COMMANDS[i].name, name)) return &COMMANDS[i];
    return NULL;
}

static bool in_mode(const co_opt *o, unsigned mode) { return !mode || !o->modes || (o->modes & mode); }

int co_getopt(const co_command *c, unsigned mode, struct option *out, size_t cap, char *shorts, size_t cap_shorts) {
    size_t n = 0, s = 0;
    if (!cap_shorts) return -1;
    for (const co_opt *o = c->opts; o->name || o->recipe; o++) {
        if (!o->name || !in_mode(o, mode)) continue;
        if (n + 1 >= cap) return -1;
        out[n++] = (struct option){o->name, o->arg == CO_FLAG ? no_argument : required_argument, NULL, o->val};
        if (o->short_opt) {
            if (s + 3 >= cap_shorts) return -1;
            shorts[s++] = o->short_opt;
            if (o->arg != CO_FLAG) shorts[s++] = ':';
        }
    }
    out[n] = (struct option){0};
    shorts[s] = 0;
    return (int)n;
}

const co_opt *co_recipe_key(const co_command *c, const char *key) {
    for (const co_opt *o = c->opts; o->name || o->recipe; o++) {
        if (!o->recipe) continue;
        size_t i = 0;
        for (; o->recipe[i] && key[i]; i++)
            if (o->recipe[i] != key[i] && !(o->recipe[i] == '-' && key[i] == '_')) break;
        if (!o->recipe[i] && !key[i]) return o;
    }
    return NULL;
}

void co_help(FILE *out, const co_command *c, unsigned mode) {
    fputs("options:\n", out);
    for (const co_opt *o = c->opts; o->name || o->recipe; o++) {
        if (!in_mode(o, mode)) continue;
        char left[96];
        if (!o->name) snprintf(left, sizeof left, "  %s", o->meta ? o->meta : o->recipe);
        else if (o->short_opt) snprintf(left, sizeof left, "  -%c, --%s%s%s", o->short_opt, o->name, o->meta ? " " : "", o->meta ? o->meta : "");
        else snprintf(left, sizeof left, "  --%s%s%s", o->name, o->meta ? " " : "", o->meta ? o->meta : "");
        if (strlen(left) < 30) fprintf(out, "%-30s %s\n", left, o->help);
        else fprintf(out, "%s\n%-30s %s\n", left, "", o->help);
    }
}

bool co_parse_u64(const char *s, uint64_t *out) {
    if (!s || !*s) return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9') return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE || *end) return false;
    *out = (uint64_t)v;
    return true;
}
