// hsmd: runs one emulated HSM node (see `hsmd --help` and docs/architecture.md).

import Foundation
import HSMNode
import OpenSSLKit

func fail(_ message: String, code: Int32) -> Never {
    FileHandle.standardError.write(Data("hsmd: \(message)\n".utf8))
    exit(code)
}

let command: HSMDCommand
do {
    command = try HSMDCommand.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    fail("\(error)\n\n\(HSMDCommand.usage)", code: 2)
}

/// Lifts the soft limit on open files to the hard one: every connection is a descriptor,
/// and the usual soft limit (1024) is below what --max-connections allows.
func raiseDescriptorLimit(for limits: ConnectionLimits) {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
    // Peers, the store and the listener need a few dozen more.
    let needed = rlim_t(limits.maxConnections + 64)
    if limit.rlim_cur < needed {
        FileHandle.standardError.write(
            Data(
                ("hsmd: warning: the open-file limit (\(limit.rlim_cur)) is below --max-connections "
                    + "\(limits.maxConnections) plus 64; raise it (ulimit -n) or lower --max-connections\n").utf8))
    }
}

func requireFile(_ path: String, _ what: String) {
    guard FileManager.default.isReadableFile(atPath: path) else {
        fail("cannot read the \(what) file \(path)", code: 1)
    }
}

switch command {
case .help:
    print(HSMDCommand.usage)

case .initialize(let options):
    if case .argument = options.coPassword {
        FileHandle.standardError.write(
            Data(
                "hsmd: note: --co-password is visible to other users while init runs; prefer --co-password-file\n".utf8)
        )
    }
    do {
        let password = try options.coPassword.read()
        let context = try CryptoContext()
        try NodeState.initialize(
            directory: options.dataDirectory, nodeID: options.nodeID, clusterID: options.clusterID,
            coPassword: password, passwordIterations: options.passwordIterations, context: context)
        print("hsmd node \(options.nodeID) of cluster \(options.clusterID) initialised in \(options.dataDirectory)")
    } catch {
        fail("init failed: \(error)", code: 1)
    }

case .run(let options):
    // Signals go to one waiting thread, so shutdown and log reopening run as ordinary
    // code. The mask must be set before any thread starts, since threads inherit it.
    var signals = sigset_t()
    sigemptyset(&signals)
    sigaddset(&signals, SIGTERM)
    sigaddset(&signals, SIGINT)
    sigaddset(&signals, SIGHUP)
    pthread_sigmask(SIG_BLOCK, &signals, nil)
    signal(SIGPIPE, SIG_IGN)

    if let path = options.logFile {
        do {
            try NodeLog.redirect(to: path)
        } catch {
            fail("\(error)", code: 1)
        }
    }
    raiseDescriptorLimit(for: options.connectionLimits)

    requireFile(options.certificatePath, "certificate")
    requireFile(options.keyPath, "private key")
    requireFile(options.caPath, "CA certificate")
    let server: NodeServer
    let pool: CryptoCapacity
    let state: NodeState
    var replicator: Replicator? = nil
    var metricsServer: MetricsServer? = nil
    do {
        let context = try CryptoContext()
        state = try NodeState(
            directory: options.dataDirectory, passwordIterations: options.passwordIterations, context: context)
        // Peers present their node certificate; tools present none and are still served.
        let tls = try TLSContext.server(
            certificatePath: options.certificatePath, privateKeyPath: options.keyPath,
            trustAnchorPath: options.caPath, requireClientCertificate: false,
            requestClientCertificate: !options.peers.isEmpty, context: context)
        pool = CryptoCapacity(
            workers: options.workers, queueLimit: options.queueLimit,
            operationsPerSecond: options.maxOperationsPerSecond)
        server = try NodeServer(
            handler: RequestHandler(state: state, executor: pool), host: options.host, port: options.port, tls: tls,
            limits: options.connectionLimits)
        if !options.peers.isEmpty, let keyPath = options.clusterKeyPath {
            let peerTLS = try TLSContext.client(
                trustAnchorPath: options.caPath, certificatePath: options.certificatePath,
                privateKeyPath: options.keyPath, context: context)
            replicator = try Replicator(
                state: state, peers: options.peers, clusterKey: try ClusterKey.load(path: keyPath), tls: peerTLS,
                minNodes: options.minNodes, syncInterval: Double(options.syncIntervalMilliseconds) / 1000,
                connectTimeoutMilliseconds: options.peerTimeoutMilliseconds, context: context)
            server.replicator = replicator
        }
        pool.report(to: state.metrics)
        if let address = options.metricsListen {
            metricsServer = try MetricsServer(host: address.host, port: address.port, metrics: state.metrics)
        }
    } catch {
        fail("cannot start: \(error)", code: 1)
    }

    let awaited = signals
    let stoppingReplicator = replicator
    let stoppingMetrics = metricsServer
    let signalThread = Thread {
        var waitSet = awaited
        var received: Int32 = 0
        while true {
            sigwait(&waitSet, &received)
            guard received == SIGHUP else { break }
            do {
                try NodeLog.reopen()
                FileHandle.standardError.write(Data("hsmd: SIGHUP: log file reopened\n".utf8))
            } catch {
                // The old file stays in use; say so there.
                FileHandle.standardError.write(Data("hsmd: SIGHUP: \(error); still logging to the old file\n".utf8))
            }
        }
        FileHandle.standardError.write(Data("hsmd: signal \(received), shutting down\n".utf8))
        server.stop()
        stoppingMetrics?.stop()
        stoppingReplicator?.stop()
        pool.stop()
        state.store.quiesce()  // no commit is cut in half
        exit(0)
    }
    signalThread.start()

    // Before the listening line, which scripts wait for: by then this line is there too.
    if let metricsServer, let address = options.metricsListen {
        metricsServer.start()
        print("hsmd node \(state.nodeID) metrics on \(address.url(port: metricsServer.port))/metrics")
        fflush(stdout)
    }

    if let replicator {
        // The listener already accepts (peers' first syncs land in its backlog), and a
        // first pull from every reachable peer happens before the node says it is ready,
        // so a node back from a crash does not serve a stale view.
        let serving = server
        let serveThread = Thread { serving.serve() }
        serveThread.stackSize = 1 << 20
        serveThread.start()
        replicator.start()
        FileHandle.standardError.write(
            Data(
                ("hsmd: replicating with peers \(replicator.peerIDs.map(String.init).joined(separator: ",")); "
                    + "new token keys need \(replicator.minNodes) node(s)\n").utf8))
        print("hsmd node \(state.nodeID) listening on \(options.host):\(server.port)")
        fflush(stdout)
        while true { sleep(60) }
    }
    print("hsmd node \(state.nodeID) listening on \(options.host):\(server.port)")
    fflush(stdout)
    server.serve()
    // The listener only closes for shutdown; the signal thread exits the process.
    while true { sleep(60) }
}
