// Which process a connection belongs to, told without a system call. A counter that a
// pthread_atfork child handler bumps changes in every forked child and never in the
// parent, so comparing it does what comparing getpid() did, for an atomic load instead of
// one system call each time (four per signature before). The handler is registered the
// first time the counter is read, which every connection does when it opens, so it is in
// place before any fork that could inherit a connection.
//
// A child made without fork() (a raw clone, or glibc's _Fork) runs no atfork handler;
// nothing in the processes this serves (nginx, openssl, libssl programs) does that.

import Glibc
import Synchronization

/// Bumped in the child by the atfork handler; only ever read through `ForkGeneration`.
private let forks = Atomic<UInt64>(0)

private let handlerRegistered: Bool = {
    pthread_atfork(nil, nil, { forks.add(1, ordering: .relaxed) }) == 0
}()

public enum ForkGeneration {
    /// Changes in a forked child (and in its own children again), never in the process
    /// that read it.
    public static var current: UInt64 {
        guard handlerRegistered else {
            // Without the handler (pthread_atfork fails only for lack of memory), the
            // process id is the only way to tell; the top bit keeps it apart from counts.
            return UInt64(UInt32(bitPattern: getpid())) | 1 << 63
        }
        return forks.load(ordering: .acquiring)
    }
}
