/* Variadic libc functions that stable Rust cannot define. They only fetch the argument and
 * hand over to Rust (src/hooks/fd.rs). Every fcntl command takes at most one argument, an int
 * or a pointer, which fits an unsigned long on Linux; glibc's own wrapper reads it the same
 * way whether or not the command uses it. */
#include <stdarg.h>

extern int proxify_fcntl(int fd, int cmd, unsigned long arg);

int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    unsigned long arg = va_arg(ap, unsigned long);
    va_end(ap);
    return proxify_fcntl(fd, cmd, arg);
}

int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    unsigned long arg = va_arg(ap, unsigned long);
    va_end(ap);
    return proxify_fcntl(fd, cmd, arg);
}
