/* The C unit tests' check: it counts failures instead of stopping, so one run reports them all (the
 * first MAX_REPORTED with their place); main returns non-zero when `failures` is. */
#ifndef TEST_CHECK_H
#define TEST_CHECK_H

#include <stdio.h>

#define MAX_REPORTED 30

static int failures;
#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            if (failures < MAX_REPORTED)                                                   \
                fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

#endif
