/* Variadic libc functions that stable Rust cannot define. They only fetch the arguments and
 * hand over to Rust (src/hooks/fd.rs, src/hooks/syscall.rs, src/hooks/exec.rs). Every fcntl
 * command takes at most one argument, an int or a pointer, which fits an unsigned long on
 * Linux; glibc's own wrapper reads it the same way whether or not the command uses it. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>

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

extern char **environ;
extern int proxify_execve(const char *path, char *const argv[], char *const envp[]);
extern int proxify_execvpe(const char *file, char *const argv[], char *const envp[]);

/* execl, execle, execlp: the arguments are collected as glibc's own do (posix/execl.c): the
 * count first, then into a variable-length array on the stack (no allocation: these may run
 * in a vfork child or a signal handler), then the execv* hook in Rust. */
#define COUNT_ARGS(first, ap, argc)                                                           \
    do {                                                                                      \
        va_start(ap, first);                                                                  \
        for (argc = 1; va_arg(ap, const char *); argc++) {                                    \
            if (argc == INT_MAX) {                                                            \
                va_end(ap);                                                                   \
                errno = E2BIG;                                                                \
                return -1;                                                                    \
            }                                                                                 \
        }                                                                                     \
        va_end(ap);                                                                           \
    } while (0)

int execl(const char *path, const char *arg, ...)
{
    ptrdiff_t argc;
    va_list ap;
    COUNT_ARGS(arg, ap, argc);
    char *argv[argc + 1];
    va_start(ap, arg);
    argv[0] = (char *)arg;
    for (ptrdiff_t i = 1; i <= argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    return proxify_execve(path, argv, environ);
}

int execle(const char *path, const char *arg, ...)
{
    ptrdiff_t argc;
    va_list ap;
    COUNT_ARGS(arg, ap, argc);
    char *argv[argc + 1];
    char **envp;
    va_start(ap, arg);
    argv[0] = (char *)arg;
    for (ptrdiff_t i = 1; i <= argc; i++)
        argv[i] = va_arg(ap, char *);
    envp = va_arg(ap, char **);
    va_end(ap);
    return proxify_execve(path, argv, envp);
}

int execlp(const char *file, const char *arg, ...)
{
    ptrdiff_t argc;
    va_list ap;
    COUNT_ARGS(arg, ap, argc);
    char *argv[argc + 1];
    va_start(ap, arg);
    argv[0] = (char *)arg;
    for (ptrdiff_t i = 1; i <= argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    return proxify_execvpe(file, argv, environ);
}
