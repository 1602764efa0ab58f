import CSQLite

/// An SQLite failure, with SQLite's own message.
public struct SQLiteError: Error, CustomStringConvertible, Sendable {
    public let code: Int32
    public let message: String
    public var description: String { "SQLite error \(code): \(message)" }

    /// How a failed statement shows through POSIX: a full metadata region is a full volume.
    var errno: Errno {
        switch code & 0xFF {
        case SQLITE_FULL: return .noSpace
        case SQLITE_CORRUPT, SQLITE_NOTADB: return .io
        default: return .io
        }
    }
}

/// One SQLite connection with a cache of prepared statements. Not thread-safe: its owner serialises access.
final class SQLiteConnection {
    private let handle: OpaquePointer
    private var statements: [String: SQLiteStatement] = [:]
    /// Statements stepped since their last reset. An unfinished statement holds a read snapshot, and in WAL
    /// mode a snapshot stops checkpoints from recycling the log, so they are reset after every operation.
    fileprivate var active: [SQLiteStatement] = []
    private var isClosed = false

    init(path: String, vfs: String, flags: Int32 = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) throws(SQLiteError) {
        var db: OpaquePointer?
        let rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, vfs)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            if let db { sqlite3_close_v2(db) }
            throw SQLiteError(code: rc, message: message)
        }
        handle = db
        sqlite3_extended_result_codes(db, 1)
    }

    deinit { close() }

    /// Closes the connection now (SQLite checkpoints and removes the WAL), while the LUN is still open.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        statements.removeAll()
        sqlite3_close_v2(handle)
    }

    func execute(_ sql: String) throws(SQLiteError) {
        var error: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &error)
        if rc != SQLITE_OK {
            let message = error.map { String(cString: $0) } ?? lastMessage
            sqlite3_free(error)
            throw SQLiteError(code: rc, message: message)
        }
    }

    /// A cached prepared statement, reset and ready for new bindings.
    func statement(_ sql: String) throws(SQLiteError) -> SQLiteStatement {
        if let cached = statements[sql] {
            cached.reset()
            return cached
        }
        var raw: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &raw, nil)
        guard rc == SQLITE_OK, let raw else { throw SQLiteError(code: rc, message: lastMessage) }
        let statement = SQLiteStatement(raw, connection: self)
        statements[sql] = statement
        return statement
    }

    var lastMessage: String { String(cString: sqlite3_errmsg(handle)) }
    var changes: Int { Int(sqlite3_changes(handle)) }
    var isInTransaction: Bool { sqlite3_get_autocommit(handle) == 0 }

    func error(_ code: Int32) -> SQLiteError { SQLiteError(code: code, message: lastMessage) }

    /// Ends every statement stepped since the last call, releasing their read snapshots.
    func finishStatements() {
        for statement in active { statement.reset() }
        active.removeAll(keepingCapacity: true)
    }

    /// Runs `body` inside one transaction; any thrown error rolls it back.
    func transaction<R>(_ body: () throws -> R) throws -> R {
        try statement("BEGIN IMMEDIATE").run()
        do {
            let result = try body()
            finishStatements()
            try statement("COMMIT").run()
            return result
        } catch {
            finishStatements()
            if isInTransaction { try? execute("ROLLBACK") }
            throw error
        }
    }
}

/// A prepared statement: bind by position (1-based), step, read columns (0-based).
final class SQLiteStatement {
    private let raw: OpaquePointer
    private unowned let connection: SQLiteConnection

    init(_ raw: OpaquePointer, connection: SQLiteConnection) {
        self.raw = raw
        self.connection = connection
    }

    deinit { sqlite3_finalize(raw) }

    private var isActive = false

    func reset() {
        sqlite3_reset(raw)
        sqlite3_clear_bindings(raw)
        isActive = false
    }

    @discardableResult
    func bind(_ values: SQLiteValue...) -> SQLiteStatement {
        for (index, value) in values.enumerated() { bind(value, at: Int32(index + 1)) }
        return self
    }

    func bind(_ value: SQLiteValue, at index: Int32) {
        switch value {
        case .integer(let v): sqlite3_bind_int64(raw, index, v)
        case .blob(let bytes):
            bytes.withUnsafeBytes { buffer in
                // SQLITE_TRANSIENT: SQLite copies the bytes, since the array may not outlive this call.
                _ = sqlite3_bind_blob(raw, index, buffer.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(buffer.count),
                                      unsafeBitCast(-1, to: sqlite3_destructor_type.self))
            }
        case .text(let string):
            sqlite3_bind_text(raw, index, string, -1, unsafeBitCast(-1, to: sqlite3_destructor_type.self))
        case .null: sqlite3_bind_null(raw, index)
        }
    }

    /// Steps once; true while a row is available.
    func step() throws(SQLiteError) -> Bool {
        if !isActive {
            isActive = true
            connection.active.append(self)
        }
        let rc = sqlite3_step(raw)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        throw connection.error(rc)
    }

    /// Runs a statement that returns no rows.
    func run() throws(SQLiteError) {
        while try step() {}
    }

    var columnCount: Int { Int(sqlite3_column_count(raw)) }

    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(raw, column) }
    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(raw, column) == SQLITE_NULL }

    func blob(_ column: Int32) -> [UInt8] {
        let count = Int(sqlite3_column_bytes(raw, column))
        guard count > 0, let pointer = sqlite3_column_blob(raw, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: pointer, count: count))
    }

    func text(_ column: Int32) -> String {
        guard let pointer = sqlite3_column_text(raw, column) else { return "" }
        return String(cString: pointer)
    }
}

enum SQLiteValue {
    case integer(Int64)
    case blob([UInt8])
    case text(String)
    case null
}

extension SQLiteValue: ExpressibleByIntegerLiteral {
    init(integerLiteral value: Int64) { self = .integer(value) }
}

extension SQLiteValue {
    static func int<T: BinaryInteger>(_ value: T) -> SQLiteValue { .integer(Int64(value)) }
}
