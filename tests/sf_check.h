/* sf_check.h — the one assertion of the C unit tests: CHECK(cond, fmt, ...) prints
 * "FAIL file:line: message" and counts it in `failures`; a test's main returns failures != 0. */
#ifndef SF_CHECK_H
#define SF_CHECK_H

#include <stdio.h>

static int failures;

#define CHECK(cond, ...)                                            \
    do {                                                            \
        if (!(cond)) {                                              \
            failures++;                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);    \
            fprintf(stderr, __VA_ARGS__);                           \
            fputc('\n', stderr);                                    \
        }                                                           \
    } while (0)

#endif
