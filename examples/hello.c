/*
 * hello - the smallest Cloister function: greets whoever the request body
 * names, or the world.
 *
 *     $ cloister invoke hello --data Ada
 *     Hello, Ada!
 *
 * The reply goes to the response with cloister_output(); the fprintf line
 * goes to the function's log (`cloister logs hello`): a function's stdout
 * and stderr are its log.  (stderr is unbuffered; stdout is buffered by
 * libc as usual, so a function that prints to it calls fflush.)  The same
 * file builds as a WebAssembly module and as a native shared object (see
 * examples/README.md).
 *
 * Names longer than 120 bytes are cut; the body is used as bytes (no
 * escaping is needed: the reply is plain text).
 */
#include <cloister/function.h>
#include <stdio.h>
#include <string.h>

CLOISTER_EXPORT("handle")
int32_t handle(void)
{
    char name[121];
    int32_t n = cloister_input((uint8_t *)name, sizeof name - 1);
    if (n <= 0) {
        strcpy(name, "world");
    } else {
        if (n > (int32_t)sizeof name - 1)
            n = sizeof name - 1;
        name[n] = '\0';
    }

    char reply[160];
    int len = snprintf(reply, sizeof reply, "Hello, %s!\n", name);
    if (cloister_output((const uint8_t *)reply, (uint32_t)len) != 0)
        return 1;
    fprintf(stderr, "greeted a %zu-byte name\n", strlen(name));
    return 0;
}
