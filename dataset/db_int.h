/* dataset/db_int.h — what the dataset sources share about the database handle: the raw
 * SQLite handle, the one SQLite status-checking macro and the cached prepared statements.
 * Not for other modules: they reach the database only through the typed calls of
 * dataset/db.h, queue.h, verdicts.h and evalres.h. */
#ifndef RT_DATASET_DB_INT_H
#define RT_DATASET_DB_INT_H

#include <sqlite3.h>

#include "core/status.h"
#include "dataset/blob.h"
#include "dataset/db.h"

/* Records "DB: SQLite's reason" in words (not a database, corrupt, locked, full disk with
 * the system's reason) with an RT_E… code that fits SQLite's result (full disk or read-only
 * → RT_EIO, corrupt → RT_EFORMAT, …); CALL, FILE and LINE go to the debug log only. */
int db_sql_fail(sqlite3 *h, int s, const char *call, const char *file, int line);

/* The checking macro: call returns an SQLite result code, SQLITE_OK expected. */
#define SQL_TRY(h, call)                                                                                \
    do {                                                                                                \
        int s_ = (call);                                                                                \
        if (s_ != SQLITE_OK) return db_sql_fail((h), s_, #call, __FILE__, __LINE__);                    \
    } while (0)

/* The raw handle, for the dataset sources' own queries. */
sqlite3 *db_sqlite(db_conn *db);
/* Records SQLite result s of a query as the message (naming the database, the action what,
 * and SQLite's reason) and returns the RT_E… code that fits it. */
int db_fail(db_conn *db, int s, const char *what);

/* sqlite3_step for statements that return no row: SQLITE_DONE becomes SQLITE_OK. */
int db_step_done(sqlite3_stmt *st);
/* sqlite3_step for queries: SQLITE_ROW and SQLITE_DONE become SQLITE_OK; *row says which. */
int db_step_row(sqlite3_stmt *st, int *row);

/* Prepared statements the row functions reuse, by number. */
enum {
    DB_ST_PROMPT_INSERT,
    DB_ST_PROMPT_FIND,
    DB_ST_SAMPLE_INSERT,
    DB_ST_SAMPLE_FIND_TEXT,
    DB_ST_SAMPLE_NEXT_INDEX,
    DB_ST_SAMPLE_FIND_INDEX,
    DB_ST_SAMPLE_TEXT,
    DB_ST_VERDICT_PUT,
    DB_ST_COUNT
};

struct db_conn {
    sqlite3 *h;
    char *path;
    blob_codec *codec;
    sqlite3_stmt *st[DB_ST_COUNT];
    int in_tx;
    int64_t write_dict; /* dictionary new text is compressed with (0: plain zstd) */
};

/* The statement number i, prepared on first use and reset with bindings cleared. */
int db_stmt(db_conn *db, int i, sqlite3_stmt **out);

#endif
