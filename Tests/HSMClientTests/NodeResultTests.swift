// The "Cluster Error Status" lines the tools print, and how transport failures map to
// the client-side return codes.

import CloudHSMCore
import OpenSSLKit
import XCTest

@testable import HSMClient

final class NodeResultTests: XCTestCase {
    private let node0 = NodeAddress(id: 0, host: "127.0.0.1", port: 22230)
    private let node2 = NodeAddress(id: 2, host: "127.0.0.1", port: 2223)

    func testStatusLines() {
        let results = [
            NodeResult(node: node0, result: .success(.success())),
            NodeResult(
                node: NodeAddress(id: 1, host: "h", port: 1), result: .failure(HSMError(.invalidHandle, "no such key"))),
            NodeResult(
                node: node2,
                result: .failure(HSMError(.nodeUnreachable, "connect to 127.0.0.1:2223: Connection refused"))),
        ]
        XCTAssertEqual(
            clusterErrorStatus(results),
            """

            Cluster Error Status
            Node id 0 and err state 0x00000000 : HSM Return: SUCCESS
            Node id 1 and err state 0x000000a8 : HSM Error: Invalid key handle
            Node id 2 and err state 0x000000e0 : HSM Error: HSM node unreachable (connection refused or no route) \
            - connect to 127.0.0.1:2223: Connection refused
            """)
    }

    func testConnectErrorMapping() {
        func code(_ error: Error) -> HSMReturnCode {
            NodeConnection.mapConnectError(error, node: node0, timeout: 10).code
        }
        XCTAssertEqual(code(TLSError.connectionRefused("connect to x: Connection refused")), .nodeUnreachable)
        XCTAssertEqual(code(TLSError.io("cannot resolve nowhere")), .nodeUnreachable)
        XCTAssertEqual(code(TLSError.io("connect to 10.0.0.1:1: timed out")), .timedOut)
        XCTAssertEqual(code(TLSError.timedOut), .timedOut)
        XCTAssertEqual(code(TLSError.certificateNotTrusted("self-signed")), .tlsFailure)
        XCTAssertEqual(code(TLSError.handshakeFailed("alert")), .tlsFailure)
        XCTAssertEqual(
            NodeConnection.mapConnectError(
                TLSError.connectionRefused("connect to x: Connection refused"), node: node0, timeout: 1
            )
            .detail, "connect to x: Connection refused")
    }

    func testTransferErrorMapping() {
        func code(_ error: Error) -> HSMReturnCode {
            NodeConnection.mapTransferError(error, node: node0, timeout: 10).code
        }
        XCTAssertEqual(code(TLSError.closed), .connectionLost)
        XCTAssertEqual(code(TLSError.io("reset by peer")), .connectionLost)
        XCTAssertEqual(code(TLSError.timedOut), .timedOut)
    }

    func testOwnerNodeOfHandle() {
        XCTAssertEqual(ClusterClient.creatingNodeID(of: 0x61), 1)
        XCTAssertEqual(ClusterClient.creatingNodeID(of: 6 << 4 | 15), 15)
    }
}
