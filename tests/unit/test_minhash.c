/* filters/minhash: normalization, signatures, Jaccard estimates, clustering. Expected
 * values are hand-worked (normalized strings, shingle sets and their exact Jaccard). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "filters/minhash.h"
#include "testutil.h"

static void expect_norm(const char *in, const char *want) {
    char *out;
    size_t n;
    cr_assert_eq(mh_normalize(in, strlen(in), &out, &n), 0);
    cr_assert_str_eq(out, want, "normalize(%s)", in);
    cr_assert_eq(n, strlen(want));
    free(out);
}

Test(minhash, normalization_like_datatrove) {
    expect_norm("Hello,   World!", "hello world");
    expect_norm("  The PRICE is $3.50 (or 1,000 yen)\n\tnow ", "the price is 0 or 0 yen now");
    expect_norm("Café naïve ÉLAN", "cafe naive elan");
    expect_norm("a—b…c", "a b c");
    expect_norm("", "");
    expect_norm("!!!", "");
}

Test(minhash, identical_and_normalization_equal_texts_have_equal_signatures) {
    mh_config c;
    mh_config_default(&c);
    mh_hasher *h;
    cr_assert_eq(mh_hasher_new(&c, &h), 0);
    int n = mh_num_hashes(h);
    cr_assert_eq(n, 112);
    uint64_t a[112], b[112];
    size_t sa, sb;
    const char *x = "The quick brown fox jumps over the lazy dog near the river bank.";
    const char *y = "the QUICK brown fox -- jumps over the lazy dog, near the river bank";
    cr_assert_eq(mh_signature(h, x, strlen(x), a, &sa), 0);
    cr_assert_eq(mh_signature(h, y, strlen(y), b, &sb), 0);
    cr_assert_eq(sa, 9); /* 13 words → 9 five-grams */
    cr_assert_eq(sb, 9);
    cr_assert_eq(memcmp(a, b, sizeof a), 0);
    cr_assert_float_eq(mh_similarity(a, b, n), 1.0, 1e-12);
    mh_hasher_free(h);
}

/* Two texts whose 5-gram sets share a known fraction: A = w0..w39 (36 shingles), B = w0..w29
 * followed by 10 new words (36 shingles, 26 shared): J = 26 / 46. */
Test(minhash, estimate_tracks_exact_jaccard) {
    mh_config c;
    mh_config_default(&c);
    mh_hasher *h;
    cr_assert_eq(mh_hasher_new(&c, &h), 0);
    char A[1024] = "", B[1024] = "";
    for (int i = 0; i < 40; i++) {
        char w[16];
        snprintf(w, sizeof w, "w%c%c ", 'a' + i / 26, 'a' + i % 26);
        strcat(A, w);
        if (i < 30) strcat(B, w);
        else { snprintf(w, sizeof w, "v%c%c ", 'a' + i / 26, 'a' + i % 26); strcat(B, w); }
    }
    uint64_t a[112], b[112];
    cr_assert_eq(mh_signature(h, A, strlen(A), a, NULL), 0);
    cr_assert_eq(mh_signature(h, B, strlen(B), b, NULL), 0);
    double j = 26.0 / 46.0, est = mh_similarity(a, b, 112);
    /* 112 hashes: standard error sqrt(j(1-j)/112) ≈ 0.047; allow 4 of them */
    cr_assert(fabs(est - j) < 4 * sqrt(j * (1 - j) / 112), "estimate %.3f, exact %.3f", est, j);
    mh_hasher_free(h);
}

Test(minhash, short_and_empty_texts) {
    mh_config c;
    mh_config_default(&c);
    mh_hasher *h;
    cr_assert_eq(mh_hasher_new(&c, &h), 0);
    uint64_t a[112];
    size_t n;
    cr_assert_eq(mh_signature(h, "two words", 9, a, &n), 0);
    cr_assert_eq(n, 1); /* fewer words than a 5-gram: one shingle */
    cr_assert_eq(mh_signature(h, " ... ", 5, a, &n), 0);
    cr_assert_eq(n, 0);
    for (int k = 0; k < 112; k++) cr_assert_eq(a[k], UINT64_MAX);
    mh_hasher_free(h);
}

Test(minhash, bad_config_is_rejected) {
    mh_config c;
    mh_config_default(&c);
    mh_hasher *h = NULL;
    c.bands = 0;
    cr_assert_eq(mh_hasher_new(&c, &h), RT_EINVAL);
    mh_config_default(&c);
    c.rows = 100;
    c.bands = 100;
    cr_assert_eq(mh_hasher_new(&c, &h), RT_EINVAL);
    mh_config_default(&c);
    c.threshold = 1.5;
    cr_assert_eq(mh_hasher_new(&c, &h), RT_EINVAL);
    cr_assert_null(h);
}

Test(minhash, clusters_keep_the_first_document) {
    const char *base = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma "
                       "tau upsilon phi chi psi omega one two three four five six seven eight nine ten";
    char near[512];
    snprintf(near, sizeof near, "%s eleven", base); /* 41 vs 40 words: J = 36/37 */
    const char *texts[] = {"something unrelated entirely, with its own words and nothing else in common at all",
                           base, "ALPHA beta, gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
                                 "sigma tau upsilon phi chi psi omega one two three four five six seven eight nine ten",
                           near, "", ""};
    mh_doc docs[6];
    for (int i = 0; i < 6; i++) docs[i] = (mh_doc){texts[i], strlen(texts[i])};
    size_t cl[6];
    mh_config c;
    mh_config_default(&c);
    cr_assert_eq(mh_dedup_run(&c, docs, 6, NULL, cl), 0);
    size_t want[6] = {0, 1, 1, 1, 4, 4};
    for (int i = 0; i < 6; i++) cr_assert_eq(cl[i], want[i], "doc %d in cluster %zu, want %zu", i, cl[i], want[i]);
    c.exact_only = true;
    cr_assert_eq(mh_dedup_run(&c, docs, 6, NULL, cl), 0);
    size_t want_exact[6] = {0, 1, 1, 3, 4, 4};
    for (int i = 0; i < 6; i++) cr_assert_eq(cl[i], want_exact[i], "exact: doc %d in cluster %zu", i, cl[i]);
    c.exact_only = false;
    c.threshold = 0.99; /* 36/37 = 0.973 is below */
    cr_assert_eq(mh_dedup_run(&c, docs, 6, NULL, cl), 0);
    cr_assert_eq(cl[3], 3);
}

Test(minhash, threads_give_the_same_clusters) {
    enum { N = 300 };
    mh_doc docs[N];
    char *buf[N];
    for (int i = 0; i < N; i++) {
        buf[i] = malloc(256);
        int fam = i % 50;
        snprintf(buf[i], 256, "family %d text with words %d %d %d and a shared tail of several plain words here %s",
                 fam, fam * 7, fam * 11, fam * 13, i % 3 == 0 ? "extra" : "");
        docs[i] = (mh_doc){buf[i], strlen(buf[i])};
    }
    size_t a[N], b[N];
    mh_config c;
    mh_config_default(&c);
    cr_assert_eq(mh_dedup_run(&c, docs, N, NULL, a), 0);
    tp_pool *p;
    cr_assert_eq(tp_create(3, &p), 0);
    cr_assert_eq(mh_dedup_run(&c, docs, N, p, b), 0);
    tp_free(p);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(a[i], b[i]);
        cr_assert_leq(a[i], (size_t)i);
        free(buf[i]);
    }
}

/* Families of one-word variants of a 200-word base (own vocabulary per family): a variant
 * against another keeps at least 186 of 206 shingles in common (J ≥ 0.90 > 0.8), so each
 * family is one cluster named by its first member; family 0 has 75 members, more than the
 * 32 earlier members a document is checked against. Every tenth document is an exact copy
 * (after normalization) of the one five before it. The clusters must not depend on the
 * number of threads. */
/* x written in base 26 with letters (digits would all normalize to "0") */
static const char *letters(int x, char *out) {
    char t[16];
    int n = 0;
    do { t[n++] = (char)('a' + x % 26); x /= 26; } while (x);
    for (int k = 0; k < n; k++) out[k] = t[n - 1 - k];
    out[n] = 0;
    return out;
}

Test(minhash, clusters_of_near_duplicate_families_at_1_2_3_threads) {
    enum { N = 300, W = 200 };
    mh_doc docs[N];
    char *buf[N];
    int fam[N];
    for (int i = 0; i < N; i++) {
        buf[i] = malloc(W * 16);
        fam[i] = i % 4 == 0 ? 0 : 1 + i % 13;
        if (i % 10 == 9) { /* an exact copy of i - 5 after normalization: upper case, commas */
            size_t k = 0;
            for (const char *p = buf[i - 5]; *p; p++) {
                buf[i][k++] = *p >= 'a' && *p <= 'z' ? (char)(*p - 32) : *p;
                if (*p == ' ') buf[i][k++] = ',';
            }
            buf[i][k] = 0;
            fam[i] = fam[i - 5];
        } else {
            size_t k = 0;
            char a[16], b[16];
            for (int w = 0; w < W; w++) {
                if (w == (i * 37) % W) k += (size_t)sprintf(buf[i] + k, "%svariant%s", w ? " " : "", letters(i, a));
                else k += (size_t)sprintf(buf[i] + k, "%sfam%sword%s", w ? " " : "", letters(fam[i], a), letters(w, b));
            }
        }
        docs[i] = (mh_doc){buf[i], strlen(buf[i])};
    }
    size_t want[N];
    for (int i = 0; i < N; i++) {
        want[i] = (size_t)i;
        for (int k = 0; k < i; k++)
            if (fam[k] == fam[i]) { want[i] = (size_t)k; break; }
    }
    mh_config c;
    mh_config_default(&c);
    for (int threads = 1; threads <= 3; threads++) {
        tp_pool *p = NULL;
        if (threads > 1) cr_assert_eq(tp_create(threads, &p), 0);
        size_t got[N];
        cr_assert_eq(mh_dedup_run(&c, docs, N, p, got), 0, "%s", rt_errmsg());
        tp_free(p);
        for (int i = 0; i < N; i++)
            cr_assert_eq(got[i], want[i], "%d threads: doc %d (family %d) in cluster %zu, want %zu", threads, i, fam[i], got[i], want[i]);
    }
    for (int i = 0; i < N; i++) free(buf[i]);
}
