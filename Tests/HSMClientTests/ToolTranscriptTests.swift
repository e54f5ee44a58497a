// key_mgmt_util and cloudhsm_mgmt_util run as real processes against fake nodes: the
// walkthrough's commands produce AWS-style transcripts, files that OpenSSL accepts, and
// signatures that verify. Skipped when the tool binaries have not been built.

import CloudHSMCore
import Foundation
import OpenSSLKit
import XCTest

@testable import HSMClient

final class ToolTranscriptTests: XCTestCase {
    private var crypto: CryptoContext!
    private var nodes: [FakeNode] = []
    private var work: String!
    private var pki: TestPKI!

    override func setUpWithError() throws {
        crypto = try CryptoContext()
        pki = try TestPKI()
        nodes = try (0..<2).map { try FakeNode(nodeID: $0, pki: pki, crypto: crypto, clusterID: "local-dev") }
        work = try temporaryDirectory()
        var lines = ["cluster_id = local-dev", "trust_anchor = \(pki.caPath)"]
        lines += nodes.map { "node = \($0.nodeID) 127.0.0.1:\($0.port)" }
        try write(lines.joined(separator: "\n") + "\n", to: work + "/cluster.cfg")
    }

    override func tearDown() {
        for node in nodes { node.stop() }
    }

    private func tool(_ name: String) throws -> String {
        let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        // On Linux the test runner is .build/debug/<package>PackageTests.xctest.
        for candidate in [directory, directory.deletingLastPathComponent()] {
            let path = candidate.appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        throw XCTSkip("\(name) is not built next to the tests")
    }

    private func kmu(_ lines: [String]) throws -> (status: Int32, output: String) {
        var environment = ProcessInfo.processInfo.environment
        environment["CLOUDHSM_CONFIG"] = work + "/cluster.cfg"
        let script = "cd '\(work!)' && exec '\(try tool("key_mgmt_util"))'"
        return try runProcess(
            "/bin/bash", ["-c", script], input: lines.joined(separator: "\n") + "\n", environment: environment)
    }

    func testWalkthroughImportTranscript() throws {
        try runProcess("/bin/bash", ["-c", "cd '\(work!)' && openssl genrsa -out existing.key 2048 2>/dev/null"])
        try runProcess("/bin/bash", ["-c", "cd '\(work!)' && echo hello > message.txt"])
        let (status, out) = try kmu([
            "genSymKey -t 31 -s 16 -sess -l wrapping_key_for_import",
            "loginHSM -u CU -s cu -p pw",
            "genSymKey -t 31 -s 16 -sess -l wrapping_key_for_import",
            "importPrivateKey -f existing.key -l web_server_imported_key -w 16",
            "getCaviumPrivKey -k 32 -out web_server_fake_PEM.key",
            "findKey -l web_server_imported_key",
            "sign -f message.txt -k 32 -m 6 -out message.sig",
            "exportPubKey -k 32 -out imported_pub.pem",
            "getAttribute -o 32 -a 512 -out attributes.txt",
            "getAttribute -o 16 -a 288 -out modulus.txt",
            "genSymKey -t 99 -s 16 -l x",
            "frobnicate",
            "getHSMInfo",
            "importPrivateKey -f message.txt -l bad -w 16",
            "deleteKey -k 32",
            "deleteKey -k 32",
            "genRSAKeyPair -m 2048 -e 65537 -l pair",
            "wrapKey -k 64 -w 16 -out wrapped.bin",
            "unWrapKey -f wrapped.bin -w 16 -l back -sess",
            "getCaviumPrivKey -k 16 -out not_rsa.pem",
            "findKey -c 9",
            "findKey -c 3 -sess 1",
            "logoutHSM",
            "exit",
        ])
        if ProcessInfo.processInfo.environment["PRINT_TRANSCRIPT"] != nil { print(out) }
        // Eight commands below fail on purpose: the run's status says so.
        XCTAssertEqual(status, 1, out)
        XCTAssertTrue(out.contains("key_mgmt_util: 8 command(s) failed\n"), out)
        let expected = [
            "Command:  genSymKey -t 31 -s 16 -sess -l wrapping_key_for_import\nError: not logged in. Use loginHSM first.\n",
            """
            Command:  loginHSM -u CU -s cu -p ********
            Cfm3LoginHSM returned: 0x00 : HSM Return: SUCCESS

            Cluster Error Status
            Node id 0 and err state 0x00000000 : HSM Return: SUCCESS
            Node id 1 and err state 0x00000000 : HSM Return: SUCCESS

            """,
            """
            Command:  genSymKey -t 31 -s 16 -sess -l wrapping_key_for_import

            Cfm3GenerateSymmetricKey returned: 0x00 : HSM Return: SUCCESS

            Symmetric Key Created.  Key Handle: 16

            Cluster Error Status
            Node id 0 and err state 0x00000000 : HSM Return: SUCCESS

            """,
            """
            Cfm3WrapHostKey returned: 0x00 : HSM Return: SUCCESS

            Cfm3CreateUnwrapTemplate returned: 0x00 : HSM Return: SUCCESS

            Cfm3UnWrapKey returned: 0x00 : HSM Return: SUCCESS

            Private Key Unwrapped.  Key Handle: 32

            Cluster Error Status
            Node id 0 and err state 0x00000000 : HSM Return: SUCCESS

            """,
            """
            Private Key Handle is written to web_server_fake_PEM.key in fake PEM format

            getCaviumPrivKey returned: 0x00 : HSM Return: SUCCESS

            """,
            """
            Total number of keys present: 1

             number of keys matched from start index 0::0
            32

            Cluster Error Status
            Node id 0 and err state 0x00000000 : HSM Return: SUCCESS
            Node id 1 and err state 0x00000000 : HSM Return: SUCCESS

            Cfm3FindKey returned: 0x00 : HSM Return: SUCCESS

            """,
            "signature is written to file message.sig\n\nCfm3Sign returned: 0x00 : HSM Return: SUCCESS\n",
            "PEM formatted public key is written to imported_pub.pem\n\nCfm3ExportPubKey returned: 0x00",
            "Attributes dumped into attributes.txt file\n\nCfm3GetAttribute returned: 0x00 : HSM Return: SUCCESS\n",
            "Cfm3GetAttribute returned: 0x11 : HSM Error: Invalid argument\n",
            "Error: genSymKey: -t must be 16 (GENERIC_SECRET) or 31 (AES), found 99\nUsage: genSymKey -t",
            "Error: unknown command 'frobnicate'. Type help for the list.\n",
            "Node id 1: 127.0.0.1:\(nodes[1].port)\n        Cluster id: local-dev\n        Version: 0.1.0-fake\n",
            "Error: message.txt is not an RSA or EC private key the HSMs accept (PEM or DER; PKCS#1, SEC1 or PKCS#8): ",
            "Command:  deleteKey -k 32\nCfm3DeleteKey returned: 0x00 : HSM Return: SUCCESS\n",
            "Cfm3DeleteKey returned: 0xa8 : HSM Error: Invalid key handle\n",
            "Cfm3LogoutHSM returned: 0x00 : HSM Return: SUCCESS\n",
            "Cfm3GenerateKeyPair:    public key handle: 48    private key handle: 64\n",
            "Key Wrapped.  Wrapped key written to file \"wrapped.bin\" length 12",
            "Command:  unWrapKey -f wrapped.bin -w 16 -l back -sess\nCfm3UnWrapKey returned: 0x00 : HSM Return: SUCCESS\n\n"
                + "Private Key Unwrapped.  Key Handle: 80\n",
            "getCaviumPrivKey returned: 0xa9 : HSM Error: Key class or type does not allow this operation\n",
            "Error: findKey: -c must be 2 (public), 3 (private) or 4 (secret), found 9\nUsage: findKey",
            "Command:  findKey -c 3 -sess 1\nTotal number of keys present: 1\n\n number of keys matched from start index 0::0\n80\n",
            "Command:  exit\n",
        ]
        for piece in expected {
            XCTAssertTrue(out.contains(piece), "missing:\n\(piece)\n--- in transcript:\n\(out)")
        }
        XCTAssertTrue(out.contains("BER encoded key length is 12"), out)

        // The fake PEM names the imported key and carries its public key.
        let pem = try String(contentsOfFile: work + "/web_server_fake_PEM.key", encoding: .utf8)
        let reference = try KeyReference(pem: pem)
        XCTAssertEqual(reference.clusterID, "local-dev")
        XCTAssertEqual(reference.handle, 32)
        XCTAssertEqual(reference.label, "web_server_imported_key")
        let mode = try FileManager.default.attributesOfItem(atPath: work + "/web_server_fake_PEM.key")[
            .posixPermissions]
        XCTAssertEqual(mode as? Int, 0o600)

        // The exported public key is the imported key's, and the PSS signature verifies.
        let check = try runProcess(
            "/bin/bash",
            [
                "-c",
                "cd '\(work!)' && openssl pkey -in existing.key -pubout | cmp - imported_pub.pem && "
                    + "openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 "
                    + "-verify imported_pub.pem -signature message.sig message.txt",
            ], environment: ProcessInfo.processInfo.environment)
        XCTAssertEqual(check.status, 0, check.output)
        XCTAssertTrue(check.output.contains("Verified OK"), check.output)

        let attributes = try String(contentsOfFile: work + "/attributes.txt", encoding: .utf8)
        for line in [
            "OBJ_ATTR_CLASS\n0x03\n", "OBJ_ATTR_KEY_TYPE\n0x00\n", "OBJ_ATTR_LABEL\nweb_server_imported_key\n",
            "OBJ_ATTR_MODULUS_BITS\n0x00000800\n", "OBJ_ATTR_PUBLIC_EXPONENT\n0x010001\n",
            "OBJ_ATTR_EXTRACTABLE\n0x01\n",
        ] {
            XCTAssertTrue(attributes.contains(line), "\(line) not in:\n\(attributes)")
        }
    }

    func testExitStatusIsZeroOnlyWhenEveryCommandSucceeds() throws {
        let good = try kmu(["loginHSM -u CU -s cu -p pw", "getHSMInfo", "findKey", "logoutHSM", "exit"])
        XCTAssertEqual(good.status, 0, good.output)
        XCTAssertFalse(good.output.contains("-p pw"), good.output)
        XCTAssertFalse(good.output.contains("failed"), good.output)
        // One wrong password is enough to fail the run, even when later commands succeed.
        let bad = try kmu(["loginHSM -u CU -s cu -p badsecret42", "loginHSM -u CU -s cu -p pw", "getHSMInfo", "exit"])
        XCTAssertEqual(bad.status, 1, bad.output)
        XCTAssertTrue(bad.output.contains("key_mgmt_util: 1 command(s) failed"), bad.output)
        XCTAssertFalse(bad.output.contains("badsecret42") || bad.output.contains("-p pw"), bad.output)
    }

    func testMissingConfigurationExitsWithOne() throws {
        var environment = ProcessInfo.processInfo.environment
        environment["CLOUDHSM_CONFIG"] = work + "/nowhere.cfg"
        let result = try runProcess(try tool("key_mgmt_util"), [], input: "exit\n", environment: environment)
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.output.contains(work + "/nowhere.cfg"), result.output)
        let cmu = try runProcess(try tool("cloudhsm_mgmt_util"), [], input: "quit\n", environment: environment)
        XCTAssertEqual(cmu.status, 1)
    }

    func testManagementUtilReportsEveryNode() throws {
        var environment = ProcessInfo.processInfo.environment
        environment["CLOUDHSM_CONFIG"] = work + "/cluster.cfg"
        let (status, out) = try runProcess(
            try tool("cloudhsm_mgmt_util"), [], input: "loginHSM CO co pw\nloginHSM CO co pw\ninfo\nquit\n",
            environment: environment)
        // The second login fails on node 0, so the run fails.
        XCTAssertEqual(status, 1, out)
        XCTAssertTrue(out.contains("cloudhsm_mgmt_util: 1 command(s) failed"), out)
        XCTAssertTrue(
            out.contains("aws-cloudhsm> loginHSM CO co ********\nloginHSM success on server 0(127.0.0.1:"), out)
        XCTAssertFalse(out.contains(" pw"), out)
        XCTAssertTrue(out.contains("loginHSM success on server 1(127.0.0.1:\(nodes[1].port))\n"), out)
        XCTAssertTrue(out.contains("loginHSM failed on server 0(127.0.0.1:\(nodes[0].port)): 0x21 : HSM Error"), out)
        XCTAssertTrue(out.contains("Server 1: 127.0.0.1:\(nodes[1].port)\n"), out)
    }
}
