// TLS 1.3 contexts for the node (server) and the cluster client, made in a private
// library context. The client trusts only the cluster CA named in its configuration.

import COpenSSL

/// Owns an `SSL_CTX`. Configured once, then shared by every connection.
public final class TLSContext: @unchecked Sendable {
    // An SSL_CTX is safe to use from many threads once configuration is finished,
    // and nothing configures it after the factory methods return.
    let pointer: OpaquePointer
    let isServer: Bool
    /// Kept alive for as long as the SSL_CTX refers to its library context.
    let cryptoContext: CryptoContext

    private init(pointer: OpaquePointer, isServer: Bool, cryptoContext: CryptoContext) {
        self.pointer = pointer
        self.isServer = isServer
        self.cryptoContext = cryptoContext
    }

    deinit { SSL_CTX_free(pointer) }

    /// A node's context: its certificate and key, and optionally peers' client certificates.
    ///
    /// - Parameter requestClientCertificate: asks every client for a certificate but lets
    ///   clients without one in (tools have none; peer nodes present theirs). A certificate
    ///   that is presented must chain to `trustAnchorPath`, or the handshake fails, so a
    ///   connection's `peerSubject` is trustworthy afterwards.
    public static func server(
        certificatePath: String, privateKeyPath: String, trustAnchorPath: String?,
        requireClientCertificate: Bool, requestClientCertificate: Bool = false, context: CryptoContext
    ) throws -> TLSContext {
        let tls = try make(server: true, context: context)
        try tls.useCertificate(certificatePath: certificatePath, privateKeyPath: privateKeyPath)
        if let trustAnchorPath { try tls.trust(trustAnchorPath) }
        if requireClientCertificate {
            SSL_CTX_set_verify(tls.pointer, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
        } else if requestClientCertificate {
            SSL_CTX_set_verify(tls.pointer, SSL_VERIFY_PEER, nil)
        }
        if requireClientCertificate || requestClientCertificate {
            // Verifying servers must name a session context, or a resumption attempt fails.
            let name = Array("cloudhsm-node".utf8)
            _ = SSL_CTX_set_session_id_context(tls.pointer, name, UInt32(name.count))
        }
        return tls
    }

    /// A client's context: trusts only `trustAnchorPath`; presents a certificate if given.
    public static func client(
        trustAnchorPath: String, certificatePath: String? = nil, privateKeyPath: String? = nil,
        context: CryptoContext
    ) throws -> TLSContext {
        let tls = try make(server: false, context: context)
        try tls.trust(trustAnchorPath)
        SSL_CTX_set_verify(tls.pointer, SSL_VERIFY_PEER, nil)
        if let certificatePath {
            try tls.useCertificate(certificatePath: certificatePath, privateKeyPath: privateKeyPath ?? certificatePath)
        }
        return tls
    }

    private static func make(server: Bool, context: CryptoContext) throws -> TLSContext {
        guard let method = server ? TLS_server_method() : TLS_client_method(),
            let ctx = SSL_CTX_new_ex(context.pointer, nil, method)
        else { throw OpenSSLError.capture("creating a TLS context") }
        let tls = TLSContext(pointer: ctx, isServer: server, cryptoContext: context)
        guard cshim_SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) == 1 else {
            throw OpenSSLError.capture("requiring TLS 1.3")
        }
        // A peer that drops the connection is reported as a close, not a protocol error.
        SSL_CTX_set_options(ctx, cshim_SSL_OP_IGNORE_UNEXPECTED_EOF())
        _ = cshim_SSL_CTX_set_mode(ctx, Int(SSL_MODE_AUTO_RETRY))
        // Read whole records (header and body) in one system call.
        _ = SSL_CTX_ctrl(ctx, SSL_CTRL_SET_READ_AHEAD, 1, nil)
        if server {
            // Clients of a node never resume sessions; tickets would be bytes for nothing.
            SSL_CTX_set_num_tickets(ctx, 0)
        }
        return tls
    }

    private func useCertificate(certificatePath: String, privateKeyPath: String) throws {
        guard SSL_CTX_use_certificate_chain_file(pointer, certificatePath) == 1 else {
            throw OpenSSLError.capture("loading the certificate \(certificatePath)")
        }
        guard SSL_CTX_use_PrivateKey_file(pointer, privateKeyPath, SSL_FILETYPE_PEM) == 1 else {
            throw OpenSSLError.capture("loading the private key \(privateKeyPath)")
        }
        guard SSL_CTX_check_private_key(pointer) == 1 else {
            throw OpenSSLError.capture("matching \(privateKeyPath) to \(certificatePath)")
        }
    }

    private func trust(_ trustAnchorPath: String) throws {
        guard SSL_CTX_load_verify_locations(pointer, trustAnchorPath, nil) == 1 else {
            throw OpenSSLError.capture("loading the trust anchor \(trustAnchorPath)")
        }
    }
}
