/* eval/cmdopts.c — every subcommand's options, once (contract in cmdopts.h). */
#include "eval/cmdopts.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Columns: name, getopt value, short letter, argument, modes, metavar, help, recipe key, roles. */
#define HELP_OPT {"help", 'h', 'h', CO_FLAG, 0, NULL, "print this help and exit", NULL, 0}
#define END {0}

static const co_opt INSPECT[] = {
    {"json", 'j', 0, CO_FLAG, 0, NULL, "one JSON object on stdout: architecture, model_type, parameters (elements of\n"
     "every tensor except *.weight_scale_inv), tensors, files, dtypes, quantization,\n"
     "mtp_layers, config, shapes (with --check-values: values)", NULL, 0},
    {"check-values", 'v', 0, CO_FLAG, 0, NULL, "also read every value of every floating-point tensor (F32, F16, BF16,\n"
     "FP8) and list each tensor holding NaN or Inf, with counts; exit 1 when any does", NULL, 0},
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
    {"db", 'd', 0, CO_STR, 0, "DB", "the run database (created when absent)", "db", CO_REQ},
    {"format", 'f', 0, CO_STR, 0, "F", "gsm8k, math, aime, jsonl or chat", "format", CO_REQ},
    {"prompt-field", 'p', 0, CO_STR, 0, "F", "jsonl: the prompt's field", "prompt-field", 0},
    {"answer-field", 'a', 0, CO_STR, 0, "F", "jsonl: the gold answer's field (optional)", "answer-field", 0},
    {"source", 's', 0, CO_STR, 0, "NAME",
     "the source recorded with each prompt (default: file name without extension)", "source", 0},
    {"as-samples", 'S', 0, CO_FLAG, 0, NULL,
     "also store the reference answer/solution (chat: the final assistant turn)\n"
     "as a sample of teacher \"reference\"", "as-samples", 0},
    {"skip-bad", 'k', 0, CO_FLAG, 0, NULL, "import the good lines of a file with malformed ones and report the count;\n"
     "without it a malformed line (bad JSON, missing field, invalid UTF-8, empty\n"
     "or too long prompt) aborts that file, naming file and line, and nothing\n"
     "from it is imported", "skip-bad", 0},
    {"batch", 'b', 0, CO_INT, 0, "N", "lines per transaction (default 5000)", "batch", 0},
    {"threads", 't', 0, CO_INT, 0, "N", "parsing threads (default: one per CPU)", "threads", 0},
    {"max-prompt-bytes", 'M', 0, CO_STR, 0, "N",
     "longest prompt accepted (bytes; K, M, G suffixes; default 4M); a line\n"
     "longer than 4 x N is skipped unread", "max-prompt-bytes", 0},
    HELP_OPT,
    {NULL, 0, 0, CO_POS, 0, "FILE...", "the files to import", "files", CO_IN},
    END};

static const co_opt VERIFY[] = {
    {"last-number", 'l', 0, CO_FLAG, 0, NULL,
     "fall back to the last $…$ span or number of pred (as math-verify does)", NULL, 0},
    {"float-digits", 'd', 0, CO_INT, 0, "N", "floats agree when rounded to N significant digits (default 6)", NULL, 0},
    {"decimal-places", 'p', 0, CO_FLAG, 0, NULL,
     "count those digits after the decimal point instead (math-verify's rule)", NULL, 0},
    {"reason", 'r', 0, CO_FLAG, 0, NULL, "accepted for compatibility (the reason is always written)", NULL, 0},
    HELP_OPT, END};

static const co_opt DEDUP[] = {
    {"threshold", 't', 0, CO_NUM, 0, "J", "estimated Jaccard similarity to merge (0..1, default 0.8)", NULL, 0},
    {"exact-only", 'x', 0, CO_FLAG, 0, NULL, "only exact duplicates (normalized text)", NULL, 0},
    {"threads", 'j', 'j', CO_INT, 0, "N", "signature threads (default: one per CPU)", NULL, 0},
    HELP_OPT, END};

static const co_opt FILTER[] = {
    {"db", 'd', 0, CO_STR, 0, "DB", "the run database", "db", CO_REQ},
    {"config", 'c', 0, CO_STR, 0, "FILE",
     "filters and thresholds (YAML subset or JSON; see docs/filters.md)", "config", CO_IN},
    {"preset", 'p', 0, CO_STR, 0, "r1",
     "DeepSeek-R1's rejection-sampling recipe (configs/filters/r1.yaml)", "preset", 0},
    {"threads", 't', 0, CO_INT, 0, "N", "scoring threads (default: one per CPU)", "threads", 0},
    {"assets", 'a', 0, CO_STR, 0, "DIR", "benchmarks for decontam in DIR/benchmarks (default $RETORT_ASSETS,\n"
     "else ../shared/assets); absent files are skipped with a message", "assets", CO_IN},
    {"decontam", 'D', 0, CO_LIST, 0, "FILE", "also decontaminate against FILE (JSONL: question/problem/prompt and\n"
     "answer/solution fields); repeatable", "decontam", CO_IN},
    {"batch", 'b', 0, CO_INT, 0, "N", "samples per transaction (default 512)", "batch", 0},
    {"print-config", 'P', 0, CO_FLAG, 0, NULL, "print the resolved configuration (JSON) and exit", NULL, 0},
    {"quiet", 'q', 0, CO_FLAG, 0, NULL, "no progress line", "quiet", 0},
    {"decontam-field", 'F', 0, CO_LIST, 0, "F",
     "index field F of the benchmark records instead of those (repeatable)", "decontam-field", 0},
    HELP_OPT, END};

static const co_opt SELECT[] = {
    {"db", 'd', 0, CO_STR, 0, "DB", "the run database", "db", CO_REQ},
    {"snapshot", 's', 0, CO_STR, 0, "NAME", "the snapshot to write", "snapshot", CO_REQ},
    {"per-prompt", 'k', 0, CO_INT, 0, "K", "samples kept per prompt (default 1)", "per-prompt", 0},
    {"policy", 'p', 0, CO_STR, 0, "P", "shortest (default), longest, random or all", "policy", 0},
    {"seed", 'S', 0, CO_U64, 0, "S", "seed of the random policy (default 0)", "seed", 0},
    {"balance-sources", 'b', 0, CO_FLAG, 0, NULL,
     "every source keeps at most as many samples as the smallest source", "balance-sources", 0},
    HELP_OPT, END};

static const co_opt TOKENIZE[] = {
    {"tokenizer", 't', 0, CO_STR, 0, "FILE", "tokenizer.json (required)", NULL, CO_REQ},
    {"decode", 'd', 0, CO_FLAG, 0, NULL,
     "{\"ids\": [...]} → {\"text\": S}; special tokens are kept (--special says so explicitly)\n"
     "unless --skip-special.", NULL, 0},
    {"special", 's', 0, CO_FLAG, 0, NULL, "encode: add BOS/EOS; decode: keep special tokens", NULL, 0},
    {"skip-special", 'k', 0, CO_FLAG, 0, NULL, "decode: leave special tokens out", NULL, 0},
    {"chat", 'c', 0, CO_STR, 0, "KIND", "{\"messages\": [{\"role\", \"content\", \"reasoning_content\"?}, ...],\n"
     "\"add_generation_prompt\"?: B} → {\"text\": S, \"ids\": [...], \"mask\": [...]}:\n"
     "the conversation rendered with chat template KIND (deepseek-r1, qwen,\n"
     "llama3), its ids, and 1 for each token of assistant content (what SFT\n"
     "trains on, the end-of-turn token included).", NULL, 0},
    {"generation-prompt", 'g', 0, CO_FLAG, 0, NULL,
     "with --chat: add the generation prompt unless a line says otherwise", NULL, 0},
    {"threads", 'j', 0, CO_INT, 0, "N", "encoding threads (default: one per CPU)", NULL, 0},
    END};

static const co_opt EXPORT[] = {
    {"db", 'd', 0, CO_STR, 0, "DB", "the run database", "db", CO_REQ},
    {"format", 'f', 0, CO_STR, 0, "F", "chat-jsonl, jsonl or shards", "format", CO_REQ},
    {"snapshot", 's', 0, CO_STR, 0, "NAME", "the samples of snapshot NAME", "snapshot", 0},
    {"source", 'S', 0, CO_STR, 0, "NAME", "only prompts of source NAME", "source", 0},
    {"out", 'O', 0, CO_STR, 0, "PATH", "the file (or the shard directory) to write", "out", CO_REQ},
    {"tokenizer", 'K', 0, CO_STR, 0, "FILE", "shards: tokenizer.json", "tokenizer", CO_IN},
    {"template", 'T', 0, CO_STR, 0, "T", "shards: chat template (deepseek-r1|qwen|llama3|auto|FILE)", "template", 0},
    {"seq", 'N', 0, CO_INT, 0, "N", "shards: sequence length", "seq", 0},
    {"seed", 'R', 0, CO_U64, 0, "S", "shards: shuffle seed (default 0)", "seed", 0},
    {"drop-long", 'D', 0, CO_FLAG, 0, NULL,
     "shards: drop documents longer than --seq instead of splitting them", "drop-long", 0},
    {"shard-seqs", 'P', 0, CO_INT, 0, "N", "shards: sequences per shard", "shard-seqs", 0},
    {"threads", 'j', 0, CO_INT, 0, "N", "shards: tokenizing threads (1..64)", "threads", 0},
    {"reasoning", 'r', 0, CO_STR, 0, "R", "chat-jsonl: reasoning inline (in <think>) or as a field", NULL, 0},
    {"top-k", 'k', 0, CO_INT, 0, "K",
     "the samples' stored teacher top-k (generate --logprobs) go along: chat-jsonl lines get\n"
     "\"teacher_topk\", shards carry up to K (1..20) per assistant token (for retort train\n"
     "--kd-alpha); --teacher-vocab N: the teacher's vocabulary when its tokenizer is not\n"
     "--tokenizer (default: the same)", "top-k", 0},
    {"teacher-vocab", 'U', 0, CO_INT, 0, "V", "shards: the teacher's vocabulary size", "teacher-vocab", 0},
    HELP_OPT, END};

static const co_opt PACK[] = {
    {"tokenizer", 'K', 0, CO_STR, 0, "FILE", "tokenizer.json", "tokenizer", CO_IN | CO_REQ},
    {"template", 'T', 0, CO_STR, 0, "T", "chat template (deepseek-r1|qwen|llama3|auto|FILE)", "template", 0},
    {"jsonl", 'J', 0, CO_STR, 0, "FILE", "chat JSONL to pack", "jsonl", CO_IN | CO_REQ},
    {"seq", 'N', 0, CO_INT, 0, "N", "sequence length", "seq", CO_REQ},
    {"out", 'O', 0, CO_STR, 0, "DIR", "the shard directory", "out", CO_REQ},
    {"seed", 'R', 0, CO_U64, 0, "S", "shuffle seed (default 0)", "seed", 0},
    {"drop-long", 'D', 0, CO_FLAG, 0, NULL,
     "drop documents longer than --seq instead of splitting them", "drop-long", 0},
    {"shard-seqs", 'P', 0, CO_INT, 0, "N", "sequences per shard file (default: 2^28 tokens' worth)", "shard-seqs", 0},
    {"threads", 'j', 0, CO_INT, 0, "N", "rendering threads (default: one per CPU)", "threads", 0},
    HELP_OPT,
    {"top-k", 'k', 0, CO_INT, 0, "K",
     "shards carry the teacher top-k of a line's \"teacher_topk\" ({\"ids\": [[...]],\n"
     "\"logprobs\": [[...]]}, one entry per teacher token, given to the assistant tokens in\n"
     "order), at most K (1..20) per token; --teacher-vocab N bounds the ids (default: the\n"
     "tokenizer's vocabulary)", "top-k", 0},
    {"teacher-vocab", 'U', 0, CO_INT, 0, "V", "the teacher's vocabulary size", "teacher-vocab", 0},
    END};

/* train: CO_MODE1 the trainer, CO_MODE2 --plan (memory arithmetic) */
#define M1 CO_MODE1
#define M2 CO_MODE2
static const co_opt TRAIN[] = {
    {"init", CO_TRAIN_INIT, 0, CO_STR, 0, "CONFIG.json",
     "random weights for a HF config (llama, qwen2 or qwen3), normal(0, 0.02), seeded by --seed", "init", CO_IN},
    {"model", CO_TRAIN_MODEL, 0, CO_STR, 0, "DIR",
     "start from a HF checkpoint (config.json + safetensors, BF16/F16/F32)", "model", CO_IN},
    {"data", CO_TRAIN_DATA, 0, CO_STR, M1, "SHARDS", "shard directory or file", "data", CO_IN | CO_REQ},
    {"seq", CO_TRAIN_SEQ, 0, CO_INT, 0, "T",
     "tokens per sequence; must match the shards (default: the shards' length)", "seq", CO_REQ2},
    {"batch", CO_TRAIN_BATCH, 0, CO_INT, 0, "B", "sequences per micro-batch (per rank under mpirun)", "batch", 0},
    {"grad-accum", CO_TRAIN_ACCUM, 0, CO_INT, 0, "N",
     "micro-batches per optimizer step (default 1); the loss is normalized by\n"
     "the loss tokens of the whole step", "grad-accum", 0},
    {"steps", CO_TRAIN_STEPS, 0, CO_INT, M1, "N", "optimizer steps (or --epochs)", "steps", 0},
    {"epochs", CO_TRAIN_EPOCHS, 0, CO_NUM, M1, "E", "passes over the data (or --steps)", "epochs", 0},
    {"lr", CO_TRAIN_LR, 0, CO_NUM, M1, "X", "peak learning rate", "lr", 0},
    {"min-lr-ratio", CO_TRAIN_MINLR, 0, CO_NUM, M1, "R", "cosine/linear end at R·lr (default 0.1)", "min-lr-ratio", 0},
    {"warmup", CO_TRAIN_WARMUP, 0, CO_INT, M1, "N", "linear warmup steps (default 0)", "warmup", 0},
    {"weight-decay", CO_TRAIN_WD, 0, CO_NUM, M1, "W",
     "AdamW decoupled decay on matrices, none on norms and biases (default 0)", "weight-decay", 0},
    {"clip", CO_TRAIN_CLIP, 0, CO_NUM, M1, "C", "clip the global gradient norm to C (default 1; 0: off)", "clip", 0},
    {"seed", CO_TRAIN_SEED, 0, CO_U64, M1, "S", "data order and --init weights (default 0)", "seed", 0},
    {"out", CO_TRAIN_OUT, 0, CO_STR, M1, "DIR",
     "checkpoints go to DIR/step-N/, a Hugging Face model directory (config.json,\n"
     "generation_config.json, model.safetensors or shards + index, tokenizer.json,\n"
     "tokenizer_config.json, special_tokens_map.json), and DIR/step-N.state/\n"
     "(optimizer.safetensors, trainer_state.json)", "out", CO_OUT | CO_REQ},
    {"save-every", CO_TRAIN_SAVE, 0, CO_INT, M1, "N",
     "also save every N steps (the last step is always saved)", "save-every", 0},
    {"resume", CO_TRAIN_RESUME, 0, CO_STR, M1, "DIR|auto",
     "DIR/step-N: continue a run exactly where its checkpoint stopped (weights, AdamW moments,\n"
     "step, data position); give the same options as the run that wrote it\n"
     "auto: (the default) continue from the newest step-N in --out when this same run\n"
     "wrote it (same data, model, seed and options: the same command rerun after\n"
     "a kill); start fresh when --out is empty or absent (the --log file\n"
     "aside); refuse (exit 1) another run's checkpoints or other contents", "resume", CO_IN},
    {"log", CO_TRAIN_LOG, 0, CO_STR, M1, "FILE",
     "append one JSON object per step: step, loss, lr, grad_norm, tokens, tokens_per_s\n"
     "(lines after the step the run starts from are dropped first)", "log", CO_LOG},
    {"schedule", CO_TRAIN_SCHED, 0, CO_STR, M1, "S",
     "cosine (default), linear or constant, after --warmup N linear steps (default 0)", "schedule", 0},
    {"dtype", CO_TRAIN_DTYPE, 0, CO_STR, M1, "bf16|f32",
     "model.safetensors element type (default bf16; f32 master weights are kept\n"
     "in step-N.state/optimizer.safetensors, so resuming is exact either way)", "dtype", 0},
    {"threads", CO_TRAIN_THREADS, 0, CO_INT, M1, "N",
     "worker threads (default: one per CPU); OpenBLAS runs single-threaded inside them", "threads", 0},
    {"checkpoint-layers", CO_TRAIN_CKPT, 0, CO_FLAG, 0, NULL,
     "keep only each layer's input and recompute its forward in the backward", "checkpoint-layers", 0},
    {"ce-chunk", CO_TRAIN_CHUNK, 0, CO_INT, 0, "N",
     "rows per chunk of the fused LM-head cross-entropy (default: 64 MiB of logits;\n"
     "1 GiB with --device cuda)", "ce-chunk", 0},
    {"beta1", CO_TRAIN_B1, 0, CO_NUM, M1, "B", "AdamW beta1 (default 0.9)", "beta1", 0},
    {"beta2", CO_TRAIN_B2, 0, CO_NUM, M1, "B", "AdamW beta2 (default 0.95)", "beta2", 0},
    {"adam-eps", CO_TRAIN_EPS, 0, CO_NUM, M1, "E", "AdamW epsilon (default 1e-8)", "adam-eps", 0},
    {"zero", CO_TRAIN_ZERO, 0, CO_INT, 0, "0|1|2|3",
     "data parallel (under mpirun): 0 replicated optimizer, 1 ZeRO-1 (AdamW state\n"
     "sharded; the default with more than one rank), 2 ZeRO-2 (gradients too),\n"
     "3 ZeRO-3 (parameters too: each layer is gathered for its forward and backward)", "zero", 0},
    {"device", CO_TRAIN_DEVICE, 0, CO_STR, 0, "cpu|cuda",
     "cpu (default): the f32 trainer; cuda: one GPU per rank, bf16 weights and\n"
     "activations, f32 master weights, gradients and AdamW state (NCCL between\n"
     "ranks); the same checkpoints, so a run resumes on either device; the log\n"
     "adds peak_mem_gib (head_dim 64 or 128; a CPU-only build: \"built without CUDA\")", "device", 0},
    {"overwrite", CO_TRAIN_OVERWRITE, 0, CO_FLAG, M1, NULL,
     "delete the step-* checkpoints in --out first and start fresh there", "overwrite", 0},
    {"offload-optimizer", CO_TRAIN_OFFLOAD, 0, CO_FLAG, 0, NULL,
     "(cuda) master weights, AdamW moments (and with ZeRO-2/3 the gradient shard)\n"
     "in pinned host memory; AdamW runs on the host", "offload-optimizer", 0},
    {"offload-activations", CO_TRAIN_OFFLOAD_ACTS, 0, CO_FLAG, 0, NULL,
     "(cuda) with --checkpoint-layers (implied): each layer's input in pinned\n"
     "host memory, streamed back for its backward", "offload-activations", 0},
    {"tokenizer", CO_TRAIN_TOKENIZER, 0, CO_STR, M1, "FILE",
     "the tokenizer.json copied into the model directories (default: the --model's,\n"
     "else the one `retort pack` recorded in the data's index.json); its\n"
     "tokenizer_config.json (chat_template) comes along", "tokenizer", CO_IN},
    {"max-shard-size", CO_TRAIN_SHARD, 0, CO_NUM, M1, "B",
     "split model.safetensors into shards of at most B bytes (default 5e9)", "max-shard-size", 0},
    {"tensorboard", CO_TRAIN_TB, 0, CO_STR, M1, "DIR",
     "also write TensorBoard event files there (train/loss, train/lr, train/grad_norm,\n"
     "train/tokens_per_s, val/loss)", "tensorboard", 0},
    {"val-data", CO_TRAIN_VAL_DATA, 0, CO_STR, M1, "SHARDS",
     "validation shards (the training data's sequence length): their mean loss is\n"
     "computed at the last step and every --val-every N steps, logged as val_loss\n"
     "(with val_targets) in --log and printed; both devices, every ZeRO level", "val-data", CO_IN},
    {"val-every", CO_TRAIN_VAL_EVERY, 0, CO_INT, M1, "N", "validation loss every N steps", "val-every", 0},
    {"val-frac", CO_TRAIN_VAL_FRAC, 0, CO_NUM, M1, "F",
     "instead of --val-data: hold out the last ceil(F x sequences) of --data (in file\n"
     "order; pack shuffles sequences) as the validation split, never trained on", "val-frac", 0},
    {"kd-alpha", CO_TRAIN_KD_ALPHA, 0, CO_NUM, M1, "A",
     "logit distillation: loss (1-A)*CE + A*T^2*D(teacher||student) over the teacher\n"
     "top-k the shards carry (default 0: SFT; A > 0 needs shards with top-k)", "kd-alpha", 0},
    {"kd-temperature", CO_TRAIN_KD_TEMP, 0, CO_NUM, M1, "T",
     "softening of both distributions (default 1)", "kd-temperature", 0},
    {"kd-loss", CO_TRAIN_KD_LOSS, 0, CO_STR, M1, "KIND",
     "D: forward (KL, default), reverse (KL), jsd:B (0<B<1), uld (sorted probabilities,\n"
     "for a teacher with another tokenizer); see docs/student.md", "kd-loss", 0},
    HELP_OPT,
    {"plan", CO_TRAIN_PLAN, 0, CO_FLAG, M2, NULL, "print the GPU trainer's memory per rank; train nothing", NULL, CO_REQ},
    {"ranks", CO_TRAIN_RANKS, 0, CO_INT, M2, "N", "--plan: data-parallel ranks (default 1)", NULL, 0},
    {"gpu-memory", CO_TRAIN_GPUMEM, 0, CO_NUM, M2, "GIB", "--plan: memory of one GPU (default 80)", NULL, 0},
    {"json", CO_TRAIN_JSON, 0, CO_FLAG, M2, NULL, "--plan: one JSON object", NULL, 0},
    {"kd-top-k", CO_TRAIN_KD_TOPK, 0, CO_INT, M2, "K", "--plan: teacher top-k of logit distillation (1..20)", NULL, 0},
    END};

/* generate: CO_MODE1 --jsonl (the engine on a prompt file), CO_MODE2 --db (a database) */
static const co_opt GENERATE[] = {
    {"model", 'm', 0, CO_STR, 0, "DIR|NAME",
     "--jsonl: the model directory (config.json + safetensors); --db: the teacher name stored in\n"
     "samples.teacher, and the request's model (default: the\n"
     "directory's name for local:, the first model GET …/v1/models lists for a URL)", "model", CO_REQ1},
    {"tokenizer", 't', 0, CO_STR, 0, "FILE",
     "tokenizer.json (default: DIR/tokenizer.json when present)", "tokenizer", CO_IN},
    {"template", 'T', 0, CO_STR, 0, "T", "chat template: deepseek-r1|qwen|llama3|auto|FILE", "template", 0},
    {"jsonl", 'j', 0, CO_STR, M1, "PROMPTS", "prompts, one JSON object per line ('-': stdin)", "jsonl", CO_IN | CO_REQ},
    {"n", 'n', 0, CO_INT, 0, "K", "samples per prompt, sharing the prompt's cache (default 1)", "n", 0},
    {"max-tokens", 'x', 0, CO_INT, 0, "N",
     "new tokens per sample at most (default 256; clipped to the model's context)", "max-tokens", 0},
    {"temperature", 'e', 0, CO_NUM, 0, "X", "0 is greedy (default 1); then --top-k K (0: off), --top-p P (1: off),\n"
     "--min-p P (0: off), applied in that order", "temperature", 0},
    {"top-p", 'p', 0, CO_NUM, 0, "P", "nucleus sampling (default 1: off; --db 0.95)", "top-p", 0},
    {"top-k", 'k', 0, CO_INT, 0, "K", "top-k sampling (0: off)", "top-k", 0},
    {"min-p", 'i', 0, CO_NUM, 0, "P", "min-p sampling (0: off)", "min-p", 0},
    {"seed", 's', 0, CO_U64, 0, "S",
     "prompt i's samples are seeded with S + i: the same tokens whatever the batch", "seed", 0},
    {"max-batch", 'b', 0, CO_INT, M1, "B",
     "sequences decoded together (default 16); requests join and leave between steps", "max-batch", 0},
    {"logprobs", 'l', 0, CO_INT, 0, "K",
     "ask for logprobs (mean_logprob) and K top alternatives (stored in sample_topk)", "logprobs", 0},
    {"threads", 'J', 0, CO_INT, 0, "N", "worker threads (default: one per CPU)", "threads", 0},
    {"cache-tokens", 'c', 0, CO_INT, 0, "N",
     "KV cache positions over all running sequences (default 65536); requests wait\n"
     "in the queue while the cache is full", "cache-tokens", 0},
    {"stop", 'S', 0, CO_LIST, M1, "STR", "stop when the text contains STR (repeatable, needs a tokenizer)", "stop", 0},
    {"ignore-eos", 'I', 0, CO_FLAG, M1, NULL, "do not stop at the config's eos_token_id", "ignore-eos", 0},
    {"device", 'D', 0, CO_STR, 0, "cpu|cuda",
     "cpu (default) or cuda: the engine on the GPU (one per rank under mpirun, the\n"
     "rank's local rank; a dense model is split tensor-parallel over the ranks),\n"
     "weights in their stored dtype", "device", 0},
    {"gpu-memory-fraction", 'G', 0, CO_NUM, 0, "F",
     "share of the GPU's memory for weights, KV cache and work (default 0.9)", "gpu-memory-fraction", 0},
    {"no-cuda-graphs", CO_NO_CUDA_GRAPHS, 0, CO_FLAG, 0, NULL,
     "cuda: run decode steps eagerly (default: one CUDA graph per batch bucket)", "no-cuda-graphs", 0},
    {"speculative", CO_SPECULATIVE, 0, CO_STR, M1, "mtp",
     "greedy draft-and-verify with a deepseek_v3 model's MTP layer: the tokens of\n"
     "--temperature 0, one prompt at a time, acceptance in the progress line", NULL, 0},
    {"db", 'd', 0, CO_STR, M2, "DB", "fill the database's pending prompts", "db", CO_REQ},
    {"teacher", 'R', 0, CO_STR, M2, "local:DIR|URL",
     "local:MODEL_DIR (the in-process engine; tokenizer DIR/tokenizer.json or --tokenizer,\n"
     "chat template --template or the tokenizer's own, docs/chat-templates.md) or the base URL of an\n"
     "OpenAI-compatible endpoint (…/v1: POST …/v1/chat/completions; a URL without a path\n"
     "means …/v1)", "teacher", CO_IN | CO_REQ},
    {"api-key-env", 'K', 0, CO_STR, M2, "VAR",
     "the environment variable holding the API key (default OPENAI_API_KEY when set)", "api-key-env", 0},
    {"source", 'O', 0, CO_STR, M2, "S", "only prompts of source S", "source", 0},
    {"concurrency", 'C', 0, CO_INT, M2, "C",
     "requests in flight (remote) or sequences per batch (local) (default 8)", "concurrency", 0},
    {"system", 'y', 0, CO_STR, M2, "TEXT",
     "add a system message (default none, as DeepSeek advises for R1)", "system", 0},
    {"instruction", 'u', 0, CO_STR, M2, "auto|none|TEXT",
     "auto (default): prompts whose source names gsm8k, math or aime get \"Please reason step\n"
     "by step, and put your final answer within \\boxed{}.\" appended; none; TEXT: appended to\n"
     "every prompt", "instruction", 0},
    {"no-think-prefix", 'P', 0, CO_FLAG, M2, NULL,
     "do not force the response to begin with \"<think>\\n\" (local: appended to the\n"
     "rendered prompt; remote: the server's template decides, the stored text is normalized)", "no-think-prefix", 0},
    {"timeout", 'o', 0, CO_NUM, M2, "S",
     "per attempt (default 600); --retries N after the first attempt (default 8): 429,\n"
     "5xx, timeouts, dropped or truncated responses are retried with exponential backoff\n"
     "and full jitter, never sooner than Retry-After; 400/401/403/404 stop the run", "timeout", 0},
    {"retries", 'r', 0, CO_INT, M2, "N", "retries after the first attempt (default 8)", "retries", 0},
    {"no-stream", 'N', 0, CO_FLAG, M2, NULL, "plain JSON responses instead of SSE", "no-stream", 0},
    {"quiet", 'q', 0, CO_FLAG, M2, NULL, "no progress line", "quiet", 0},
    END};
#undef M1
#undef M2

static const co_opt EVAL[] = {
    {"db", 'd', 0, CO_STR, 0, "DB", "the run database", "db", CO_REQ},
    {"model", 'm', 0, CO_STR, 0, "local:DIR|URL",
     "local:DIR (config.json + safetensors), stored as local:ABSOLUTE-DIR; or the base URL\n"
     "of an OpenAI-compatible endpoint (…/v1), stored as URL#NAME where NAME is --model-name\n"
     "(default: the first model GET …/v1/models lists; also the default run name). One\n"
     "request per sample (the question as the user message; reasoning_content or inline\n"
     "thinking stored as \"<think>\\n…\\n</think>\\n\\nANSWER\"), --concurrency C in flight\n"
     "(default 8), retried as retort generate does (--timeout, --retries, see\n"
     "'retort help generate'); the key from --api-key-env VAR (default OPENAI_API_KEY)", "model", CO_IN | CO_REQ},
    {"bench", 'b', 0, CO_STR, 0, "B",
     "gsm8k, math500, aime24: the test sets in <assets>/benchmarks ($RETORT_ASSETS), the\n"
     "question followed by R1's \"put your final answer within \\boxed{}\" instruction;\n"
     "FILE.jsonl: {\"prompt\": TEXT, \"answer\": GOLD} per line, prompts as written", "bench", CO_IN_JSONL | CO_REQ},
    {"k", 'k', 0, CO_INT, 0, "K", "samples per question (default 4)", "k", 0},
    {"temperature", 'e', 0, CO_NUM, 0, "T", "sampling temperature (default 0.6)", "temperature", 0},
    {"top-p", 'p', 0, CO_NUM, 0, "P", "nucleus sampling (default 0.95)", "top-p", 0},
    {"max-tokens", 'x', 0, CO_INT, 0, "N", "new tokens per sample at most (default 32768)", "max-tokens", 0},
    {"name", 'n', 0, CO_STR, 0, "RUN", "the run's name (default: DIR's last component)", "run", 0},
    {"tokenizer", 't', 0, CO_STR, 0, "FILE",
     "default DIR/tokenizer.json; --template renders the question as a user turn", "tokenizer", CO_IN},
    {"template", 'T', 0, CO_STR, 0, "T", "chat template: deepseek-r1|qwen|llama3|auto|FILE", "template", 0},
    {"seed", 's', 0, CO_U64, 0, "S", "sampling seed (default 0)", "seed", 0},
    {"threads", 'J', 0, CO_INT, 0, "N", "worker threads (default: one per CPU)", "threads", 0},
    {"max-batch", 'B', 0, CO_INT, 0, "B", "sequences decoded together (default 16)", "max-batch", 0},
    {"cache-tokens", 'c', 0, CO_INT, 0, "N",
     "KV cache positions (default: room for one question's K samples at full length,\n"
     "at least 65536)", "cache-tokens", 0},
    {"limit", 'L', 0, CO_INT, 0, "N", "only the first N questions of the benchmark (a quick look; a later run without\n"
     "it reuses these samples)", "limit", 0},
    {"json", 'j', 0, CO_FLAG, 0, NULL, "the summary as one JSON object, in retort compare --json's form (every\n"
     "benchmark of the run)", "json", 0},
    {"model-name", 'M', 0, CO_STR, 0, "NAME", "URL models: the endpoint's model", "model-name", 0},
    {"api-key-env", 'K', 0, CO_STR, 0, "VAR", "URL models: environment variable holding the key", "api-key-env", 0},
    {"concurrency", 'C', 0, CO_INT, 0, "C", "URL models: requests in flight (default 8)", "concurrency", 0},
    {"timeout", 'o', 0, CO_NUM, 0, "S", "URL models: seconds per attempt", "timeout", 0},
    {"retries", 'r', 0, CO_INT, 0, "N", "URL models: retries after the first attempt", "retries", 0},
    {"no-stream", 'N', 0, CO_FLAG, 0, NULL, "URL models: plain JSON responses instead of SSE", "no-stream", 0},
    {"device", 'D', 0, CO_STR, 0, "cpu|cuda",
     "cpu (default) or cuda, --gpu-memory-fraction F, --no-cuda-graphs: as for retort\n"
     "generate (local models)", "device", 0},
    {"gpu-memory-fraction", 'G', 0, CO_NUM, 0, "F",
     "share of the GPU's memory to use (default 0.9)", "gpu-memory-fraction", 0},
    {"no-cuda-graphs", CO_NO_CUDA_GRAPHS, 0, CO_FLAG, 0, NULL, "cuda: run decode steps eagerly", "no-cuda-graphs", 0},
    END};

static const co_opt COMPARE[] = {
    {"db", 'd', 0, CO_STR, 0, "DB", "the run database", "db", CO_REQ},
    {"json", 'j', 0, CO_FLAG, 0, NULL,
     "the same data as one JSON object: {\"interval\", \"runs\", \"benchmarks\": {NAME:\n"
     "{\"runs\": {RUN: {model, questions, samples, k, pass1, pass1_ci, cons, mean_tokens,\n"
     "truncation}}, \"pairs\": [{a, b, common, agreement, both, neither, only_a, only_b}]}}}", "json", 0},
    {NULL, 0, 0, CO_POS, 0, "RUN...", "the runs to compare", "runs", 0},
    END};

static const co_opt REPORT[] = {
    {"db", 'd', 0, CO_STR, 0, "DB", "the run database", "db", CO_REQ},
    {"out", 'o', 0, CO_STR, 0, "FILE", "the HTML file to write", "out", CO_REQ},
    {"train-log", 'l', 0, CO_LIST, 0, "FILE", "a retort train --log file (repeatable)", "train-log", CO_IN},
    END};

static const co_opt RESIZE_VOCAB[] = {
    {"model", CO_RV_MODEL, 0, CO_STR, 0, "DIR", "the model directory", "model", CO_IN | CO_REQ},
    {"add-tokens-from", CO_RV_FROM, 0, CO_STR, 0, "TEMPLATE|FILE",
     "a chat template's name or a tokenizer.json", "add-tokens-from", CO_REQ},
    {"out", CO_RV_OUT, 0, CO_STR, 0, "DIR", "the new model directory (new or empty)", "out", CO_REQ},
    {"overwrite", CO_RV_OVERWRITE, 0, CO_FLAG, 0, NULL, "remove OUT's files first", "overwrite", 0},
    {"max-shard-size", CO_RV_SHARD, 0, CO_NUM, 0, "B",
     "split model.safetensors into shards of at most B bytes (default 5e9)", "max-shard-size", 0},
    HELP_OPT, END};

static const co_opt DEMO[] = {
    {"seed", 's', 0, CO_U64, 0, "S", "the task, weights and samples all derive from S (default 0)", NULL, 0},
    {"quick", 'q', 0, CO_FLAG, 0, NULL, "a reduced size (about 2 minutes on 2 cores), what the tests run", NULL, 0},
    {"dir", 'd', 0, CO_STR, 0, "DIR", "where everything is written (default ./demo-run)", NULL, 0},
    {"threads", 't', 0, CO_INT, 0, "N", "worker threads (default: one per CPU); results depend on N", NULL, 0},
    HELP_OPT, END};

static const co_opt SERVE[] = {
    {"model", 'm', 0, CO_STR, 0, "DIR", "the model directory (required)", NULL, CO_REQ},
    {"host", 'H', 0, CO_STR, 0, "ADDR", "address to bind (default 127.0.0.1)", NULL, 0},
    {"port", 'p', 0, CO_INT, 0, "PORT", "port (default 8000; 0: a free one)", NULL, 0},
    {"api-key", 'k', 0, CO_STR, 0, "KEY",
     "require \"Authorization: Bearer KEY\" on /v1/ (default: $RETORT_API_KEY)", NULL, 0},
    {"max-batch", 'b', 0, CO_INT, 0, "B",
     "sequences per engine step; --cache-tokens: KV-cache positions in all", NULL, 0},
    {"cache-tokens", 'c', 0, CO_INT, 0, "N", "KV-cache positions in all (default 65536)", NULL, 0},
    {"threads", 'J', 0, CO_INT, 0, "N", "worker threads (default: one per CPU)", NULL, 0},
    {"tokenizer", 't', 0, CO_STR, 0, "FILE", "tokenizer.json (default DIR/tokenizer.json; required)", NULL, 0},
    {"template", 'T', 0, CO_STR, 0, "T",
     "chat template: deepseek-r1|qwen|llama3|auto|FILE (default: the tokenizer's own\n"
     "chat_template, else the built-in its special tokens fit; docs/chat-templates.md)", NULL, 0},
    {"served-model-name", 'N', 0, CO_STR, 0, "NAME", "the model's name in the API", NULL, 0},
    {"max-body", 'B', 0, CO_INT, 0, "BYTES", "larger request bodies get 413", NULL, 0},
    {"max-connections", 'C', 0, CO_INT, 0, "N", "open connections in all; more are refused with 503 (default 4096;\n"
     "the open-file limit is raised to fit)", NULL, 0},
    {"max-connections-per-ip", 'I', 0, CO_INT, 0, "N",
     "open connections from one address; more get 429 (default 512)", NULL, 0},
    {"header-timeout", 'h', 0, CO_NUM, 0, "S", "seconds a connection has to send each request's line and headers;\n"
     "later it is closed (default 10; also closes idle kept-alive ones)", NULL, 0},
    {"device", 'D', 0, CO_STR, 0, "cpu|cuda",
     "cpu (default) or cuda, --gpu-memory-fraction F, --no-cuda-graphs: as for\n"
     "retort generate", NULL, 0},
    {"gpu-memory-fraction", 'G', 0, CO_NUM, 0, "F", "share of the GPU's memory to use (default 0.9)", NULL, 0},
    {"no-cuda-graphs", CO_NO_CUDA_GRAPHS, 0, CO_FLAG, 0, NULL, "cuda: run decode steps eagerly", NULL, 0},
    END};

static const co_opt RUN[] = {
    {"dry-run", CO_RUN_DRY, 0, CO_FLAG, 0, NULL,
     "print the commands a run would start now, one per line (stages it would\n"
     "skip as '# NAME: skipped' lines); nothing is run or written", NULL, 0},
    {"from", CO_RUN_FROM, 0, CO_STR, 0, "STAGE", "run STAGE and every later stage, finished or not", NULL, 0},
    {"only", CO_RUN_ONLY, 0, CO_STR, 0, "STAGE", "run STAGE alone (later stages then count as not finished)", NULL, 0},
    {"set", CO_RUN_SET, 0, CO_LIST, 0, "KEY=VALUE",
     "override before validation: a variable of vars: (or work_dir, name) by its\n"
     "name, a stage's option as STAGE.KEY (train.lr=2e-5, generate.launcher=\"srun\");\n"
     "VALUE is read as YAML (numbers, true/false, [a, b]); repeatable", NULL, 0},
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
        else if (o->short_opt)
            snprintf(left, sizeof left, "  -%c, --%s%s%s", o->short_opt, o->name, o->meta ? " " : "", o->meta ? o->meta : "");
        else snprintf(left, sizeof left, "  --%s%s%s", o->name, o->meta ? " " : "", o->meta ? o->meta : "");
        if (strlen(left) < 30) fprintf(out, "%-30s ", left);
        else fprintf(out, "%s\n%-30s ", left, "");
        for (const char *h = o->help; *h; h++) {   /* a help of several lines: each indented */
            fputc(*h, out);
            if (*h == '\n' && h[1]) fprintf(out, "%-30s ", "");
        }
        fputc('\n', out);
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
