// `cloudhsm_check --stats`: what the client pool sees of each node. The pool lives in each
// process that uses the cluster (every nginx worker has its own), so no outside command
// can read another process's view; this one runs its own operations through HSMClient,
// the pool the provider uses, and prints the pool's per-node view of that run: up or
// down, requests outstanding, failures, throttled answers, retries and latency. It does
// not load the provider. README.md ("Operating") says how to read the numbers.

import CloudHSMCore
import Foundation
import HSMClient
import OpenSSLKit
import Synchronization

struct StatisticsOptions {
    var keyPath = ""
    var operations = 60
    var threads = 4
    var json = false

    static let usage = """
        usage: cloudhsm_check --stats [-n OPERATIONS] [-t THREADS] [--json] <fake PEM key file>

        Signs OPERATIONS (default 60) test digests with the key on THREADS (default 4)
        threads through the cluster client, verifies every signature, and prints what
        this process's client pool saw of each node. Needs CLOUDHSM_CONFIG (or
        cluster_config in OPENSSL_CONF's file) and n3fips_password or CLOUDHSM_PIN.
        """

    static func parse(_ arguments: [String]) throws -> StatisticsOptions {
        var options = StatisticsOptions()
        var rest = arguments[...]
        var key: String? = nil
        func count(_ flag: String, _ range: ClosedRange<Int>) throws -> Int {
            guard let text = rest.popFirst() else { throw StatisticsError("\(flag) needs a value") }
            guard let value = Int(text), range.contains(value) else {
                throw StatisticsError(
                    "\(flag) must be a whole number in \(range.lowerBound)...\(range.upperBound), not '\(text)'")
            }
            return value
        }
        while let argument = rest.popFirst() {
            switch argument {
            case "-n": options.operations = try count("-n", 1...100_000)
            case "-t": options.threads = try count("-t", 1...64)
            case "--json": options.json = true
            default:
                guard !argument.hasPrefix("-"), key == nil else {
                    throw StatisticsError("unexpected argument '\(argument)'")
                }
                key = argument
            }
        }
        guard let key else { throw StatisticsError("no fake PEM key file given") }
        options.keyPath = key
        return options
    }
}

struct StatisticsError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// What the run saw of one node, beside the pool's own counters.
struct NodeRun {
    /// Operations whose answer (success) came from this node, and what each took.
    var latencies: [Double] = []
    /// Operations that tried this node and moved on to another.
    var retries = 0
    var peakOutstanding = 0
}

/// The signing test: one request, and how to check its answer.
struct SigningTest {
    let request: HSMRequest
    let digest: [UInt8]
    let verify: ([UInt8]) -> Bool
    let description: String

    init(key: KeyReference, context: CryptoContext) throws {
        digest = try Digest.hash(Array("cloudhsm_check --stats".utf8), algorithm: .sha256, context: context)
        if let rsa = try? RSAPublicKey(publicKeyInfo: key.publicKeyInfo, context: context) {
            request = .sign(key: key.handle, mechanism: .pkcs1(digest: .sha256), data: digest)
            let digest = digest
            verify = { rsa.verify(signature: $0, digest: digest, mechanism: .pkcs1(digest: .sha256)) }
            description = "RSA PKCS#1 v1.5 SHA-256"
        } else {
            let ec = try ECPublicKey(publicKeyInfo: key.publicKeyInfo, context: context)
            request = .sign(key: key.handle, mechanism: .ecdsa(digest: .sha256), data: digest)
            let digest = digest
            verify = { ec.verify(signature: $0, digest: digest) }
            description = "ECDSA SHA-256"
        }
    }
}

/// Shared by the run's threads; guarded by `lock`.
final class RunRecord: @unchecked Sendable {
    let lock = NSLock()
    var nodes: [Int: NodeRun] = [:]
    var succeeded = 0
    var failed = 0
    var notVerified = 0
    var firstError: String?
}

func runPoolStatistics(_ arguments: [String]) -> Never {
    if arguments.contains("-h") || arguments.contains("--help") {
        print(StatisticsOptions.usage)
        exit(0)
    }
    let options: StatisticsOptions
    do {
        options = try StatisticsOptions.parse(arguments)
    } catch {
        FileHandle.standardError.write(Data("cloudhsm_check: \(error)\n\n\(StatisticsOptions.usage)\n".utf8))
        exit(2)
    }
    func stop(_ message: String) -> Never {
        print("FAIL  \(message)")
        exit(1)
    }

    let context: CryptoContext
    let key: KeyReference
    let test: SigningTest
    do {
        context = try CryptoContext()
        key = try KeyReference(pem: String(contentsOfFile: options.keyPath, encoding: .utf8))
        test = try SigningTest(key: key, context: context)
    } catch {
        stop("\(options.keyPath): \(error)")
    }
    let configuration: ClusterConfiguration
    let credentials: Credentials
    do {
        configuration = try ClusterConfiguration.load(path: clusterConfigurationPath())
        credentials = try Credentials.fromEnvironment()
    } catch {
        stop("\(error)")
    }
    guard configuration.clusterID == key.clusterID else {
        stop(
            "\(options.keyPath) names cluster \(key.clusterID), but \(configuration.source) is cluster "
                + "\(configuration.clusterID)")
    }
    let client: ClusterClient
    do {
        client = try ClusterClient(configuration: configuration, cryptoContext: context)
    } catch {
        stop("\(error)")
    }
    let logins = client.login(credentials)
    guard logins.contains(where: \.isSuccess) else {
        stop("login failed on every node:\n" + logins.map { "    " + $0.statusLine }.joined(separator: "\n"))
    }

    let record = RunRecord()
    let claimed = Atomic<Int>(0)
    let running = Atomic<Int>(options.threads)
    let started = Date()
    let group = DispatchGroup()
    // Outstanding requests are a moment's value: sample them while the run lasts.
    group.enter()
    Thread {
        while running.load(ordering: .relaxed) > 0 {
            let now = client.statistics()
            record.lock.withLock {
                for node in now {
                    record.nodes[node.node.id, default: NodeRun()].peakOutstanding = max(
                        record.nodes[node.node.id, default: NodeRun()].peakOutstanding, node.outstanding)
                }
            }
            usleep(2000)
        }
        group.leave()
    }.start()
    for _ in 0..<options.threads {
        group.enter()
        Thread {
            while claimed.wrappingAdd(1, ordering: .relaxed).oldValue < options.operations {
                let began = monotonicSeconds()
                let outcome = client.perform(test.request, key: key.handle)
                let elapsed = (monotonicSeconds() - began) * 1000
                record.lock.withLock {
                    for attempt in outcome.attempts.dropLast() {
                        record.nodes[attempt.nodeID, default: NodeRun()].retries += 1
                    }
                    switch outcome.result {
                    case .success(let response):
                        guard case .bytes(let signature) = response.body, test.verify(signature) else {
                            record.notVerified += 1
                            return
                        }
                        record.succeeded += 1
                        if let last = outcome.attempts.last {
                            record.nodes[last.nodeID, default: NodeRun()].latencies.append(elapsed)
                        }
                    case .failure(let error):
                        record.failed += 1
                        if record.firstError == nil { record.firstError = error.description }
                    }
                }
            }
            running.subtract(1, ordering: .relaxed)
            group.leave()
        }.start()
    }
    group.wait()
    let seconds = Date().timeIntervalSince(started)
    let after = client.statistics()
    client.close()

    let rows = after.map { StatisticsRow(after: $0, run: record.nodes[$0.node.id] ?? NodeRun()) }
    let ok = record.failed == 0 && record.notVerified == 0
    if options.json {
        var object: [String: Any] = [
            "key_handle": key.handle, "operation": test.description, "operations": options.operations,
            "threads": options.threads, "seconds": (seconds * 1000).rounded() / 1000, "succeeded": record.succeeded,
            "failed": record.failed, "not_verified": record.notVerified, "nodes": rows.map(\.json),
        ]
        if let error = record.firstError { object["first_error"] = error }
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    } else {
        print(
            "cloudhsm_check --stats: \(options.operations) signatures (\(test.description)) with key \(key.handle) "
                + "on \(options.threads) threads in \(String(format: "%.2f", seconds)) s: \(record.succeeded) verified, "
                + "\(record.failed) failed\(record.notVerified > 0 ? ", \(record.notVerified) did not verify" : "")")
        if let error = record.firstError { print("first failure: \(error)") }
        for login in logins where !login.isSuccess { print("login: \(login.statusLine)") }
        print("this process's client pool, per node (see README.md, Operating):")
        print(StatisticsRow.header)
        for row in rows { print(row.line) }
        for row in rows where row.after.isDown || row.after.reason != nil {
            print("node \(row.after.node.id): \(row.after.isDown ? "" : "last failure: ")\(row.after.reason ?? "")")
        }
    }
    exit(ok ? 0 : 1)
}

/// One node's line: the pool's counters (since this process started: its login
/// included) and what the run measured.
struct StatisticsRow {
    let after: ClusterClient.NodeStatistics
    let run: NodeRun

    var sent: UInt64 { after.requestsSent }
    var failures: UInt64 { after.failures }
    var busy: UInt64 { after.busyAnswers }
    var probes: UInt64 { after.probes }
    var sorted: [Double] { run.latencies.sorted() }

    static let header =
        "node  address                  state  sent  answered  failures  busy  retries  probes  outstanding(peak)  "
        + "connections  latency ms p50/p99/max"

    var line: String {
        let latencies = sorted
        let latency =
            latencies.isEmpty
            ? "-"
            : [0.5, 0.99].map { format(percentile(latencies, $0)) }.joined(separator: "/") + "/"
                + format(latencies.last!)
        return [
            pad(String(after.node.id), 4), pad(after.node.description, 23), pad(after.isDown ? "down" : "up", 5),
            pad(String(sent), 4), pad(String(latencies.count), 8), pad(String(failures), 8), pad(String(busy), 4),
            pad(String(run.retries), 7), pad(String(probes), 6),
            pad("\(after.outstanding)(\(run.peakOutstanding))", 17), pad(String(after.openConnections), 11), latency,
        ].joined(separator: "  ")
    }

    var json: [String: Any] {
        let latencies = sorted
        var object: [String: Any] = [
            "id": after.node.id, "address": after.node.description, "up": !after.isDown, "sent": sent,
            "answered": latencies.count, "failures": failures, "busy_answers": busy, "retries": run.retries,
            "probes": probes, "outstanding": after.outstanding, "peak_outstanding": run.peakOutstanding,
            "open_connections": after.openConnections,
        ]
        if let reason = after.reason { object["reason"] = reason }
        if !latencies.isEmpty {
            object["latency_ms_p50"] = percentile(latencies, 0.5)
            object["latency_ms_p99"] = percentile(latencies, 0.99)
            object["latency_ms_max"] = latencies.last!
        }
        return object
    }

    private func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }

    private func format(_ milliseconds: Double) -> String { String(format: "%.1f", milliseconds) }
}

/// Nearest-rank percentile of sorted values.
func percentile(_ sorted: [Double], _ fraction: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    let index = min(sorted.count - 1, max(0, Int((fraction * Double(sorted.count)).rounded(.up)) - 1))
    return sorted[index]
}

func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// The cluster configuration the provider would use: CLOUDHSM_CONFIG, else the
/// cluster_config line of OPENSSL_CONF's file, else /etc/cloudhsm/cluster.cfg.
func clusterConfigurationPath() -> String {
    if let path = ProcessInfo.processInfo.environment[ClusterConfiguration.environmentVariable], !path.isEmpty {
        return path
    }
    if let conf = ProcessInfo.processInfo.environment["OPENSSL_CONF"],
        let text = try? String(contentsOfFile: conf, encoding: .utf8)
    {
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2, parts[0] == "cluster_config", !parts[1].isEmpty { return parts[1] }
        }
    }
    return ClusterConfiguration.defaultPath
}
