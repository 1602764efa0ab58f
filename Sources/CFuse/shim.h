#ifndef CFUSE_SHIM_H
#define CFUSE_SHIM_H
#define FUSE_USE_VERSION 312
#include <stddef.h>
#include <fuse_lowlevel.h>

// fuse_session_loop_mt is a macro over versioned symbols; Swift cannot call it.
static inline int cfuse_session_loop_mt(struct fuse_session *se, unsigned int max_idle_threads,
                                        unsigned int max_threads) {
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    if (config == NULL) return -1;
    fuse_loop_cfg_set_idle_threads(config, max_idle_threads);
    fuse_loop_cfg_set_max_threads(config, max_threads);
    fuse_loop_cfg_set_clone_fd(config, 1);
    int result = fuse_session_loop_mt(se, config);
    fuse_loop_cfg_destroy(config);
    return result;
}

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
