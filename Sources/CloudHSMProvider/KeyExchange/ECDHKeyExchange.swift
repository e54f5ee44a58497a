// ECDH with an EC key of ours, which the provider refuses by name. The HSMs hold EC keys
// for ECDSA only, and TLS makes its ECDHE key shares in software, so nothing needs this
// but a clear answer: without a key exchange of ours, OpenSSL would try the default
// provider, fail to export the private half, and report only "operation not supported".
// Software EC keys never come here (provider.cnf prefers the default provider's ECDH).

import COpenSSL

enum ECDHKeyExchange {
    /// The refusal, for the key an init or set_peer hands us.
    static func refusal(for keydata: UnsafeRawPointer?, role: String) throws -> ProviderError {
        let key = try KeyHolder.key(keydata)
        if let reference = key.reference {
            return ProviderError(
                .unsupported,
                "ECDH with EC key handle \(reference.handle) refused: the HSMs hold EC keys for ECDSA signatures "
                    + "only (TLS makes its ECDHE key shares in software)")
        }
        return ProviderError(
            .unsupported,
            "ECDH with an EC public key held by the CloudHSM provider (as the \(role)) refused: derive with the "
                + "default provider's keys")
    }

    static let dispatch: UnsafePointer<OSSL_DISPATCH> = {
        var table = DispatchTable()
        table.add(KeyExchangeSlot.newContext, ecdhNewContext)
        table.add(KeyExchangeSlot.freeContext, ecdhFreeContext)
        table.add(KeyExchangeSlot.initialize, ecdhInit)
        table.add(KeyExchangeSlot.setPeer, ecdhSetPeer)
        table.add(KeyExchangeSlot.derive, ecdhDerive)
        return table.finished()
    }()
}

/// The exchange keeps no state; any non-NULL context will do.
private func ecdhNewContext(_ provider: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    UnsafeMutableRawPointer(mutating: cString("ECDH"))
}

private func ecdhFreeContext(_ context: UnsafeMutableRawPointer?) {}

private func ecdhInit(
    _ context: UnsafeMutableRawPointer?, _ key: UnsafeMutableRawPointer?, _ params: UnsafePointer<OSSL_PARAM>?
) -> Int32 {
    reportingStatus("starting ECDH") { throw try ECDHKeyExchange.refusal(for: key, role: "own key") }
}

private func ecdhSetPeer(_ context: UnsafeMutableRawPointer?, _ key: UnsafeMutableRawPointer?) -> Int32 {
    reportingStatus("setting the ECDH peer key") { throw try ECDHKeyExchange.refusal(for: key, role: "peer key") }
}

private func ecdhDerive(
    _ context: UnsafeMutableRawPointer?, _ secret: UnsafeMutablePointer<UInt8>?,
    _ secretLength: UnsafeMutablePointer<Int>?, _ capacity: Int
) -> Int32 {
    reportingStatus("deriving an ECDH secret") {
        throw ProviderError(.unsupported, "ECDH with keys of the CloudHSM provider is refused")
    }
}
