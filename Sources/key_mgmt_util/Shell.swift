// The command loop of key_mgmt_util: reads commands from stdin, echoes them as AWS's
// transcripts show them when stdin is not a terminal, and dispatches to the commands.

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
            if !interactive { print("Command:  \(line)") }
            if !execute(line) { return }
            fflush(stdout)
        }
    }

    /// Runs one line; false when it asks to leave.
    func execute(_ line: String) -> Bool {
        let words: [String]
        do {
            words = try splitWords(line)
        } catch let error as UsageError {
            print("Error: \(error.message)")
            print("")
            return true
        } catch {
            return true
        }
        guard let name = words.first else { return true }
        if name == "exit" || name == "quit" { return false }
        defer { print("") }
        guard let command = commands.first(where: { $0.name == name }) else {
            print("Error: unknown command '\(name)'. Type help for the list.")
            return true
        }
        let arguments = Array(words.dropFirst())
        if arguments == ["-h"] || arguments == ["-help"] || arguments == ["--help"] {
            print(command.usage)
            return true
        }
        if command.needsLogin && !client.isLoggedIn {
            print("Error: not logged in. Use loginHSM first.")
            return true
        }
        do {
            let flags = try Flags(arguments, valued: command.valued, switches: command.switches)
            try command.run(self, flags)
        } catch let error as UsageError {
            print("Error: \(command.name): \(error.message)")
            print(command.usage)
        } catch {
            print("Error: \(command.name): \(error)")
        }
        return true
    }

    // MARK: Output in AWS's style

    /// `Cfm3X returned: 0x00 : HSM Return: SUCCESS`, and on failure the node's or the
    /// client's reason on the next line.
    func printReturned(_ name: String, _ code: HSMReturnCode, detail: String = "") {
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
