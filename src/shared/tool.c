/* SPDX-License-Identifier: MIT */
/* Running filesystem tools with their output captured. */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "tool.h"
#include "util.h"

#define MAX_OUTPUT (64U * 1024)

extern char **environ;

/* The environment with LC_ALL=C, so that what the tools print parses the same everywhere. */
static char **c_locale_environ(void) {
        size_t n = 0;
        char **env;
        for (char **e = environ; e && *e; e++)
                n++;
        env = calloc(n + 2, sizeof(char *));
        if (!env)
                return NULL;
        n = 0;
        for (char **e = environ; e && *e; e++)
                if (!startswith(*e, "LC_ALL=") && !startswith(*e, "LANG="))
                        env[n++] = *e;
        env[n] = (char *) "LC_ALL=C";
        return env;
}

int tool_run_input(char *const argv[], int input, char **ret_output) {
        _cleanup_free_ char **env = c_locale_environ();
        _cleanup_free_ char *out = NULL;
        posix_spawn_file_actions_t fa;
        int pipefd[2], status, r;
        size_t len = 0;
        pid_t pid;

        if (!env)
                return -ENOMEM;
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return -errno;
        posix_spawn_file_actions_init(&fa);
        if (input >= 0)
                posix_spawn_file_actions_adddup2(&fa, input, STDIN_FILENO);
        else
                posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
        posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDERR_FILENO);
        r = -posix_spawnp(&pid, argv[0], &fa, NULL, argv, env);
        posix_spawn_file_actions_destroy(&fa);
        close(pipefd[1]);
        if (r < 0) {
                close(pipefd[0]);
                return log_warning_errno(r, "Failed to run %s: %m", argv[0]);
        }
        out = malloc(MAX_OUTPUT + 1);
        for (;;) {
                char buf[4096];
                ssize_t n = read(pipefd[0], buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                /* Keep the first 64 KiB; read on so the tool never blocks on a full pipe. */
                size_t take = out ? MIN((size_t) n, MAX_OUTPUT - len) : 0;
                memcpy(out + len, buf, take);
                len += take;
        }
        close(pipefd[0]);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (out)
                out[len] = 0;
        log_debug("%s exited with %d.", argv[0], WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        if (ret_output)
                *ret_output = TAKE_PTR(out);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -ECHILD;
}

int tool_run(char *const argv[], char **ret_output) {
        return tool_run_input(argv, -EBADF, ret_output);
}

int tool_runv(char **ret_output, const char *arg0, va_list ap) {
        const char *argv[32];
        size_t n = 0;

        argv[n++] = arg0;
        while (n < ELEMENTSOF(argv) - 1 && (argv[n] = va_arg(ap, const char *)))
                n++;
        argv[n] = NULL;
        return tool_run((char *const *) argv, ret_output);
}

int tool_runl(char **ret_output, const char *arg0, ...) {
        va_list ap;
        int r;

        va_start(ap, arg0);
        r = tool_runv(ret_output, arg0, ap);
        va_end(ap);
        return r;
}

const char *tool_last_line(char *output) {
        char *line = NULL;
        if (!output)
                return "(no output)";
        for (char *p = strtok(output, "\n"); p; p = strtok(NULL, "\n"))
                if (strspn(p, " \t") < strlen(p))
                        line = p;
        return line ?: "(no output)";
}
