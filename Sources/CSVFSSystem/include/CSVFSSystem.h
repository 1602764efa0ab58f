int csvfs_placeholder(void);
