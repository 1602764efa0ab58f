#ifndef CPRIMITIVES_H
#define CPRIMITIVES_H
#include <stdint.h>

// Open-file-description (OFD) byte-range locks: F_OFD_* need _GNU_SOURCE, which Swift's Glibc module
// does not see. Each returns what fcntl returns and leaves errno set.

int primitives_ofd_try_write_lock(int fd, int64_t start, int64_t length);  // F_OFD_SETLK, F_WRLCK
int primitives_ofd_try_read_lock(int fd, int64_t start, int64_t length);  // F_OFD_SETLK, F_RDLCK
int primitives_ofd_wait_write_lock(int fd, int64_t start, int64_t length); // F_OFD_SETLKW, F_WRLCK (blocks)
int primitives_ofd_unlock(int fd, int64_t start, int64_t length);          // F_OFD_SETLK, F_UNLCK
// F_OFD_GETLK for a write lock over [start, start + length): *found is 1 if another open file
// description holds a conflicting lock, which then covers [*found_start, *found_start + *found_length)
// (*found_length 0: to the end of the file).
int primitives_ofd_find_write_lock(int fd, int64_t start, int64_t length, int *found, int64_t *found_start,
                                   int64_t *found_length);

#endif
