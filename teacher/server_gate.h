/* teacher/server_gate.h — the connection gate of `retort serve` (teacher/server.h): the
 * listening socket, connection limits, the request-line check and request-head deadlines,
 * before and beside libmicrohttpd.
 *
 * gate_listen() binds host:port (port 0: a free one) and listens. gate_start() takes that
 * socket over and starts the gate thread: it accepts, refuses a connection over max_conns
 * (503) or over max_per_ip from one address (429), and watches each new one (epoll,
 * edge-triggered, reading with MSG_PEEK so nothing is consumed) until its request line is
 * complete: a malformed one gets 400 and is closed at once, a complete one is handed on with
 * opts.hand_over (libmicrohttpd's MHD_add_connection; nonzero: it refused and closed the
 * socket). Every 100 ms the thread sweeps: connections whose request head is late are closed
 * (408 while still at the gate; a handed-over one is shut down, and its owner sees the socket
 * end), then opts.sweep(user) runs the owner's own checks.
 *
 * The owner reports each handed-over connection's life through its record: gate_conn_started
 * when libmicrohttpd takes it (returns the record, NULL if unknown), gate_head_received once
 * its request head is in (no deadline), gate_request_done when a response is complete (the
 * next head is due within header_timeout), gate_conn_closed before its socket is closed.
 *
 * gate_close_listener() closes the listening socket (no new connections) and returns once it
 * is closed; gate_stop() ends the thread (no more sweeps) and closes the connections still at
 * the gate; gate_free() (after libmicrohttpd has stopped and closed its own) frees the rest.
 * NULL is fine for all three.
 * gate_write_error() writes a whole HTTP error response (an OpenAI error object, "Connection:
 * close") straight to a socket no one else writes to now, best effort.
 * Errors: RT_EIO (cannot listen: the message names host:port and why), RT_ENOMEM,
 * RT_EINTERNAL (epoll, eventfd or the thread).
 */
#ifndef RT_TEACHER_SERVER_GATE_H
#define RT_TEACHER_SERVER_GATE_H

#include <stdint.h>
#include <sys/socket.h>

typedef struct gate gate;   /* opaque; owned by the caller of gate_start */

typedef struct {
    int max_conns, max_per_ip;    /* > 0 */
    double header_timeout;        /* seconds, > 0 */
    int (*hand_over)(void *user, int fd, const struct sockaddr *addr, socklen_t addr_len);
    void (*sweep)(void *user);
    void *user;
} gate_opts;

typedef struct {
    int64_t open, refused_limit, refused_per_ip, header_timeouts, bad_lines;
} gate_counts;

int gate_listen(const char *host, int port, int *fd_out, int *port_out);
int gate_start(int listen_fd, const gate_opts *opts, gate **out);
void gate_close_listener(gate *g);
void gate_stop(gate *g);
void gate_free(gate *g);

void *gate_conn_started(gate *g, int fd);
void gate_head_received(gate *g, void *rec);
void gate_request_done(gate *g, void *rec);
void gate_conn_closed(gate *g, void *rec);
void gate_counts_get(gate *g, gate_counts *out);

void gate_write_error(int fd, unsigned status, const char *msg);

#endif
