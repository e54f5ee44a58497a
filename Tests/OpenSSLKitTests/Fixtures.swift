// Key files written by the openssl command-line tool, so the tests check that OpenSSLKit
// reads what real users have, not only what it writes itself.

enum Fixtures {
    /// `openssl genrsa -traditional 1024`: PKCS#1 "RSA PRIVATE KEY".
    static let rsaPKCS1PEM = """
        -----BEGIN RSA PRIVATE KEY-----
        MIICXQIBAAKBgQDCM6yPrZdujRV9fBdfz6qCJ1RB4w37DoQnRwWN9zuwwT8gp4em
        PVffviiTJTUO5imo5Dt3xNy0pet4bAz3lyXRWKCMbfgnfnNWsm3vrJgrE74q5beg
        THQcA/cY3kma2gYVNvTHSI4UOcRoZQlDSbEqE6UR0oNVJ8aH0VWZ72vyQwIDAQAB
        AoGAVokWJLPSnaVqZQ8tjzkHHpYN2oolibCPPL1OAVOgmoOR8KgWLwJ4rK+cfuz+
        dpQjDiodQaJMQocIpRFouc71P0v/Na9AKiWpLv0JwFkKV/cTF5nzUW0VX5gGzbuA
        crQTN2i8oC4nPfY08+2Vhbb5UEWqt61oZeiHalXVF4mqe2ECQQDj7Hkmhh73FPjf
        rvNcfotvmgZrSzu7H2vc/i30T+LBLrMmttEsMB0EAYDBpC+kUujmFSYJ/gs1eKeZ
        3F+PAuYTAkEA2h/J5toMwXEjV4EFxgIshPxLSTFpD64deyagd/FfM/S6Zq07VLHx
        8ASdgaHVMycfJc3ecKN8WBp/imX05cwJEQJBANC58WS/NMJPeW7XN9S/qo/kfPZr
        KmM97jiuqYTwV5dUXgoZJ8uQsDHH8pLi+iJBLzntqi1Cch9gxBPaRcShAfMCQE5M
        HOiOGwgRObN+b/kc7Kgr/EZgwyrKwHBldDK55Qe8cHDM/EAxw/v5XCSdV++NuoOS
        e6eJN+hUUrX2VUtry1ECQQDSXcdXPvDXNZuOUjGmUyTC85pBDSnsQCZ+GNZqvsVE
        bxRrI5Aj1LluUyxzf/z3iS8xR+M6Z3dBLC8ZRFd9bY/o
        -----END RSA PRIVATE KEY-----
        """

    /// `openssl rsa -pubout -outform DER` of the key above, in hex.
    static let rsaPKCS1PublicKeyInfoHex =
        "30819f300d06092a864886f70d010101050003818d0030818902818100c233ac8fad976e8d157d7c175fcfaa82275441e30dfb0e842747058df73bb0c13f20a787a63d57dfbe289325350ee629a8e43b77c4dcb4a5eb786c0cf79725d158a08c6df8277e7356b26defac982b13be2ae5b7a04c741c03f718de499ada061536f4c7488e1439c46865094349b12a13a511d2835527c687d15599ef6bf2430203010001"

    /// A P-256 key in PKCS#8: a private key, but not RSA.
    static let ecPKCS8PEM = """
        -----BEGIN PRIVATE KEY-----
        MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgctg3QgI+wd/2UM/n
        gQBx3FrvGf9ogyZT1q3IrY3TAguhRANCAASOfYBuOisXCs2Bhdw0ZxWQsMejORCN
        9BrxW2ZbLVPLO4jIQN98/rFrc0zF7Wa7hSawWiTq6eq4u3vAybPSCCDo
        -----END PRIVATE KEY-----
        """

    static func hex(_ text: String) -> [UInt8] {
        var out: [UInt8] = []
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.index(index, offsetBy: 2)
            out.append(UInt8(text[index..<next], radix: 16)!)
            index = next
        }
        return out
    }
}
