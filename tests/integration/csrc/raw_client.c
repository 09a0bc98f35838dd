/* sup_client.c with every connect made by an inline `syscall` instruction (no libc wrapper),
 * built dynamically linked: the shim is preloaded into it but never sees its connects; under
 * `proxify run --enforce` the supervisor carries them (tests/integration/test_enforce.py). */
#define RAW_CONNECT 1
#include "sup_client.c"
