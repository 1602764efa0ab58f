#ifndef CFUSE_SHIM_H
#define CFUSE_SHIM_H
#define FUSE_USE_VERSION 312
#include <stddef.h>
#include <fuse_lowlevel.h>
// The kernel ABI: request header and opcodes, for the request loop to tell requests apart before running them.
#include <linux/fuse.h>

// FUSE_ARGS_INIT is a macro; build an empty argument vector for fuse_session_new.
static inline struct fuse_args cfuse_args_empty(void) {
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    return args;
}

// FUSE_BUFVEC_INIT is a macro: a one-buffer vector over memory.
static inline struct fuse_bufvec cfuse_bufvec_memory(void *memory, size_t size) {
    struct fuse_bufvec vector = FUSE_BUFVEC_INIT(size);
    vector.buf[0].mem = memory;
    return vector;
}

#endif
