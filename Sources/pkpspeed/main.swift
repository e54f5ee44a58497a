// pkpspeed: a load generator in the spirit of AWS CloudHSM's pkpspeed. N threads sign (or
// decrypt) with one HSM key through ONE shared ClusterClient for T seconds, then print
// operations per second, latency percentiles and the slowest operation, errors and the share
// each node served (from the nodes' own counters, read before and after). This tool is never loaded into a host
// process, so Foundation threads are fine here (unlike in HSMClient itself).

import CloudHSMCore
import Foundation
import HSMClient
import OpenSSLKit
import Synchronization

let usage = """
    usage: pkpspeed [-s USER -p PASSWORD] [-k HANDLE | -f FAKE_PEM] [-t THREADS] [-d SECONDS]
                    [-o sign|decrypt] [-m BITS] [--node-pids PID,...] [--json]
      -s, -p   crypto user and password (default: n3fips_password or CLOUDHSM_PIN, user:password)
      -k       private key handle to use;  -f  a fake PEM file naming it
               (neither: a token RSA key of -m bits is generated first)
      -t       client threads (default 4);  -d  seconds to run (default 10)
      -n       stop after this many operations in all (within -d)
      -o       sign (SHA-256 PKCS#1 v1.5, default) or decrypt (PKCS#1 v1.5)
      -m       modulus bits of a generated key (default 2048)
      --node-pids  the local hsmd processes serving the run: also report the CPU time
               they used during the timed run per operation they served (from /proc)
      --json   one JSON object instead of text
    The cluster configuration comes from CLOUDHSM_CONFIG (else /etc/cloudhsm/cluster.cfg).
    """

struct Options {
    var user: String?
    var password: String?
    var handle: KeyHandle?
    var pemPath: String?
    var threads = 4
    var seconds = 10.0
    var operation = "sign"
    var bits = 2048
    var json = false
    var total: Int?
    var nodePIDs: [Int32] = []
}

func fail(_ message: String, status: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data("pkpspeed: \(message)\n".utf8))
    exit(status)
}

func parseOptions(_ arguments: [String]) -> Options {
    var options = Options()
    var rest = arguments[...]
    func value(_ flag: String) -> String {
        guard let next = rest.popFirst() else { fail("\(flag) needs a value\n\(usage)", status: 2) }
        return next
    }
    while let flag = rest.popFirst() {
        switch flag {
        case "-s": options.user = value(flag)
        case "-p": options.password = value(flag)
        case "-k":
            guard let handle = KeyHandle(value(flag)) else { fail("-k needs a key handle", status: 2) }
            options.handle = handle
        case "-f": options.pemPath = value(flag)
        case "-t":
            guard let threads = Int(value(flag)), (1...1024).contains(threads) else {
                fail("-t needs a thread count from 1 to 1024", status: 2)
            }
            options.threads = threads
        case "-d":
            guard let seconds = Double(value(flag)), seconds > 0, seconds <= 86400 else {
                fail("-d needs a number of seconds", status: 2)
            }
            options.seconds = seconds
        case "-o":
            options.operation = value(flag)
            guard ["sign", "decrypt"].contains(options.operation) else { fail("-o must be sign or decrypt", status: 2) }
        case "-m":
            guard let bits = Int(value(flag)), [1024, 2048, 3072, 4096].contains(bits) else {
                fail("-m must be 1024, 2048, 3072 or 4096", status: 2)
            }
            options.bits = bits
        case "-n":
            guard let total = Int(value(flag)), total > 0 else { fail("-n needs a positive count", status: 2) }
            options.total = total
        case "--node-pids":
            let pids = value(flag).split(separator: ",").map { Int32($0) }
            guard !pids.isEmpty, pids.allSatisfy({ ($0 ?? 0) > 0 }) else {
                fail("--node-pids needs process ids separated by commas", status: 2)
            }
            options.nodePIDs = pids.compactMap { $0 }
        case "--json": options.json = true
        case "-h", "--help":
            print(usage)
            exit(0)
        default: fail("unknown argument '\(flag)'\n\(usage)", status: 2)
        }
    }
    if options.handle != nil && options.pemPath != nil { fail("give -k or -f, not both", status: 2) }
    return options
}

/// The node's own sign and decrypt counters, by node id; nodes that do not answer are left out.
func nodeCounters(_ client: ClusterClient) -> [Int: (sign: UInt64, decrypt: UInt64)] {
    var counters: [Int: (UInt64, UInt64)] = [:]
    for node in client.nodes {
        if case .success(let response) = client.send(.nodeInfo, to: node.id), case .nodeInfo(let info) = response.body {
            counters[node.id] = (info.signOperations, info.decryptOperations)
        }
    }
    return counters
}

/// CPU time (user + system) a process has used, in microseconds, from /proc/PID/stat.
func processCPUMicroseconds(_ pid: Int32) -> Double? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let end = stat.lastIndex(of: ")")
    else { return nil }
    // After "pid (comm) ": state is field 3, utime and stime are fields 14 and 15.
    let fields = stat[stat.index(after: end)...].split(separator: " ")
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) * 1_000_000 / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// CPU time this process has used, in microseconds.
func ownCPUMicroseconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func microseconds(_ time: timeval) -> Double { Double(time.tv_sec) * 1_000_000 + Double(time.tv_usec) }
    return microseconds(usage.ru_utime) + microseconds(usage.ru_stime)
}

func nodesCPUMicroseconds() -> Double? {
    let times = options.nodePIDs.map(processCPUMicroseconds)
    guard times.allSatisfy({ $0 != nil }) else { return nil }
    return times.compactMap { $0 }.reduce(0, +)
}

func percentile(_ sorted: [Double], _ fraction: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    let index = min(sorted.count - 1, max(0, Int((fraction * Double(sorted.count)).rounded(.up)) - 1))
    return sorted[index]
}

func rounded(_ value: Double, _ places: Double = 1000) -> Double { (value * places).rounded() / places }

let options = parseOptions(Array(CommandLine.arguments.dropFirst()))
let credentials: Credentials
do {
    if let user = options.user, let password = options.password {
        credentials = Credentials(user: user, password: password)
    } else if options.user != nil || options.password != nil {
        fail("give both -s and -p (or neither, with n3fips_password set)", status: 2)
    } else {
        credentials = try Credentials.fromEnvironment()
    }
} catch { fail("\(error)", status: 2) }

let crypto: CryptoContext
let client: ClusterClient
do {
    crypto = try CryptoContext()
    client = try ClusterClient(configuration: try ClusterConfiguration.load(), cryptoContext: crypto)
} catch { fail("\(error)") }

let logins = client.login(credentials)
guard logins.contains(where: \.isSuccess) else {
    fail("login failed on every node:\n" + logins.map(\.statusLine).joined(separator: "\n"))
}
for result in logins where !result.isSuccess {
    FileHandle.standardError.write(Data("pkpspeed: warning: \(result.statusLine)\n".utf8))
}

// The key: given, named by a fake PEM, or made now.
var handle: KeyHandle
var generated = false
if let given = options.handle {
    handle = given
} else if let path = options.pemPath {
    do {
        handle = try KeyReference(pem: String(contentsOfFile: path, encoding: .utf8)).handle
    } catch { fail("\(path): \(error)") }
} else {
    let outcome = client.create(
        .generateRSAKeyPair(
            modulusBits: UInt32(options.bits), publicExponent: 65537, label: "pkpspeed", isSession: false,
            isExtractable: false))
    guard case .success(let response) = outcome.result, case .keyPair(_, let privateKey) = response.body else {
        fail("generating an RSA key failed: \(outcome.result)")
    }
    handle = privateKey
    generated = true
}

// The public key, to make a ciphertext for decrypt and to check one signature.
let publicKey: RSAPublicKey
do {
    let outcome = client.perform(.getAttributes(handle), key: handle)
    guard case .success(let response) = outcome.result, case .attributes(let attributes) = response.body else {
        fail("reading key \(handle) failed: \(outcome.result)")
    }
    guard attributes.keyClass == .privateKey, attributes.keyType == .rsa else {
        fail("key \(handle) is not an RSA private key")
    }
    publicKey = try RSAPublicKey(publicKeyInfo: attributes.publicKeyInfo, context: crypto)
} catch { fail("key \(handle): \(error)") }

let digest: [UInt8]
let request: HSMRequest
do {
    digest = try Digest.hash(Array("pkpspeed".utf8), algorithm: .sha256, context: crypto)
    if options.operation == "sign" {
        request = .sign(key: handle, mechanism: .pkcs1(digest: .sha256), data: digest)
        guard case .success(let response) = client.perform(request, key: handle).result,
            case .bytes(let signature) = response.body,
            publicKey.verify(signature: signature, digest: digest, mechanism: .pkcs1(digest: .sha256))
        else { fail("the first signature did not verify with key \(handle)'s public key") }
    } else {
        let ciphertext = try publicKey.encrypt(digest, mechanism: .pkcs1)
        request = .decrypt(key: handle, mechanism: .pkcs1, data: ciphertext)
        guard case .success(let response) = client.perform(request, key: handle).result,
            case .bytes(let plaintext) = response.body, plaintext == digest
        else { fail("the first decryption did not return the plaintext with key \(handle)") }
    }
} catch { fail("preparing the \(options.operation) request: \(error)") }

// Warm-up, not timed: every thread sends the request once to every node, so each node
// has its connections open and logged in (a login is a deliberately slow password hash)
// and holds the key before the clock starts. What follows measures steady state.
do {
    let warmed = DispatchGroup()
    for _ in 0..<options.threads {
        warmed.enter()
        Thread {
            for node in client.nodes { _ = client.send(request, to: node.id) }
            warmed.leave()
        }.start()
    }
    warmed.wait()
}

let before = nodeCounters(client)
let clientBefore = client.statistics()
let nodesCPUBefore = options.nodePIDs.isEmpty ? nil : nodesCPUMicroseconds()
let ownCPUBefore = ownCPUMicroseconds()

// The run: every thread loops until the deadline, timing each operation.
final class ThreadResult: @unchecked Sendable {
    var latencies: [Double] = []
    /// The slowest operation, failed ones included: what one caller waited at worst.
    var slowest = 0.0
    var errors = 0
    var firstError: String?
}
let results = (0..<options.threads).map { _ in ThreadResult() }
let start = Date()
let deadline = start.addingTimeInterval(options.seconds)
let finished = DispatchGroup()
/// Operations claimed so far, for -n: each thread claims one before it starts it.
let claimed = Atomic<Int>(0)
let limit = options.total ?? Int.max
for result in results {
    finished.enter()
    let thread = Thread {
        result.latencies.reserveCapacity(4096)
        while Date() < deadline, claimed.wrappingAdd(1, ordering: .relaxed).oldValue < limit {
            let began = DispatchTime.now().uptimeNanoseconds
            let outcome = client.perform(request, key: handle)
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - began) / 1_000_000
            result.slowest = max(result.slowest, elapsed)
            if case .failure(let error) = outcome.result {
                result.errors += 1
                if result.firstError == nil { result.firstError = error.description }
            } else {
                result.latencies.append(elapsed)
            }
        }
        finished.leave()
    }
    thread.stackSize = 1 << 20
    thread.start()
}
finished.wait()
let wall = Date().timeIntervalSince(start)
let ownCPU = ownCPUMicroseconds() - ownCPUBefore
let nodesCPU = nodesCPUBefore.flatMap { before in nodesCPUMicroseconds().map { $0 - before } }

let after = nodeCounters(client)
let clientAfter = client.statistics()
let latencies = results.flatMap(\.latencies).sorted()
let errors = results.map(\.errors).reduce(0, +)
let firstError = results.compactMap(\.firstError).first
let slowest = results.map(\.slowest).max() ?? 0
let operations = latencies.count
let perSecond = Double(operations) / wall

struct NodeShare {
    var id: Int
    var address: String
    var served: UInt64?
    var clientSent: UInt64
    var failures: UInt64
    var busy: UInt64
    var down: Bool
}
var shares: [NodeShare] = []
for (index, node) in client.nodes.enumerated() {
    var served: UInt64?
    if let b = before[node.id], let a = after[node.id] {
        served = options.operation == "sign" ? a.sign &- b.sign : a.decrypt &- b.decrypt
    }
    shares.append(
        NodeShare(
            id: node.id, address: node.description, served: served,
            clientSent: clientAfter[index].requestsSent - clientBefore[index].requestsSent,
            failures: clientAfter[index].failures - clientBefore[index].failures,
            busy: clientAfter[index].busyAnswers - clientBefore[index].busyAnswers, down: clientAfter[index].isDown))
}
let servedTotal = shares.compactMap(\.served).reduce(0, +)
/// This process's CPU time per operation during the timed run: what the client side of
/// each operation costs (the timing and bookkeeping of the run included).
let clientCPUPerOperation = operations > 0 ? ownCPU / Double(operations) : 0
/// The listed nodes' CPU time during the timed run per operation they served.
let nodeCPUPerOperation = nodesCPU.flatMap { cpu in servedTotal > 0 ? cpu / Double(servedTotal) : nil }
func share(_ served: UInt64?) -> Double {
    guard let served, servedTotal > 0 else { return 0 }
    return rounded(Double(served) * 100 / Double(servedTotal), 10)
}

if options.json {
    var object: [String: Any] = [
        "operation": options.operation, "key_handle": handle, "key_generated": generated, "threads": options.threads,
        "seconds": rounded(wall), "operations": operations, "errors": errors,
        "ops_per_second": rounded(perSecond, 10), "latency_ms_p50": rounded(percentile(latencies, 0.5)),
        "latency_ms_p99": rounded(percentile(latencies, 0.99)), "latency_ms_max": rounded(slowest),
        "client_cpu_us_per_op": rounded(clientCPUPerOperation, 10),
        "nodes": shares.map { node -> [String: Any] in
            [
                "id": node.id, "address": node.address, "served": node.served.map { Int($0) } ?? NSNull(),
                "share_percent": share(node.served), "client_sent": node.clientSent, "client_failures": node.failures,
                "client_busy_answers": node.busy, "down_at_end": node.down,
            ]
        },
    ]
    if let firstError { object["first_error"] = firstError }
    if let nodeCPUPerOperation { object["node_cpu_us_per_op"] = rounded(nodeCPUPerOperation, 10) }
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
} else {
    print(
        "operation: \(options.operation) key_handle: \(handle)\(generated ? " (generated)" : "") threads: \(options.threads) seconds: \(rounded(wall))"
    )
    print("operations: \(operations)")
    print("errors: \(errors)\(firstError.map { " (first: \($0))" } ?? "")")
    print("ops_per_second: \(rounded(perSecond, 10))")
    print(
        "latency_ms: p50 \(rounded(percentile(latencies, 0.5))) p99 \(rounded(percentile(latencies, 0.99))) "
            + "max \(rounded(slowest))")
    print("client_cpu_us_per_op: \(rounded(clientCPUPerOperation, 10))")
    if let nodeCPUPerOperation { print("node_cpu_us_per_op: \(rounded(nodeCPUPerOperation, 10))") }
    for node in shares {
        let served = node.served.map(String.init) ?? "unknown"
        print(
            "node \(node.id) \(node.address): served \(served) share \(share(node.served))% client_sent \(node.clientSent) "
                + "failures \(node.failures) busy \(node.busy)\(node.down ? " down" : "")")
    }
}
client.close()
exit(errors == 0 ? 0 : 3)
