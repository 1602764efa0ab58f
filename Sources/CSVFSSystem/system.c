int csvfs_placeholder(void) { return 0; }
