/* Built with `cc -static`: forks, the child calls setsid() and forks again, and the grandchild
 * (a daemon, its parent gone) runs sup_client's connect with its stdout going to OUTFILE, then
 * appends "pid N done". The first process exits at once.
 *
 *   sup_daemon OUTFILE HOST PORT MESSAGE */
#define main sup_client_main
#include "sup_client.c"
#undef main

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: sup_daemon OUTFILE HOST PORT MESSAGE\n"); return 2; }
    pid_t c = fork();
    if (c < 0) { perror("fork"); return 2; }
    if (c > 0) return 0;
    if (setsid() < 0) _exit(2);
    pid_t g = fork();
    if (g < 0) _exit(2);
    if (g > 0) _exit(0);
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) _exit(2);
    dup2(fd, 1);
    close(fd);
    /* Wait until the first process is gone (bounded: 5 s), so this really is a daemon. */
    for (int i = 0; i < 500 && getppid() != 1 && kill(getppid(), 0) == 0; i++) usleep(10000);
    char *args[] = {argv[0], argv[2], argv[3], argv[4], NULL};
    int rc = sup_client_main(4, args);
    printf("pid %d done %d\n", (int)getpid(), rc);
    fflush(stdout);
    return 0;
}
