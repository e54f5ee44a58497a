// key_mgmt_util: the key tool of the SSL/TLS offload walkthrough. Reads commands from
// stdin (interactive or scripted) and prints AWS CloudHSM's key_mgmt_util output.

import Glibc
import HSMClient
import OpenSSLKit

setvbuf(stdout, nil, _IOLBF, 0)

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.contains("-h") || arguments.contains("--help") {
    print(
        "usage: key_mgmt_util   (commands on stdin; the cluster comes from $CLOUDHSM_CONFIG or /etc/cloudhsm/cluster.cfg)"
    )
    print("exit status: 0 when every command succeeded; 1 when any failed, or the tool could not start")
    exit(0)
}

let shell: KeyManagementShell
do {
    let crypto = try CryptoContext()
    let configuration = try ClusterConfiguration.load()
    let client = try ClusterClient(configuration: configuration, cryptoContext: crypto)
    shell = KeyManagementShell(client: client, crypto: crypto)
} catch {
    fputs("key_mgmt_util: \(error)\n", stderr)
    exit(1)
}
shell.run()
shell.client.close()
// Scripts read the status: any failed command makes the run fail (README: "Exit status").
if shell.failedCommands > 0 {
    fputs("key_mgmt_util: \(shell.failedCommands) command(s) failed\n", stderr)
    exit(1)
}
exit(0)
