// The node's master key: 32 random bytes in DATA/master.key (mode 0600) that seal every
// key's material in the store. Without it the store's secrets are unreadable.

import Foundation
import OpenSSLKit

enum MasterKey {
    static let fileName = "master.key"
    static let length = 32

    /// Writes a new key; refuses to replace an existing one.
    static func create(directory: String, context: CryptoContext) throws -> [UInt8] {
        let path = directory + "/" + fileName
        let key = try SecureRandom.bytes(length, context: context)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreError("cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let written = key.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == length, fsync(fd) == 0 else {
            throw StoreError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
        return key
    }

    /// Reads the key, refusing a file that group or others may read (as every secret
    /// file: SecretFile).
    static func load(directory: String) throws -> [UInt8] {
        let path = directory + "/" + fileName
        let key = try SecretFile.read(
            path, what: "the master key", missing: "run 'hsmd init' for this data directory first")
        guard key.count == length else {
            throw StoreError(
                "the master key \(path) is damaged: it holds \(key.count) bytes, a master key is \(length)")
        }
        return key
    }
}
