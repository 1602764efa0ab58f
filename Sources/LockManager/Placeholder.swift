// placeholder until the LockManager issue lands
