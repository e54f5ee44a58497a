// The command loop and commands of cloudhsm_mgmt_util. Every user change is sent to
// every node, and each node's answer gets its own line, as AWS's tool prints them.
// Scripted runs echo each command with its password masked, and count failed commands
// for the exit status.

import CloudHSMCore
import Glibc
import HSMClient

final class UserManagementShell {
    let client: ClusterClient

    private static let commandHelp: [(String, String)] = [
        ("loginHSM <CO|CU> <user> <password>", "logs in on every node"),
        ("logoutHSM", "logs out of every node"),
        ("createUser <CO|CU> <user> <password>", "creates a user on every node"),
        ("changePswd <CO|CU> <user> <new password>", "changes a user's password on every node"),
        ("deleteUser <CO|CU> <user>", "deletes a user on every node"),
        ("listUsers", "lists the users of every node"),
        ("info", "lists the nodes"),
        ("help", "shows this list"),
        ("quit", "exits (also: exit)"),
    ]

    /// Commands of this run that failed: an unknown command, wrong arguments, or a node
    /// that answered with an error. The exit status is 1 when there is any.
    private(set) var failedCommands = 0
    private var currentCommandFailed = false

    /// The commands whose last argument is a password: `<command> <role> <user> <password>`.
    static let passwordCommands: Set<String> = ["loginhsm", "createuser", "changepswd"]

    init(client: ClusterClient) {
        self.client = client
    }

    func run() {
        let interactive = isatty(STDIN_FILENO) != 0
        while true {
            if interactive {
                print("aws-cloudhsm> ", terminator: "")
                fflush(stdout)
            }
            guard let line = readLine(strippingNewline: true) else {
                if interactive { print("") }
                return
            }
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(String.init)
            // A scripted run's output ends up in logs: never echo a password.
            if !interactive { print("aws-cloudhsm> \(Self.maskingPasswords(line, words: words))") }
            guard let name = words.first else { continue }
            if name == "quit" || name == "exit" { return }
            currentCommandFailed = false
            execute(name, Array(words.dropFirst()))
            if currentCommandFailed { failedCommands += 1 }
            print("")
        }
    }

    /// The line as echoed: for loginHSM, createUser and changePswd (in any letter case,
    /// so a mistyped name does not leak it either) every word from the password on shows
    /// as `********`.
    static func maskingPasswords(_ line: String, words: [String]) -> String {
        guard let name = words.first, passwordCommands.contains(name.lowercased()), words.count > 3 else {
            return line
        }
        return (words[..<3] + ["********"]).joined(separator: " ")
    }

    private func execute(_ name: String, _ arguments: [String]) {
        switch name {
        case "loginHSM":
            guard let (role, user, password) = roleUserSecret(name, arguments) else { return }
            guard userNameFits(name, user) else { return }
            report("loginHSM", client.login(role: role, user: user, password: password))
        case "logoutHSM":
            guard noArguments(name, arguments) else { return }
            report("logoutHSM", client.logout())
        case "createUser":
            guard let (role, user, password) = roleUserSecret(name, arguments) else { return }
            guard userNameFits(name, user) else { return }
            print("Creating User \(user)(\(role.shortName)) on \(client.nodes.count) nodes")
            report("createUser", client.broadcast(.createUser(role: role, name: user, password: password)))
        case "changePswd":
            guard let (role, user, password) = roleUserSecret(name, arguments) else { return }
            guard userNameFits(name, user) else { return }
            print("Changing password for \(user)(\(role.shortName)) on \(client.nodes.count) nodes")
            report("changePswd", client.broadcast(.changePassword(name: user, newPassword: password)))
        case "deleteUser":
            guard arguments.count == 2, let role = UserRole(shortName: arguments[0]) else {
                usage(name, "deleteUser <CO|CU> <user>")
                return
            }
            guard userNameFits(name, arguments[1]) else { return }
            print("Deleting user \(arguments[1])(\(role.shortName)) on \(client.nodes.count) nodes")
            report("deleteUser", client.broadcast(.deleteUser(name: arguments[1])))
        case "listUsers":
            guard noArguments(name, arguments) else { return }
            listUsers()
        case "info":
            guard noArguments(name, arguments) else { return }
            for node in client.nodes { print("Server \(node.id): \(node)") }
        case "help":
            for (syntax, summary) in Self.commandHelp {
                print("    \(syntax)" + String(repeating: " ", count: max(1, 45 - syntax.count)) + summary)
            }
        default:
            print("Error: unknown command '\(name)'. Type help for the list.")
            currentCommandFailed = true
        }
    }

    /// Refuses a name no node can hold before anything is sent or echoed: a 100 KB name
    /// would otherwise come back as a wire error and fill the screen.
    private func userNameFits(_ command: String, _ user: String) -> Bool {
        guard let problem = UserName.problem(user) else { return true }
        print("Error: \(command): \(problem)")
        currentCommandFailed = true
        return false
    }

    private func listUsers() {
        for (index, result) in client.broadcast(.listUsers).enumerated() {
            if index > 0 { print("") }
            let server = "server \(result.node.id)(\(result.node))"
            switch result.result {
            case .success(let response):
                guard case .users(let users) = response.body else {
                    print("listUsers failed on \(server): unexpected answer")
                    currentCommandFailed = true
                    continue
                }
                print("Users on \(server):")
                print("Number of users found:\(users.count)")
                print("")
                print(
                    "    User Id             User Type       User Name                          MofnPubKey    "
                        + "LoginFailureCnt         2FA")
                for user in users.sorted(by: { $0.id < $1.id }) {
                    // A locked user shows at least the lockout threshold.
                    let failures = user.isLocked ? max(user.failedLogins, 5) : user.failedLogins
                    print(
                        leftPad(String(user.id), 10) + String(repeating: " ", count: 14)
                            + rightPad(user.role.shortName, 16) + rightPad(user.name, 41) + "NO"
                            + leftPad(String(failures), 16) + leftPad("NO", 19))
                }
            case .failure(let error):
                print("listUsers failed on \(server): \(error)")
                currentCommandFailed = true
            }
        }
    }

    /// One line per node: `<command> success on server 0(127.0.0.1:22230)`.
    private func report(_ command: String, _ results: [NodeResult]) {
        for result in results {
            let server = "server \(result.node.id)(\(result.node))"
            if let error = result.error {
                print("\(command) failed on \(server): \(error)")
                currentCommandFailed = true
            } else {
                print("\(command) success on \(server)")
            }
        }
    }

    private func roleUserSecret(_ name: String, _ arguments: [String]) -> (UserRole, String, String)? {
        guard arguments.count == 3, let role = UserRole(shortName: arguments[0]) else {
            let secret = name == "changePswd" ? "<new password>" : "<password>"
            usage(name, "\(name) <CO|CU> <user> \(secret)")
            return nil
        }
        return (role, arguments[1], arguments[2])
    }

    private func noArguments(_ name: String, _ arguments: [String]) -> Bool {
        if arguments.isEmpty { return true }
        usage(name, name)
        return false
    }

    private func usage(_ name: String, _ syntax: String) {
        currentCommandFailed = true
        print("Error: \(name): wrong arguments")
        print("Usage: \(syntax)")
    }
}

private func leftPad(_ text: String, _ width: Int) -> String {
    String(repeating: " ", count: max(0, width - text.count)) + text
}

private func rightPad(_ text: String, _ width: Int) -> String {
    text + String(repeating: " ", count: max(1, width - text.count))
}
