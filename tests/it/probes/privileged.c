/* A probe for the attach bounds tests, built with `gcc -static`. Each mode tries something a
 * session must not let a container do and prints one line per attempt: "NAME: ok" when the
 * kernel allowed it, "NAME: refused (ERRNO)" when it did not.
 *
 *   privileged          (installed as the target's /bin/id) open the host's root through a
 *                       file handle on the toolbox's store, mount a tmpfs
 *   inject PID          trace PID (a session's process) and make it remount the toolbox
 *                       (/nix/store, or /nix) read-write, as a container allowed to ptrace
 *                       could
 *   enter PID           join PID's mount namespace and remount the toolbox read-write there,
 *                       as a container with CAP_SYS_ADMIN in its own user namespace could
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

static void say(const char *name, int rc) {
    if (rc >= 0)
        printf("%s: ok\n", name);
    else
        printf("%s: refused (%s)\n", name, strerror(errno));
}

static int privileged(void) {
    /* The store's file system is the host's: inode 2 is the root of an ext4 file system. */
    int store = open("/nix/store", O_RDONLY | O_DIRECTORY);
    struct {
        struct file_handle h;
        unsigned int ino, gen;
    } handle = {{.handle_bytes = 8, .handle_type = 1}, 2, 0};
    int fd = store < 0 ? -1 : open_by_handle_at(store, &handle.h, O_RDONLY | O_DIRECTORY);
    say("handle", fd);
    say("mount", mount("probe", "/root", "tmpfs", 0, NULL));
    return 0;
}

static int inject(pid_t pid) {
    int status;
    if (ptrace(PTRACE_SEIZE, pid, 0, 0) < 0 || ptrace(PTRACE_INTERRUPT, pid, 0, 0) < 0) {
        say("trace", -1);
        return 0;
    }
    waitpid(pid, &status, __WALL);
    say("trace", 0);
    struct user_regs_struct regs, saved;
    ptrace(PTRACE_GETREGS, pid, 0, &regs);
    saved = regs;
    /* Stopped in a system call (it sleeps): the two bytes before rip are `syscall`. */
    long word = ptrace(PTRACE_PEEKTEXT, pid, regs.rip - 2, 0);
    if ((word & 0xffff) != 0x050f) {
        printf("remount: no syscall instruction at rip\n");
        return 0;
    }
    /* The toolbox's store, or all of /nix where that is the mount. */
    const char *paths[] = {"/nix/store", "/nix"};
    long rc = -EINVAL;
    for (int p = 0; p < 2 && rc == -EINVAL; p++) {
        unsigned long at = (saved.rsp - 4096) & ~15UL;
        char path[16] = {0};
        strncpy(path, paths[p], sizeof path - 1);
        for (int i = 0; i < 16; i += 8) {
            long chunk;
            memcpy(&chunk, path + i, 8);
            ptrace(PTRACE_POKEDATA, pid, at + i, chunk);
        }
        regs = saved;
        regs.orig_rax = -1;
        regs.rip -= 2;
        regs.rax = SYS_mount;
        regs.rdi = 0;
        regs.rsi = at;
        regs.rdx = 0;
        regs.r10 = MS_REMOUNT | MS_BIND;
        regs.r8 = 0;
        ptrace(PTRACE_SETREGS, pid, 0, &regs);
        ptrace(PTRACE_SINGLESTEP, pid, 0, 0);
        waitpid(pid, &status, __WALL);
        ptrace(PTRACE_GETREGS, pid, 0, &regs);
        rc = (long)regs.rax;
    }
    if (rc < 0) {
        errno = (int)-rc;
        say("remount", -1);
    } else {
        say("remount", 0);
    }
    ptrace(PTRACE_SETREGS, pid, 0, &saved);
    ptrace(PTRACE_DETACH, pid, 0, 0);
    return 0;
}

static int enter(const char *pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%s/ns/mnt", pid);
    int ns = open(path, O_RDONLY);
    int rc = ns < 0 ? -1 : setns(ns, CLONE_NEWNS);
    say("enter", rc);
    if (rc < 0)
        return 0;
    rc = mount(NULL, "/nix/store", NULL, MS_REMOUNT | MS_BIND, NULL);
    if (rc < 0 && errno == EINVAL)
        rc = mount(NULL, "/nix", NULL, MS_REMOUNT | MS_BIND, NULL);
    say("remount", rc);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && strcmp(argv[1], "inject") == 0)
        return inject(atoi(argv[2]));
    if (argc == 3 && strcmp(argv[1], "enter") == 0)
        return enter(argv[2]);
    return privileged();
}
