/* Built with `cc -static` (x86-64): system calls through the i386 entry (`int $0x80`), which the
 * supervisor's filter refuses (EPERM) whatever they are: socketcall(SYS_SOCKET) and the i386
 * socket(2). Prints "socketcall R" and "socket R" (R: the raw return, -errno), exits 0. */
#include <stdio.h>

static long int80(long nr, long a, long b, long c) {
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "0"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return r;
}

int main(void) {
    /* socketcall(SYS_SOCKET = 1, args): args = {AF_INET, SOCK_STREAM, 0} in 32-bit words; the
     * pointer must fit 32 bits, so a static buffer in a non-PIE static binary. */
    static unsigned int args[3] = {2, 1, 0};
    printf("socketcall %ld\n", int80(102, 1, (long)(unsigned long)args, 0));
    printf("socket %ld\n", int80(359, 2, 1, 0));
    return 0;
}
