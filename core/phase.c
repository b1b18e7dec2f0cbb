/* core/phase.c — see phase.h. */
#include "core/phase.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/clock.h"
#include "core/log.h"

static double process_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Fills tid/tcpu with every thread of this process; returns the count, -1 if unreadable. */
static int snapshot_threads(int *tid, double *tcpu) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < PH_MAX_THREADS) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char path[300]; /* d_name is at most 255 bytes */
        snprintf(path, sizeof path, "/proc/self/task/%s/schedstat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue; /* the thread ended meanwhile */
        unsigned long long ns;
        if (fscanf(f, "%llu", &ns) == 1) {
            tid[n] = atoi(e->d_name);
            tcpu[n++] = 1e-9 * (double)ns;
        }
        fclose(f);
    }
    closedir(d);
    return n;
}

void ph_start(ph_clock *p, const char *who) {
    p->who = who;
    p->on = rt_log_get_level() == RT_LOG_DEBUG;
    p->last_wall = p->last_cpu = p->last_busiest = -1;
    if (!p->on) return;
    p->wall = now_s();
    p->cpu = process_cpu_s();
    p->n = snapshot_threads(p->tid, p->tcpu);
}

void ph_lap(ph_clock *p, const char *phase) {
    if (!p->on) return;
    double wall = now_s(), cpu = process_cpu_s();
    int tid[PH_MAX_THREADS];
    double tcpu[PH_MAX_THREADS], busiest = -1;
    int n = snapshot_threads(tid, tcpu);
    if (n >= 0 && p->n >= 0) {
        for (int i = 0; i < n; i++) {
            double before = 0; /* a thread started during the phase */
            for (int k = 0; k < p->n; k++)
                if (p->tid[k] == tid[i]) { before = p->tcpu[k]; break; }
            if (tcpu[i] - before > busiest) busiest = tcpu[i] - before;
        }
    }
    rt_log(RT_LOG_DEBUG, "%s: phase %-11s wall %8.3f s  cpu %8.3f s  busiest %8.3f s", p->who, phase, wall - p->wall,
           cpu - p->cpu, busiest);
    p->last_wall = wall - p->wall;
    p->last_cpu = cpu - p->cpu;
    p->last_busiest = busiest;
    p->wall = wall;
    p->cpu = cpu;
    p->n = n;
    for (int i = 0; i < n; i++) { p->tid[i] = tid[i]; p->tcpu[i] = tcpu[i]; }
}
