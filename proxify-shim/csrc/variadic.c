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

extern long proxify_syscall(long n, long a1, long a2, long a3, long a4, long a5, long a6);

/* syscall(SYS_connect, ...) and friends must not bypass the socket hooks. Six arguments is
 * the most any Linux system call takes; reading unused ones is what glibc's own wrapper does. */
long syscall(long number, ...)
{
    va_list ap;
    va_start(ap, number);
    long a1 = va_arg(ap, long);
    long a2 = va_arg(ap, long);
    long a3 = va_arg(ap, long);
    long a4 = va_arg(ap, long);
    long a5 = va_arg(ap, long);
    long a6 = va_arg(ap, long);
    va_end(ap);
    return proxify_syscall(number, a1, a2, a3, a4, a5, a6);
}
