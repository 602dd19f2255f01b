/* The launcher; see launch.h. One child per host (ssh, or what SAEFLOW_SSH names), each in its own
 * process group, its stdout and stderr merged into a pipe the launcher reads line by line, its
 * stdin a pipe the launcher holds. A signal to the local ssh client does not reach the remote
 * process, so the launcher stops a part by closing that pipe: ssh forwards the end-of-file and the
 * part, run with --stop-on-stdin-eof, stops as after SIGTERM (sshd closes the remote stdin too
 * when the session is lost). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "launch.h"
#include "pipeline.h"
#include "runtime.h"
#include "sf_internal.h"

#define LAUNCH_CMD_MAX 16384

typedef struct launch_part {
    const char *host;
    pid_t pid;
    int fd;         /* read end of the child's output, -1 at EOF */
    int stop_fd;    /* write end of the child's stdin; closed to stop it, -1 then */
    int status;     /* exit code once reaped, -1 before */
    char line[4096];
    size_t len;
} launch_part;

static volatile sig_atomic_t launch_signal, launch_signals;
static void on_launch_signal(int sig) { launch_signal = sig, launch_signals++; }

/* Appends s to out in single quotes, safe for the remote shell. */
static int append_quoted(char *out, size_t cap, const char *s) {
    size_t n = strlen(out);
    if (n + 3 >= cap) return -1;
    out[n++] = ' ';
    out[n++] = '\'';
    for (; *s; s++) {
        const char *piece = *s == '\'' ? "'\\''" : NULL;
        size_t k = piece ? 4 : 1;
        if (n + k + 2 >= cap) return -1;
        if (piece) memcpy(out + n, piece, k);
        else out[n] = *s;
        n += k;
    }
    out[n++] = '\'';
    out[n] = 0;
    return 0;
}

/* The address ssh connects to: ADDR of tcp://ADDR:PORT, or localhost for ipc:// hosts. */
static void host_address(const sf_host *h, char *out, size_t n) {
    if (strncmp(h->endpoint, "tcp://", 6) != 0) {
        snprintf(out, n, "localhost");
        return;
    }
    const char *a = h->endpoint + 6, *colon = strrchr(a, ':');
    size_t len = (size_t)(colon - a);
    if (len >= 2 && a[0] == '[' && a[len - 1] == ']') a++, len -= 2; /* [IPv6] */
    snprintf(out, n, "%.*s", (int)len, a);
}

static void flush_line(launch_part *p) {
    if (p->len && p->line[p->len - 1] == '\r') p->len--; /* a pty's line ends (ssh -t) */
    fprintf(stderr, "[%s] %.*s\n", p->host, (int)p->len, p->line);
    p->len = 0;
}

static void read_output(launch_part *p) {
    char buf[4096];
    ssize_t n = read(p->fd, buf, sizeof buf);
    if (n <= 0) {
        if (n < 0 && errno == EINTR) return;
        if (p->len) flush_line(p);
        close(p->fd);
        p->fd = -1;
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == '\n' || p->len == sizeof p->line) flush_line(p);
        if (buf[i] != '\n') p->line[p->len++] = buf[i];
    }
}

static pid_t start_part(launch_part *p, const char *addr, const char *remote) {
    int fds[2], in[2]; /* close-on-exec, so no other part inherits this one's ends */
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    if (pipe2(in, O_CLOEXEC) != 0) {
        close(fds[0]), close(fds[1]);
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        dup2(in[0], STDIN_FILENO);
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        /* the ssh command is word-split by sh (SAEFLOW_SSH="ssh -o BatchMode=yes"); address and
         * remote command go as positional parameters, unsplit */
        execl("/bin/sh", "sh", "-c", "exec $SF_LAUNCH_SSH \"$0\" \"$1\"", addr, remote, (char *)NULL);
        _exit(127);
    }
    close(fds[1]), close(in[0]);
    if (pid < 0) {
        close(fds[0]), close(in[1]);
        return -1;
    }
    setpgid(pid, pid);
    p->fd = fds[0];
    p->stop_fd = in[1];
    return pid;
}

/* Asks every running part to stop cleanly: end-of-file on its stdin. */
static void stop_parts(launch_part *parts, int n) {
    for (int i = 0; i < n; i++)
        if (parts[i].stop_fd >= 0) close(parts[i].stop_fd), parts[i].stop_fd = -1;
}

static void signal_parts(launch_part *parts, int n, int sig) {
    for (int i = 0; i < n; i++)
        if (parts[i].status < 0 && parts[i].pid > 0) kill(-parts[i].pid, sig);
}

/* The pipeline with the command line's KEY=VALUE overrides; NULL (printed) on a bad command line or file. */
static sf_pipeline *launch_load(int argc, char **argv) {
    char **over = calloc((size_t)argc, sizeof *over);
    int n_over = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--host")) {
            fprintf(stderr, "saeflow launch: starts every host itself; --host belongs to 'saeflow run'\n");
            free(over);
            return NULL;
        }
        if (!strcmp(argv[i], "--credit") || !strcmp(argv[i], "--connect-timeout") || !strcmp(argv[i], "--peer-timeout") ||
            !strcmp(argv[i], "--sweep"))
            i++; /* an option's value, passed on to every host */
        else if (argv[i][0] != '-' && strchr(argv[i], '='))
            over[n_over++] = strdup(argv[i]); /* the loader edits these in place */
    }
    sf_pipeline *pl = sf_pipeline_load(argv[2], over, n_over);
    for (int i = 0; i < n_over; i++) free(over[i]);
    free(over);
    if (!pl) fprintf(stderr, "%s\n", sf_last_error());
    return pl;
}

/* Starts every host's part (saeflow run --host H over ssh, in cwd); *running counts those started.
 * 0, or the exit code of the first failure (the parts already started keep running). */
static int start_parts(launch_part *parts, const sf_pipeline *pl, int argc, char **argv, const char *ssh,
                       const char *bin, const char *cwd, int *running) {
    int n = pl->n_hosts;
    for (int h = 0; h < n; h++) {
        launch_part *p = &parts[h];
        p->host = pl->hosts[h].name;
        p->status = -1;
        p->fd = p->stop_fd = -1;
        char addr[256], remote[LAUNCH_CMD_MAX] = "cd";
        host_address(&pl->hosts[h], addr, sizeof addr);
        int bad = append_quoted(remote, sizeof remote, cwd);
        strncat(remote, " && exec", sizeof remote - strlen(remote) - 1);
        bad |= append_quoted(remote, sizeof remote, bin);
        const char *fixed[] = {"run", argv[2], "--host", p->host, "--no-progress", "--stop-on-stdin-eof"};
        for (int i = 0; i < 6; i++) bad |= append_quoted(remote, sizeof remote, fixed[i]);
        for (int i = 3; i < argc; i++) bad |= append_quoted(remote, sizeof remote, argv[i]);
        if (bad) {
            fprintf(stderr, "saeflow launch: the command line is too long\n");
            return 2;
        }
        fprintf(stderr, "saeflow launch: host %s: %s %s%s\n", p->host, ssh, addr, remote);
        p->pid = start_part(p, addr, remote);
        if (p->pid < 0) {
            fprintf(stderr, "saeflow launch: cannot start host %s: %s\n", p->host, strerror(errno));
            return 1;
        }
        (*running)++;
    }
    return 0;
}

/* The exit code: code, else the first failure's, else 130 after a signal. */
static int wait_parts(launch_part *parts, int n, int running, int code) {
    /* gather output until every part has exited; on the first failure or a signal stop the
     * others: close their stdin (saeflow drains and saves), after 60 s (or a second signal)
     * SIGTERM the local children (ends an ssh session; aborts a part running here), after 90 s
     * SIGKILL them. The drain processes what is in flight (a link's window plus up to
     * SF_SMALL_WINDOW_MSGS small messages): on the three-host flow that took over 15 s under load,
     * and a SIGTERM then lost the trainer's checkpoint save. */
    double stop_at = 0;
    int stop_stage = 0;
    while (running > 0) {
        struct pollfd pfd[64];
        int map[64], k = 0;
        for (int i = 0; i < n && k < 64; i++)
            if (parts[i].fd >= 0) pfd[k] = (struct pollfd){.fd = parts[i].fd, .events = POLLIN}, map[k++] = i;
        if (k) {
            if (poll(pfd, (nfds_t)k, 200) > 0)
                for (int j = 0; j < k; j++)
                    if (pfd[j].revents) read_output(&parts[map[j]]);
        } else {
            usleep(100000);
        }
        for (int i = 0; i < n; i++) {
            launch_part *p = &parts[i];
            int st;
            if (p->status >= 0 || p->pid <= 0 || waitpid(p->pid, &st, WNOHANG) != p->pid) continue;
            while (p->fd >= 0) read_output(p);
            p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            running--;
            fprintf(stderr, "saeflow launch: host %s exited with %d\n", p->host, p->status);
            if (p->status != 0 && !code) {
                code = p->status == 255 ? 1 : p->status; /* 255: ssh itself failed */
                fprintf(stderr, "saeflow launch: host %s failed; stopping the others\n", p->host);
                stop_parts(parts, n);
                stop_at = sf_now(), stop_stage = 1;
            }
        }
        if (launch_signal && !stop_stage) {
            /* the hosts it waits for (each reports "host H exited with N" as it ends) */
            char names[1024] = "";
            for (int i = 0; i < n; i++)
                if (parts[i].status < 0 && parts[i].pid > 0 && strlen(names) + strlen(parts[i].host) + 3 < sizeof names)
                    strcat(strcat(names, names[0] ? ", " : ""), parts[i].host);
            fprintf(stderr, "saeflow launch: %s: stopping every host, waiting for %s to exit (again to end the "
                    "local ssh clients)\n",
                    launch_signal == SIGINT ? "interrupted" : launch_signal == SIGHUP ? "hung up" : "terminated",
                    names[0] ? names : "none");
            stop_parts(parts, n);
            stop_at = sf_now(), stop_stage = 1;
            if (!code) code = 130;
        }
        if (stop_stage == 1 && (sf_now() - stop_at > 60 || launch_signals > 1)) signal_parts(parts, n, SIGTERM), stop_stage = 2;
        if (stop_stage == 2 && sf_now() - stop_at > 90) signal_parts(parts, n, SIGKILL), stop_stage = 3;
    }
    return code;
}

int sf_launch_main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: saeflow launch FILE [run options] [KEY=VALUE ...]   (see core/HOSTS.md)\n");
        return 2;
    }
    sf_pipeline *pl = launch_load(argc, argv);
    if (!pl) return 2;
    if (!pl->n_hosts) {
        fprintf(stderr, "saeflow launch: %s declares no hosts: run it with 'saeflow run'\n", argv[2]);
        sf_pipeline_free(pl);
        return 2;
    }
    const char *ssh = getenv("SAEFLOW_SSH");
    if (!ssh || !*ssh) ssh = "ssh -o BatchMode=yes";
    setenv("SF_LAUNCH_SSH", ssh, 1);
    char self[PATH_MAX], cwd[PATH_MAX];
    const char *bin = getenv("SAEFLOW_BIN");
    if (!bin || !*bin) {
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        self[n > 0 ? n : 0] = 0;
        bin = n > 0 ? self : "saeflow";
    }
    if (!getcwd(cwd, sizeof cwd)) {
        fprintf(stderr, "saeflow launch: getcwd: %s\n", strerror(errno));
        sf_pipeline_free(pl);
        return 1;
    }

    struct sigaction sa = {.sa_handler = on_launch_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* the parts' stdin pipes */
    int n = pl->n_hosts, running = 0, code = 0;
    launch_part *parts = calloc((size_t)n, sizeof *parts);
    code = start_parts(parts, pl, argc, argv, ssh, bin, cwd, &running);
    if (code) stop_parts(parts, n);
    code = wait_parts(parts, n, running, code);

    fprintf(stderr, "saeflow launch: %s\n", code ? "failed" : "every host finished");
    stop_parts(parts, n);
    for (int i = 0; i < n; i++)
        if (parts[i].fd >= 0) close(parts[i].fd);
    free(parts);
    sf_pipeline_free(pl);
    return code;
}
