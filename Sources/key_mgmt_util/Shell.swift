// The command loop of key_mgmt_util: reads commands from stdin, echoes them as AWS's
// transcripts show them when stdin is not a terminal (passwords masked), dispatches to
// the commands and counts the ones that failed, for the exit status.

import CloudHSMCore
import Glibc
import HSMClient
import OpenSSLKit

/// One command the tool knows: how it is typed and what it does.
struct Command {
    let name: String
    let summary: String
    let usage: String
    let valued: Set<String>
    let switches: Set<String>
    /// False for the commands that work before loginHSM.
    let needsLogin: Bool
    let run: (KeyManagementShell, Flags) throws -> Void
}

final class KeyManagementShell {
    let client: ClusterClient
    let crypto: CryptoContext
    private(set) var commands: [Command] = []
    /// Commands of this run that failed (see `markFailed`); the exit status is 1 when
    /// there is any.
    private(set) var failedCommands = 0
    private var currentCommandFailed = false

    init(client: ClusterClient, crypto: CryptoContext) {
        self.client = client
        self.crypto = crypto
        self.commands = Self.allCommands
    }

    /// Runs until exit, quit or end of input.
    func run() {
        let interactive = isatty(STDIN_FILENO) != 0
        while true {
            if interactive {
                print("Command:  ", terminator: "")
                fflush(stdout)
            }
            guard let line = readLine(strippingNewline: true) else {
                if interactive { print("") }
                return
            }
            // A scripted run's output ends up in logs: never echo a password.
            if !interactive { print("Command:  \(maskingPasswords(line))") }
            if !execute(line) { return }
            fflush(stdout)
        }
    }

    /// Runs one line; false when it asks to leave.
    func execute(_ line: String) -> Bool {
        currentCommandFailed = false
        defer { if currentCommandFailed { failedCommands += 1 } }
        let words: [String]
        do {
            words = try splitWords(line)
        } catch let error as UsageError {
            print("Error: \(error.message)")
            print("")
            markFailed()
            return true
        } catch {
            markFailed()
            return true
        }
        guard let name = words.first else { return true }
        if name == "exit" || name == "quit" { return false }
        defer { print("") }
        guard let command = commands.first(where: { $0.name == name }) else {
            print("Error: unknown command '\(name)'. Type help for the list.")
            markFailed()
            return true
        }
        let arguments = Array(words.dropFirst())
        if arguments == ["-h"] || arguments == ["-help"] || arguments == ["--help"] {
            print(command.usage)
            return true
        }
        if command.needsLogin && !client.isLoggedIn {
            print("Error: not logged in. Use loginHSM first.")
            markFailed()
            return true
        }
        do {
            let flags = try Flags(arguments, valued: command.valued, switches: command.switches)
            try command.run(self, flags)
        } catch let error as UsageError {
            print("Error: \(command.name): \(error.message)")
            print(command.usage)
            markFailed()
        } catch {
            print("Error: \(command.name): \(error)")
            markFailed()
        }
        return true
    }

    /// Counts the command being run as failed. What counts is documented in README.md
    /// ("Exit status"): a return code other than 0x00, an unknown command, wrong
    /// arguments, a missing login, a file that cannot be read or written.
    func markFailed() {
        currentCommandFailed = true
    }

    /// The line as echoed: the value after `-p` (loginHSM's password, and no other
    /// command's flag) shows as `********`, whatever the command's name, so a mistyped
    /// command does not leak it either.
    func maskingPasswords(_ line: String) -> String {
        guard let words = try? splitWords(line) else {
            // An unterminated quote: the words are unclear, so hide everything after `-p`.
            let plain = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let flag = plain.firstIndex(of: "-p") else { return line }
            return (plain[...flag] + ["********"]).joined(separator: " ")
        }
        guard let flag = words.firstIndex(of: "-p"), flag + 1 < words.count else { return line }
        var shown = words.map { word in
            word.isEmpty || word.contains(where: { $0 == " " || $0 == "\t" }) ? "\"\(word)\"" : word
        }
        for index in shown.indices.dropFirst() where words[index - 1] == "-p" {
            shown[index] = "********"
        }
        return shown.joined(separator: " ")
    }

    // MARK: Output in AWS's style

    /// `Cfm3X returned: 0x00 : HSM Return: SUCCESS`, and on failure the node's or the
    /// client's reason on the next line.
    func printReturned(_ name: String, _ code: HSMReturnCode, detail: String = "") {
        if !code.isSuccess { markFailed() }
        print("\(name) returned: \(code.description)")
        if !code.isSuccess && !detail.isEmpty { print("        reason: \(detail)") }
    }

    func printReturned(_ name: String, _ outcome: OperationOutcome) {
        switch outcome.result {
        case .success(let response): printReturned(name, response.code)
        case .failure(let error):
            // Client-side details already show in the status lines.
            let shown = outcome.attempts.isEmpty || !error.code.isClientSide
            printReturned(name, error.code, detail: shown ? error.detail : "")
        }
    }

    func printStatus(_ results: [NodeResult]) {
        guard !results.isEmpty else { return }
        print(clusterErrorStatus(results))
    }

    /// The first failure's code, or success.
    static func firstCode(_ results: [NodeResult]) -> (code: HSMReturnCode, detail: String) {
        if let failed = results.first(where: { !$0.isSuccess }) {
            return (failed.code, failed.error?.code.isClientSide == false ? failed.error?.detail ?? "" : "")
        }
        return (.success, "")
    }
}
