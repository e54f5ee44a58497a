// hsmd's log. Lines go to stderr; `hsmd run --log-file PATH` points stderr at PATH
// (append, created 0640), so the Swift runtime's crash backtrace lands in the same file,
// and SIGHUP reopens PATH after logrotate moved it. Connection noise from clients that
// never log in goes through `LogThrottle`, so a flood costs a few lines, not one each.

import Foundation
import Synchronization

/// Writes one line to stderr. Never given key material or passwords.
func logLine(_ message: String) {
    FileHandle.standardError.write(Data(("hsmd: " + message + "\n").utf8))
}

public enum NodeLog {
    private static let path = Mutex<String?>(nil)

    /// Sends stderr (this log, and a crash backtrace) to `path` from now on: opened for
    /// appending, created with mode 0640 (the umask can only narrow it). An existing
    /// file keeps its mode.
    public static func redirect(to path: String) throws {
        try self.path.withLock { current in
            try pointStandardError(at: path)
            current = path
        }
    }

    /// Opens the log file again (after logrotate renamed it): later lines go to a file
    /// of that name, created if missing. Does nothing without `--log-file`.
    public static func reopen() throws {
        try path.withLock { current in
            guard let current else { return }
            try pointStandardError(at: current)
        }
    }

    private static func pointStandardError(at path: String) throws {
        let descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard descriptor >= 0 else {
            throw LogFileError(path: path, reason: String(cString: strerror(errno)))
        }
        defer { close(descriptor) }
        // dup2 swaps the file under fd 2 in one step: a line written meanwhile goes to
        // the old file or the new one, never to a closed descriptor.
        guard dup2(descriptor, STDERR_FILENO) >= 0 else {
            throw LogFileError(path: path, reason: String(cString: strerror(errno)))
        }
    }
}

public struct LogFileError: Error, CustomStringConvertible {
    public let path: String
    public let reason: String
    public var description: String { "cannot open the log file \(path): \(reason)" }
}

/// Lets the first few lines of each kind through per interval and counts the rest, per
/// source address, for one summary line when the interval ends. Pure: the caller passes
/// the time.
struct LogThrottle {
    let linesPerInterval: Int
    let intervalMilliseconds: Int
    /// Distinct sources remembered per kind and interval; the rest count as "others".
    let sourcesPerSummary = 256

    private struct Window {
        var start: Int
        var logged = 0
        var suppressed = 0
        var bySource: [String: Int] = [:]
        var otherSources = 0
    }

    private var windows: [String: Window] = [:]

    init(linesPerInterval: Int = 5, intervalMilliseconds: Int = 10_000) {
        self.linesPerInterval = linesPerInterval
        self.intervalMilliseconds = intervalMilliseconds
    }

    /// The lines to write now for one event of `kind` (a plural noun phrase, e.g.
    /// "connections closed before login") from `source`: any summary of the kind's last
    /// interval, then `line` if its interval still has room.
    mutating func lines(for line: String, kind: String, source: String, now: Int) -> [String] {
        var out: [String] = []
        if let window = windows[kind], now - window.start >= intervalMilliseconds {
            if let summary = summary(kind, window) { out.append(summary) }
            windows[kind] = nil
        }
        var window = windows[kind] ?? Window(start: now)
        if window.logged < linesPerInterval {
            window.logged += 1
            out.append(line)
        } else {
            window.suppressed += 1
            if window.bySource[source] != nil || window.bySource.count < sourcesPerSummary {
                window.bySource[source, default: 0] += 1
            } else {
                window.otherSources += 1
            }
        }
        windows[kind] = window
        return out
    }

    /// Summaries of the intervals that have ended by `now`; called now and then, so a
    /// flood that stopped is still summed up.
    mutating func flush(now: Int) -> [String] {
        var out: [String] = []
        for (kind, window) in windows.sorted(by: { $0.key < $1.key }) where now - window.start >= intervalMilliseconds {
            if let summary = summary(kind, window) { out.append(summary) }
            windows[kind] = nil
        }
        return out
    }

    private func summary(_ kind: String, _ window: Window) -> String? {
        guard window.suppressed > 0 else { return nil }
        let top = window.bySource.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        var sources = top.prefix(3).map { "\($0.key): \($0.value)" }
        let rest = top.count - sources.count
        if rest > 0 || window.otherSources > 0 {
            let others = rest + (window.otherSources > 0 ? 1 : 0)
            sources.append(window.otherSources > 0 ? "more than \(others) other sources" : "\(others) other sources")
        }
        return "... and \(window.suppressed) more \(kind) in the last \(intervalMilliseconds / 1000) s "
            + "(from \(sources.joined(separator: ", ")))"
    }
}
