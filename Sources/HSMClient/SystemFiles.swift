// Small file and environment helpers on Glibc. HSMClient runs inside host processes
// (nginx, openssl) and must not pull in Foundation, so it reads files with fopen/fread.

import Glibc

enum SystemFiles {
    /// The value of an environment variable, or nil when unset.
    static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }

    /// Reads a whole (small) file.
    ///
    /// - Throws: `SystemFileError` naming the file and the system's reason.
    static func readBytes(path: String, limit: Int = 1 << 20) throws -> [UInt8] {
        guard let file = fopen(path, "rb") else {
            throw SystemFileError(path: path, reason: String(cString: strerror(errno)))
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            if count > 0 { bytes.append(contentsOf: buffer[0..<count]) }
            if bytes.count > limit {
                throw SystemFileError(path: path, reason: "larger than \(limit) bytes")
            }
            if count < buffer.count {
                if ferror(file) != 0 {
                    throw SystemFileError(path: path, reason: String(cString: strerror(errno)))
                }
                return bytes
            }
        }
    }

    static func readText(path: String) throws -> String {
        let bytes = try readBytes(path: path)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw SystemFileError(path: path, reason: "not valid UTF-8 text")
        }
        return text
    }

    /// Throws unless the current user may read `path` (a regular file).
    static func checkReadable(path: String) throws {
        if access(path, R_OK) != 0 {
            throw SystemFileError(path: path, reason: String(cString: strerror(errno)))
        }
    }

    /// The directory part of a path: "." for a bare file name, "/" for a file in the root.
    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    /// `path` unchanged when absolute, else joined to `base`.
    static func resolve(_ path: String, relativeTo base: String) -> String {
        if path.hasPrefix("/") { return path }
        if base.isEmpty || base == "." { return path }
        return base.hasSuffix("/") ? base + path : base + "/" + path
    }
}

/// A file that could not be read, with the system's reason.
public struct SystemFileError: Error, Equatable, Sendable, CustomStringConvertible {
    public let path: String
    public let reason: String

    public var description: String { "\(path): \(reason)" }
}
