/* tests/tools/tp_fault.h — the `fault` mode shared by dense_cuda_tp.c and ds_cuda_tp.c: the GPU
 * engine on the stand-ins (include after tests/unit/fake_cuda_impl.h) under the job's ranks, two
 * prompts of 19 and 13 tokens (ids in [2, vocab)), 2 greedy samples each of max_tokens; after
 * `warm` steps the stand-ins' fault `spec` is armed (fake_fault_set). A failed step is handled as
 * cli/cmd_generate.c handles a failed lockstep: one line "TOOL: rank R of P: MSG", then
 * comm_abort ends every rank. A run without a fault prints {"rank", "steps", "fired"}.
 * Returns the process's exit status. */
#ifndef RT_TESTS_TOOLS_TP_FAULT_H
#define RT_TESTS_TOOLS_TP_FAULT_H

static int tp_fault_run(const char *tool, const char *dir, size_t gpu_bytes, bool no_graphs, const char *spec, int warm,
                        int32_t vocab, int64_t max_tokens) {
    rt_comm *comm;
    if (comm_open(COMM_AUTO, &comm)) {
        fprintf(stderr, "%s: comm_open: %s\n", tool, rt_errmsg());
        return 1;
    }
    fake_devices = comm_local_size(comm);
    fake_total_bytes = gpu_bytes;
    int R = comm_rank(comm), P = comm_size(comm);
    te_load_opts lo = {.device = TE_DEVICE_CUDA, .gpu = -1, .gpu_memory_fraction = 0.9, .comm = comm,
                       .no_cuda_graphs = no_graphs};
    te_model *m = NULL;
    te_engine *e = NULL;
    te_opts o = {.max_batch = 4, .block_size = 16, .prefill_chunk = 16};
    int rc = te_model_load_opts(dir, &lo, &m);
    if (!rc) rc = te_engine_create(m, &o, &e);
    int32_t prompt[2][19];
    for (int q = 0; q < 2 && !rc; q++) {
        for (int i = 0; i < 19; i++) prompt[q][i] = (int32_t)(2 + (q * 31 + i * 7 + i * i) % (vocab - 2));
        te_request r = {.prompt = prompt[q], .n_prompt = 19 - 6 * q, .n_samples = 2, .max_tokens = max_tokens,
                        .ignore_config_eos = true, .sampling = SMP_GREEDY, .seed = 3, .logprobs = true, .tag = (uint64_t)q};
        rc = te_submit(e, &r);
    }
    int steps = 0;
    while (!rc && te_busy(e)) {
        if (steps == warm && fake_fault_set(spec)) rc = rt_fail(RT_EINVAL, "fault spec %s: KIND:N[@RANK]", spec);
        te_result *res = NULL;
        size_t k = 0;
        if (!rc) rc = te_step(e, &res, &k);
        te_results_free(res, k);
        steps++;
    }
    if (rc) {   /* cli/cmd_generate.c's failed lockstep: one line, then every rank ends */
        fprintf(stderr, "%s: rank %d of %d: %s\n", tool, R, P, rt_errmsg());
        fflush(stderr);
        if (P > 1) comm_abort(comm, 1);
    } else {
        printf("{\"rank\": %d, \"steps\": %d, \"fired\": %d}\n", R, steps, fake_fault_fired());
        fflush(stdout);
    }
    te_engine_free(e);
    te_model_free(m);
    fake_real_comm_close(comm);
    return rc ? 1 : 0;
}

#endif
