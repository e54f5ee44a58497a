// Secret files (master key, cluster key, CO password file) are refused alike when group
// or others may read them, and a password file gives exactly its one line.

import CloudHSMCore
import Foundation
import XCTest

@testable import HSMNode

final class SecretFileTests: XCTestCase {
    private var directory: String!

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "secret-file-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func file(_ name: String, _ contents: String, mode: Int) -> String {
        let path = directory + "/" + name
        FileManager.default.createFile(
            atPath: path, contents: Data(contents.utf8), attributes: [.posixPermissions: mode])
        return path
    }

    func testMasterAndClusterKeysAreRefusedAlikeWhenOthersCanReadThem() throws {
        let node = try TestNode()
        let master = node.directory + "/master.key"
        chmod(master, 0o644)
        var masterMessage = ""
        XCTAssertThrowsError(try node.reopen()) { masterMessage = "\($0)" }
        XCTAssertEqual(
            masterMessage, "the master key \(master) is readable by group or others (mode 0644): chmod 600 it")

        let cluster = file("cluster.key", String(repeating: "0a", count: 32), mode: 0o644)
        XCTAssertThrowsError(try ClusterKey.load(path: cluster)) {
            XCTAssertEqual(
                "\($0)", "the cluster key \(cluster) is readable by group or others (mode 0644): chmod 600 it")
        }
        chmod(cluster, 0o620)
        XCTAssertThrowsError(try ClusterKey.load(path: cluster)) {
            XCTAssertTrue("\($0)".contains("writable or executable by group or others (mode 0620)"), "\($0)")
        }

        chmod(master, 0o600)
        XCTAssertNoThrow(try node.reopen())
        chmod(master, 0o400)
        XCTAssertNoThrow(try node.reopen())
    }

    func testPasswordFileGivesItsOneLine() throws {
        XCTAssertEqual(
            try SecretFile.readPassword(file("a", "s3cret pw\n", mode: 0o600), what: "the CO password"), "s3cret pw")
        XCTAssertEqual(try SecretFile.readPassword(file("b", "crlf\r\n", mode: 0o600), what: "the CO password"), "crlf")
        XCTAssertEqual(try SecretFile.readPassword(file("c", "no-newline", mode: 0o400), what: "x"), "no-newline")
        let open = file("d", "pw\n", mode: 0o640)
        XCTAssertThrowsError(try SecretFile.readPassword(open, what: "the CO password")) {
            XCTAssertEqual("\($0)", "the CO password \(open) is readable by group or others (mode 0640): chmod 600 it")
        }
        XCTAssertThrowsError(try SecretFile.readPassword(file("e", "\n", mode: 0o600), what: "the CO password")) {
            XCTAssertTrue("\($0)".contains("is empty"), "\($0)")
        }
        XCTAssertThrowsError(try SecretFile.readPassword(file("f", "one\ntwo\n", mode: 0o600), what: "the CO password"))
        {
            XCTAssertTrue("\($0)".contains("more than one line"), "\($0)")
        }
        XCTAssertThrowsError(try SecretFile.readPassword(directory + "/missing", what: "the CO password")) {
            XCTAssertTrue("\($0)".contains("No such file"), "\($0)")
        }
        XCTAssertThrowsError(try SecretFile.readPassword(directory, what: "the CO password")) {
            XCTAssertTrue("\($0)".contains("is a directory"), "\($0)")
        }
    }
}
