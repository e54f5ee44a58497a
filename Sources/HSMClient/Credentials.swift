// Who the client logs in as. The provider takes a crypto user from the environment as
// AWS's OpenSSL engine does (`n3fips_password=user:password`, or `CLOUDHSM_PIN`).

import CloudHSMCore

public struct Credentials: Equatable, Sendable {
    public static let environmentVariables = ["n3fips_password", "CLOUDHSM_PIN"]

    public var role: UserRole
    public var user: String
    public var password: String

    public init(role: UserRole = .cryptoUser, user: String, password: String) {
        self.role = role
        self.user = user
        self.password = password
    }

    /// Parses `user:password`, split at the first colon (passwords may contain colons).
    ///
    /// - Parameter source: what the value came from, for the error message.
    /// - Throws: `CredentialsError` when the value has no colon, user or password. The
    ///   message never repeats the value: it holds a password.
    public init(parsing value: String, role: UserRole = .cryptoUser, source: String) throws {
        guard let colon = value.firstIndex(of: ":") else {
            throw CredentialsError(reason: "\(source) must be `user:password` (no colon found)")
        }
        let user = String(value[..<colon])
        let password = String(value[value.index(after: colon)...])
        guard !user.isEmpty else { throw CredentialsError(reason: "\(source) has an empty user name") }
        guard !password.isEmpty else { throw CredentialsError(reason: "\(source) has an empty password") }
        self.init(role: role, user: user, password: password)
    }

    /// The crypto user from `n3fips_password`, else `CLOUDHSM_PIN`.
    ///
    /// - Throws: `CredentialsError` when neither is set or the one set is malformed.
    public static func fromEnvironment() throws -> Credentials {
        for name in environmentVariables {
            if let value = SystemFiles.environment(name) {
                return try Credentials(parsing: value, source: name)
            }
        }
        throw CredentialsError(
            reason: "no HSM credentials: set n3fips_password (or CLOUDHSM_PIN) to `user:password` of a crypto user")
    }
}

extension Credentials: CustomStringConvertible {
    /// Never shows the password.
    public var description: String { "\(role.shortName) \(user)" }
}

public struct CredentialsError: Error, Equatable, Sendable, CustomStringConvertible {
    public let reason: String
    public var description: String { reason }
}
