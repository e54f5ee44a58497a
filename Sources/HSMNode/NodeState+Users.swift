// Users and logins on one node: the cluster-wide user ids, who is logged in, the rules
// that keep a user with keys or sessions from being deleted, and the lockout, whose
// failed-login count merges across the cluster (docs/architecture.md, "Users").

import CloudHSMCore
import Foundation
import OpenSSLKit

extension NodeState {
    private func hash(_ password: String, salt: [UInt8], iterations: Int) throws -> [UInt8] {
        try PasswordHash.pbkdf2SHA256(
            password: Array(password.utf8), salt: salt, iterations: iterations, length: 32, context: context)
    }

    // MARK: Logins

    /// Checks a login. Unknown users and wrong passwords fail alike; after five distinct
    /// wrong passwords, counted on every node of the cluster, the user is locked until a
    /// crypto officer sets a new password.
    func authenticate(role: UserRole, name: String, password: String) throws -> Result<UserRecord, HSMError> {
        guard let user = try store.liveUser(named: name) else {
            // The same slow hash as a real check, so timing does not tell which names exist.
            _ = try hash(password, salt: [UInt8](repeating: 0, count: 16), iterations: passwordIterations)
            return .failure(HSMError(.loginFailed))
        }
        let threshold = Self.lockoutThreshold
        // A user has as many attempts in flight on this node as failures left before the
        // lockout: parallel guesses on many connections cannot all be checked before the
        // failures are counted. Parallel correct logins just wait their turn.
        loginGate.lock()
        while true {
            let failed: Int
            do {
                failed = try store.failedLoginCount(userID: user.id)
            } catch {
                loginGate.unlock()
                throw error
            }
            if failed >= threshold {
                loginGate.unlock()
                return .failure(
                    HSMError(.userLocked, "user \(name) is locked; a crypto officer must set a new password"))
            }
            if loginsInFlight[user.id, default: 0] < threshold - failed { break }
            loginGate.wait()
        }
        loginsInFlight[user.id, default: 0] += 1
        loginGate.unlock()

        let result: Result<UserRecord, HSMError>
        var counted = false
        var forgiven = false
        do {
            defer {
                loginGate.lock()
                loginsInFlight[user.id, default: 1] -= 1
                if loginsInFlight[user.id] == 0 { loginsInFlight.removeValue(forKey: user.id) }
                loginGate.broadcast()
                loginGate.unlock()
            }
            let candidate = try hash(password, salt: user.salt, iterations: user.iterations)
            if !constantTimeEqual(candidate, user.passwordHash) {
                counted = try store.recordFailedLogin(userID: user.id, tag: try failureTag(user.id, candidate))
                if counted, try store.failedLoginCount(userID: user.id) == threshold { metrics.recordLockout() }
                result = .failure(HSMError(.loginFailed))
            } else if user.role != role {
                result = .failure(HSMError(.loginFailed))
            } else {
                // Failures may have been counted while this attempt waited its turn.
                forgiven = try store.forgiveFailedLogins(userID: user.id)
                result = .success(user)
            }
        }
        if counted || forgiven, let replication {
            let log = PeerRecords(loginFailures: [try store.loginFailureLog(userID: user.id)])
            // A failure reaches the peers before the answer, so the next guess on another
            // node finds it counted; a forgiveness may follow in the background.
            _ = replication.push(log, waitFor: counted ? nil : 0)
        }
        return result
    }

    /// Names the wrong password without keeping it: the same wrong password on several
    /// nodes (the tools log in on every node at once) yields the same tag, so it counts
    /// once. Derived from the slow hash, so it is as hard to invert as the stored hash.
    private func failureTag(_ id: UserID, _ candidate: [UInt8]) throws -> UInt64 {
        var input = Array("cloudhsm-login-failure".utf8)
        for shift in stride(from: 24, through: 0, by: -8) { input.append(UInt8(truncatingIfNeeded: id >> shift)) }
        let digest = try Digest.hash(input + candidate, algorithm: .sha256, context: context)
        return digest.prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// Records that `sessionID` is logged in as `user`.
    ///
    /// - Returns: false when the user was deleted meanwhile.
    func logIn(sessionID: UInt64, user: UserID) -> Bool {
        lock.withLock {
            guard liveUserIDs.contains(user) else { return false }
            loggedIn[sessionID] = user
            return true
        }
    }

    /// True while `user` exists; a session whose user was deleted may do nothing more.
    func isLive(_ user: UserID) -> Bool {
        lock.withLock { liveUserIDs.contains(user) }
    }

    /// What this node holds of `user`: its logged-in sessions and the token keys it owns.
    func activity(of user: UserID) -> UserActivity {
        lock.withLock {
            UserActivity(
                sessions: UInt32(loggedIn.values.filter { $0 == user }.count),
                ownedKeys: UInt32(tokenKeys.values.filter { $0.owner == user }.count))
        }
    }

    // MARK: User management

    func createUser(role: UserRole, name: String, password: String) throws -> HSMError? {
        guard Self.isValidUserName(name) else {
            return HSMError(.invalidArgument, "a user name is 1 to 32 letters, digits, '_', '-' or '.'")
        }
        guard !password.isEmpty else { return HSMError(.invalidArgument, "the password is empty") }
        if let existing = try store.liveUser(named: name) {
            // cloudhsm_mgmt_util sends createUser to every node, and replication may have
            // brought this very user here first: that is success, not a conflict.
            if isFromPeer(existing.id), existing.role == role,
                constantTimeEqual(
                    try hash(password, salt: existing.salt, iterations: existing.iterations), existing.passwordHash)
            {
                return nil
            }
            return HSMError(.userExists, "user \(name) exists")
        }
        let salt = try SecureRandom.bytes(16, context: context)
        let hashed = try hash(password, salt: salt, iterations: passwordIterations)
        // A new id, never an old one: keys of a deleted user of the same name stay its own.
        try changeUser(
            UserRecord(
                id: try store.allocateUserID(), name: name, role: role, salt: salt, passwordHash: hashed,
                iterations: passwordIterations, version: 1, isDeleted: false))
        return nil
    }

    /// Deletes `user` unless a node says it owns keys or is logged in. This node asks
    /// every peer it can reach (bounded by the peer timeout); a peer that does not answer
    /// cannot refuse, and its sessions of the user end when the tombstone reaches it.
    ///
    /// - Throws: `.userOwnsKeys` or `.userLoggedIn`, naming the count or the nodes.
    func deleteUser(_ user: UserRecord) throws {
        var activities = [nodeID: activity(of: user.id)]
        for (peer, activity) in replication?.activity(of: user.id) ?? [:] { activities[peer] = activity }
        // Token keys are on every node; a node that has not seen some yet counts fewer.
        let keys = activities.values.map(\.ownedKeys).max() ?? 0
        if keys > 0 {
            throw HSMError(
                .userOwnsKeys,
                "user \(user.name) owns \(keys) key\(keys == 1 ? "" : "s"); delete them first, logged in as "
                    + "\(user.name) with key_mgmt_util deleteKey")
        }
        let busy = activities.filter { $0.value.sessions > 0 }.keys.sorted()
        if !busy.isEmpty {
            let sessions = activities.values.reduce(0) { $0 + Int($1.sessions) }
            throw HSMError(
                .userLoggedIn,
                "user \(user.name) is logged in (\(sessions) session\(sessions == 1 ? "" : "s") on node"
                    + "\(busy.count == 1 ? "" : "s") \(busy.map(String.init).joined(separator: ", "))); "
                    + "it must log out first")
        }
        try changeUser(user.tombstone)
    }

    /// True when no user is called `name` because a change from a peer deleted it: a
    /// deleteUser that cloudhsm_mgmt_util also sent here has then already been done.
    func wasDeletedByPeer(_ name: String) throws -> Bool {
        let records = try store.userRecords(named: name)
        guard !records.contains(where: { !$0.isDeleted }) else { return false }
        return lock.withLock { records.contains { usersFromPeers.contains($0.id) } }
    }

    private func isFromPeer(_ id: UserID) -> Bool {
        lock.withLock { usersFromPeers.contains(id) }
    }

    /// Sets a new password and forgives the failed logins (which unlocks the user).
    func changePassword(name: String, newPassword: String) throws -> HSMError? {
        guard var user = try store.liveUser(named: name) else {
            return HSMError(.userNotFound, "no user \(name)")
        }
        guard !newPassword.isEmpty else { return HSMError(.invalidArgument, "the password is empty") }
        user.salt = try SecureRandom.bytes(16, context: context)
        user.iterations = passwordIterations
        user.passwordHash = try hash(newPassword, salt: user.salt, iterations: user.iterations)
        user.version += 1
        try store.forgiveFailedLogins(userID: user.id)
        try changeUser(user, loginFailures: [try store.loginFailureLog(userID: user.id)])
        return nil
    }

    /// Stores a change made by a request to this node and pushes it to the peers.
    private func changeUser(_ record: UserRecord, loginFailures: [LoginFailureLog] = []) throws {
        let application = try applyLock.withLock {
            let application = try store.applyResolving(userRecord: record)
            if application.isWritten { noteUserChanges([record] + application.superseded, fromPeer: false) }
            return application
        }
        let users = [record] + application.superseded
        _ = replication?.push(
            PeerRecords(users: users.map(Self.peerRecord), loginFailures: loginFailures), waitFor: nil)
    }

    /// Brings the in-memory view in line with user records just written: deleted users'
    /// sessions end here and their session keys are destroyed. Called with `applyLock`.
    func noteUserChanges(_ records: [UserRecord], fromPeer: Bool) {
        lock.withLock {
            for record in records {
                if fromPeer { usersFromPeers.insert(record.id) } else { usersFromPeers.remove(record.id) }
                guard record.isDeleted else {
                    liveUserIDs.insert(record.id)
                    continue
                }
                liveUserIDs.remove(record.id)
                let sessions = Set(loggedIn.filter { $0.value == record.id }.keys)
                guard !sessions.isEmpty else { continue }
                for session in sessions { loggedIn.removeValue(forKey: session) }
                sessionKeys = sessionKeys.filter { !sessions.contains($0.value.sessionID ?? 0) }
            }
        }
    }

    static func peerRecord(_ u: UserRecord) -> PeerUserRecord {
        PeerUserRecord(
            id: u.id, name: u.name, role: u.role, salt: u.salt, passwordHash: u.passwordHash,
            iterations: UInt32(clamping: u.iterations), version: u.version, isDeleted: u.isDeleted)
    }

    /// The live users with their cluster-wide failed-login counts, in id order.
    func users() throws -> [(record: UserRecord, failedLogins: Int)] {
        try store.userRecords().filter { !$0.isDeleted }.map { ($0, try store.failedLoginCount(userID: $0.id)) }
    }

    /// The live user called `name`, if any.
    func user(named name: String) throws -> UserRecord? {
        try store.liveUser(named: name)
    }

    static func isValidUserName(_ name: String) -> Bool {
        guard (1...32).contains(name.utf8.count) else { return false }
        return name.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".")
        }
    }
}
