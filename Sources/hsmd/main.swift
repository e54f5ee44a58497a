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

func requireFile(_ path: String, _ what: String) {
    guard FileManager.default.isReadableFile(atPath: path) else {
        fail("cannot read the \(what) file \(path)", code: 1)
    }
}

switch command {
case .help:
    print(HSMDCommand.usage)

case .initialize(let options):
    do {
        let context = try CryptoContext()
        try NodeState.initialize(
            directory: options.dataDirectory, nodeID: options.nodeID, clusterID: options.clusterID,
            coPassword: options.coPassword, passwordIterations: options.passwordIterations, context: context)
        print("hsmd node \(options.nodeID) of cluster \(options.clusterID) initialised in \(options.dataDirectory)")
    } catch {
        fail("init failed: \(error)", code: 1)
    }

case .run(let options):
    // Signals go to one waiting thread, so shutdown runs as ordinary code. The mask
    // must be set before any thread starts, since threads inherit it.
    var signals = sigset_t()
    sigemptyset(&signals)
    sigaddset(&signals, SIGTERM)
    sigaddset(&signals, SIGINT)
    pthread_sigmask(SIG_BLOCK, &signals, nil)
    signal(SIGPIPE, SIG_IGN)

    requireFile(options.certificatePath, "certificate")
    requireFile(options.keyPath, "private key")
    requireFile(options.caPath, "CA certificate")
    let server: NodeServer
    let pool: WorkerPool
    let state: NodeState
    do {
        let context = try CryptoContext()
        state = try NodeState(
            directory: options.dataDirectory, passwordIterations: options.passwordIterations, context: context)
        let tls = try TLSContext.server(
            certificatePath: options.certificatePath, privateKeyPath: options.keyPath,
            trustAnchorPath: options.caPath, requireClientCertificate: false, context: context)
        pool = WorkerPool(
            workers: options.workers, queueLimit: options.queueLimit,
            operationsPerSecond: options.maxOperationsPerSecond)
        server = try NodeServer(
            handler: RequestHandler(state: state, executor: pool), host: options.host, port: options.port, tls: tls)
    } catch {
        fail("cannot start: \(error)", code: 1)
    }

    let awaited = signals
    let signalThread = Thread {
        var waitSet = awaited
        var received: Int32 = 0
        sigwait(&waitSet, &received)
        FileHandle.standardError.write(Data("hsmd: signal \(received), shutting down\n".utf8))
        server.stop()
        pool.stop()
        state.store.quiesce()  // no commit is cut in half
        exit(0)
    }
    signalThread.start()

    print("hsmd node \(state.nodeID) listening on \(options.host):\(server.port)")
    fflush(stdout)
    server.serve()
    // The listener only closes for shutdown; the signal thread exits the process.
    while true { sleep(60) }
}
