"""High availability: a standby gateway takes over the IKE and Child SAs of a failed one.

`snapshot` captures an IKE SA and its Child SAs as a sealed record (AES-256-GCM under an operator
key) and restores it in another process with every counter jumped ahead. The records live in etcd:
`store` is the etcd layer (batched, fenced writes, prefix reads, leases, and the `ReplicationQueue`
the gateway records its state changes into); `election` chooses the one gateway that may write (a
lease-bound leader key whose create revision fences the writes). The gateway's use of them is
`ikev2lib.gateway.ha`.
"""
