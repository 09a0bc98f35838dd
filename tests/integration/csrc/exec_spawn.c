/* posix_spawn after a directory action (issue 14 item 3): the path is looked up where the
 * child will be, not where the caller is.
 *
 *   exec_spawn MODE DIR PROG [ARGS...]
 *     chdir         posix_spawn_file_actions_addchdir_np(DIR), posix_spawn(PROG)
 *     fchdir        open(DIR) as fd F, addfchdir_np(F), posix_spawn(PROG)
 *     open-fchdir   addopen(40, DIR, O_DIRECTORY), addfchdir_np(40), posix_spawn(PROG)
 *     spawnp-chdir  addchdir_np(DIR), posix_spawnp(PROG) with PATH=.
 *     none          posix_spawn(DIR/PROG), no file action (a control)
 * Prints "spawn: <strerror>" and exits 3 when posix_spawn fails, else the child's status. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: exec_spawn MODE DIR PROG [ARGS...]\n");
        return 9;
    }
    const char *mode = argv[1], *dir = argv[2];
    char *prog = argv[3];
    char **args = &argv[3];
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    int err = 0, use_path = 0;
    char full[4096];
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(mode, "chdir")) {
        err = posix_spawn_file_actions_addchdir_np(&fa, dir);
    } else if (!strcmp(mode, "fchdir")) {
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
            perror("open");
            return 9;
        }
        err = posix_spawn_file_actions_addfchdir_np(&fa, fd);
    } else if (!strcmp(mode, "open-fchdir")) {
        err = posix_spawn_file_actions_addopen(&fa, 40, dir, O_RDONLY | O_DIRECTORY, 0);
        if (!err)
            err = posix_spawn_file_actions_addfchdir_np(&fa, 40);
    } else if (!strcmp(mode, "spawnp-chdir")) {
        err = posix_spawn_file_actions_addchdir_np(&fa, dir);
        setenv("PATH", ".", 1);
        use_path = 1;
    } else if (!strcmp(mode, "none")) {
        snprintf(full, sizeof full, "%s/%s", dir, prog);
        prog = full;
        args[0] = full;
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 9;
    }
    if (err) {
        fprintf(stderr, "file action: %s\n", strerror(err));
        return 9;
    }
    pid_t pid;
    err = (use_path ? posix_spawnp : posix_spawn)(&pid, prog, &fa, NULL, args, environ);
    if (err) {
        printf("spawn: %s\n", strerror(err));
        return 3;
    }
    int status;
    if (waitpid(pid, &status, 0) < 0) {
        perror("waitpid");
        return 9;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 8;
}
