/* Tries one way out of an agentenv sandbox. Prints "done ..." and exits 0 if it got through,
 * "refused ...: ERROR" and exits 1 if the sandbox held, exits 2 on bad usage. Built static by
 * tests/it/hardening.rs, so it runs in any environment. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

static int refused(const char *what) {
    printf("refused %s: %s\n", what, strerror(errno));
    return 1;
}

/* mkhandle PATH: prints the handle of PATH as "TYPE HEX" (run on the host). */
static int mkhandle(const char *path) {
    struct file_handle *h = malloc(sizeof *h + MAX_HANDLE_SZ);
    int mount_id;
    h->handle_bytes = MAX_HANDLE_SZ;
    if (name_to_handle_at(AT_FDCWD, path, h, &mount_id, 0) < 0) return refused("name_to_handle_at");
    printf("%d ", h->handle_type);
    for (unsigned i = 0; i < h->handle_bytes; i++) printf("%02x", h->f_handle[i]);
    printf("\n");
    return 0;
}

/* handle DIR TYPE HEX read|connect: opens the inode of the handle through the mount of DIR,
 * then reads it, or connects to it as a unix socket. */
static int by_handle(const char *dir, const char *type, const char *hex, const char *then) {
    size_t n = strlen(hex) / 2;
    struct file_handle *h = malloc(sizeof *h + n);
    h->handle_bytes = n;
    h->handle_type = atoi(type);
    for (size_t i = 0; i < n; i++) sscanf(hex + 2 * i, "%2hhx", &h->f_handle[i]);
    int mfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (mfd < 0) return refused("open of the mount");
    int connect_it = strcmp(then, "connect") == 0;
    int fd = open_by_handle_at(mfd, h, connect_it ? O_PATH : O_RDONLY);
    if (fd < 0) return refused("open_by_handle_at");
    if (connect_it) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "/proc/self/fd/%d", fd);
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) return refused("connect");
        printf("done connected to the socket\n");
        return 0;
    }
    char buf[256] = {0};
    ssize_t got = read(fd, buf, sizeof buf - 1);
    if (got < 0) return refused("read");
    printf("done read: %s\n", buf);
    return 0;
}

/* sysctl PATH: writes the sysctl's own value back (a change in effect, without changing it). */
static int sysctl(const char *path) {
    char buf[256] = {0};
    int r = open(path, O_RDONLY);
    if (r < 0) return refused("open for reading");
    ssize_t n = read(r, buf, sizeof buf - 1);
    if (n <= 0) return refused("read");
    int w = open(path, O_WRONLY);
    if (w < 0) return refused("open for writing");
    if (write(w, buf, n) < 0) return refused("write");
    printf("done wrote %s", buf);
    return 0;
}

/* sysfs DIR: mounts a fresh sysfs there. */
static int sysfs(const char *dir) {
    mkdir(dir, 0755);
    if (mount("sysfs", dir, "sysfs", 0, NULL) < 0) return refused("mount sysfs");
    printf("done mounted sysfs\n");
    return 0;
}

/* mknod PATH: makes /dev/null's device node there and opens it. */
static int make_node(const char *path) {
    if (mknod(path, S_IFCHR | 0666, makedev(1, 3)) < 0) return refused("mknod");
    int fd = open(path, O_WRONLY);
    if (fd < 0) return refused("open of the node");
    printf("done made and opened a device node\n");
    return 0;
}

/* opendev PATH: opens a device node someone else made. */
static int open_node(const char *path) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return refused("open of the node");
    printf("done opened a device node\n");
    return 0;
}

/* pid1fd: writes through every descriptor of PID 1 it can open. */
static int pid1_fds(void) {
    DIR *d = opendir("/proc/1/fd");
    if (!d) return refused("opendir /proc/1/fd");
    struct dirent *e;
    int wrote = 0, seen = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        seen++;
        char p[300];
        snprintf(p, sizeof p, "/proc/1/fd/%s", e->d_name);
        struct stat st;
        if (stat(p, &st) < 0 || !S_ISREG(st.st_mode)) continue;
        int fd = open(p, O_WRONLY | O_APPEND);
        if (fd >= 0) {
            printf("done opened %s for writing\n", p);
            wrote = 1;
        }
    }
    if (wrote) return 0;
    errno = EACCES;
    printf("(%d descriptors listed, none writable) ", seen);
    return refused("writing through /proc/1/fd");
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc == 3 && !strcmp(argv[1], "mkhandle")) return mkhandle(argv[2]);
    if (argc == 6 && !strcmp(argv[1], "handle")) return by_handle(argv[2], argv[3], argv[4], argv[5]);
    if (argc == 3 && !strcmp(argv[1], "sysctl")) return sysctl(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "sysfs")) return sysfs(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "mknod")) return make_node(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "opendev")) return open_node(argv[2]);
    if (argc == 2 && !strcmp(argv[1], "pid1fd")) return pid1_fds();
    fprintf(stderr, "usage: escape mkhandle|handle|sysctl|sysfs|mknod|opendev|pid1fd ...\n");
    return 2;
}
