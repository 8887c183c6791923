/* hello - the smallest Cloister function: greets whoever is named in the
 * request body (or the world).  Uses printf, which goes to the function's log. */
#include <cloister/function.h>
#include <stdio.h>
#include <string.h>

CLOISTER_EXPORT("handle")
int32_t handle(void)
{
    char name[128];
    int32_t n = cloister_input((uint8_t *)name, sizeof name - 1);
    if (n <= 0)
        strcpy(name, "world");
    else
        name[n < (int32_t)sizeof name - 1 ? n : (int32_t)sizeof name - 1] = '\0';
    char reply[192];
    int len = snprintf(reply, sizeof reply, "Hello, %s!\n", name);
    cloister_output((const uint8_t *)reply, (uint32_t)len);
    return 0;
}
