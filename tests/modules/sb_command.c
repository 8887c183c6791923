/* sb_command - constructors, main and handle (tests/unit/runtime/test_sandbox.c).
 * CMake builds it as a reactor; the test also builds it as a command module
 * (the default exec model).  handle reports how often the constructors ran
 * and whether main ran: a fresh instance of either kind says
 * "ctor=1 main=0" (a command module's exports run the constructors
 * themselves; _start, hence main, never runs). */
#include <cloister/function.h>
#include <stdio.h>

static volatile int ctor_runs, main_ran;   /* volatile: not folded at compile time */

__attribute__((constructor)) static void count_ctor(void)
{
    ctor_runs++;
}

int main(void)
{
    main_ran = 1;
    return 0;
}

CLOISTER_EXPORT("handle")
int32_t handle(void)
{
    char buf[64];
    int n = snprintf(buf, sizeof buf, "ctor=%d main=%d", ctor_runs, main_ran);
    cloister_output((const uint8_t *)buf, (uint32_t)n);
    printf("handled\n");
    return 0;
}
