/* core/yaml: the YAML subset reader. Expected values are hand-written JSON for each
 * document (what PyYAML's safe_load gives for them). */
#include <stdlib.h>
#include <string.h>

#include "core/yaml.h"
#include "testutil.h"

static void expect(const char *yaml, const char *want_json) {
    json_t *got;
    int rc = rt_yaml_parse(yaml, strlen(yaml), "t.yaml", &got);
    cr_assert_eq(rc, 0, "parse failed: %s\n%s", rt_errmsg(), yaml);
    json_t *want = json_loads(want_json, 0, NULL);
    cr_assert(want, "bad expected JSON %s", want_json);
    char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);
    cr_assert(json_equal(got, want), "%s\n got %s\nwant %s", yaml, g, want_json);
    free(g);
    json_decref(got);
    json_decref(want);
}

static void expect_error(const char *yaml, const char *needle) {
    json_t *got = NULL;
    cr_assert_eq(rt_yaml_parse(yaml, strlen(yaml), "t.yaml", &got), RT_EFORMAT, "%s", yaml);
    cr_assert_null(got);
    cr_assert(strstr(rt_errmsg(), needle), "'%s' not in '%s'", needle, rt_errmsg());
}

Test(yaml, scalars_maps_and_nesting) {
    expect("a: 1\nb: -2.5\nc: true\nd: null\ne: ~\nf: hello world\ng: \"q: #x\"\nh: 'it''s'\ni:\n",
           "{\"a\":1,\"b\":-2.5,\"c\":true,\"d\":null,\"e\":null,\"f\":\"hello world\",\"g\":\"q: #x\",\"h\":\"it's\",\"i\":null}");
    expect("# comment\nouter:\n  inner:\n    x: 1   # trailing\n  y: \"<think>\"\nz: 3\n",
           "{\"outer\":{\"inner\":{\"x\":1},\"y\":\"<think>\"},\"z\":3}");
    expect("---\nv: 0.10\nw: 1e3\nname: r1.5\nurl: http://x/y#z\n", "{\"v\":0.1,\"w\":1000.0,\"name\":\"r1.5\",\"url\":\"http://x/y#z\"}");
    expect("", "{}");
    expect("s: \"a\\n\\\"b\\\"\"\n", "{\"s\":\"a\\n\\\"b\\\"\"}");
}

Test(yaml, lists_block_and_flow) {
    expect("l: [a, 1, \"b c\", 0.5]\ne: []\nm: {}\n", "{\"l\":[\"a\",1,\"b c\",0.5],\"e\":[],\"m\":{}}");
    expect("l:\n  - x\n  - 2\nk:\n- y\n", "{\"l\":[\"x\",2],\"k\":[\"y\"]}");
    expect("items:\n  - name: a\n    n: 1\n  - name: b\n", "{\"items\":[{\"name\":\"a\",\"n\":1},{\"name\":\"b\"}]}");
    expect("- 1\n- [2, 3]\n", "[1,[2,3]]");
}

Test(yaml, json_documents_are_read_as_json) {
    expect("  {\"a\": [1, 2], \"b\": {\"c\": false}}\n", "{\"a\":[1,2],\"b\":{\"c\":false}}");
}

Test(yaml, errors_name_the_line) {
    expect_error("a: 1\n\tb: 2\n", "t.yaml:2: tab");
    expect_error("a: 1\na: 2\n", "t.yaml:2: duplicate key 'a'");
    expect_error("a: 1\n  b: 2\n", "t.yaml:2:");
    expect_error("a: [1, 2\n", "t.yaml:1: unterminated flow list");
    expect_error("a: \"x\n", "t.yaml:1: unterminated");
    expect_error("a: {b: 1}\n", "flow maps");
    expect_error("a: &x 1\n", "anchors");
    expect_error("a: 1\n---\nb: 2\n", "several documents");
    expect_error("just text\n", "expected a map or a list");
    expect_error("a:\n  - 1\n  b: 2\n", "t.yaml:3:");
}
