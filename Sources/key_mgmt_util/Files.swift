// Reading and writing the files the commands name, with the system's reason on failure.

import Glibc

struct FileError: Error, CustomStringConvertible {
    let path: String
    let reason: String
    var description: String { "\(path): \(reason)" }
}

enum Files {
    static func read(_ path: String, limit: Int = 16 << 20) throws -> [UInt8] {
        guard let file = fopen(path, "rb") else {
            throw FileError(path: path, reason: String(cString: strerror(errno)))
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            bytes.append(contentsOf: buffer[0..<count])
            if bytes.count > limit { throw FileError(path: path, reason: "larger than \(limit) bytes") }
            if count < buffer.count {
                if ferror(file) != 0 { throw FileError(path: path, reason: String(cString: strerror(errno))) }
                return bytes
            }
        }
    }

    /// Creates or replaces `path` with `bytes`; `mode` applies to an existing file too
    /// (a fake PEM must not stay world-readable because an older file was).
    static func write(_ bytes: [UInt8], to path: String, mode: mode_t = 0o644) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard descriptor >= 0 else { throw FileError(path: path, reason: String(cString: strerror(errno))) }
        defer { close(descriptor) }
        if fchmod(descriptor, mode) != 0 { throw FileError(path: path, reason: String(cString: strerror(errno))) }
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                throw FileError(path: path, reason: String(cString: strerror(errno)))
            }
            offset += written
        }
    }

    static func write(_ text: String, to path: String, mode: mode_t = 0o644) throws {
        try write(Array(text.utf8), to: path, mode: mode)
    }
}
