/* core/phase.h — where a multi-threaded run spends its time, phase by phase, for debug logs.
 *
 * ph_start() takes a snapshot; each ph_lap(p, name) logs one debug line for the phase since
 * the last snapshot and takes a new one:
 *   "NAME: phase PHASE  wall W s  cpu C s  busiest B s"
 * wall is elapsed time, cpu the process's CPU time (all threads), busiest the CPU time of the
 * thread that used the most in the phase. On an idle machine the phase takes about
 * max(busiest, cpu / threads); summed over phases, busiest bounds the run's wall time from
 * below however loaded the machine is, so cpu(1 thread) / Σ busiest(N threads) estimates the
 * N-thread speed-up without a quiet machine. Per-thread CPU comes from
 * /proc/self/task/TID/schedstat (Linux); where that cannot be read, busiest is -1.
 * Nothing is measured unless the log level is debug. The struct is the caller's; no errors.
 */
#ifndef RT_CORE_PHASE_H
#define RT_CORE_PHASE_H

#define PH_MAX_THREADS 256

typedef struct {
    const char *who;                    /* prefix of the log lines ("dedup", "minhash") */
    int on;                             /* measuring (debug level at ph_start) */
    double wall, cpu;                   /* at the last snapshot */
    int n;                              /* threads seen at the last snapshot */
    int tid[PH_MAX_THREADS];
    double tcpu[PH_MAX_THREADS];        /* [n] seconds on CPU per thread */
    double last_wall, last_cpu, last_busiest; /* the phase ph_lap last logged; -1 when not measured */
} ph_clock;

void ph_start(ph_clock *p, const char *who);
void ph_lap(ph_clock *p, const char *phase);

#endif
