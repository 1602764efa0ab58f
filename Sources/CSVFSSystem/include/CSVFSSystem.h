#ifndef CSVFS_SYSTEM_H
#define CSVFS_SYSTEM_H
#include <stdint.h>
#include <sys/types.h>

// Thin wrappers over Linux calls whose constants need _GNU_SOURCE, which Swift's Glibc module does not see.
// Each returns what the syscall returns and leaves errno set. OFD locks are in CPrimitives (shared with LockManager).

int csvfs_open_direct(const char *path, int flags);          // open(path, flags | O_DIRECT)
int64_t csvfs_block_device_size(int fd);                      // BLKGETSIZE64, -1 on error
int csvfs_pipe_cloexec(int fds[2]);                           // pipe2(fds, O_CLOEXEC)
short csvfs_posix_spawn_setsid_flag(void);                    // POSIX_SPAWN_SETSID
ssize_t csvfs_splice_to(int pipe_fd, int out_fd, int64_t offset, size_t length);  // splice(pipe -> file at offset)
int csvfs_spawn_close_from(void *actions, int lowest_fd);     // posix_spawn_file_actions_addclosefrom_np
ssize_t csvfs_getxattr(const char *path, const char *name, void *value, size_t size);  // getxattr(2)

// Mode bits of fallocate(2) and flags of renameat2(2), as FUSE hands them to us.
enum {
    CSVFS_FALLOC_KEEP_SIZE = 0x01,
    CSVFS_FALLOC_PUNCH_HOLE = 0x02,
    CSVFS_FALLOC_ZERO_RANGE = 0x10,
    CSVFS_RENAME_NOREPLACE = 1,
    CSVFS_RENAME_EXCHANGE = 2,
    CSVFS_RENAME_WHITEOUT = 4,
    CSVFS_SEEK_DATA = 3,
    CSVFS_SEEK_HOLE = 4,
};

#endif
