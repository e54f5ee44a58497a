// The nodes a routing round has tried, as bits of one word: node ids are 0...15 (the low
// four bits of a handle), and a Set<Int> cost an allocation and hashing on every request.

struct NodeIDSet: ExpressibleByArrayLiteral, Equatable {
    private var bits: UInt16 = 0

    init(arrayLiteral ids: Int...) {
        for id in ids { insert(id) }
    }

    /// - Precondition: `id` is in 0...15, as `ClusterConfiguration` guarantees.
    mutating func insert(_ id: Int) {
        precondition((0...15).contains(id), "node id \(id) is not in 0...15")
        bits |= 1 << UInt16(id)
    }

    func contains(_ id: Int) -> Bool { (0...15).contains(id) && bits & 1 << UInt16(id) != 0 }
}
