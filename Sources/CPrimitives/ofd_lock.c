#include "CPrimitives.h"
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

static struct flock primitives_range(short type, int64_t start, int64_t length) {
    struct flock lock;
    memset(&lock, 0, sizeof lock);
    lock.l_type = type;
    lock.l_whence = SEEK_SET;
    lock.l_start = start;
    lock.l_len = length;
    return lock;
}

int primitives_ofd_try_write_lock(int fd, int64_t start, int64_t length) {
    struct flock lock = primitives_range(F_WRLCK, start, length);
    return fcntl(fd, F_OFD_SETLK, &lock);
}

int primitives_ofd_try_read_lock(int fd, int64_t start, int64_t length) {
    struct flock lock = primitives_range(F_RDLCK, start, length);
    return fcntl(fd, F_OFD_SETLK, &lock);
}

int primitives_ofd_wait_write_lock(int fd, int64_t start, int64_t length) {
    struct flock lock = primitives_range(F_WRLCK, start, length);
    return fcntl(fd, F_OFD_SETLKW, &lock);
}

int primitives_ofd_unlock(int fd, int64_t start, int64_t length) {
    struct flock lock = primitives_range(F_UNLCK, start, length);
    return fcntl(fd, F_OFD_SETLK, &lock);
}

int primitives_ofd_find_write_lock(int fd, int64_t start, int64_t length, int *found, int64_t *found_start,
                                   int64_t *found_length) {
    struct flock lock = primitives_range(F_WRLCK, start, length);
    int result = fcntl(fd, F_OFD_GETLK, &lock);
    if (result == 0) {
        *found = lock.l_type != F_UNLCK;
        *found_start = lock.l_start;
        *found_length = lock.l_len;
    }
    return result;
}
