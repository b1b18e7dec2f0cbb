/* teacher/server_gate.c — the connection gate (see server_gate.h).
 *
 * The registry of connections (limits per IP and in all, deadlines) lives under g->cmu; a
 * connection's record is found by its socket (g->by_fd) and, once libmicrohttpd has it, is
 * the connection's socket context there.
 */
#include "teacher/server_gate.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/alloc.h"
#include "core/status.h"
#include "teacher/oai.h"

/* A client connection, from accept to close (the gate's, then libmicrohttpd's). */
typedef struct conn_rec {
    int fd;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    uint8_t ip[16];                 /* the address as IPv6 (IPv4 mapped) */
    double deadline;                /* its request head is due by then; 0: none due */
    bool in_mhd;                    /* handed over */
    struct conn_rec *prev, *next;
} conn_rec;

typedef struct ip_count {
    uint8_t ip[16];
    int n;
    struct ip_count *next;
} ip_count;

enum { IP_BUCKETS = 1024, GATE_LINE_MAX = 8192 };

struct gate {
    gate_opts o;
    int listen_fd;
    pthread_t thread;
    bool started;
    int ep_fd, wake_fd;
    atomic_int mode;                /* 0 accept, 1 listening socket closed (draining), 2 exit */
    pthread_mutex_t cmu;            /* the registry below */
    pthread_cond_t ack;
    bool listener_closed;
    conn_rec **by_fd, *conns;
    size_t cap_fd;
    ip_count *ips[IP_BUCKETS];
    int n_conns;
    int64_t refused_limit, refused_per_ip, header_timeouts, bad_lines;
};

static const char *reason_of(unsigned status) {
    switch (status) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    default: return "Service Unavailable";
    }
}

/* Writes a whole error response straight to a socket that no one else writes to now (the
 * gate's, or libmicrohttpd's while it is still reading the request), best effort: the socket
 * is closed right after. */
void gate_write_error(int fd, unsigned status, const char *msg) {
    char *body = oai_error_json((int)status, msg, NULL, NULL);
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 %u %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     status, reason_of(status), body ? strlen(body) : 0, body ? body : "");
    free(body);
    if (n > 0) (void)!send(fd, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static unsigned ip_hash(const uint8_t *ip) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < 16; i++) h = (h ^ ip[i]) * 1099511628211ull;
    return (unsigned)(h % IP_BUCKETS);
}

static ip_count **ip_find(gate *g, const uint8_t *ip) {   /* under g->cmu; the link that holds it */
    ip_count **p = &g->ips[ip_hash(ip)];
    while (*p && memcmp((*p)->ip, ip, 16)) p = &(*p)->next;
    return p;
}

static void ip_of(const struct sockaddr_storage *a, uint8_t ip[16]) {
    memset(ip, 0, 16);
    if (a->ss_family == AF_INET6) {
        memcpy(ip, &((const struct sockaddr_in6 *)a)->sin6_addr, 16);
    } else if (a->ss_family == AF_INET) {
        ip[10] = ip[11] = 0xFF;
        memcpy(ip + 12, &((const struct sockaddr_in *)a)->sin_addr, 4);
    }
}

/* Drops a connection from the registry (under g->cmu); its socket is closed by its owner. */
static void conn_forget(gate *g, conn_rec *r) {
    if (r->prev) r->prev->next = r->next;
    else g->conns = r->next;
    if (r->next) r->next->prev = r->prev;
    if ((size_t)r->fd < g->cap_fd && g->by_fd[r->fd] == r) g->by_fd[r->fd] = NULL;
    ip_count **p = ip_find(g, r->ip);
    if (*p && --(*p)->n == 0) {
        ip_count *dead = *p;
        *p = dead->next;
        free(dead);
    }
    g->n_conns--;
    free(r);
}

/* An error response, then close: what the client sent is drained first (up to 64 KiB), so the
 * close sends FIN rather than RST, which could discard the response on its way. */
static void refuse_close(int fd, unsigned status, const char *msg) {
    gate_write_error(fd, status, msg);
    char junk[4096];
    for (int k = 0; k < 16 && recv(fd, junk, sizeof junk, MSG_DONTWAIT) > 0; k++) {}
    shutdown(fd, SHUT_WR);
    close(fd);
}

/* Closes a socket the gate still owns (with an error response when status is not 0). */
static void gate_close(gate *g, int fd, unsigned status, const char *msg) {
    pthread_mutex_lock(&g->cmu);
    conn_rec *r = (size_t)fd < g->cap_fd ? g->by_fd[fd] : NULL;
    if (r) conn_forget(g, r);
    if (status == 400) g->bad_lines++;
    if (status == 408) g->header_timeouts++;
    pthread_mutex_unlock(&g->cmu);
    epoll_ctl(g->ep_fd, EPOLL_CTL_DEL, fd, NULL);
    if (status) refuse_close(fd, status, msg);
    else close(fd);
}

/* A new connection: counted against the limits, then watched until its request line is in. */
static void gate_admit(gate *g, int fd, const struct sockaddr_storage *a, socklen_t alen, double t) {
    uint8_t ip[16];
    ip_of(a, ip);
    pthread_mutex_lock(&g->cmu);
    if ((size_t)fd < g->cap_fd && g->by_fd[fd]) conn_forget(g, g->by_fd[fd]);   /* closed unseen: stale */
    unsigned refuse = 0;
    ip_count **p = ip_find(g, ip);
    if (g->n_conns >= g->o.max_conns) refuse = 503, g->refused_limit++;
    else if (*p && (*p)->n >= g->o.max_per_ip) refuse = 429, g->refused_per_ip++;
    conn_rec *r = NULL;
    if (!refuse) {
        r = rt_calloc(1, sizeof *r);
        if (!*p && r && !(*p = rt_calloc(1, sizeof **p))) {
            free(r);
            r = NULL;
        }
        size_t cap = g->cap_fd;
        if (r && rt_grow((void **)&g->by_fd, &g->cap_fd, (size_t)fd + 1, sizeof *g->by_fd)) {
            free(r);
            r = NULL;
        }
        if (g->cap_fd > cap) memset(g->by_fd + cap, 0, (g->cap_fd - cap) * sizeof *g->by_fd);
        if (!r) {
            if (*p && !(*p)->n) {
                free(*p);
                *p = NULL;
            }
            refuse = 503;
        }
    }
    if (r) {
        if (!(*p)->n) memcpy((*p)->ip, ip, 16);
        (*p)->n++;
        r->fd = fd;
        memcpy(&r->addr, a, alen);
        r->addr_len = alen;
        memcpy(r->ip, ip, 16);
        r->deadline = t + g->o.header_timeout;
        r->next = g->conns;
        if (g->conns) g->conns->prev = r;
        g->conns = r;
        g->by_fd[fd] = r;
        g->n_conns++;
    }
    pthread_mutex_unlock(&g->cmu);
    if (refuse) {
        refuse_close(fd, refuse, refuse == 429 ? "too many connections from this address" : "the server is at its connection limit");
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.fd = fd};
    if (epoll_ctl(g->ep_fd, EPOLL_CTL_ADD, fd, &ev)) gate_close(g, fd, 503, "the server cannot watch more connections");
}

/* New bytes on a gate connection: peeked (left for libmicrohttpd), checked, handed over. */
static void gate_read(gate *g, int fd) {
    char buf[GATE_LINE_MAX];
    ssize_t n = recv(fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) {   /* hung up */
        gate_close(g, fd, 0, NULL);
        return;
    }
    int v = oai_request_line(buf, (size_t)n);
    if (v == 0 && (size_t)n < sizeof buf) return;
    if (v <= 0) {
        gate_close(g, fd, 400, v < 0 ? "malformed HTTP request line" : "the request line is too long");
        return;
    }
    epoll_ctl(g->ep_fd, EPOLL_CTL_DEL, fd, NULL);
    struct sockaddr_storage a;
    socklen_t alen = 0;
    pthread_mutex_lock(&g->cmu);
    conn_rec *r = (size_t)fd < g->cap_fd ? g->by_fd[fd] : NULL;
    if (r) {
        r->in_mhd = true;
        a = r->addr;
        alen = r->addr_len;
    }
    pthread_mutex_unlock(&g->cmu);
    if (!r) {
        close(fd);
        return;
    }
    if (g->o.hand_over(g->o.user, fd, (const struct sockaddr *)&a, alen)) {   /* it closed fd */
        pthread_mutex_lock(&g->cmu);
        if ((size_t)fd < g->cap_fd && g->by_fd[fd] == r) conn_forget(g, r);
        pthread_mutex_unlock(&g->cmu);
    }
}

/* Every 100 ms: late request heads, then the owner's checks. */
static void gate_sweep(gate *g, double t) {
    pthread_mutex_lock(&g->cmu);
    conn_rec *next;
    for (conn_rec *r = g->conns; r; r = next) {
        next = r->next;
        if (!(r->deadline > 0 && t > r->deadline)) continue;
        r->deadline = 0;
        g->header_timeouts++;
        if (r->in_mhd) {   /* libmicrohttpd sees the socket end and closes it */
            shutdown(r->fd, SHUT_RDWR);
        } else {
            int fd = r->fd;
            g->header_timeouts--;   /* gate_close counts it */
            pthread_mutex_unlock(&g->cmu);
            gate_close(g, fd, 408, "the request head did not arrive in time");
            pthread_mutex_lock(&g->cmu);
            next = g->conns;   /* the list changed: restart (deadlines passed are 0 now) */
        }
    }
    pthread_mutex_unlock(&g->cmu);
    g->o.sweep(g->o.user);
}

static void *gate_main(void *arg) {
    gate *g = arg;
    struct epoll_event ev[64];
    double next_sweep = 0, accept_again = 0;
    bool listening = true;
    for (;;) {
        int n = epoll_wait(g->ep_fd, ev, 64, 100);
        int mode = atomic_load(&g->mode);
        if (mode == 2) break;
        double t = now_s();
        if (mode == 1 && listening) {   /* srv_stop: no new connections */
            epoll_ctl(g->ep_fd, EPOLL_CTL_DEL, g->listen_fd, NULL);
            close(g->listen_fd);
            pthread_mutex_lock(&g->cmu);
            g->listen_fd = -1;
            g->listener_closed = true;
            pthread_cond_broadcast(&g->ack);
            pthread_mutex_unlock(&g->cmu);
            listening = false;
        }
        for (int i = 0; i < n; i++) {
            int fd = ev[i].data.fd;
            if (fd == g->wake_fd) {
                uint64_t x;
                (void)!read(g->wake_fd, &x, sizeof x);
            } else if (fd == g->listen_fd && listening) {
                for (;;) {
                    struct sockaddr_storage a;
                    socklen_t alen = sizeof a;
                    int c = accept4(g->listen_fd, (struct sockaddr *)&a, &alen, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c >= 0) {
                        gate_admit(g, c, &a, alen, t);
                        continue;
                    }
                    if (errno == EINTR || errno == ECONNABORTED) continue;
                    if (errno != EAGAIN && errno != EWOULDBLOCK) {   /* out of descriptors or memory: pause */
                        struct epoll_event off = {.events = 0, .data.fd = g->listen_fd};
                        epoll_ctl(g->ep_fd, EPOLL_CTL_MOD, g->listen_fd, &off);
                        accept_again = t + 0.1;
                    }
                    break;
                }
            } else if (fd != g->listen_fd) {
                gate_read(g, fd);
            }
        }
        if (t >= next_sweep) {
            gate_sweep(g, t);
            next_sweep = t + 0.1;
        }
        if (accept_again > 0 && t >= accept_again && listening) {
            struct epoll_event on = {.events = EPOLLIN, .data.fd = g->listen_fd};
            epoll_ctl(g->ep_fd, EPOLL_CTL_MOD, g->listen_fd, &on);
            accept_again = 0;
        }
    }
    pthread_mutex_lock(&g->cmu);   /* the connections still at the gate */
    conn_rec *next;
    for (conn_rec *r = g->conns; r; r = next) {
        next = r->next;
        if (!r->in_mhd) {
            close(r->fd);
            conn_forget(g, r);
        }
    }
    pthread_mutex_unlock(&g->cmu);
    return NULL;
}

int gate_listen(const char *host, int port, int *fd_out, int *port_out) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g) return rt_fail(RT_EIO, "cannot listen on %s:%d: %s", host, port, gai_strerror(g));
    int err = 0, fd = -1;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) || listen(fd, 256)) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) return rt_fail(RT_EIO, "cannot listen on %s:%d: %s", host, port, strerror(err));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    *fd_out = fd;
    return 0;
}


int gate_start(int listen_fd, const gate_opts *opts, gate **out) {
    *out = NULL;
    gate *g = rt_calloc(1, sizeof *g);
    if (!g) {
        close(listen_fd);
        return RT_ENOMEM;
    }
    g->o = *opts;
    g->listen_fd = listen_fd;
    g->ep_fd = g->wake_fd = -1;
    pthread_mutex_init(&g->cmu, NULL);
    pthread_cond_init(&g->ack, NULL);
    int rc = 0;
    int fl = fcntl(g->listen_fd, F_GETFL);
    struct epoll_event el = {.events = EPOLLIN, .data.fd = g->listen_fd};
    g->ep_fd = epoll_create1(EPOLL_CLOEXEC);
    g->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ew = {.events = EPOLLIN, .data.fd = g->wake_fd};
    if (fl < 0 || fcntl(g->listen_fd, F_SETFL, fl | O_NONBLOCK) || g->ep_fd < 0 || g->wake_fd < 0 ||
        epoll_ctl(g->ep_fd, EPOLL_CTL_ADD, g->listen_fd, &el) || epoll_ctl(g->ep_fd, EPOLL_CTL_ADD, g->wake_fd, &ew))
        rc = rt_fail(RT_EINTERNAL, "serve: cannot set up the connection gate: %s", strerror(errno));
    if (!rc && pthread_create(&g->thread, NULL, gate_main, g)) rc = rt_fail(RT_EINTERNAL, "cannot start the gate thread");
    if (!rc) g->started = true;
    if (rc) {
        gate_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

static void gate_signal(gate *g, int mode) {
    atomic_store(&g->mode, mode);
    uint64_t one = 1;
    (void)!write(g->wake_fd, &one, sizeof one);
}

void gate_close_listener(gate *g) {
    if (!g || !g->started) return;
    gate_signal(g, 1);
    pthread_mutex_lock(&g->cmu);
    while (!g->listener_closed) pthread_cond_wait(&g->ack, &g->cmu);
    pthread_mutex_unlock(&g->cmu);
}

void gate_stop(gate *g) {
    if (!g || !g->started) return;
    gate_signal(g, 2);
    pthread_join(g->thread, NULL);
    g->started = false;
}

void gate_free(gate *g) {
    if (!g) return;
    gate_stop(g);
    if (g->listen_fd >= 0) close(g->listen_fd);
    if (g->ep_fd >= 0) close(g->ep_fd);
    if (g->wake_fd >= 0) close(g->wake_fd);
    while (g->conns) conn_forget(g, g->conns);   /* none remain: libmicrohttpd closed its own */
    for (int i = 0; i < IP_BUCKETS; i++)
        while (g->ips[i]) {
            ip_count *n = g->ips[i]->next;
            free(g->ips[i]);
            g->ips[i] = n;
        }
    free(g->by_fd);
    pthread_mutex_destroy(&g->cmu);
    pthread_cond_destroy(&g->ack);
    free(g);
}

void *gate_conn_started(gate *g, int fd) {
    pthread_mutex_lock(&g->cmu);
    conn_rec *r = fd >= 0 && (size_t)fd < g->cap_fd ? g->by_fd[fd] : NULL;
    if (r && !r->in_mhd) r = NULL;
    pthread_mutex_unlock(&g->cmu);
    return r;
}

static void set_deadline(gate *g, void *rec, double deadline) {
    pthread_mutex_lock(&g->cmu);
    conn_rec *r = rec;
    if (r) r->deadline = deadline;
    pthread_mutex_unlock(&g->cmu);
}

void gate_head_received(gate *g, void *rec) { set_deadline(g, rec, 0); }
void gate_request_done(gate *g, void *rec) { set_deadline(g, rec, now_s() + g->o.header_timeout); }

void gate_conn_closed(gate *g, void *rec) {
    if (!rec) return;
    pthread_mutex_lock(&g->cmu);
    conn_forget(g, rec);
    pthread_mutex_unlock(&g->cmu);
}

void gate_counts_get(gate *g, gate_counts *out) {
    pthread_mutex_lock(&g->cmu);
    *out = (gate_counts){g->n_conns, g->refused_limit, g->refused_per_ip, g->header_timeouts, g->bad_lines};
    pthread_mutex_unlock(&g->cmu);
}
