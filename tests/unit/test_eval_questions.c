/* eval/run: the built-in benchmarks load from the assets (gold answers as the test sets
 * give them, R1's instruction appended) and become prompts once. Expected values are read
 * off the asset files by hand (first GSM8K test question: Janet's ducks, 18). */
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "dataset/db_int.h" /* db_sqlite: counts read back with plain SQL */
#include "eval/run.h"
#include "testutil.h"

static db_conn *fresh_db(char **dir) {
    *dir = tmp_dir();
    char *p = rt_path_join(*dir, "run.db");
    db_conn *db = NULL;
    cr_assert_eq(db_open(p, DB_OPEN_CREATE, &db), 0, "%s", rt_errmsg());
    free(p);
    return db;
}

static void need_assets(void) {
    char *a = rt_assets_dir(), *b = a ? rt_path_join(a, "benchmarks/gsm8k_test.jsonl") : NULL;
    bool ok = b && rt_is_file(b);
    free(a);
    free(b);
    if (!ok) cr_skip_test("skipped: benchmark assets absent (set RETORT_ASSETS)");
}

static long long count(db_conn *db, const char *sql) {
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db_sqlite(db), sql, -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    long long n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

Test(eval_questions, builtins_load_with_gold_and_instruction) {
    need_assets();
    char *dir;
    db_conn *db = fresh_db(&dir);
    ev_questions qs;
    cr_assert_eq(ev_questions_load(db, "gsm8k", &qs), 0, "%s", rt_errmsg());
    cr_assert_str_eq(qs.name, "gsm8k");
    cr_assert_eq(qs.n, 1319);
    cr_assert_str_eq(qs.q[0].gold, "18");
    cr_assert(!strncmp(qs.q[0].text, "Janet", 5), "%s", qs.q[0].text);
    cr_assert(strstr(qs.q[0].text, "\nPlease reason step by step, and put your final answer within \\boxed{}."));
    long long prompts = count(db, "SELECT COUNT(*) FROM prompts WHERE source = 'gsm8k'");
    cr_assert_eq(prompts, 1319);
    int64_t first = qs.q[0].prompt_id;
    ev_questions_free(&qs);
    /* loading again reuses the prompts */
    cr_assert_eq(ev_questions_load(db, "gsm8k", &qs), 0, "%s", rt_errmsg());
    cr_assert_eq(qs.q[0].prompt_id, first);
    cr_assert_eq(count(db, "SELECT COUNT(*) FROM prompts"), 1319);
    ev_questions_free(&qs);
    cr_assert_eq(ev_questions_load(db, "math500", &qs), 0, "%s", rt_errmsg());
    cr_assert_eq(qs.n, 500);
    cr_assert_str_eq(qs.q[0].gold, "\\left( 3, \\frac{\\pi}{2} \\right)");
    ev_questions_free(&qs);
    cr_assert_eq(ev_questions_load(db, "aime24", &qs), 0, "%s", rt_errmsg());
    cr_assert_eq(qs.n, 30);
    ev_questions_free(&qs);
    cr_assert_eq(ev_questions_load(db, "gsm9k", &qs), RT_ENOTFOUND);
    cr_assert(strstr(rt_errmsg(), "gsm9k"), "%s", rt_errmsg());
    db_close(db);
    free(dir);
}
