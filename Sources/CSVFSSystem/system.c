#include "CSVFSSystem.h"
#include <fcntl.h>
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <spawn.h>
#include <unistd.h>
#include <sys/xattr.h>

int csvfs_open_direct(const char *path, int flags) {
    return open(path, flags | O_DIRECT | O_CLOEXEC);
}

int64_t csvfs_block_device_size(int fd) {
    uint64_t size = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) != 0) return -1;
    return (int64_t)size;
}

int csvfs_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

short csvfs_posix_spawn_setsid_flag(void) { return POSIX_SPAWN_SETSID; }

int csvfs_spawn_close_from(void *actions, int lowest_fd) {
    return posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)actions, lowest_fd);
}

ssize_t csvfs_splice_to(int pipe_fd, int out_fd, int64_t offset, size_t length) {
    loff_t position = offset;
    return splice(pipe_fd, NULL, out_fd, &position, length, SPLICE_F_MOVE);
}

ssize_t csvfs_getxattr(const char *path, const char *name, void *value, size_t size) {
    return getxattr(path, name, value, size);
}
