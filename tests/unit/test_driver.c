/* tests/unit/test_driver.c — the generation driver's pure parts: the canonical params JSON
 * (hand-written expected strings: sorted keys, compact, 15 significant digits), which sources
 * get the math instruction, and per-sample seeds (deterministic, 63 bits, distinct across
 * prompts and indices, independent of anything else). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "teacher/driver.h"

Test(driver, params_json_is_canonical) {
    gd_opts o = {.temperature = 0.6, .top_p = 0.95, .max_tokens = 32768, .seed = 0, .think_prefix = true,
                 .instruction = GD_R1_INSTRUCTION};
    char *j = NULL;
    cr_assert_eq(gd_params_json(&o, &j), 0);
    cr_assert_str_eq(j, "{\"instruction\":\"Please reason step by step, and put your final answer within "
                        "\\\\boxed{}.\",\"instruction_to\":\"math\",\"max_tokens\":32768,\"seed\":0,\"system\":null,"
                        "\"temperature\":0.6,\"think_prefix\":true,\"top_p\":0.95}");
    free(j);
    o = (gd_opts){.temperature = 1, .top_p = 1, .max_tokens = 5, .seed = 42, .system = "Be brief.",
                  .instruction = "Go.", .instruction_all = true};
    cr_assert_eq(gd_params_json(&o, &j), 0);
    cr_assert_str_eq(j, "{\"instruction\":\"Go.\",\"instruction_to\":\"all\",\"max_tokens\":5,\"seed\":42,"
                        "\"system\":\"Be brief.\",\"temperature\":1.0,\"think_prefix\":false,\"top_p\":1.0}");
    free(j);
    o.instruction = NULL;   /* no instruction: no "instruction_to" */
    cr_assert_eq(gd_params_json(&o, &j), 0);
    cr_assert(strstr(j, "\"instruction\":null") && !strstr(j, "instruction_to"), "%s", j);
    free(j);
}

Test(driver, math_sources) {
    const char *yes[] = {"gsm8k", "GSM8K_train", "math500", "competition_math", "aime24", "AIME-2025"};
    const char *no[] = {"chat", "code_contests", "", "gsm8", "aim"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) cr_assert(gd_source_is_math(yes[i]), "%s", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) cr_assert(!gd_source_is_math(no[i]), "%s", no[i]);
    cr_assert(!gd_source_is_math(NULL));
}

Test(driver, sample_seeds) {
    enum { P = 64, J = 16 };
    static uint64_t s[P * J];
    for (int p = 0; p < P; p++)
        for (int j = 0; j < J; j++) {
            s[p * J + j] = gd_sample_seed(7, p + 1, j);
            cr_assert_eq(s[p * J + j], gd_sample_seed(7, p + 1, j));
            cr_assert_eq(s[p * J + j] >> 63, 0);
            cr_assert_neq(s[p * J + j], gd_sample_seed(8, p + 1, j));
        }
    for (int a = 0; a < P * J; a++)
        for (int b = a + 1; b < P * J; b++) cr_assert_neq(s[a], s[b], "seed collision %d %d", a, b);
    /* (prompt, index) is not confused with (index, prompt) */
    cr_assert_neq(gd_sample_seed(0, 1, 2), gd_sample_seed(0, 2, 1));
}
