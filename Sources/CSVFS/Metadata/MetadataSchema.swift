/// The metadata database's tables. One transaction per namespace operation; see DESIGN.md.
enum MetadataSchema {
    static let version: Int64 = 1

    /// Statements run once, at format time, inside one transaction.
    static let create = """
    CREATE TABLE inodes(
        ino INTEGER PRIMARY KEY,             -- handed out by the store, never reused while mounted
        mode INTEGER NOT NULL, nlink INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
        size INTEGER NOT NULL DEFAULT 0, allocated INTEGER NOT NULL DEFAULT 0, rdev INTEGER NOT NULL DEFAULT 0,
        atime INTEGER NOT NULL, mtime INTEGER NOT NULL, ctime INTEGER NOT NULL,
        parent INTEGER NOT NULL DEFAULT 0,   -- directories only: the directory holding it ('..')
        target BLOB                          -- symlinks only
    );
    -- Directory entries, clustered by directory in readdir order; the id is the readdir cookie, handed out by
    -- the store and never reused while mounted.
    CREATE TABLE dirents(parent INTEGER NOT NULL, id INTEGER NOT NULL, name BLOB NOT NULL, ino INTEGER NOT NULL,
                         mode INTEGER NOT NULL, PRIMARY KEY(parent, id)) WITHOUT ROWID;
    CREATE UNIQUE INDEX dirents_by_name ON dirents(parent, name);
    CREATE TABLE extents(ino INTEGER NOT NULL, logical INTEGER NOT NULL, physical INTEGER NOT NULL,
                         length INTEGER NOT NULL, unwritten INTEGER NOT NULL,
                         PRIMARY KEY(ino, logical)) WITHOUT ROWID;
    CREATE TABLE free_space(start INTEGER PRIMARY KEY, length INTEGER NOT NULL);
    CREATE INDEX free_space_by_length ON free_space(length, start);
    -- Blocks freed since the last sync; they join free_space once their freeing is durable.
    CREATE TABLE freed_space(start INTEGER PRIMARY KEY, length INTEGER NOT NULL);
    CREATE TABLE xattrs(ino INTEGER NOT NULL, name BLOB NOT NULL, value BLOB NOT NULL,
                        PRIMARY KEY(ino, name)) WITHOUT ROWID;
    -- Inodes with no name left but still open; reclaimed at last close, or at the next mount after a crash.
    CREATE TABLE orphans(ino INTEGER PRIMARY KEY);
    CREATE TABLE volume(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    \(appliedRequests)
    """

    /// The requests of other nodes whose change is committed, written in the change's own transaction, so a
    /// request sent again after a failover (its answer lost with the coordinator) is answered, not run twice.
    /// Volumes formatted before it have it made at their next mount.
    static let appliedRequests = """
    CREATE TABLE IF NOT EXISTS applied_requests(node INTEGER NOT NULL, sequence INTEGER NOT NULL,
                                                PRIMARY KEY(node, sequence)) WITHOUT ROWID;
    """
}
