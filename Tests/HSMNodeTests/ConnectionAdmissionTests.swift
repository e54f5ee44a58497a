// The slot rules on their own: the unauthenticated share, the per-source share, whom an
// eviction picks, busy connections, logins that take and give back a logged-in slot.

import XCTest

@testable import HSMNode

final class ConnectionAdmissionTests: XCTestCase {
    func limits(total: Int = 10, unauthenticated: Int = 4, perSource: Int = 3) -> ConnectionLimits {
        var limits = ConnectionLimits()
        limits.maxConnections = total
        limits.maxUnauthenticated = unauthenticated
        limits.maxUnauthenticatedPerSource = perSource
        return limits
    }

    func testDefaultsLeaveMostSlotsToLoggedInClients() {
        let limits = ConnectionLimits()
        XCTAssertEqual(limits.maxConnections, 1024)
        XCTAssertEqual(limits.maxUnauthenticated, 64)
        XCTAssertEqual(limits.maxUnauthenticatedPerSource, 16)
        XCTAssertEqual(limits.maxAuthenticated, 960)
        XCTAssertEqual(limits.handshakeTimeoutMilliseconds, 5000)
        XCTAssertEqual(limits.frameTimeoutMilliseconds, 5000)
        XCTAssertEqual(limits.loginTimeoutMilliseconds, 10_000)
        XCTAssertEqual(limits.idleTimeoutMilliseconds, 600_000)
    }

    func testFullUnauthenticatedShareEvictsTheOldestOfTheBusiestSource() {
        var admission = ConnectionAdmission(limits: limits(perSource: 3))
        // a: 2 connections (ids 1, 3), b: 1 (id 2), c: 1 (id 4). Share of 4 is full.
        XCTAssertEqual(admission.admit(1, source: "a"), .admitted(evicting: nil))
        XCTAssertEqual(admission.admit(2, source: "b"), .admitted(evicting: nil))
        XCTAssertEqual(admission.admit(3, source: "a"), .admitted(evicting: nil))
        XCTAssertEqual(admission.admit(4, source: "c"), .admitted(evicting: nil))
        // a holds the most, so a's oldest (1) goes.
        guard case .admitted(let first?) = admission.admit(5, source: "d") else { return XCTFail("no eviction") }
        XCTAssertEqual(first.id, 1)
        XCTAssertTrue(first.reason.hasPrefix("node busy: connection limit"), first.reason)
        XCTAssertFalse(admission.holdsSlot(1))
        // Now a, b, c, d hold one each: the oldest of them (b's 2) goes next.
        guard case .admitted(let second?) = admission.admit(6, source: "e") else { return XCTFail("no eviction") }
        XCTAssertEqual(second.id, 2)
        XCTAssertEqual(admission.unauthenticatedCount, 4)
    }

    func testALoneClientOutlivesAFloodFromFewerAddressesThanTheShare() {
        // Attackers on fewer addresses than the share holds always have a source with two
        // or more slots, so a client's single connection is never the one picked.
        var admission = ConnectionAdmission(limits: limits(total: 100, unauthenticated: 8, perSource: 4))
        XCTAssertEqual(admission.admit(1, source: "client"), .admitted(evicting: nil))
        var id: ConnectionID = 1
        for round in 0..<200 {
            id += 1
            _ = admission.admit(id, source: "attacker-\(round % 6)")
            XCTAssertTrue(admission.holdsSlot(1), "client evicted by arrival \(round)")
        }
        XCTAssertEqual(admission.unauthenticatedCount, 8)
        // Spread over as many addresses as the share, the flood makes the client's
        // connection the oldest of equals: it lasts as long as 7 newer arrivals.
        var spread = ConnectionAdmission(limits: limits(total: 100, unauthenticated: 8, perSource: 4))
        XCTAssertEqual(spread.admit(1, source: "client"), .admitted(evicting: nil))
        for address in 0..<7 { _ = spread.admit(ConnectionID(2 + address), source: "attacker-\(address)") }
        XCTAssertTrue(spread.holdsSlot(1))
        guard case .admitted(let eviction?) = spread.admit(9, source: "attacker-7") else {
            return XCTFail("no eviction")
        }
        XCTAssertEqual(eviction.id, 1)
    }

    func testFullSourceEvictsItsOwnOldestOnly() {
        var admission = ConnectionAdmission(limits: limits(unauthenticated: 6, perSource: 2))
        XCTAssertEqual(admission.admit(1, source: "x"), .admitted(evicting: nil))
        XCTAssertEqual(admission.admit(2, source: "y"), .admitted(evicting: nil))
        XCTAssertEqual(admission.admit(3, source: "y"), .admitted(evicting: nil))
        guard case .admitted(let eviction?) = admission.admit(4, source: "y") else { return XCTFail("no eviction") }
        XCTAssertEqual(eviction.id, 2)
        XCTAssertTrue(eviction.reason.contains("from y"), eviction.reason)
        XCTAssertTrue(admission.holdsSlot(1))
        XCTAssertEqual(admission.unauthenticatedCount(from: "y"), 2)
    }

    func testBusyConnectionsAreNeverEvicted() {
        var admission = ConnectionAdmission(limits: limits(unauthenticated: 2, perSource: 2))
        XCTAssertEqual(admission.admit(1, source: "a"), .admitted(evicting: nil))
        XCTAssertEqual(admission.admit(2, source: "a"), .admitted(evicting: nil))
        XCTAssertTrue(admission.setBusy(1, true))
        guard case .admitted(let eviction?) = admission.admit(3, source: "a") else { return XCTFail("no eviction") }
        XCTAssertEqual(eviction.id, 2, "the busy older one stays")
        XCTAssertTrue(admission.setBusy(3, true))
        guard case .refused(let why) = admission.admit(4, source: "b") else { return XCTFail("admitted") }
        XCTAssertTrue(why.contains("busy"), why)
        XCTAssertFalse(admission.holdsSlot(4))
        XCTAssertFalse(admission.setBusy(2, true), "an evicted connection holds no slot")
    }

    func testLoginTakesALoggedInSlotAndFailedLoginGivesItBack() {
        var admission = ConnectionAdmission(limits: limits(total: 4, unauthenticated: 2, perSource: 2))
        for id: ConnectionID in 1...2 { XCTAssertEqual(admission.admit(id, source: "a"), .admitted(evicting: nil)) }
        XCTAssertTrue(admission.promote(1))
        XCTAssertTrue(admission.isAuthenticated(1))
        XCTAssertEqual(admission.unauthenticatedCount, 1)
        XCTAssertEqual(admission.authenticatedCount, 1)
        // The freed unauthenticated slot is taken without an eviction.
        XCTAssertEqual(admission.admit(3, source: "a"), .admitted(evicting: nil))
        XCTAssertTrue(admission.promote(2))
        XCTAssertEqual(admission.authenticatedCount, 2)
        XCTAssertFalse(admission.promote(3), "the logged-in share (4 - 2) is full")
        XCTAssertFalse(admission.isAuthenticated(3))
        // 2's login failed: it goes back with its old age, so it is the oldest again.
        XCTAssertNil(admission.demote(2, restartingAge: false))
        XCTAssertTrue(admission.promote(3))
        XCTAssertEqual(admission.admit(4, source: "b"), .admitted(evicting: nil))
        guard case .admitted(let eviction?) = admission.admit(5, source: "c") else { return XCTFail("no eviction") }
        XCTAssertEqual(eviction.id, 2)
    }

    func testLogoutMakesRoomAmongUnauthenticatedByEvicting() {
        var admission = ConnectionAdmission(limits: limits(total: 4, unauthenticated: 2, perSource: 2))
        XCTAssertEqual(admission.admit(1, source: "a"), .admitted(evicting: nil))
        XCTAssertTrue(admission.promote(1))
        XCTAssertEqual(admission.admit(2, source: "b"), .admitted(evicting: nil))
        XCTAssertEqual(admission.admit(3, source: "c"), .admitted(evicting: nil))
        let eviction = admission.demote(1, restartingAge: true)
        XCTAssertEqual(eviction?.id, 2)
        XCTAssertEqual(admission.unauthenticatedCount, 2)
        XCTAssertEqual(admission.authenticatedCount, 0)
        // 1 logged out last, so it is the youngest: 3 goes before it.
        guard case .admitted(let next?) = admission.admit(4, source: "d") else { return XCTFail("no eviction") }
        XCTAssertEqual(next.id, 3)
    }

    func testRemoveFreesEitherKindOfSlot() {
        var admission = ConnectionAdmission(limits: limits())
        XCTAssertEqual(admission.admit(1, source: "a"), .admitted(evicting: nil))
        XCTAssertEqual(admission.admit(2, source: "a"), .admitted(evicting: nil))
        XCTAssertTrue(admission.promote(2))
        admission.remove(1)
        admission.remove(2)
        admission.remove(2)
        XCTAssertEqual(admission.unauthenticatedCount, 0)
        XCTAssertEqual(admission.authenticatedCount, 0)
        XCTAssertEqual(admission.unauthenticatedCount(from: "a"), 0)
    }
}

final class LogThrottleTests: XCTestCase {
    func testFirstLinesPassThenOneSummaryPerInterval() {
        var throttle = LogThrottle(linesPerInterval: 2, intervalMilliseconds: 10_000)
        var written: [String] = []
        for i in 0..<1000 {
            let source = i % 4 == 0 ? "10.0.0.1" : "10.0.0.\(2 + i % 3)"
            written += throttle.lines(for: "line \(i)", kind: "connections closed before login", source: source, now: i)
        }
        XCTAssertEqual(written, ["line 0", "line 1"])
        XCTAssertEqual(throttle.flush(now: 5_000), [])
        let summary = throttle.flush(now: 10_000)
        XCTAssertEqual(summary.count, 1)
        XCTAssertTrue(
            summary[0].hasPrefix("... and 998 more connections closed before login in the last 10 s (from "), summary[0]
        )
        XCTAssertTrue(summary[0].contains("10.0.0.1: 249"), summary[0])
        XCTAssertEqual(throttle.flush(now: 20_000), [])
        // A new interval starts with fresh room.
        XCTAssertEqual(
            throttle.lines(for: "again", kind: "connections closed before login", source: "x", now: 30_000), ["again"])
    }

    func testKindsAreRationedSeparatelyAndSummariesComeBeforeTheNextLine() {
        var throttle = LogThrottle(linesPerInterval: 1, intervalMilliseconds: 1000)
        XCTAssertEqual(throttle.lines(for: "a1", kind: "A", source: "s", now: 0), ["a1"])
        XCTAssertEqual(throttle.lines(for: "b1", kind: "B", source: "s", now: 0), ["b1"])
        XCTAssertEqual(throttle.lines(for: "a2", kind: "A", source: "s", now: 10), [])
        XCTAssertEqual(
            throttle.lines(for: "a3", kind: "A", source: "s", now: 1500),
            ["... and 1 more A in the last 1 s (from s: 1)", "a3"])
    }

    func testManySourcesStayBounded() {
        var throttle = LogThrottle(linesPerInterval: 0, intervalMilliseconds: 1000)
        for i in 0..<10_000 { _ = throttle.lines(for: "x", kind: "K", source: "source-\(i)", now: 0) }
        let summary = throttle.flush(now: 1000)
        XCTAssertEqual(summary.count, 1)
        XCTAssertTrue(summary[0].hasPrefix("... and 10000 more K"), summary[0])
        XCTAssertTrue(summary[0].contains("other sources"), summary[0])
        XCTAssertLessThan(summary[0].count, 300)
    }
}
