/*
 * pgcut.h - a relay between a client and Postgres that loses one COMMIT's
 * answer: the fault "the transaction committed, the client never heard".
 *
 * The relay listens on a loopback port of its own and forwards each accepted
 * connection to Postgres byte for byte, one thread a connection. Once armed with
 * a marker text, the first COMMIT sent after a client message that contained the
 * marker is forwarded, the relay waits for the server's answer (so the commit
 * has happened), and then closes both sides without passing the answer on.
 * Everything before and after is untouched; later connections are relayed
 * normally. It reads the protocol only as far as it must: a COMMIT is found by
 * its bytes, as a simple query or as an unnamed extended-protocol statement.
 */
#ifndef PGCUT_H
#define PGCUT_H

#include <stdbool.h>

typedef struct pgcut pgcut_t;

/* A relay to the Postgres listening on the Unix socket at pg_socket (a path,
 * e.g. "<STACK_DIR>/run/.s.PGSQL.<port>"); its own loopback TCP port in *port.
 * The socket, not TCP: where the server takes TCP over TLS only (stack.sh's
 * PG_TLS=on), its socket is still plain, so the relay can read the statements;
 * its clients connect with PGSSLMODE=disable. NULL on failure. */
pgcut_t *pgcut_start(const char *pg_socket, int *port);
/* The next COMMIT after a client message containing marker loses its answer. */
void pgcut_arm(pgcut_t *c, const char *marker);
/* Whether an armed cut has happened. */
bool pgcut_done(pgcut_t *c);
/* Stops listening and closes every relayed connection. */
void pgcut_stop(pgcut_t *c);

#endif
