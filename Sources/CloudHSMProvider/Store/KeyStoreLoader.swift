// The OSSL_STORE loader for the `cloudhsm:` scheme (provider-storemgmt(7)): programs that
// open a key by URI (`openssl pkey -in cloudhsm:label=...`, `req -key cloudhsm:handle=N`,
// `storeutl -keys cloudhsm:`, OSSL_STORE_open, nginx >= 1.27's `store:` keys) reach the
// crypto user's private keys without a key file, as pkcs11-provider's and tpm2-openssl's
// users do. `open` only parses the URI; the cluster is asked at the first `load`, after
// OpenSSL has said what it expects. Each key goes to libcrypto as a key object by
// reference (the decoder's way, pkcs11-provider's store.c), with the data type of its
// key type, so our keymgmt's `load` takes it: EC and any later key type come with their
// entry in Algorithms.keyTypes. There is no export_object: the private half never goes
// to another provider, and a public copy handed over would be listed as a public key.

import COpenSSL
import CloudHSMCore
import HSMClient

/// One store opened on a URI: the loader context OpenSSL holds from open to close (one
/// thread at a time, as OpenSSL uses a store).
final class KeyStore {
    let uri: StoreURI
    /// What the application expects (OSSL_STORE_INFO_*; 0: anything).
    private(set) var expected: Int32 = 0
    /// OSSL_STORE_find by alias: the label every key handed out must carry.
    private(set) var alias: String?
    private var cursor = StoreCursor<StoredKey>()

    init(uri: StoreURI) {
        self.uri = uri
    }

    var isAtEnd: Bool { cursor.isAtEnd }

    /// The parameters OpenSSL sets after open: `expect`, a search by `alias`, and
    /// `properties` (which this store has no use for). Searches the store cannot do are
    /// refused by name rather than ignored, which would hand out every key.
    func setParameters(_ reader: ParamReader) throws {
        let searches: [StaticString] = ["subject", "issuer", "serial", "fingerprint", "digest"]
        if let name = searches.first(where: { reader.contains($0) }) {
            throw ProviderError(
                .unsupported,
                "a cloudhsm: store finds private keys by handle and label (alias), not by \(name): name the key "
                    + "in the URI (\(StoreURI.forms))")
        }
        if let expected = try reader.int("expect") {
            guard let narrow = Int32(exactly: expected) else {
                throw ProviderError(.invalidInput, "parameter 'expect' value \(expected) is no object type")
            }
            self.expected = narrow
        }
        if let alias = try reader.string("alias") { self.alias = alias }
    }

    /// What the application gets for each private key the URI names.
    private enum Answer {
        /// The key object: sign and decrypt in the HSMs.
        case privateKey
        /// Its public half alone (`openssl pkey -pubin`, `dgst -verify`): the store hands
        /// out a public key when one is expected, as a file holding both would.
        case publicKey
        /// Certificates, CRLs, parameters: the cluster holds none.
        case nothing
    }

    private var answer: Answer {
        switch expected {
        case 0, Int32(OSSL_STORE_INFO_PKEY): return .privateKey
        case Int32(OSSL_STORE_INFO_PUBKEY): return .publicKey
        default: return .nothing
        }
    }

    /// Hands the next key to `callback`; 1 when there is none left. The first call asks
    /// the cluster.
    func loadNext(_ callback: DataCallback, _ argument: UnsafeMutableRawPointer?) -> Int32 {
        let answer = self.answer
        let next = reportingResult("loading \(uri)") { () -> ProviderKey? in
            let found = try cursor.advance {
                answer == .nothing ? [] : try runtime.keys.privateKeys(matching: uri, alias: alias)
            }
            guard let found else { return nil }
            do {
                return try key(for: found, publicOnly: answer == .publicKey)
            } catch {
                cursor.reportFailure()
                throw error
            }
        }
        guard let next else { return 0 }
        guard let key = next else { return 1 }
        let accepted = KeyReferenceDecoder.emit(key, callback, argument)
        if accepted == 0 { cursor.reportFailure() }
        return accepted
    }

    private func key(for found: StoredKey, publicOnly: Bool) throws -> ProviderKey {
        let key = try ProviderKey(reference: found.reference)
        guard key.type.hsmKeyType == found.attributes.keyType else {
            throw ProviderError(
                .malformedKeyReference,
                "key handle \(found.attributes.handle) is \(found.attributes.kindDescription), but its public "
                    + "key is \(key.type.displayName)")
        }
        // The cluster has just said this handle is this user's private key with this public
        // key: the first signature in this process need not ask again (KeyService.confirm
        // records a confirmation the same way).
        key.confirmedInProcess.store(ForkGeneration.current &+ 1, ordering: .releasing)
        trace("store: \(uri) yields key handle \(found.attributes.handle)\(publicOnly ? " (public half)" : "")")
        return publicOnly ? try key.publicHalf() : key
    }
}

/// The loader's dispatch table (its row in Algorithms.store).
enum KeyStoreLoader {
    static let dispatch: UnsafePointer<OSSL_DISPATCH> = {
        var table = DispatchTable()
        table.add(StoreSlot.open, storeOpen)
        table.add(StoreSlot.attach, storeAttach)
        table.add(StoreSlot.settableContextParams, storeSettableContextParams)
        table.add(StoreSlot.setContextParams, storeSetContextParams)
        table.add(StoreSlot.load, storeLoad)
        table.add(StoreSlot.eof, storeEOF)
        table.add(StoreSlot.close, storeClose)
        return table.finished()
    }()
}

// MARK: - Entry points, in the order OpenSSL calls them

private func storeOpen(_ provider: UnsafeMutableRawPointer?, _ uri: UnsafePointer<CChar>?) -> UnsafeMutableRawPointer? {
    reportingResult("opening a cloudhsm: URI") {
        guard let uri else { throw ProviderError(.invalidInput, "OpenSSL passed no URI to the cloudhsm: store") }
        guard let text = String(validatingCString: uri) else {
            throw ProviderError(.invalidInput, "malformed cloudhsm: URI: it is not UTF-8")
        }
        let parsed = try StoreURI(parsing: text)
        trace("store: opened \(parsed)")
        return retainedPointer(KeyStore(uri: parsed))
    }
}

/// OSSL_STORE_attach(bio, "cloudhsm", ...): there are no bytes to read a key from.
private func storeAttach(_ provider: UnsafeMutableRawPointer?, _ bio: OpaquePointer?) -> UnsafeMutableRawPointer? {
    reportingResult("attaching a cloudhsm: store") {
        throw ProviderError(
            .unsupported,
            "a cloudhsm: store reads keys from the HSM cluster, not from a BIO: open a URI (\(StoreURI.forms)), "
                + "or read a fake PEM through the file: store")
    }
}

private let settableParams = paramTable([
    ("expect", OSSL_PARAM_INTEGER),
    ("alias", OSSL_PARAM_UTF8_STRING),
    ("properties", OSSL_PARAM_UTF8_STRING),
])

private func storeSettableContextParams(_ provider: UnsafeMutableRawPointer?) -> UnsafePointer<OSSL_PARAM>? {
    settableParams
}

private func storeSetContextParams(_ context: UnsafeMutableRawPointer?, _ params: UnsafePointer<OSSL_PARAM>?)
    -> Int32
{
    reportingStatus("setting cloudhsm: store parameters") {
        try provided(context, as: KeyStore.self).setParameters(ParamReader(params))
    }
}

private func storeLoad(
    _ context: UnsafeMutableRawPointer?, _ callback: DataCallback?, _ argument: UnsafeMutableRawPointer?,
    _ passphrase: PassphraseCallback?, _ passphraseArgument: UnsafeMutableRawPointer?
) -> Int32 {
    guard let store = object(context, as: KeyStore.self), let callback else {
        return reportingStatus("loading from a cloudhsm: store") {
            throw ProviderError(.invalidInput, "OpenSSL passed no store or no object callback")
        }
    }
    return store.loadNext(callback, argument)
}

private func storeEOF(_ context: UnsafeMutableRawPointer?) -> Int32 {
    object(context, as: KeyStore.self)?.isAtEnd ?? true ? 1 : 0
}

private func storeClose(_ context: UnsafeMutableRawPointer?) -> Int32 {
    releasePointer(context, as: KeyStore.self)
    return 1
}
