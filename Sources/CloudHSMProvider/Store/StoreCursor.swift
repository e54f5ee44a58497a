// Where a store stands between OpenSSL's `load` and `eof` calls. Pure, so the order of
// answers is unit-tested: it decides whether a failed lookup reaches the user. OpenSSL
// 3.0's OSSL_STORE_load marks the store as failed only when `eof` is still false right
// after a `load` failed (crypto/store/store_lib.c), `openssl storeutl` counts an error only
// when `eof` stays false once more, and the apps' loader loops `while (!eof) load` (apps/lib/apps.c).
// So a failure keeps `eof` false until the next `load`, which then ends the store without
// a new error.

struct StoreCursor<Item> {
    private var items: [Item] = []
    private var next = 0
    private var searched = false
    private var failurePending = false

    /// What `eof` answers: true once every item was handed out and no failure waits to be seen.
    var isAtEnd: Bool { searched && !failurePending && next >= items.count }

    /// The next item, or nil when none is left. The first call runs `search`; when it
    /// throws, the error is rethrown and the store holds nothing.
    mutating func advance(search: () throws -> [Item]) rethrows -> Item? {
        failurePending = false
        if !searched {
            searched = true
            do {
                items = try search()
            } catch {
                failurePending = true
                throw error
            }
        }
        guard next < items.count else { return nil }
        defer { next += 1 }
        return items[next]
    }

    /// The item just handed out could not be passed on: `eof` stays false until the next
    /// `advance`, so OpenSSL records the failure.
    mutating func reportFailure() {
        failurePending = true
    }
}
