// Files that hold secrets: the master key, the cluster key, a crypto officer's password
// file. Every one is read the same way: refused when group or others may open it, with
// one message shape, so no secret is accepted silently from a world-readable file.

import Foundation

public enum SecretFile {
    /// Secret files are small; this bounds what a wrong path can make the node read.
    static let maximumSize = 64 * 1024

    /// The contents of `path`, when only its owner may access it.
    ///
    /// - Parameters:
    ///   - what: what the file holds, for messages ("the master key").
    ///   - missing: what to say when the file does not exist, instead of the system's reason.
    /// - Throws: `StoreError` naming the file, what it holds and the problem.
    public static func read(_ path: String, what: String, missing: String? = nil) throws -> [UInt8] {
        // open, then fstat: the file checked is the file read.
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            if errno == ENOENT, let missing { throw StoreError("cannot read \(what) \(path): \(missing)") }
            throw StoreError("cannot read \(what) \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            throw StoreError("cannot read \(what) \(path): \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT != S_IFDIR else { throw StoreError("\(what) \(path) is a directory") }
        try checkOwnerOnly(mode: info.st_mode, path: path, what: what)
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { Foundation.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw StoreError("cannot read \(what) \(path): \(String(cString: strerror(errno)))")
            }
            if count == 0 { return bytes }
            bytes += chunk[0..<count]
            guard bytes.count <= maximumSize else {
                throw StoreError("\(what) \(path) is larger than \(maximumSize) bytes: is it the right file?")
            }
        }
    }

    /// Refuses a mode that gives group or others any access.
    static func checkOwnerOnly(mode: mode_t, path: String, what: String) throws {
        let open = mode & 0o077
        guard open == 0 else {
            let access = open & 0o044 != 0 ? "readable" : "writable or executable"
            throw StoreError(
                "\(what) \(path) is \(access) by group or others (mode 0\(String(mode & 0o777, radix: 8))): "
                    + "chmod 600 it")
        }
    }

    /// A password from a file (`-` for standard input): the first line, without its line
    /// end. A file of several lines or an empty one is refused, since neither is what a
    /// password file is meant to be.
    public static func readPassword(_ path: String, what: String) throws -> String {
        let bytes: [UInt8]
        if path == "-" {
            bytes = try readStandardInput(what: what)
        } else {
            bytes = try read(path, what: what)
        }
        var line = bytes[...]
        if line.last == UInt8(ascii: "\n") { line = line.dropLast() }
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        let text = String(decoding: line, as: UTF8.self)
        let source = path == "-" ? "standard input" : path
        guard !text.isEmpty else { throw StoreError("\(what) from \(source) is empty") }
        guard !line.contains(UInt8(ascii: "\n")), !line.contains(UInt8(ascii: "\r")) else {
            throw StoreError("\(what) from \(source) holds more than one line")
        }
        return text
    }

    /// Standard input up to its end; on a terminal, one line typed without echo.
    private static func readStandardInput(what: String) throws -> [UInt8] {
        let terminal = isatty(STDIN_FILENO) != 0
        var saved = termios()
        if terminal {
            FileHandle.standardError.write(Data("\(what): ".utf8))
            tcgetattr(STDIN_FILENO, &saved)
            var silent = saved
            silent.c_lflag &= ~tcflag_t(ECHO)
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &silent)
        }
        defer {
            if terminal {
                tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved)
                FileHandle.standardError.write(Data("\n".utf8))
            }
        }
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let count = Foundation.read(STDIN_FILENO, &byte, 1)
            if count < 0 {
                if errno == EINTR { continue }
                throw StoreError("cannot read \(what) from standard input: \(String(cString: strerror(errno)))")
            }
            if count == 0 || (terminal && byte == UInt8(ascii: "\n")) { return bytes }
            bytes.append(byte)
            guard bytes.count <= maximumSize else {
                throw StoreError("\(what) from standard input is larger than \(maximumSize) bytes")
            }
        }
    }
}
