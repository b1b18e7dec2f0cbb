/* core/jinja.h — a Jinja subset interpreter for Hugging Face chat templates.
 *
 * Covers what the chat templates of DeepSeek-R1/V3, R1-Distill-Qwen/Llama, Qwen2.5, Qwen3, QwQ
 * and Llama 3.1/3.3 use, with the environment transformers renders them in (trim_blocks,
 * lstrip_blocks, loop controls, the raise_exception and namespace globals, tojson as
 * json.dumps(ensure_ascii=False)):
 *   text, {{ expr }}, {# comments #}, whitespace control ({%- -%} {{- -}}, {%+);
 *   {% if/elif/else/endif %}, {% for x in e [if c] %} / {% for k, v in e %} with loop.index,
 *   index0, revindex, revindex0, first, last, length, previtem, nextitem, {% else %},
 *   {% break %}, {% continue %}; {% set x = e %}, {% set ns.attr = e %} (scoped as Jinja: a
 *   set inside a for body does not leave it); {% generation %}…{% endgeneration %} (rendered
 *   as its body);
 *   literals (strings with Python escapes, ints, floats, true/false/none, lists, dicts,
 *   tuples as lists), names, attribute and index access, slices [a:b:c], calls,
 *   + - * / // % **, ~, comparisons, in / not in, and/or/not, `a if c else b`,
 *   filters  trim length count tojson items join string lower upper first last list
 *            default/d reject select rejectattr selectattr capitalize title replace int
 *            float abs unique sort(no args) wordcount? no;
 *   tests    defined undefined none string mapping iterable sequence number integer float
 *            boolean true false equalto eq == ne != odd even in lower upper;
 *   methods  on strings: strip lstrip rstrip split rsplit startswith endswith upper lower
 *            replace find title capitalize; on dicts: get items keys values;
 *   globals  namespace(k=v…), raise_exception(msg), range(…).
 * Anything else (macros, call/filter blocks, include, unknown filters, tests, functions or
 * methods) is RT_EUNSUPPORTED naming the construct and its line, at parse time where the
 * construct is syntactic and at render time otherwise.
 *
 * Values are jansson values; an undefined name is a distinct Undefined (prints "", is falsy,
 * fails on attribute access, +, and iteration like Jinja's default Undefined).
 *
 * jj_parse() compiles src (len bytes; need not be NUL-terminated) into *out, which the
 * caller frees with jj_free(). jj_render() evaluates it with the variables of ctx (an object;
 * borrowed) and writes the text into *out (malloc'd, NUL-terminated, caller frees) and its
 * length into *out_len (may be NULL).
 * Errors: RT_EFORMAT (syntax, with line), RT_EUNSUPPORTED (construct outside the subset),
 * RT_EINVAL (raise_exception, type errors, undefined values misused; with line), RT_ENOMEM,
 * RT_ERANGE (nesting or output too deep/large).
 */
#ifndef RT_JINJA_H
#define RT_JINJA_H

#include <jansson.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct jj_template jj_template;

int jj_parse(const char *src, size_t len, jj_template **out);
int jj_render(const jj_template *t, const json_t *ctx, char **out, size_t *out_len);
void jj_free(jj_template *t);   /* NULL is fine */

#ifdef __cplusplus
}
#endif

#endif
