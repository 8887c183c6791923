/* ok_reactor - a WASI reactor (built with -mexec-model=reactor, so it
 * exports _initialize) with an `init` export that builds state once:
 * module.c must report _initialize, init and handle, and imports from both
 * host modules (printf -> fd_write). */
#include <cloister/function.h>
#include <stdio.h>
#include <string.h>

static char greeting[64];

CLOISTER_EXPORT("init")
void init(void)
{
    strcpy(greeting, "reactor ready");
}

CLOISTER_EXPORT("handle")
int32_t handle(void)
{
    printf("handle called\n");
    cloister_output((const uint8_t *)greeting, (uint32_t)strlen(greeting));
    return 0;
}
