/* SPDX-License-Identifier: MIT */
/* Child processes for blocking work, and their answers. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "worker.h"

#define WORKER_ANSWER_MAX (4U << 20)

struct Worker {
        Manager *manager;
        char *what;
        pid_t pid;
        int fd;
        sd_event_source *io, *child;
        char *answer;
        size_t answer_size;
        WorkerDone done;
        void *userdata;
        Worker *next;
};

static void worker_free(Worker *w) {
        sd_event_source_disable_unref(w->io);
        sd_event_source_disable_unref(w->child);
        if (w->fd >= 0)
                close(w->fd);
        free(w->answer);
        free(w->what);
        free(w);
}

static void worker_unlink(Worker *w) {
        for (Worker **p = &w->manager->workers; *p; p = &(*p)->next)
                if (*p == w) {
                        *p = w->next;
                        return;
                }
}

/* Takes what the child wrote so far, so the pipe never fills up behind a long answer. Returns 1 at the end
 * of the answer. */
static int drain(Worker *w) {
        for (;;) {
                char buf[16384];
                ssize_t n = read(w->fd, buf, sizeof(buf));
                if (n < 0)
                        return errno == EAGAIN ? 0 : -errno;
                if (n == 0)
                        return 1;
                if (w->answer_size + (size_t) n > WORKER_ANSWER_MAX)
                        return -EFBIG;
                char *p = realloc(w->answer, w->answer_size + (size_t) n + 1);
                if (!p)
                        return -ENOMEM;
                memcpy(p + w->answer_size, buf, (size_t) n);
                w->answer = p;
                w->answer_size += (size_t) n;
                w->answer[w->answer_size] = 0;
        }
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Worker *w = userdata;
        (void) s, (void) fd, (void) revents;
        if (drain(w) != 0) /* the end, or nothing more to take */
                (void) sd_event_source_set_enabled(w->io, SD_EVENT_OFF);
        return 0;
}

static int on_exit_(sd_event_source *s, const siginfo_t *si, void *userdata) {
        Worker *w = userdata;
        Manager *m = w->manager;
        _cleanup_free_ char *why = NULL;
        json_object *answer = NULL, *result = NULL, *v;
        (void) s;

        (void) drain(w);
        answer = w->answer ? json_tokener_parse(w->answer) : NULL;
        if (answer && json_object_object_get_ex(answer, "result", &v))
                result = v;
        if (answer && json_object_object_get_ex(answer, "why", &v) && json_object_is_type(v, json_type_string))
                why = strdup(json_object_get_string(v));
        if (!why && si->si_code == CLD_EXITED && (si->si_status != 0 || !answer) &&
            asprintf(&why, "the %s process failed without saying why", w->what) < 0)
                why = NULL;
        if (!why && si->si_code != CLD_EXITED &&
            asprintf(&why, "the %s process was killed by signal %s", w->what, strsignal(si->si_status)) < 0)
                why = NULL;
        if (why)
                log_warning("The %s failed: %s", w->what, why);
        else
                log_debug("The %s is done.", w->what);
        worker_unlink(w);
        w->done(m, result, why, w->userdata);
        json_object_put(answer);
        worker_free(w);
        return 0;
}

_noreturn_ static void run_child(int fd, WorkerFunction fn, void *data) {
        _cleanup_free_ char *why = NULL;
        json_object *answer = json_object_new_object(), *result;

        (void) signal(SIGTERM, SIG_DFL);
        (void) signal(SIGPIPE, SIG_IGN);
        result = fn(data, &why);
        if (!answer)
                _exit(EXIT_FAILURE);
        if (result)
                json_object_object_add(answer, "result", result);
        if (why)
                json_object_object_add(answer, "why", json_object_new_string(why));
        const char *text = json_object_to_json_string_ext(answer, JSON_C_TO_STRING_PLAIN);
        _exit(write_full(fd, text, strlen(text)) < 0 || why ? EXIT_FAILURE : EXIT_SUCCESS);
}

int worker_start(Manager *m, const char *what, WorkerFunction fn, void *data, WorkerDone done, void *userdata,
                 Worker **ret) {
        int pipefd[2], r;
        sigset_t mask;
        Worker *w;

        w = calloc(1, sizeof(Worker));
        if (!w || !(w->what = strdup(what))) {
                free(w);
                return -ENOMEM;
        }
        w->manager = m;
        w->done = done;
        w->userdata = userdata;
        w->fd = -EBADF;
        if (pipe2(pipefd, O_CLOEXEC) < 0) {
                worker_free(w);
                return -errno;
        }
        /* sd-event learns of the child through SIGCHLD, which must be blocked first. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        w->pid = fork();
        if (w->pid < 0) {
                r = -errno;
                close(pipefd[0]);
                close(pipefd[1]);
                worker_free(w);
                return r;
        }
        if (w->pid == 0) {
                close(pipefd[0]);
                /* None of the controller's blocked signals: it blocks SIGTERM for sd-event, and a worker
                 * that kept it blocked would not stop when the controller stops it (workers_free). */
                sigemptyset(&mask);
                sigprocmask(SIG_SETMASK, &mask, NULL);
                run_child(pipefd[1], fn, data);
        }
        close(pipefd[1]);
        w->fd = pipefd[0];
        (void) fcntl(w->fd, F_SETFL, O_NONBLOCK);
        r = sd_event_add_io(m->event, &w->io, w->fd, EPOLLIN, on_io, w);
        if (r >= 0)
                r = sd_event_add_child(m->event, &w->child, w->pid, WEXITED, on_exit_, w);
        if (r >= 0) /* the answer is taken before the exit is handled */
                r = sd_event_source_set_priority(w->child, SD_EVENT_PRIORITY_NORMAL + 1);
        if (r < 0) {
                (void) kill(w->pid, SIGKILL);
                (void) waitpid(w->pid, NULL, 0);
                worker_free(w);
                return r;
        }
        w->next = m->workers;
        m->workers = w;
        log_info("Started the %s (process %d).", what, (int) w->pid);
        if (ret)
                *ret = w;
        return 0;
}

bool worker_running(Manager *m, const char *what) {
        for (Worker *w = m->workers; w; w = w->next)
                if (streq(w->what, what))
                        return true;
        return false;
}

void workers_free(Manager *m) {
        while (m->workers) {
                Worker *w = m->workers;
                m->workers = w->next;
                (void) kill(w->pid, SIGTERM);
                (void) waitpid(w->pid, NULL, 0);
                worker_free(w);
        }
}
