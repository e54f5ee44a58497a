// cloudhsm_mgmt_util: manages the cluster's users (crypto officers and crypto users) on
// every node at once, in the style of AWS CloudHSM's tool. Reads commands from stdin.

import Glibc
import HSMClient
import OpenSSLKit

setvbuf(stdout, nil, _IOLBF, 0)

if CommandLine.arguments.dropFirst().contains(where: { $0 == "-h" || $0 == "--help" }) {
    print(
        "usage: cloudhsm_mgmt_util   (commands on stdin; the cluster comes from $CLOUDHSM_CONFIG or /etc/cloudhsm/cluster.cfg)"
    )
    exit(0)
}

let shell: UserManagementShell
do {
    let configuration = try ClusterConfiguration.load()
    shell = UserManagementShell(
        client: try ClusterClient(configuration: configuration, cryptoContext: try CryptoContext()))
} catch {
    fputs("cloudhsm_mgmt_util: \(error)\n", stderr)
    exit(1)
}
shell.run()
shell.client.close()
// Scripts read the status: any failed command makes the run fail (README: "Exit status").
if shell.failedCommands > 0 {
    fputs("cloudhsm_mgmt_util: \(shell.failedCommands) command(s) failed\n", stderr)
    exit(1)
}
exit(0)
