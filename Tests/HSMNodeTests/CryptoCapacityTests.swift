// The crypto slots and token bucket: a full waiting line throttles at once, waiting work
// still completes, and pacing holds the rate down.

import CloudHSMCore
import Foundation
import XCTest

@testable import HSMNode

final class CryptoCapacityTests: XCTestCase {
    func testRunsWorkAndPassesErrorsThrough() throws {
        let pool = CryptoCapacity(workers: 2, queueLimit: 4, operationsPerSecond: nil)
        defer { pool.stop() }
        XCTAssertEqual(try pool.run { 41 + 1 }, 42)
        XCTAssertThrowsError(try pool.run { throw HSMError(.decryptFailed) }) {
            XCTAssertEqual(($0 as? HSMError)?.code, .decryptFailed)
        }
    }

    func testFullQueueThrottlesImmediately() throws {
        let pool = CryptoCapacity(workers: 1, queueLimit: 1, operationsPerSecond: nil)
        defer { pool.stop() }
        let release = DispatchSemaphore(value: 0)
        let started = DispatchSemaphore(value: 0)
        let finished = DispatchGroup()
        // One job occupies the only worker, a second waits in the queue.
        for index in 0..<2 {
            finished.enter()
            Thread.detachNewThread {
                _ = try? pool.run {
                    if index == 0 { started.signal() }
                    release.wait()
                }
                finished.leave()
            }
            if index == 0 { started.wait() }
        }
        Thread.sleep(forTimeInterval: 0.1)
        let before = Date()
        XCTAssertThrowsError(try pool.run { 1 }) { XCTAssertEqual(($0 as? HSMError)?.code, .throttled) }
        XCTAssertLessThan(Date().timeIntervalSince(before), 0.5)
        release.signal()
        release.signal()
        finished.wait()
        XCTAssertEqual(try pool.run { 2 }, 2)
    }

    func testRateLimitPacesWork() throws {
        let pool = CryptoCapacity(workers: 2, queueLimit: 64, operationsPerSecond: 20)
        defer { pool.stop() }
        let before = Date()
        for _ in 0..<6 { _ = try pool.run { 0 } }
        // Six tokens at 20 per second take at least 0.25 s after the first.
        XCTAssertGreaterThan(Date().timeIntervalSince(before), 0.2)
    }
}
