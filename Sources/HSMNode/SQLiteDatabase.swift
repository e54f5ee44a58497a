// A thin, safe layer over SQLite's C API for the node store: open, run statements with
// bound values, read rows. Every sqlite3 pointer stays in this file.

import CSQLite
import Foundation

struct SQLiteError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// A value bound to, or read from, a statement.
enum SQLiteValue: Equatable {
    case integer(Int64)
    case text(String)
    case blob([UInt8])
    case null

    var integer: Int64? { if case .integer(let v) = self { return v } else { return nil } }
    var text: String? { if case .text(let v) = self { return v } else { return nil } }
    var blob: [UInt8]? {
        switch self {
        case .blob(let v): return v
        case .null: return nil
        default: return nil
        }
    }
}

/// One open database connection. Not thread-safe by itself: `NodeStore` serialises use.
final class SQLiteDatabase {
    private let handle: OpaquePointer
    let path: String

    init(path: String, create: Bool) throws {
        var db: OpaquePointer? = nil
        let flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_FULLMUTEX
        let result = sqlite3_open_v2(path, &db, flags, nil)
        guard result == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let db { sqlite3_close(db) }
            throw SQLiteError(message: "cannot open \(path): \(message)")
        }
        self.handle = db
        self.path = path
        sqlite3_busy_timeout(db, 5000)
    }

    deinit { sqlite3_close(handle) }

    /// Runs one or more statements that take no parameters and return no rows we need.
    func execute(_ sql: String) throws {
        var message: UnsafeMutablePointer<CChar>? = nil
        let result = sqlite3_exec(handle, sql, nil, nil, &message)
        guard result == SQLITE_OK else {
            let text = message.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(handle))
            sqlite3_free(message)
            throw SQLiteError(message: "\(path): \(text)")
        }
    }

    /// Runs a statement with parameters and returns every row.
    @discardableResult
    func query(_ sql: String, _ parameters: [SQLiteValue] = []) throws -> [[SQLiteValue]] {
        var statement: OpaquePointer? = nil
        guard sqlite3_prepare_v2(handle, sql, -1, &statement, nil) == SQLITE_OK, let statement else {
            throw error("preparing \(sql.prefix(40))")
        }
        defer { sqlite3_finalize(statement) }
        for (offset, value) in parameters.enumerated() {
            let index = Int32(offset + 1)
            let result: Int32
            switch value {
            case .integer(let v): result = sqlite3_bind_int64(statement, index, v)
            case .text(let v): result = sqlite3_bind_text(statement, index, v, -1, cshim_sqlite_transient())
            case .blob(let v):
                result =
                    v.isEmpty
                    ? sqlite3_bind_zeroblob(statement, index, 0)
                    : v.withUnsafeBytes {
                        sqlite3_bind_blob(statement, index, $0.baseAddress, Int32($0.count), cshim_sqlite_transient())
                    }
            case .null: result = sqlite3_bind_null(statement, index)
            }
            guard result == SQLITE_OK else { throw error("binding parameter \(index)") }
        }
        var rows: [[SQLiteValue]] = []
        while true {
            let step = sqlite3_step(statement)
            if step == SQLITE_DONE { break }
            guard step == SQLITE_ROW else { throw error("running \(sql.prefix(40))") }
            rows.append((0..<sqlite3_column_count(statement)).map { column(statement, $0) })
        }
        return rows
    }

    var changes: Int { Int(sqlite3_changes(handle)) }

    /// Runs `body` in one transaction: all of it is on disk when this returns, or none.
    func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    private func column(_ statement: OpaquePointer, _ index: Int32) -> SQLiteValue {
        switch sqlite3_column_type(statement, index) {
        case SQLITE_INTEGER: return .integer(sqlite3_column_int64(statement, index))
        case SQLITE_TEXT:
            guard let text = sqlite3_column_text(statement, index) else { return .text("") }
            return .text(String(cString: text))
        case SQLITE_BLOB:
            let count = Int(sqlite3_column_bytes(statement, index))
            guard count > 0, let bytes = sqlite3_column_blob(statement, index) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: bytes, count: count)))
        default: return .null
        }
    }

    private func error(_ what: String) -> SQLiteError {
        SQLiteError(message: "\(path): \(what): \(String(cString: sqlite3_errmsg(handle)))")
    }
}
