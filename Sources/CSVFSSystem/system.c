#include "CSVFSSystem.h"
#include <fcntl.h>
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <spawn.h>
#include <unistd.h>

int csvfs_open_direct(const char *path, int flags) {
    return open(path, flags | O_DIRECT | O_CLOEXEC);
}

static struct flock csvfs_write_lock_range(int64_t start, int64_t length) {
    struct flock lock;
    memset(&lock, 0, sizeof lock);
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    lock.l_start = start;
    lock.l_len = length;
    return lock;
}

int csvfs_ofd_try_write_lock(int fd, int64_t start, int64_t length) {
    struct flock lock = csvfs_write_lock_range(start, length);
    return fcntl(fd, F_OFD_SETLK, &lock);
}

int csvfs_ofd_test_write_lock(int fd, int64_t start, int64_t length, int *held_by_other) {
    struct flock lock = csvfs_write_lock_range(start, length);
    int result = fcntl(fd, F_OFD_GETLK, &lock);
    if (result == 0) *held_by_other = (lock.l_type != F_UNLCK);
    return result;
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
